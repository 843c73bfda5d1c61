//! Admission: from a token to an open, recorded session, the same for every
//! protocol.
//!
//! A protocol reads the token and the names the client asked for in its own
//! way, then calls, in order:
//!
//! 1. [`authenticate`] — the token is valid, none of its delegation chain
//!    is revoked, and it names the user the client claimed;
//! 2. [`authorize`] — the identity may use the target;
//! 3. [`open_session`] — a session id, the target's policy session and the
//!    session record (stored before the session starts on a strict target).
//!
//! Each step fails with a [`Refusal`] that says what went wrong and what to
//! do; the protocol turns it into its own error (PostgreSQL: a `FATAL`
//! `ErrorResponse` with the SQLSTATE for its [`RefusalKind`]).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::{Durability, Target};
use crate::delegation::revocations::Revocations;
use crate::identity::{Authenticator, Identity};
use crate::policy::{Policy, SessionInfo, SessionPolicy, SessionRefused};
use crate::store::{now_micros, Record, SessionRecord};

/// What kind of refusal, for the protocol's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The token is invalid, expired or revoked.
    BadCredential,
    /// The identity is valid but may not do this.
    NotAuthorized,
    /// No such target on this gateway.
    UnknownTarget,
    /// The target's policy refused the session.
    PolicyRefused,
    /// The gateway cannot serve sessions right now (the audit store).
    Unavailable,
}

/// Why a client was not admitted: a message that says what went wrong and
/// a hint that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For the protocol's error code.
    pub kind: RefusalKind,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

/// "password authentication failed" and, when the client named one, for
/// which user.
fn failed_for(claimed_user: Option<&str>) -> String {
    match claimed_user {
        Some(u) => format!("password authentication failed for user \"{u}\""),
        None => "authentication failed".to_string(),
    }
}

/// Step 1: validates `token` and checks that it names `claimed_user`, for
/// protocols where the client names a user (PostgreSQL's `user`; an SSH
/// login name names the target instead, so SSH claims none).
pub async fn authenticate(
    authenticator: &Authenticator,
    revocations: &Revocations,
    token: &str,
    claimed_user: Option<&str>,
    peer: SocketAddr,
) -> Result<Identity, Refusal> {
    let identity = match authenticator.authenticate(token).await {
        Ok(id) => id,
        Err(e) => {
            crate::metrics::global().auth_failure(e.label());
            tracing::info!(%peer, user = claimed_user.unwrap_or(""), reason = %e, "authentication failed");
            return Err(Refusal::new(
                RefusalKind::BadCredential,
                format!("{}: {e}", failed_for(claimed_user)),
                Some(e.hint()),
            ));
        }
    };
    // The authenticator checked expiry (with its leeway).
    not_revoked(&identity, revocations, claimed_user)?;
    let Some(claimed_user) = claimed_user else {
        return Ok(identity);
    };
    if identity.user != claimed_user {
        return Err(Refusal::new(
            RefusalKind::NotAuthorized,
            format!(
                "user \"{claimed_user}\" does not match token user \"{}\"",
                identity.user
            ),
            Some("set user to the name in your token"),
        ));
    }
    Ok(identity)
}

/// Whether an identity admitted earlier (and kept, as behind an SSH
/// certificate the gateway minted) still holds: its token has not expired
/// and neither it nor any token it was delegated from was revoked.
pub fn still_valid(
    identity: &Identity,
    revocations: &Revocations,
    claimed_user: Option<&str>,
) -> Result<(), Refusal> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if identity.expires_at <= now {
        crate::metrics::global().auth_failure("expired");
        return Err(Refusal::new(
            RefusalKind::BadCredential,
            format!("{}: the token has expired", failed_for(claimed_user)),
            Some("get a fresh token"),
        ));
    }
    not_revoked(identity, revocations, claimed_user)
}

/// Refuses an identity whose delegated token, or a token it descends
/// from, was revoked.
fn not_revoked(
    identity: &Identity,
    revocations: &Revocations,
    claimed_user: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(jti) = identity
        .delegation
        .as_ref()
        .and_then(|d| revocations.revoked_in(d))
    {
        crate::metrics::global().auth_failure("revoked");
        return Err(Refusal::new(
            RefusalKind::BadCredential,
            format!(
                "{}: the token was revoked (token {jti} of its delegation chain)",
                failed_for(claimed_user)
            ),
            Some("ask whoever delegated to you for a new token"),
        ));
    }
    Ok(())
}

/// Step 2: whether `identity` may use `target` (`None`: there is no target
/// of that name; `config` reads a protocol's target's configuration), and
/// the target if so. A delegated token is limited to the targets it names.
pub fn admit_to<'t, T>(
    identity: &Identity,
    target_name: &str,
    target: Option<&'t T>,
    config: impl Fn(&T) -> &Target,
) -> Result<&'t T, Refusal> {
    let Some(found) = target else {
        return Err(Refusal::new(
            RefusalKind::UnknownTarget,
            format!("target \"{target_name}\" does not exist on this gateway"),
            // How a client names a target is the protocol's to say.
            None,
        ));
    };
    match authorize(identity, config(found)) {
        Ok(()) => Ok(found),
        Err(why) => Err(Refusal::new(
            RefusalKind::NotAuthorized,
            why,
            Some("ask the gateway operator for access to this target"),
        )),
    }
}

/// Whether `identity` may use `target`; `Err` says why not. A delegated
/// token is limited to the targets it names.
pub fn authorize(identity: &Identity, target: &Target) -> Result<(), String> {
    if let Some(d) = &identity.delegation {
        if let Some(targets) = &d.targets {
            if !targets.contains(&target.name) {
                return Err(format!(
                    "this delegated token is limited to {}; it may not use target \"{}\"",
                    targets.join(", "),
                    target.name
                ));
            }
        }
    }
    if target.allow_users.contains(&identity.user) {
        return Ok(());
    }
    if identity
        .groups
        .iter()
        .any(|g| target.allow_groups.contains(g))
    {
        return Ok(());
    }
    Err(format!(
        "user \"{}\" is not allowed to use target \"{}\" (allowed groups: {})",
        identity.user,
        target.name,
        if target.allow_groups.is_empty() {
            "none".to_string()
        } else {
            target.allow_groups.join(", ")
        }
    ))
}

/// Step 3: a session id, the policy session and the session record.
pub async fn open_session(
    audit: &AuditLog,
    target: &Target,
    policy: &Arc<dyn Policy>,
    identity: &Identity,
    peer: SocketAddr,
    application_name: Option<&str>,
) -> Result<(SessionInfo, Box<dyn SessionPolicy>), Refusal> {
    let retry = Some("try again shortly; tell the gateway operator if it persists");
    let session_id = match audit.next_session_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "no session id: the audit store cannot be written");
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                "the gateway cannot record new sessions right now, so it refuses them",
                retry,
            ));
        }
    };
    let info = SessionInfo {
        session_id,
        identity: identity.clone(),
        target: target.name.clone(),
        protocol: target.protocol.as_str(),
        client_addr: peer,
        application_name: application_name.map(str::to_string),
    };
    let session = policy
        .start_session(&info)
        .map_err(|SessionRefused { reason }| {
            Refusal::new(
                RefusalKind::PolicyRefused,
                format!("session refused by gateway policy: {reason}"),
                None,
            )
        })?;
    let record = Record::SessionStart(session_record(&info));
    if target.durability == Durability::Strict {
        if let Err(e) = audit.record_durably(record).await {
            tracing::error!(error = %e, target = %target.name, "session refused: it could not be recorded");
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                format!("target \"{}\" records every session before it starts, and the gateway cannot record right now", target.name),
                retry,
            ));
        }
    } else {
        audit.record(record).await;
    }
    Ok((info, session))
}

/// The audit store's record of a session as it starts.
fn session_record(info: &SessionInfo) -> SessionRecord {
    SessionRecord {
        id: info.session_id,
        started_at: now_micros(),
        identity: (&info.identity).into(),
        target: info.target.clone(),
        protocol: info.protocol.to_string(),
        client_addr: info.client_addr.to_string(),
        application_name: info.application_name.clone(),
        ended_at: None,
        end_reason: None,
        bytes_from_client: 0,
        bytes_to_client: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        toml::from_str(
            r#"
name = "shop"
host = "127.0.0.1"
user = "gateway"
database = "shop"
allow_groups = ["analysts"]
"#,
        )
        .expect("target")
    }

    fn person(groups: &[&str]) -> Identity {
        Identity {
            subject: "s".into(),
            user: "alice@example.com".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: "https://issuer.example".into(),
            actor_chain: Vec::new(),
            expires_at: 0,
            delegation: None,
        }
    }

    #[test]
    fn a_target_admits_its_groups_and_names_what_is_missing() {
        let t = target();
        let found = admit_to(&person(&["analysts"]), "shop", Some(&t), |t| t).expect("admitted");
        assert_eq!(found.name, "shop");
        let r = admit_to(&person(&["sales"]), "shop", Some(&t), |t| t).expect_err("refused");
        assert_eq!(r.kind, RefusalKind::NotAuthorized);
        assert!(
            r.message.contains("allowed groups: analysts"),
            "{}",
            r.message
        );
        let r =
            admit_to::<Target>(&person(&["analysts"]), "nope", None, |t| t).expect_err("no target");
        assert_eq!(r.kind, RefusalKind::UnknownTarget);
        assert!(r.message.contains("\"nope\""), "{}", r.message);
    }
}
