//! Reading delegation from verified claims: the RFC 8693 `act` claim (the
//! actor chain, current actor outermost) and the gateway's own `portcullis`
//! claim (narrowed targets, read-only, depth, parent and root token ids).

use serde_json::{Map, Value};

use super::Delegation;

/// Longest actor chain read (deeper nesting is cut off).
const MAX_CHAIN: usize = 32;

/// The actors of a token's `act` claim, outermost (the current actor) first.
pub fn actor_chain(claims: &Map<String, Value>) -> Vec<String> {
    let mut chain = Vec::new();
    let mut act = claims.get("act");
    while let Some(Value::Object(a)) = act {
        if chain.len() >= MAX_CHAIN {
            break;
        }
        match a.get("sub").and_then(Value::as_str) {
            Some(sub) => chain.push(sub.to_string()),
            None => break,
        }
        act = a.get("act");
    }
    chain
}

/// The delegation a token carries, if it is a delegated token.
pub fn delegation(claims: &Map<String, Value>) -> Option<Delegation> {
    let p = claims.get("portcullis")?.as_object()?;
    let jti = claims.get("jti").and_then(Value::as_str)?.to_string();
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    Some(Delegation {
        root: p
            .get("root")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| jti.clone()),
        jti,
        parent: p.get("parent").and_then(Value::as_str).map(str::to_string),
        depth: p.get("depth").and_then(Value::as_u64).unwrap_or(1) as u32,
        ancestors: p.get("ancestors").and_then(strings).unwrap_or_default(),
        targets: p.get("targets").and_then(strings),
        // Anything but an explicit false is read-only: fail closed.
        read_only: p.get("read_only").and_then(Value::as_bool) != Some(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_nested_actor_chain_current_actor_first() {
        let claims = json!({"sub": "alice", "act": {"sub": "agent:c", "act": {"sub": "agent:b"}}});
        let Value::Object(m) = claims else { return };
        assert_eq!(actor_chain(&m), vec!["agent:c", "agent:b"]);
        assert_eq!(delegation(&m), None);
    }

    #[test]
    fn reads_the_gateway_claim_and_fails_closed_on_read_only() {
        let claims = json!({"jti": "t2", "portcullis": {"parent": "t1", "root": "t1", "depth": 2, "targets": ["orders"]}});
        let Value::Object(m) = claims else { return };
        let d = delegation(&m).expect("delegated");
        assert_eq!(d.targets, Some(vec!["orders".to_string()]));
        assert!(d.read_only, "a missing read_only means read-only");
        assert_eq!(
            (d.depth, d.parent.as_deref(), d.root.as_str()),
            (2, Some("t1"), "t1")
        );
    }
}
