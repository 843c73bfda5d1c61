//! The token endpoint (RFC 8693 token exchange): who asks (the subject
//! token), for whom (the actor), and how much narrower. Every dimension is
//! checked against the parent — targets, groups, read-only, lifetime, depth —
//! and a request to widen any of them is refused with a standard error.
//!
//! Request (form-encoded): `grant_type =
//! urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token`,
//! optional `actor_token`, and the narrowing: `target` (repeatable; the
//! targets the child may use), `read_only` (`true`), `group` (repeatable; a
//! subset of the parent's groups), `expires_in` (seconds), `actor` (the
//! child's label, e.g. `agent:report-writer`; defaults to the actor token's
//! user).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::GatewayIssuer;
use crate::config::Target;
use crate::identity::Authenticator;

/// RFC 8693 grant type.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of what the endpoint issues.
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Lifetime of a minted token when the request names none.
const DEFAULT_TTL_SECS: u64 = 900;

/// A refused exchange: the OAuth error code and a description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct ExchangeError {
    /// `invalid_request`, `invalid_grant`, `invalid_target`, `invalid_scope`,
    /// `unsupported_grant_type`.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub description: String,
}

fn refuse(code: &'static str, description: impl Into<String>) -> ExchangeError {
    ExchangeError {
        code,
        description: description.into(),
    }
}

/// Form fields, repeated keys kept in order.
fn parse_form(body: &str) -> HashMap<String, Vec<String>> {
    let mut fields: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(body.as_bytes()).into_owned() {
        fields.entry(k).or_default().push(v);
    }
    fields
}

/// The parent's scope: what the child may at most have.
struct Scope {
    ancestors: Vec<String>,
    targets: Option<Vec<String>>,
    read_only: bool,
    depth: u32,
    root: Option<String>,
    parent: Option<String>,
}

/// Performs an exchange; returns the token response (RFC 8693 §2.2.1).
pub async fn exchange(
    body: &str,
    authenticator: &Authenticator,
    issuer: &GatewayIssuer,
    targets: &HashMap<String, Target>,
    revocations: &super::revocations::Revocations,
) -> Result<Value, ExchangeError> {
    let form = parse_form(body);
    let one = |k: &str| form.get(k).and_then(|v| v.first()).map(String::as_str);
    let many = |k: &str| -> Vec<String> {
        form.get(k)
            .map(|v| {
                v.iter()
                    .flat_map(|s| s.split([',', ' ']))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    match one("grant_type") {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(refuse(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported; use {GRANT_TYPE}"),
            ))
        }
        None => return Err(refuse("invalid_request", "grant_type is missing")),
    }
    let subject_token = one("subject_token")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse("invalid_request", "subject_token is missing"))?;
    let parent = authenticator
        .authenticate(subject_token)
        .await
        .map_err(|e| refuse("invalid_grant", format!("subject_token refused: {e}")))?;
    if let Some(d) = &parent.delegation {
        if let Some(jti) = revocations.revoked_in(d) {
            return Err(refuse(
                "invalid_grant",
                format!("the subject_token was revoked (token {jti} of its chain)"),
            ));
        }
    }
    let actor_identity = match one("actor_token").map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(
            authenticator
                .authenticate(t)
                .await
                .map_err(|e| refuse("invalid_grant", format!("actor_token refused: {e}")))?,
        ),
        None => None,
    };
    let actor = match (one("actor").filter(|a| !a.is_empty()), &actor_identity) {
        (Some(a), _) if !is_agent_label(a) => {
            return Err(refuse(
                "invalid_request",
                "actor must be agent:<name>, the name 1 to 64 letters, digits, '.', '_' or '-' (a label cannot name a person: send an actor_token for that)",
            ))
        }
        (Some(a), _) => a.to_string(),
        (None, Some(id)) => id.user.clone(),
        (None, None) => {
            return Err(refuse(
                "invalid_request",
                "name the child: send actor=agent:<name> (or an actor_token)",
            ))
        }
    };
    if actor.len() > 200 || actor.chars().any(char::is_control) {
        return Err(refuse(
            "invalid_request",
            "actor must be a short printable label",
        ));
    }

    let scope = match &parent.delegation {
        Some(d) => Scope {
            ancestors: d.lineage().map(str::to_string).collect(),
            targets: d.targets.clone(),
            read_only: d.read_only,
            depth: d.depth,
            root: Some(d.root.clone()),
            parent: Some(d.jti.clone()),
        },
        None => Scope {
            ancestors: Vec::new(),
            targets: None,
            read_only: false,
            depth: 0,
            root: None,
            parent: None,
        },
    };
    let max_depth = issuer.settings.max_depth;
    if scope.depth + 1 > max_depth {
        return Err(refuse(
            "invalid_request",
            format!(
                "the delegation chain is already {} hops deep; the limit is {max_depth}",
                scope.depth
            ),
        ));
    }

    // Targets: each must exist, be within the parent's, and allow the principal.
    let requested = many("target");
    let child_targets = if requested.is_empty() {
        scope.targets.clone()
    } else {
        for t in &requested {
            let Some(cfg) = targets.get(t) else {
                return Err(refuse(
                    "invalid_target",
                    format!("there is no target \"{t}\""),
                ));
            };
            if scope.targets.as_ref().is_some_and(|p| !p.contains(t)) {
                return Err(refuse(
                    "invalid_target",
                    format!(
                        "the parent token may not use target \"{t}\", so its child may not either"
                    ),
                ));
            }
            if crate::gateway::admission::authorize(&parent, cfg).is_err() {
                return Err(refuse(
                    "invalid_target",
                    format!("user \"{}\" may not use target \"{t}\"", parent.user),
                ));
            }
        }
        let mut t = requested;
        t.sort();
        t.dedup();
        Some(t)
    };

    // Read-only can be added, never removed.
    let read_only = match one("read_only") {
        None => scope.read_only,
        Some("true" | "1") => true,
        Some("false" | "0") if scope.read_only => {
            return Err(refuse(
                "invalid_request",
                "the parent token is read-only, so its child must be too",
            ))
        }
        Some("false" | "0") => false,
        Some(other) => {
            return Err(refuse(
                "invalid_request",
                format!("read_only must be true or false, not {other:?}"),
            ))
        }
    };

    // Groups: a subset of the parent's.
    let requested_groups = many("group");
    let groups = if requested_groups.is_empty() {
        parent.groups.clone()
    } else {
        if let Some(g) = requested_groups.iter().find(|g| !parent.groups.contains(g)) {
            return Err(refuse(
                "invalid_scope",
                format!("the parent token is not in group \"{g}\", so its child may not be"),
            ));
        }
        requested_groups
    };

    // Lifetime: at most max_ttl_secs, never past the parent's expiry.
    let now = crate::demo::issuer::now();
    let ttl = match one("expires_in") {
        None => DEFAULT_TTL_SECS,
        Some(s) => s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
            refuse(
                "invalid_request",
                "expires_in must be a positive number of seconds",
            )
        })?,
    };
    let ttl = ttl.min(issuer.settings.max_ttl_secs);
    let exp = (now + ttl).min(parent.expires_at);
    if exp <= now {
        return Err(refuse("invalid_grant", "the subject_token has expired"));
    }

    // The actor chain, current actor outermost (RFC 8693 §4.1).
    let mut act = Value::Null;
    for a in parent.actor_chain.iter().rev() {
        let mut o = Map::new();
        o.insert("sub".into(), Value::String(a.clone()));
        if !act.is_null() {
            o.insert("act".into(), act);
        }
        act = Value::Object(o);
    }
    let mut outer = Map::new();
    outer.insert("sub".into(), Value::String(actor.clone()));
    if !act.is_null() {
        outer.insert("act".into(), act);
    }
    let jti = format!("tok_{:032x}", rand::random::<u128>());
    let mut portcullis = json!({
        "ancestors": scope.ancestors,
        "read_only": read_only,
        "depth": scope.depth + 1,
        "root": scope.root.clone().unwrap_or_else(|| jti.clone()),
    });
    if let Some(p) = &scope.parent {
        portcullis["parent"] = Value::String(p.clone());
    }
    if let Some(t) = &child_targets {
        portcullis["targets"] = json!(t);
    }
    let claims = json!({
        "iss": issuer.settings.issuer,
        "aud": issuer.settings.audience,
        "sub": parent.subject,
        "preferred_username": parent.user,
        "groups": groups,
        "iat": now,
        "nbf": now,
        "exp": exp,
        "jti": jti,
        "act": Value::Object(outer),
        "portcullis": portcullis,
    });
    tracing::info!(jti = %jti, user = %parent.user, actor = %actor, depth = scope.depth + 1, read_only, "delegated token issued");
    Ok(json!({
        "access_token": issuer.sign(&claims),
        "issued_token_type": JWT_TYPE,
        "token_type": "Bearer",
        "expires_in": exp - now,
    }))
}

/// Whether `label` is a free agent label: `agent:` and 1 to 64 letters,
/// digits, `.`, `_` or `-`. A label is chosen by the requester, so it must
/// not be able to name a person (an e-mail, an approver's user name: the
/// actor chain decides who may approve what) nor carry markup or a link
/// into a chat message.
pub fn is_agent_label(label: &str) -> bool {
    label.strip_prefix("agent:").is_some_and(|name| {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    })
}

#[cfg(test)]
mod label_tests {
    use super::is_agent_label;

    #[test]
    fn only_agent_labels_name_an_actor() {
        for ok in [
            "agent:planner",
            "agent:report-writer",
            "agent:c",
            "agent:v1.2_x",
        ] {
            assert!(is_agent_label(ok), "{ok}");
        }
        for bad in [
            "bob@example.com",
            "agent:bob@example.com",
            "agent:",
            "agent:https://evil.example",
            "agent:<!channel>",
            "planner",
            &format!("agent:{}", "x".repeat(65)),
        ] {
            assert!(!is_agent_label(bad), "{bad}");
        }
    }
}
