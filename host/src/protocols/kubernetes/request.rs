//! What a Kubernetes API request asks for, read from its method and URL
//! exactly as the API server's `RequestInfoFactory` reads it
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`), so that a
//! rule about "deleting namespaces" or "exec into kube-system" sees the
//! request the API server will authorize — not a spelling of it.
//!
//! The API server reads the *decoded* path: `pods%2Fexec` is `pods/exec`
//! to it. A path the two readings could disagree on — an encoded `/`, a
//! `.` or `..` segment, an empty segment, a `%` that does not decode, text
//! that is not UTF-8 — is refused ([`Refused`]) rather than guessed at.

/// Path prefixes of API groups: `/api` (the core group, no group in the
/// path) and `/apis/{group}`.
const CORE_PREFIX: &str = "api";
const GROUPS_PREFIX: &str = "apis";

/// Verbs spelled as a path's first part (`/api/v1/watch/pods`).
const PATH_VERBS: &[&str] = &["proxy", "watch"];

/// Subresources of a namespace itself (`/api/v1/namespaces/x/finalize`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Subresources that stream a terminal or a port (upgraded connections).
const STREAMING_SUBRESOURCES: &[&str] = &["exec", "attach", "portforward"];

/// A request's attributes, as the API server's authorizer sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names a resource (`/api/v1/pods`) rather than a
    /// discovery or other path (`/apis`, `/version`, `/healthz`).
    pub is_resource: bool,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`; for other paths the lower-case method.
    pub verb: String,
    /// API group (`""` for the core group, `apps`, ...).
    pub api_group: String,
    /// API version (`v1`).
    pub api_version: String,
    /// Resource (`pods`), when the path names one.
    pub resource: Option<String>,
    /// Subresource (`exec`, `log`, `status`, `scale`).
    pub subresource: Option<String>,
    /// Namespace, for namespaced paths.
    pub namespace: Option<String>,
    /// Object name: from the path, or for a list or watch from a field
    /// selector that names exactly one object (`metadata.name=x`).
    pub name: Option<String>,
    /// The decoded path.
    pub path: String,
    /// For `exec` and `attach`: the command (one query value per
    /// argument) and the container asked for.
    pub exec: Option<Exec>,
}

/// What an `exec` or `attach` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exec {
    /// The command's arguments (`exec`; empty for `attach`).
    pub command: Vec<String>,
    /// The container (`None`: the pod's default one).
    pub container: Option<String>,
    /// Whether the client sends input, and asks for a terminal.
    pub stdin: bool,
    /// Whether a terminal is asked for.
    pub tty: bool,
}

/// Why a request's URL was not read (the client gets a `400` Status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl RequestInfo {
    /// Reads a request: its method, its path and its query (without the
    /// `?`). `upgrade`: the request asks to switch protocols (a WebSocket
    /// or SPDY `exec`, `attach` or `portforward`), which the API server
    /// authorizes as `create` whatever the method.
    pub fn read(
        method: &str,
        raw_path: &str,
        query: Option<&str>,
        upgrade: bool,
    ) -> Result<Self, Refused> {
        let path = decoded_path(raw_path)?;
        let query = decoded_query(query)?;
        let first = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let mut info = RequestInfo {
            verb: method.to_ascii_lowercase(),
            path: path.clone(),
            ..RequestInfo::default()
        };
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = match trimmed.is_empty() {
            true => Vec::new(),
            false => trimmed.split('/').collect(),
        };
        if parts.len() < 3 || !matches!(parts[0], CORE_PREFIX | GROUPS_PREFIX) {
            return Ok(info);
        }
        let grouped = parts[0] == GROUPS_PREFIX;
        parts.remove(0);
        if grouped {
            if parts.len() < 3 {
                return Ok(info);
            }
            info.api_group = parts.remove(0).to_string();
        }
        info.is_resource = true;
        info.api_version = parts.remove(0).to_string();
        if PATH_VERBS.contains(&parts[0]) {
            if parts.len() < 2 {
                return Err(Refused(format!(
                    "the path {path} names no resource after `{}`",
                    parts[0]
                )));
            }
            info.verb = parts.remove(0).to_string();
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }
        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = Some(parts[1].to_string());
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts.drain(..2);
            }
        }
        // resource/name/subresource/...
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = Some(parts[2].to_string());
        }
        if parts.len() >= 2 {
            info.name = Some(parts[1].to_string());
        }
        info.resource = Some(parts[0].to_string());
        if info.name.is_none() && info.verb == "get" {
            info.verb = if go_bool(first("watch")) {
                "watch"
            } else {
                "list"
            }
            .to_string();
            info.name = match first("fieldSelector") {
                Some(s) => named_by_selector(s)?,
                None => None,
            };
        }
        if info.name.is_none() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        if let Some(sub) = info.subresource.as_deref() {
            if STREAMING_SUBRESOURCES.contains(&sub) && upgrade {
                // Upgraded streams are authorized as `create` (kubectl's
                // WebSocket exec is a GET).
                info.verb = "create".to_string();
            }
            if matches!(sub, "exec" | "attach") {
                let flag = |key: &str| go_bool(first(key));
                info.exec = Some(Exec {
                    command: query
                        .iter()
                        .filter(|(k, _)| k == "command")
                        .map(|(_, v)| v.clone())
                        .collect(),
                    container: first("container").map(str::to_string),
                    stdin: flag("stdin"),
                    tty: flag("tty"),
                });
            }
        }
        Ok(info)
    }
}

/// The path as the API server reads it: percent-decoded, and refused where
/// a reader could take it two ways.
fn decoded_path(raw: &str) -> Result<String, Refused> {
    let refuse = |why: &str| Err(Refused(format!("the path {raw:?} {why}; send it plainly")));
    if !raw.starts_with('/') {
        return refuse("does not start with `/`");
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return refuse("encodes a `/` or `\\`");
    }
    let decoded = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(d) => d.into_owned(),
        Err(_) => return refuse("does not decode to UTF-8"),
    };
    if raw.split('%').skip(1).any(|rest| {
        !rest
            .get(..2)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    }) {
        return refuse("has a `%` that is not an escape");
    }
    let inner = decoded.trim_matches('/');
    if !inner.is_empty()
        && inner
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return refuse("has an empty, `.` or `..` segment");
    }
    if decoded.chars().any(char::is_control) {
        return refuse("has control characters");
    }
    Ok(decoded)
}

/// The one object a field selector names (`metadata.name=x`,
/// `metadata.name==x`), when it requires exactly that name.
fn named_by_selector(selector: &str) -> Result<Option<String>, Refused> {
    let refuse = || {
        Err(Refused(format!(
            "the field selector {selector:?} names objects in a way the gateway cannot read exactly as the API server does (escapes, spaces, or more than one metadata.name term); name the object in the path instead"
        )))
    };
    if selector.contains('\\') {
        return refuse();
    }
    let mut name = None;
    for term in selector.split(',') {
        let key_end = term.find(['=', '!']).unwrap_or(term.len());
        let key = &term[..key_end];
        if key.trim() != "metadata.name" {
            continue;
        }
        let op = &term[key_end..];
        if op.starts_with("!=") {
            continue;
        }
        let Some(value) = op.strip_prefix("==").or_else(|| op.strip_prefix('=')) else {
            return refuse();
        };
        if key != "metadata.name" {
            return refuse();
        }
        if name.is_some() || value.trim() != value {
            return refuse();
        }
        name = Some(value.to_string());
    }
    // The API server takes a name only if it could be a path segment.
    Ok(name.filter(|n| !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '%'])))
}

/// A query parameter's truth as the API server converts it (Go's
/// `Convert_Slice_string_To_bool`): absent is false; `0`, `f`, `false`,
/// `n`, `no`, `off` (any case) are false; anything else, even empty, is
/// true.
fn go_bool(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !["0", "f", "false", "n", "no", "off"]
            .iter()
            .any(|f| v.eq_ignore_ascii_case(f)),
    }
}

/// The query's parameters, refused where the API server would read them
/// differently: Go drops a pair with a raw `;` or a bad `%` escape, which
/// a plain form decoder keeps.
fn decoded_query(query: Option<&str>) -> Result<Vec<(String, String)>, Refused> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    let refuse = |why: &str| Err(Refused(format!("the query {q:?} {why}; send it plainly")));
    if q.contains(';') {
        return refuse("contains `;`");
    }
    let bytes = q.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return refuse("has a `%` that is not an escape");
        }
    }
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode(s.replace('+', " ").as_bytes())
                .decode_utf8()
                .map(|d| d.into_owned())
        };
        match (decode(k), decode(v)) {
            (Ok(k), Ok(v)) if !k.chars().chain(v.chars()).any(char::is_control) => out.push((k, v)),
            _ => return refuse("decodes to text that is not plain UTF-8"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(method: &str, url: &str) -> RequestInfo {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        RequestInfo::read(method, path, query, false).expect("read")
    }

    /// (verb, group, version, namespace, resource, name, subresource)
    fn attrs(i: &RequestInfo) -> (&str, &str, &str, &str, &str, &str, &str) {
        (
            &i.verb,
            &i.api_group,
            &i.api_version,
            i.namespace.as_deref().unwrap_or(""),
            i.resource.as_deref().unwrap_or(""),
            i.name.as_deref().unwrap_or(""),
            i.subresource.as_deref().unwrap_or(""),
        )
    }

    #[test]
    fn resource_paths_read_as_the_api_server_reads_them() {
        // The API server's own table (requestinfo_test.go), and more.
        for (method, url, want) in [
            (
                "GET",
                "/api/v1/namespaces",
                ("list", "", "v1", "", "namespaces", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other",
                ("get", "", "v1", "other", "namespaces", "other", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                ("list", "", "v1", "other", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo",
                ("get", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "HEAD",
                "/api/v1/namespaces/other/pods/foo",
                ("get", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "GET",
                "/api/v1/pods",
                ("list", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo/log",
                ("get", "", "v1", "other", "pods", "foo", "log"),
            ),
            (
                "GET",
                "/api/v1/watch/pods",
                ("watch", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/pods?watch=true",
                ("watch", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/pods?watch=false",
                ("list", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/pods?watch=yes",
                ("watch", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/other/pods",
                ("watch", "", "v1", "other", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/proxy/namespaces/other/pods/foo/a/b",
                ("proxy", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "POST",
                "/api/v1/namespaces/other/pods",
                ("create", "", "v1", "other", "pods", "", ""),
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/pods/foo",
                ("update", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "PATCH",
                "/api/v1/namespaces/other/pods/foo",
                ("patch", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods/foo",
                ("delete", "", "v1", "other", "pods", "foo", ""),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods",
                ("deletecollection", "", "v1", "other", "pods", "", ""),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/kube-system",
                (
                    "delete",
                    "",
                    "v1",
                    "kube-system",
                    "namespaces",
                    "kube-system",
                    "",
                ),
            ),
            (
                "PUT",
                "/api/v1/namespaces/x/finalize",
                ("update", "", "v1", "x", "namespaces", "x", "finalize"),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/prod/deployments/web",
                ("get", "apps", "v1", "prod", "deployments", "web", ""),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
                ("patch", "apps", "v1", "prod", "deployments", "web", "scale"),
            ),
            (
                "GET",
                "/apis/apps/v1/deployments",
                ("list", "apps", "v1", "", "deployments", "", ""),
            ),
            (
                "POST",
                "/api/v1/namespaces/kube-system/pods/p/exec?command=ls",
                ("create", "", "v1", "kube-system", "pods", "p", "exec"),
            ),
            // A list that names one object by field selector.
            (
                "GET",
                "/api/v1/namespaces/x/secrets?fieldSelector=metadata.name%3Ddb",
                ("list", "", "v1", "x", "secrets", "db", ""),
            ),
            // Decoded as the API server decodes it.
            (
                "GET",
                "/api/v1/namespaces/kube%2Dsystem/secrets",
                ("list", "", "v1", "kube-system", "secrets", "", ""),
            ),
        ] {
            assert_eq!(attrs(&read(method, url)), want, "{method} {url}");
        }
    }

    #[test]
    fn discovery_and_other_paths_are_not_resources() {
        for url in [
            "/",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/healthz",
            "/openapi/v2",
        ] {
            let i = read("GET", url);
            assert!(!i.is_resource, "{url}");
            assert_eq!(i.verb, "get");
        }
    }

    #[test]
    fn an_upgraded_exec_is_a_create_with_its_command() {
        let i = RequestInfo::read(
            "GET",
            "/api/v1/namespaces/prod/pods/web/exec",
            Some("command=sh&command=-c&command=rm+-rf+%2F&container=app&stdin=true&tty=1"),
            true,
        )
        .expect("read");
        assert_eq!(i.verb, "create");
        assert_eq!(
            i.exec,
            Some(Exec {
                command: vec!["sh".into(), "-c".into(), "rm -rf /".into()],
                container: Some("app".into()),
                stdin: true,
                tty: true,
            })
        );
    }

    #[test]
    fn paths_two_readers_could_take_differently_are_refused() {
        for path in [
            "/api/v1/namespaces/x/pods/p%2Fexec",
            "/api/v1/namespaces/x/pods/p%2fexec",
            "/api/v1/namespaces/x/../kube-system/secrets",
            "/api/v1/namespaces/x/./secrets",
            "/api/v1//namespaces/x/secrets",
            "/api/v1/namespaces/x/secrets%",
            "/api/v1/namespaces/x/secrets%zz",
            "/api/v1/namespaces/%ff/secrets",
            "/api/v1/namespaces/a%0Ab/secrets",
            "api/v1/pods",
            "/api/v1/watch",
        ] {
            assert!(
                RequestInfo::read("GET", path, None, false).is_err(),
                "{path}"
            );
        }
    }

    #[test]
    fn only_a_selector_that_requires_one_name_names_it() {
        let named = |s: &str| named_by_selector(s).expect("readable");
        assert_eq!(named("metadata.name=db"), Some("db".into()));
        assert_eq!(named("metadata.name==db"), Some("db".into()));
        assert_eq!(named("metadata.name!=db"), None);
        assert_eq!(named("metadata.namespace=x"), None);
        assert_eq!(named("metadata.name="), None);
        assert_eq!(
            named("status.phase=Running,metadata.name=db"),
            Some("db".into())
        );
        // Read two ways (the API server takes the first term): refused.
        for two_ways in [
            "metadata.name=db,metadata.name=public",
            "metadata.name=db\\,x",
            "metadata.name= db",
            " metadata.name=db",
        ] {
            assert!(named_by_selector(two_ways).is_err(), "{two_ways}");
        }
    }

    #[test]
    fn a_query_the_api_server_would_read_differently_is_refused() {
        for q in [
            "fieldSelector=metadata.name%3Ddb;,metadata.name%3Dpublic",
            "watch=true;&watch=false",
            "fieldSelector=metadata.name%3Dpublic%zz&x=1",
            "labelSelector=%FF",
            "command=ls%0A",
        ] {
            assert!(
                RequestInfo::read("GET", "/api/v1/namespaces/prod/secrets", Some(q), false)
                    .is_err(),
                "{q}"
            );
        }
        // Go's booleans: f, n, no, off are false; empty is true.
        for (q, verb) in [
            ("watch=f", "list"),
            ("watch=OFF", "list"),
            ("watch=no", "list"),
            ("watch=", "watch"),
            ("watch=1", "watch"),
        ] {
            assert_eq!(read("GET", &format!("/api/v1/pods?{q}")).verb, verb, "{q}");
        }
        let exec = RequestInfo::read(
            "GET",
            "/api/v1/namespaces/a/pods/p/exec",
            Some("command=sh&stdin=yes&tty=on"),
            true,
        )
        .expect("read");
        let e = exec.exec.expect("an exec");
        assert!(e.stdin && e.tty);
    }
}
