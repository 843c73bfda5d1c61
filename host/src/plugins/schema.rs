//! Checks a plugin's configuration against the JSON Schema it publishes,
//! with a complete implementation of the standard (the `boon` crate: drafts
//! 4, 6, 7, 2019-09 and 2020-12; 2020-12 when the schema names none), and
//! words the first failure by the key it is about (`key rules[0].kind is
//! not known`). Only the schema's own document is read: a `$ref` to any
//! other document (a file, a URL) fails the plugin's load rather than being
//! fetched.

use serde_json::Value;

/// The name the published schema is compiled under.
const SCHEMA_URL: &str = "urn:portcullis:plugin-config-schema";

/// Refuses every document but the plugin's own schema: the gateway never
/// reads a file or the network because a plugin's schema names one.
struct NoFetch;

impl boon::UrlLoader for NoFetch {
    fn load(&self, url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Err(format!("{url}: a plugin's config schema may not refer to other documents").into())
    }
}

/// Validates `value` against `schema`; the error names the key path.
pub fn validate(value: &Value, schema: &Value) -> Result<(), String> {
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.use_loader(Box::new(NoFetch));
    let invalid =
        |e: &dyn std::fmt::Display| format!("the plugin publishes an invalid config schema: {e:#}");
    compiler
        .add_resource(SCHEMA_URL, schema.clone())
        .map_err(|e| invalid(&e))?;
    let mut schemas = boon::Schemas::new();
    let index = compiler
        .compile(SCHEMA_URL, &mut schemas)
        .map_err(|e| invalid(&e))?;
    match schemas.validate(value, index) {
        Ok(()) => Ok(()),
        Err(e) => Err(describe(first_leaf(&e), schema)),
    }
}

/// The innermost failure along the first branch (groups and references
/// only carry their causes).
fn first_leaf<'a, 's, 'v>(
    e: &'a boon::ValidationError<'s, 'v>,
) -> &'a boon::ValidationError<'s, 'v> {
    match e.causes.first() {
        Some(cause) => first_leaf(cause),
        None => e,
    }
}

/// `rules[0].name` for the instance location `/rules/0/name`.
fn key_path(location: &boon::InstanceLocation<'_>) -> String {
    let mut path = String::new();
    for token in &location.tokens {
        match token {
            boon::InstanceToken::Prop(p) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(p);
            }
            boon::InstanceToken::Item(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the configuration".into()
    } else {
        format!("key {path}")
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The keys the schema at `schema_url` (a location inside the published
/// schema) lists under `properties`.
fn known_keys(schema: &Value, schema_url: &str) -> Vec<String> {
    let pointer = schema_url.split_once('#').map_or("", |(_, f)| f);
    let pointer = pointer
        .strip_suffix("/additionalProperties")
        .unwrap_or(pointer);
    schema
        .pointer(pointer)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn describe(e: &boon::ValidationError<'_, '_>, schema: &Value) -> String {
    let path = key_path(&e.instance_location);
    match &e.kind {
        boon::ErrorKind::AdditionalProperties { got } => {
            let key = got.first().map(|k| child(&path, k)).unwrap_or(path.clone());
            let known = known_keys(schema, e.schema_url);
            if known.is_empty() {
                format!("key {key} is not known")
            } else {
                format!("key {key} is not known (known keys: {})", known.join(", "))
            }
        }
        boon::ErrorKind::Required { want } => match want.first() {
            Some(k) => format!("key {} is required", child(&path, k)),
            None => format!("{} lacks a required key", at(&path)),
        },
        boon::ErrorKind::Type { want, .. } => {
            let want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
            format!("{} must be a {}", at(&path), want.join(" or "))
        }
        boon::ErrorKind::Enum { want } => {
            format!(
                "{} must be one of {}",
                at(&path),
                Value::Array(want.to_vec())
            )
        }
        other => format!("{}: {other}", at(&path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_bad_key() {
        let schema = json!({"type": "object", "additionalProperties": false,
            "properties": {"rules": {"type": "array", "items": {"type": "object",
                "additionalProperties": false, "required": ["name"],
                "properties": {"name": {"type": "string"}, "kinds": {"type": "array"}}}}}});
        assert!(validate(&json!({"rules": [{"name": "a"}]}), &schema).is_ok());
        assert_eq!(
            validate(&json!({"rules": [{"name": "a"}, {"nmae": "b"}]}), &schema).unwrap_err(),
            "key rules[1].name is required"
        );
        assert_eq!(
            validate(&json!({"rules": [{"name": "a", "kind": []}]}), &schema).unwrap_err(),
            "key rules[0].kind is not known (known keys: kinds, name)"
        );
        assert_eq!(
            validate(&json!({"rules": [{"name": 3}]}), &schema).unwrap_err(),
            "key rules[0].name must be a string"
        );
    }

    #[test]
    fn the_whole_standard_applies() {
        // Keywords the first checker ignored: bounds, patterns, combinators.
        let schema = json!({"type": "object", "properties": {
            "sample_rows": {"type": "integer", "minimum": 0, "maximum": 100},
            "name": {"type": "string", "pattern": "^[a-z-]+$"},
            "mode": {"oneOf": [{"const": "wait"}, {"const": "retry"}]}}});
        assert!(validate(
            &json!({"sample_rows": 5, "name": "ok", "mode": "wait"}),
            &schema
        )
        .is_ok());
        let err = validate(&json!({"sample_rows": 500}), &schema).unwrap_err();
        assert!(err.starts_with("key sample_rows: "), "{err}");
        let err = validate(&json!({"name": "Bad Name"}), &schema).unwrap_err();
        assert!(err.starts_with("key name: "), "{err}");
        assert!(validate(&json!({"mode": "later"}), &schema).is_err());
    }

    #[test]
    fn a_schema_may_not_fetch_other_documents() {
        let dir = crate::test_dir::TestDir::new("portcullis-schema");
        let file = dir.join("other.json");
        std::fs::write(&file, r#"{"type": "string"}"#).unwrap();
        let url = format!("file://{}", file.display());
        let schema = json!({"type": "object", "properties": {"x": {"$ref": url}}});
        let err = validate(&json!({"x": 3}), &schema).unwrap_err();
        assert!(err.contains("may not refer to other documents"), "{err}");
        // Nor through `$schema`: only the standard drafts, which are built in.
        let standard = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object"});
        assert!(validate(&json!({}), &standard).is_ok());
        let draft7 = json!({"$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "properties": {"x": {"type": "integer"}}});
        assert!(validate(&json!({"x": 1}), &draft7).is_ok());
        let elsewhere = json!({"$schema": "http://169.254.169.254/latest/meta-data/",
            "type": "object"});
        let err = validate(&json!({}), &elsewhere).unwrap_err();
        assert!(err.contains("invalid config schema"), "{err}");
        // Its own definitions are fine.
        let local = json!({"$defs": {"s": {"type": "string"}},
            "type": "object", "properties": {"x": {"$ref": "#/$defs/s"}}});
        assert!(validate(&json!({"x": "a"}), &local).is_ok());
        assert_eq!(
            validate(&json!({"x": 3}), &local).unwrap_err(),
            "key x must be a string"
        );
    }
}
