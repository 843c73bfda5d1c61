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

/// A Secret (JSON text) with its values masked; `None` when there is
/// nothing to mask (a `Status`, a Secret without values).
pub fn mask(object: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(object).ok()?;
    if v.get("kind").and_then(Value::as_str) == Some("Status") {
        return None;
    }
    let mut changed = mask_values(&mut v);
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
    changed.then(|| v.to_string())
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
        // A status passes; an unreadable annotation does not.
        assert!(mask(r#"{"kind":"Status","message":"x"}"#).is_none());
        let odd =
            serde_json::json!({"metadata": {"annotations": {LAST_APPLIED: "password: hunter2"}}});
        assert!(!mask(&odd.to_string()).expect("masked").contains("hunter2"));
    }
}
