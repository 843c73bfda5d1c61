//! Checks a plugin's configuration against the JSON Schema it publishes.
//! Supported: `type`, `properties`, `required`, `additionalProperties: false`,
//! `items`, `enum` — enough to name a misspelt or mistyped key.

use serde_json::Value;

/// Validates `value` against `schema`; the error names the key path.
pub fn validate(value: &Value, schema: &Value) -> Result<(), String> {
    check(value, schema, "")
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the configuration".into()
    } else {
        format!("key {path}")
    }
}

fn type_ok(value: &Value, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(value, t) => {
            return Err(format!("{} must be a {t}", at(path)));
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_ok(value, t)) =>
        {
            return Err(format!("{} has the wrong type", at(path)));
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err(format!(
                "{} must be one of {}",
                at(path),
                Value::Array(allowed.clone())
            ));
        }
    }
    if let Value::Object(map) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = schema.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    let key = if path.is_empty() {
                        r.to_string()
                    } else {
                        format!("{path}.{r}")
                    };
                    return Err(format!("key {key} is required"));
                }
            }
        }
        for (k, v) in map {
            let key = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check(v, sub, &key)?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "key {key} is not known (known keys: {})",
                        known.join(", ")
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(v, item_schema, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
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
        assert!(
            validate(&json!({"rules": [{"name": "a", "kind": []}]}), &schema)
                .unwrap_err()
                .starts_with("key rules[0].kind is not known")
        );
        assert_eq!(
            validate(&json!({"rules": [{"name": 3}]}), &schema).unwrap_err(),
            "key rules[0].name must be a string"
        );
    }
}
