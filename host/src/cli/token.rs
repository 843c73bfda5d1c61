//! `portcullis token exchange|inspect|revoke`: mint a narrower token for a
//! child agent, read a token's chain and scope in plain words, revoke one.

use std::io::Write;

use base64::Engine;
use serde_json::Value;

use super::{AdminClient, CliError};
use crate::store::format_time;

/// What `token exchange` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExchangeArgs {
    /// The parent token.
    pub subject_token: String,
    /// The child's label.
    pub actor: String,
    /// Targets (empty: the parent's).
    pub targets: Vec<String>,
    /// Groups (empty: the parent's).
    pub groups: Vec<String>,
    /// Read-only child.
    pub read_only: bool,
    /// Lifetime in seconds.
    pub ttl_secs: Option<u64>,
}

/// Parses `90s`, `10m`, `2h` or plain seconds.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = match t.chars().last()? {
        's' => (&t[..t.len() - 1], 1),
        'm' => (&t[..t.len() - 1], 60),
        'h' => (&t[..t.len() - 1], 3600),
        c if c.is_ascii_digit() => (t, 1),
        _ => return None,
    };
    num.parse::<u64>().ok().filter(|n| *n > 0).map(|n| n * mult)
}

/// `token exchange`: prints the child token.
pub async fn exchange(
    client: &AdminClient,
    args: &ExchangeArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let ttl = args.ttl_secs.map(|t| t.to_string());
    let mut fields: Vec<(&str, &str)> = vec![
        ("grant_type", crate::delegation::exchange::GRANT_TYPE),
        ("subject_token", args.subject_token.as_str()),
        ("actor", args.actor.as_str()),
    ];
    for t in &args.targets {
        fields.push(("target", t));
    }
    for g in &args.groups {
        fields.push(("group", g));
    }
    if args.read_only {
        fields.push(("read_only", "true"));
    }
    if let Some(t) = &ttl {
        fields.push(("expires_in", t));
    }
    let answer = client.post_form("/oauth/token", &fields).await?;
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| CliError::Answer("no access_token in the answer".into()))?;
    writeln!(out, "{token}")?;
    Ok(())
}

/// The claims of a JWT, decoded without verifying it.
pub fn claims(token: &str) -> Result<Value, CliError> {
    let payload =
        token.trim().split('.').nth(1).ok_or_else(|| {
            CliError::Usage("not a JWT (expected three dot-separated parts)".into())
        })?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| CliError::Usage(format!("not a JWT: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| CliError::Usage(format!("not a JWT: {e}")))
}

/// `token inspect`: the token's chain and scope in plain words.
pub fn inspect(token: &str, now_secs: u64) -> Result<String, CliError> {
    let c = claims(token)?;
    let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
    let user = c["preferred_username"]
        .as_str()
        .or(c["email"].as_str())
        .unwrap_or(c["sub"].as_str().unwrap_or("-"))
        .to_string();
    let mut chain = Vec::new();
    let mut act = &c["act"];
    while let Some(sub) = act["sub"].as_str() {
        chain.push(sub.to_string());
        act = &act["act"];
    }
    let who = crate::identity::chain_text(&user, &chain);
    let exp = c["exp"].as_u64().unwrap_or(0);
    let left = if exp > now_secs {
        format!(
            "expires in {}",
            crate::identity::human_duration(exp - now_secs)
        )
    } else {
        format!(
            "EXPIRED {} ago",
            crate::identity::human_duration(now_secs - exp)
        )
    };
    let groups: Vec<&str> = c["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut text = format!(
        "token (decoded, not verified)\n  principal: {user} (sub {})\n  acting:    {who}\n  issuer:    {}\n  groups:    {}\n  expires:   {} ({left})\n",
        s("sub"),
        s("iss"),
        if groups.is_empty() { "-".to_string() } else { groups.join(", ") },
        format_time(exp as i64 * 1_000_000),
    );
    let p = &c["portcullis"];
    if p.is_object() {
        let targets = p["targets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "every target the principal may use".into());
        text.push_str(&format!(
            "  delegated: depth {}, token {}, parent {}, root {}\n  targets:   {targets}\n  read-only: {}\n",
            p["depth"].as_u64().unwrap_or(0),
            s("jti"),
            p["parent"].as_str().unwrap_or("(the principal's own token)"),
            p["root"].as_str().unwrap_or("-"),
            if p["read_only"].as_bool() == Some(false) { "no" } else { "yes" },
        ));
    } else {
        text.push_str("  delegated: no (a token from an identity provider)\n");
    }
    Ok(text)
}

/// `token revoke <jti>`.
pub async fn revoke(client: &AdminClient, jti: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let answer = client
        .json(
            hyper::Method::POST,
            &format!("/v1/tokens/{}/revoke", super::encode(jti)),
            None,
        )
        .await?;
    writeln!(
        out,
        "revoked {jti} and every token minted from it; {} live session(s) closed",
        answer["sessions_closed"].as_u64().unwrap_or(0)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(parse_ttl("10m"), Some(600));
        assert_eq!(parse_ttl("2h"), Some(7200));
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("0m"), None);
        assert_eq!(parse_ttl("soon"), None);
    }

    #[test]
    fn inspect_shows_the_chain_and_scope() {
        let claims = serde_json::json!({
            "iss": "urn:portcullis:gateway", "sub": "alice", "preferred_username": "alice@example.com",
            "groups": ["testers"], "exp": 2_000_000_000u64, "jti": "tok_2",
            "act": {"sub": "agent:b", "act": {"sub": "agent:a"}},
            "portcullis": {"depth": 2, "parent": "tok_1", "root": "tok_1", "targets": ["orders"], "read_only": true}
        });
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let text = inspect(&format!("e30.{payload}.sig"), 1_999_999_000).unwrap_or_default();
        assert!(
            text.contains("acting:    alice@example.com > agent:a > agent:b"),
            "{text}"
        );
        assert!(text.contains("targets:   orders"), "{text}");
        assert!(text.contains("read-only: yes"), "{text}");
        assert!(text.contains("expires in"), "{text}");
    }
}
