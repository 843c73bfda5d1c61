//! Kubernetes Secrets as they leave: every value of `data` and
//! `stringData` masked — and the same in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, which
//! carries a copy of what was applied. Keys stay, so a client still sees
//! which entries a Secret has.

use serde_json::Value;

/// What a `data` value becomes: `********`, base64-encoded as `data`
/// values are (so tools that decode them still work).
pub const MASKED_DATA: &str = "KioqKioqKio=";
/// What a `stringData` value becomes.
pub const MASKED_TEXT: &str = "********";
/// The annotation `kubectl apply` keeps the applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether a request reads or writes Secrets (whose answers are masked).
pub fn about_secrets(request: &portcullis_plugin_sdk::HttpRequest) -> bool {
    request
        .kube
        .as_ref()
        .is_some_and(|k| k.api_group.is_empty() && k.resource.as_deref() == Some("secrets"))
}

/// Why a request about Secrets is refused for someone whose Secrets are
/// masked: a JSON patch that copies, moves or tests a value (`copy` from
/// `/data/password` into an annotation would answer with the value in
/// clear; `test` confirms a guess), or one that cannot be read.
pub fn refusal(request: &portcullis_plugin_sdk::HttpRequest) -> Option<String> {
    if !about_secrets(request) {
        return None;
    }
    let kube = request.kube.as_ref()?;
    if kube.verb != "patch" {
        return None;
    }
    let json_patch = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-type")
            && String::from_utf8_lossy(&h.value)
                .to_ascii_lowercase()
                .contains("json-patch")
    });
    let body = request.body.as_deref().unwrap_or_default();
    let ops = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(ops)) => ops,
        Ok(_) if !json_patch => return None,
        _ => {
            return Some(
                "blocked by portcullis mask: a JSON patch of a Secret that cannot be read".into(),
            )
        }
    };
    let reads_values = ops.iter().any(|op| {
        op.get("from").is_some()
            || matches!(
                op.get("op").and_then(Value::as_str),
                Some("copy" | "move" | "test")
            )
    });
    reads_values.then(|| {
        "blocked by portcullis mask: a JSON patch of a Secret may not copy, move or test its values (they are masked for you); use add, replace or remove".to_string()
    })
}

/// What a `Status` about a Secret says instead of its message (an error
/// can quote the value a request tried to put elsewhere).
pub const WITHHELD_MESSAGE: &str =
    "[message withheld by portcullis: an error about a Secret may quote its values]";

/// A Secret (JSON text) with its values masked — also a Secret inside a
/// watch event's `object` — and an error's message withheld; `None` when
/// there is nothing to mask.
pub fn mask(object: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(object).ok()?;
    if v.get("kind").and_then(Value::as_str) == Some("Status") {
        let quoted = v.get("message").is_some() || v.get("details").is_some();
        if let Some(o) = v.as_object_mut() {
            o.insert("message".into(), Value::String(WITHHELD_MESSAGE.into()));
            o.remove("details");
        }
        return quoted.then(|| v.to_string());
    }
    let mut changed = false;
    if let Some(inner) = v.get_mut("object") {
        changed |= mask_secret(inner);
    }
    changed |= mask_secret(&mut v);
    changed.then(|| v.to_string())
}

/// Masks one Secret's values and its last-applied copy; whether any.
fn mask_secret(v: &mut Value) -> bool {
    let mut changed = mask_values(v);
    if let Some(annotations) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        if let Some(applied) = annotations.get_mut(LAST_APPLIED) {
            let masked = applied
                .as_str()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .map(|mut inner| {
                    mask_values(&mut inner);
                    inner.to_string()
                })
                .unwrap_or_else(|| "[masked by portcullis]".to_string());
            *applied = Value::String(masked);
            changed = true;
        }
    }
    changed
}

/// Masks the values of `data` and `stringData`; whether there were any.
fn mask_values(v: &mut Value) -> bool {
    let mut changed = false;
    for (field, masked) in [("data", MASKED_DATA), ("stringData", MASKED_TEXT)] {
        match v.get_mut(field) {
            Some(Value::Object(entries)) => {
                for value in entries.values_mut() {
                    *value = Value::String(masked.to_string());
                    changed = true;
                }
            }
            Some(Value::Null) | None => {}
            // Not a map of values: nothing of it may pass.
            Some(other) => {
                *other = Value::String(masked.to_string());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin_sdk::{Header, HttpRequest, KubeRequest};

    fn patch_request(content_type: &str, body: &str) -> HttpRequest {
        HttpRequest {
            id: 1,
            method: "PATCH".into(),
            path: "/api/v1/namespaces/prod/secrets/db".into(),
            query: Some("dryRun=All".into()),
            headers: vec![Header {
                name: "content-type".into(),
                value: content_type.as_bytes().to_vec(),
            }],
            body: Some(body.as_bytes().to_vec()),
            kube: Some(KubeRequest {
                verb: "patch".into(),
                is_resource: true,
                api_group: "".into(),
                api_version: "v1".into(),
                resource: Some("secrets".into()),
                subresource: None,
                namespace: Some("prod".into()),
                name: Some("db".into()),
                exec: None,
            }),
        }
    }

    #[test]
    fn a_patch_that_copies_moves_or_tests_a_value_is_refused() {
        for body in [
            r#"[{"op":"copy","from":"/data/password","path":"/metadata/annotations/x"}]"#,
            r#"[{"op":"move","from":"/data/password","path":"/type"}]"#,
            r#"[{"op":"test","path":"/data/password","value":"aHVudGVyMg=="}]"#,
            "not json",
        ] {
            assert!(
                refusal(&patch_request("application/json-patch+json", body)).is_some(),
                "{body}"
            );
        }
        assert!(refusal(&patch_request(
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/data/password","value":"bmV3"}]"#
        ))
        .is_none());
        assert!(refusal(&patch_request(
            "application/merge-patch+json",
            r#"{"data":{"a":"Yg=="}}"#
        ))
        .is_none());
    }

    #[test]
    fn values_and_the_applied_copy_are_masked_and_keys_stay() {
        let applied = r#"{"apiVersion":"v1","kind":"Secret","stringData":{"password":"hunter2"},"data":{"token":"aHVudGVyMg=="}}"#;
        let secret = serde_json::json!({
            "metadata": {"name": "db", "annotations": {LAST_APPLIED: applied, "team": "x"}},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="},
            "stringData": {"note": "hunter2"},
        });
        let out = mask(&secret.to_string()).expect("masked");
        for leaked in ["aHVudGVyMg==", "hunter2", "YWRtaW4="] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        let v: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["data"]["password"], MASKED_DATA);
        assert_eq!(v["data"]["user"], MASKED_DATA);
        assert_eq!(v["metadata"]["annotations"]["team"], "x");
        let inner: Value = serde_json::from_str(
            v["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .expect("text"),
        )
        .expect("JSON");
        assert_eq!(inner["stringData"]["password"], MASKED_TEXT);
        // An error's message is withheld; an unreadable annotation too.
        let status = mask(
            r#"{"kind":"Status","message":"type: Invalid value: \"aHVudGVyMg==\"","code":422}"#,
        )
        .expect("withheld");
        assert!(
            !status.contains("aHVudGVyMg==") && status.contains("422"),
            "{status}"
        );
        let odd =
            serde_json::json!({"metadata": {"annotations": {LAST_APPLIED: "password: hunter2"}}});
        assert!(!mask(&odd.to_string()).expect("masked").contains("hunter2"));
    }
}
