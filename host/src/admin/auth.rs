//! Who is calling the admin API and what they may do: a bearer OIDC token
//! of a member of an admin or approver group, or the static admin token.

use hyper::StatusCode;

use super::AdminState;
use crate::identity::Identity;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read sessions and decide approvals.
    Approver,
    /// Everything.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's identity; `None` for the static admin token.
    pub identity: Option<Identity>,
    /// The highest role the caller has.
    pub role: Role,
}

impl Caller {
    /// The caller's name for logs and records.
    pub fn name(&self) -> String {
        match &self.identity {
            Some(i) => i.user.clone(),
            None => "admin-token".into(),
        }
    }

    /// Whether the caller may see sessions and approval requests of
    /// `target`: a delegated token narrowed to some targets sees only those.
    pub fn may_see(&self, target: &str) -> bool {
        match self.narrowed_to() {
            Some(targets) => targets.iter().any(|t| t == target),
            None => true,
        }
    }

    /// The targets a delegated token was narrowed to, if it was.
    fn narrowed_to(&self) -> Option<&[String]> {
        self.identity
            .as_ref()
            .and_then(|i| i.delegation.as_ref())
            .and_then(|d| d.targets.as_deref())
    }
}

/// Whether `method` only reads.
fn reads_only(method: &hyper::Method) -> bool {
    matches!(
        *method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    )
}

/// What a delegated token may not do on the admin API, whatever its groups:
/// a revoked one nothing; a read-only one nothing but reads; one narrowed
/// to some targets nothing that spans every target (admin endpoints).
fn check_delegation(
    identity: &Identity,
    state: &AdminState,
    method: &hyper::Method,
    needed: Role,
) -> Result<(), (StatusCode, String)> {
    let Some(d) = &identity.delegation else {
        return Ok(());
    };
    if let Some(jti) = state.gw.revocations.revoked_in(d) {
        crate::metrics::global().auth_failure("revoked");
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("token refused: it was revoked (token {jti} of its delegation chain); ask whoever delegated to you for a new token"),
        ));
    }
    if d.read_only && !reads_only(method) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "user \"{}\" holds a read-only delegated token: it may read, but not approve, deny, revoke or reload",
                identity.user
            ),
        ));
    }
    if let (Some(targets), Role::Admin) = (&d.targets, needed) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "user \"{}\" holds a delegated token narrowed to {}: it may not use admin endpoints, which span every target",
                identity.user,
                targets.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Authenticates the `Authorization` header and checks `needed`; the error
/// is the status (401 or 403) and a message.
pub async fn authorize(
    header: Option<&str>,
    state: &AdminState,
    method: &hyper::Method,
    needed: Role,
) -> Result<Caller, (StatusCode, String)> {
    let token = header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or((
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <OIDC token or admin token>"
                .to_string(),
        ))?;
    let caller = match &state.static_token {
        Some(t) if same(t, token) => Caller {
            identity: None,
            role: Role::Admin,
        },
        _ => {
            let identity = state
                .gw
                .authenticator
                .authenticate(token)
                .await
                .map_err(|e| {
                    crate::metrics::global().auth_failure(e.label());
                    (StatusCode::UNAUTHORIZED, format!("token refused: {e}"))
                })?;
            check_delegation(&identity, state, method, needed)?;
            let in_any = |groups: &[String]| identity.groups.iter().any(|g| groups.contains(g));
            let role = if in_any(&state.settings.admin_groups) {
                Role::Admin
            } else if in_any(state.gw.approvals.approver_groups()) {
                Role::Approver
            } else {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "user \"{}\" is in none of the admin groups ({}) or approver groups ({})",
                        identity.user,
                        state.settings.admin_groups.join(", "),
                        state.gw.approvals.approver_groups().join(", ")
                    ),
                ));
            };
            Caller {
                identity: Some(identity),
                role,
            }
        }
    };
    if caller.role < needed {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "user \"{}\" may not do this: it needs a member of the admin groups ({})",
                caller.name(),
                state.settings.admin_groups.join(", ")
            ),
        ));
    }
    Ok(caller)
}
