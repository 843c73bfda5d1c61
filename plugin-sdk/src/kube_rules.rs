//! Rules about Kubernetes API requests, for first-party and third-party
//! plugins alike: which verbs, on which resources, in which namespaces, on
//! which objects — matched on the request's attributes as the API server
//! reads them (the host hands them over in `HttpRequest::kube`), so every
//! way of asking for the same thing gets the same verdict.
//!
//! - `verbs`: `get`, `list`, `watch`, `create`, `update`, `patch`,
//!   `delete`, `deletecollection` (`*`: any). `kubectl exec`, `attach`
//!   and `port-forward` are `create` on `pods/exec`, `pods/attach`,
//!   `pods/portforward`, as the API server authorizes them.
//! - `resources`: `pods` (the objects, not their subresources),
//!   `pods/exec` (a subresource), `pods/*` (any subresource),
//!   `deployments.apps` (one API group; without a group any group), `*`
//!   (everything). `*` also works inside a name: `*secrets`.
//! - `namespaces`: patterns with `*`. A request across all namespaces
//!   (`kubectl get -A`) or for a cluster-scoped resource counts as in
//!   every namespace, since it can reach them all.
//! - `object_names`: patterns with `*`; the name in the path, or for a
//!   `create` the body's `metadata.name`. A request on a whole collection
//!   (list, watch, deletecollection) counts as naming every object.
//! - `scale_to_zero`: an update or patch of a deployment, stateful set,
//!   replica set or replication controller (or its `scale`) whose body
//!   sets `spec.replicas` to 0 — in any patch format; a body the rule
//!   cannot read counts as setting it.
//!
//! A rule matches a request when every condition it has matches; a rule
//! with none of these keys never matches a Kubernetes request.

use serde_json::Value;

use crate::shell::glob;
use crate::{HttpRequest, KubeRequest};

/// A rule's Kubernetes keys, as configured.
#[derive(Debug, Clone, Default)]
pub struct KubeRuleConfig {
    /// Verbs (`*`: any).
    pub verbs: Vec<String>,
    /// Resources: `pods`, `pods/exec`, `pods/*`, `deployments.apps`, `*`.
    pub resources: Vec<String>,
    /// Namespace patterns.
    pub namespaces: Vec<String>,
    /// Object name patterns.
    pub object_names: Vec<String>,
    /// Updates that scale a workload to zero.
    pub scale_to_zero: bool,
}

/// One resource pattern, read.
#[derive(Debug, Clone)]
struct ResourcePattern {
    resource: String,
    group: Option<String>,
    /// `None`: the objects themselves; `Some("*")`: any subresource.
    subresource: Option<String>,
}

impl ResourcePattern {
    fn parse(pattern: &str) -> Self {
        let (res, sub) = match pattern.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (pattern, None),
        };
        let (resource, group) = match res.split_once('.') {
            Some((r, g)) => (r.to_string(), Some(g.to_string())),
            None => (res.to_string(), None),
        };
        Self {
            resource,
            group,
            subresource: sub,
        }
    }

    fn matches(&self, kube: &KubeRequest) -> bool {
        if self.resource == "*" && self.group.is_none() && self.subresource.is_none() {
            return kube.resource.is_some();
        }
        let Some(resource) = &kube.resource else {
            return false;
        };
        if !glob(&self.resource, resource) {
            return false;
        }
        if let Some(g) = &self.group {
            if !glob(g, &kube.api_group) {
                return false;
            }
        }
        match (&self.subresource, &kube.subresource) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(p), Some(s)) => glob(p, s),
            (Some(_), None) => false,
        }
    }
}

/// A rule's Kubernetes conditions, ready to match.
#[derive(Debug, Clone, Default)]
pub struct KubeRule {
    config: KubeRuleConfig,
    resources: Vec<ResourcePattern>,
}

/// Verbs the API server knows for resources.
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// Workloads whose replicas a `scale_to_zero` rule watches.
const SCALABLE: &[&str] = &[
    "deployments",
    "statefulsets",
    "replicasets",
    "replicationcontrollers",
];

impl KubeRule {
    /// The conditions of rule `rule`; an error names a verb that is not
    /// one.
    pub fn new(rule: &str, config: &KubeRuleConfig) -> Result<Self, String> {
        for v in &config.verbs {
            if !VERBS.contains(&v.as_str()) {
                return Err(format!(
                    "rule {rule:?}: {v:?} is not a Kubernetes verb (one of {}; exec, attach and port-forward are create on pods/exec, pods/attach, pods/portforward)",
                    VERBS.join(", ")
                ));
            }
        }
        Ok(Self {
            resources: config
                .resources
                .iter()
                .map(|r| ResourcePattern::parse(r))
                .collect(),
            config: config.clone(),
        })
    }

    /// Whether the rule has Kubernetes conditions at all.
    pub fn is_empty(&self) -> bool {
        let c = &self.config;
        c.verbs.is_empty()
            && c.resources.is_empty()
            && c.namespaces.is_empty()
            && c.object_names.is_empty()
            && !c.scale_to_zero
    }

    /// What the rule matched in `request` (for the refusal's text), or
    /// `None`.
    pub fn check(&self, request: &HttpRequest) -> Option<String> {
        let kube = request.kube.as_ref()?;
        if self.is_empty() {
            return None;
        }
        let c = &self.config;
        if !c.verbs.is_empty() && !c.verbs.iter().any(|v| v == "*" || *v == kube.verb) {
            return None;
        }
        if !self.resources.is_empty() && !self.resources.iter().any(|p| p.matches(kube)) {
            return None;
        }
        if !c.namespaces.is_empty() {
            match &kube.namespace {
                Some(ns) if !c.namespaces.iter().any(|p| glob(p, ns)) => return None,
                Some(_) => {}
                // A path that names no resource is in no namespace.
                None if !kube.is_resource => return None,
                None => {}
            }
        }
        if !c.object_names.is_empty() {
            if let Some(name) = object_name(kube, request) {
                if !c.object_names.iter().any(|p| glob(p, &name)) {
                    return None;
                }
            }
        }
        if c.scale_to_zero && !scales_to_zero(kube, request) {
            return None;
        }
        Some(describe(kube, c.scale_to_zero))
    }
}

/// The object a request names: in its path, or for a create in its body.
/// `None` for a collection (every object).
fn object_name(kube: &KubeRequest, request: &HttpRequest) -> Option<String> {
    if let Some(n) = &kube.name {
        return Some(n.clone());
    }
    if kube.verb != "create" {
        return None;
    }
    let body: Value = serde_json::from_slice(request.body.as_deref()?).ok()?;
    body["metadata"]["name"].as_str().map(str::to_string)
}

/// Whether an update or patch sets a workload's replicas to 0 (a body
/// that cannot be read counts as doing so).
fn scales_to_zero(kube: &KubeRequest, request: &HttpRequest) -> bool {
    let Some(resource) = &kube.resource else {
        return false;
    };
    let write = matches!(kube.verb.as_str(), "update" | "patch")
        || (kube.verb == "create" && kube.subresource.as_deref() == Some("scale"));
    if !write
        || !SCALABLE.contains(&resource.as_str())
        || !matches!(kube.subresource.as_deref(), None | Some("scale"))
    {
        return false;
    }
    let Some(body) = request.body.as_deref() else {
        return true;
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .is_some_and(is_zero),
        // A JSON patch: any operation that puts 0 at /spec/replicas, or
        // an object holding it at /spec or the root; a copy or move there
        // puts a value the rule cannot see, so it counts.
        Ok(Value::Array(ops)) => ops.iter().any(|op| {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let value = op.get("value");
            match op.get("op").and_then(Value::as_str) {
                Some("add" | "replace") => match path {
                    "/spec/replicas" => value.is_some_and(is_zero),
                    "/spec" => value.and_then(|v| v.get("replicas")).is_some_and(is_zero),
                    "" | "/" => value
                        .and_then(|v| v.get("spec"))
                        .and_then(|s| s.get("replicas"))
                        .is_some_and(is_zero),
                    _ => false,
                },
                Some("copy" | "move") => {
                    matches!(path, "" | "/" | "/spec" | "/spec/replicas")
                }
                _ => false,
            }
        }),
        Ok(_) => false,
        Err(_) if !is_yaml(request) => true,
        // YAML (server-side apply): by its text; escapes, quotes and
        // aliases the rule cannot follow count as setting it.
        Err(_) => {
            let raw = String::from_utf8_lossy(body);
            if raw.contains(['\\', '&', '*', '"', '\'', '{']) {
                return true;
            }
            let text: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
            text.match_indices("replicas:").any(|(i, m)| {
                let rest = &text[i + m.len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.is_empty() || digits.trim_start_matches('0').is_empty()
            })
        }
    }
}

/// Whether the request's body is YAML (server-side apply's
/// `application/apply-patch+yaml`, or `application/yaml`).
fn is_yaml(request: &HttpRequest) -> bool {
    request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-type")
            && String::from_utf8_lossy(&h.value)
                .to_ascii_lowercase()
                .contains("yaml")
    })
}

/// Whether a JSON value is the number 0 (or the string "0").
fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0) || v.as_str().map(str::trim) == Some("0")
}

/// `delete deployments.apps/web in namespace prod`, for refusals.
fn describe(kube: &KubeRequest, scale: bool) -> String {
    let mut s = kube.verb.clone();
    if let Some(r) = &kube.resource {
        s.push(' ');
        s.push_str(r);
        if !kube.api_group.is_empty() {
            s.push('.');
            s.push_str(&kube.api_group);
        }
        if let Some(sub) = &kube.subresource {
            s.push('/');
            s.push_str(sub);
        }
    }
    if let Some(n) = &kube.name {
        s.push(' ');
        s.push_str(n);
    }
    match &kube.namespace {
        Some(ns) => {
            s.push_str(" in namespace ");
            s.push_str(ns);
        }
        None if kube.resource.is_some() => s.push_str(" across all namespaces"),
        None => {}
    }
    if let Some(exec) = &kube.exec {
        s.push_str(" (command: ");
        s.push_str(&exec.command.join(" "));
        s.push(')');
    }
    if scale {
        s.push_str(" (scaling to zero)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> HttpRequest {
        let (res, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let (res, group) = match res.split_once('.') {
            Some((r, g)) => (r, g),
            None => (res, ""),
        };
        HttpRequest {
            id: 1,
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: Vec::new(),
            body: None,
            kube: Some(KubeRequest {
                verb: verb.into(),
                is_resource: true,
                api_group: group.into(),
                api_version: "v1".into(),
                resource: Some(res.into()),
                subresource: sub,
                namespace: ns.map(str::to_string),
                name: name.map(str::to_string),
                exec: None,
            }),
        }
    }

    fn rule(c: KubeRuleConfig) -> KubeRule {
        KubeRule::new("r", &c).expect("rule")
    }

    #[test]
    fn verbs_resources_and_namespaces_match_as_the_api_server_reads_them() {
        let no_ns_delete = rule(KubeRuleConfig {
            verbs: vec!["delete".into(), "deletecollection".into()],
            resources: vec!["namespaces".into()],
            ..Default::default()
        });
        assert!(no_ns_delete
            .check(&request("delete", "namespaces", Some("prod"), Some("prod")))
            .is_some());
        assert!(no_ns_delete
            .check(&request("get", "namespaces", Some("prod"), Some("prod")))
            .is_none());
        let exec_system = rule(KubeRuleConfig {
            resources: vec!["pods/exec".into(), "pods/attach".into()],
            namespaces: vec!["kube-*".into()],
            ..Default::default()
        });
        assert!(exec_system
            .check(&request(
                "create",
                "pods/exec",
                Some("kube-system"),
                Some("dns")
            ))
            .is_some());
        assert!(exec_system
            .check(&request(
                "create",
                "pods/exec",
                Some("default"),
                Some("web")
            ))
            .is_none());
        // The pod objects are not their exec subresource.
        assert!(exec_system
            .check(&request("get", "pods", Some("kube-system"), Some("dns")))
            .is_none());
        // Across all namespaces reaches kube-system too.
        let secrets = rule(KubeRuleConfig {
            resources: vec!["secrets".into()],
            namespaces: vec!["prod".into()],
            ..Default::default()
        });
        assert!(secrets
            .check(&request("list", "secrets", None, None))
            .is_some());
        assert!(secrets
            .check(&request("list", "secrets", Some("dev"), None))
            .is_none());
        // A group narrows; no group means any.
        let deploys = rule(KubeRuleConfig {
            verbs: vec!["delete".into()],
            resources: vec!["deployments.apps".into()],
            object_names: vec!["web*".into()],
            ..Default::default()
        });
        assert!(deploys
            .check(&request(
                "delete",
                "deployments.apps",
                Some("prod"),
                Some("web-1")
            ))
            .is_some());
        assert!(deploys
            .check(&request(
                "delete",
                "deployments.extensions",
                Some("prod"),
                Some("web-1")
            ))
            .is_none());
        assert!(deploys
            .check(&request(
                "delete",
                "deployments.apps",
                Some("prod"),
                Some("api")
            ))
            .is_none());
        assert!(KubeRule::new(
            "r",
            &KubeRuleConfig {
                verbs: vec!["exec".into()],
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn scaling_to_zero_is_read_from_every_patch_format() {
        let zero = rule(KubeRuleConfig {
            scale_to_zero: true,
            ..Default::default()
        });
        let with = |verb: &str, resource: &str, body: &str| {
            let mut r = request(verb, resource, Some("prod"), Some("web"));
            r.body = Some(body.as_bytes().to_vec());
            if !body.starts_with(['{', '[']) {
                r.headers.push(crate::Header {
                    name: "Content-Type".into(),
                    value: b"application/apply-patch+yaml".to_vec(),
                });
            }
            zero.check(&r).is_some()
        };
        assert!(with(
            "patch",
            "deployments.apps/scale",
            r#"{"spec":{"replicas":0}}"#
        ));
        assert!(with(
            "update",
            "deployments.apps",
            r#"{"spec":{"replicas":0,"template":{}}}"#
        ));
        assert!(with(
            "patch",
            "statefulsets.apps",
            r#"[{"op":"replace","path":"/spec/replicas","value":0}]"#
        ));
        assert!(with("patch", "deployments.apps", "spec:\n  replicas: 0\n"));
        assert!(with("patch", "deployments.apps", "spec: {replicas: 00}"));
        // Parents, copies and YAML the text reading cannot follow.
        assert!(with(
            "patch",
            "deployments.apps/scale",
            r#"[{"op":"replace","path":"/spec","value":{"replicas":0}}]"#
        ));
        assert!(with(
            "patch",
            "deployments.apps",
            r#"[{"op":"add","path":"","value":{"spec":{"replicas":0}}}]"#
        ));
        assert!(with(
            "patch",
            "deployments.apps",
            r#"[{"op":"copy","from":"/spec/minReadySeconds","path":"/spec/replicas"}]"#
        ));
        assert!(with(
            "patch",
            "deployments.apps",
            "spec:\n  \"repl\\u0069cas\": 0\n"
        ));
        assert!(with(
            "patch",
            "deployments.apps",
            "a: &k replicas\nspec:\n  *k : 0\n"
        ));
        // A body in another encoding (protobuf) cannot be read: it counts.
        let mut binary = request(
            "update",
            "deployments.apps/scale",
            Some("prod"),
            Some("web"),
        );
        binary.body = Some(b"k8s\x00\x0a\x0e".to_vec());
        binary.headers.push(crate::Header {
            name: "content-type".into(),
            value: b"application/vnd.kubernetes.protobuf".to_vec(),
        });
        assert!(zero.check(&binary).is_some());
        assert!(!with(
            "patch",
            "deployments.apps/scale",
            r#"{"spec":{"replicas":3}}"#
        ));
        assert!(!with(
            "patch",
            "deployments.apps",
            "spec:\n  replicas: 10\n"
        ));
        assert!(!with("patch", "configmaps", r#"{"spec":{"replicas":0}}"#));
        assert!(!with(
            "get",
            "deployments.apps",
            r#"{"spec":{"replicas":0}}"#
        ));
    }
}
