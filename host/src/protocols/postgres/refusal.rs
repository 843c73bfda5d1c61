//! Why a PostgreSQL client's start-up is refused, and the `FATAL` each
//! reason becomes: one enum, worded and given its SQLSTATE in one place
//! (the session code names the reason, never an error's fields).

use super::codec::error_response::ErrorFields;
use super::codec::sqlstate;
use super::upstream::UpstreamError;
use crate::gateway::admission::{Refusal, RefusalKind};

/// A reason to end a connection during start-up.
#[derive(Debug)]
pub enum StartupRefusal {
    /// An `SSLRequest` arrived inside TLS.
    SslInsideTls,
    /// The listener serves as many clients as it may.
    TooManyClients,
    /// A token without TLS from where plaintext is not allowed.
    PlaintextNotAllowed,
    /// A frontend protocol other than 3.x.
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// A replication connection.
    Replication,
    /// No `user` in the start-up message.
    NoUser,
    /// The answer to the password request is not a password message.
    NotAPassword,
    /// Admission refused the session (token, user, target, policy, store).
    Admission(Refusal),
    /// A start-up parameter would leave the upstream role the session is
    /// pinned to; the text says which.
    LeavesPinnedRole(String),
    /// The gateway's upstream credential for `target` is unavailable.
    CredentialUnavailable {
        /// Target name.
        target: String,
    },
    /// The upstream login failed.
    UpstreamLogin {
        /// Target name.
        target: String,
        /// What went wrong.
        error: UpstreamError,
    },
}

impl StartupRefusal {
    /// The `FATAL` the client gets.
    pub fn fields(self) -> ErrorFields {
        use StartupRefusal::*;
        match self {
            SslInsideTls => {
                ErrorFields::fatal(sqlstate::PROTOCOL_VIOLATION, "SSLRequest received inside TLS")
            }
            TooManyClients => ErrorFields::fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            )
            .with_hint("try again later, or ask the gateway operator to raise max_clients"),
            PlaintextNotAllowed => ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "this gateway accepts tokens only over TLS",
            )
            .with_hint("connect with sslmode=require (or verify-full)"),
            UnsupportedProtocol { major, minor } => ErrorFields::fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unsupported frontend protocol {major}.{minor}: the gateway speaks 3.0"),
            ),
            Replication => ErrorFields::fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "replication connections are not supported through the gateway",
            ),
            NoUser => ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "no user name in the start-up message",
            )
            .with_hint("set user to the name in your token (e.g. your e-mail address)"),
            NotAPassword => {
                ErrorFields::fatal(sqlstate::PROTOCOL_VIOLATION, "expected a password message")
            }
            Admission(r) => admission_error(r),
            LeavesPinnedRole(why) => ErrorFields::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, why),
            CredentialUnavailable { target } => ErrorFields::fatal(
                sqlstate::UNABLE_TO_CONNECT,
                format!(
                    "the gateway cannot log in to target \"{target}\": its credential is unavailable"
                ),
            )
            .with_hint("tell the gateway operator; the gateway log has the details"),
            UpstreamLogin { target, error } => {
                let code = match error {
                    UpstreamError::Rejected { .. } => sqlstate::SERVER_REJECTED_CONNECTION,
                    _ => sqlstate::UNABLE_TO_CONNECT,
                };
                ErrorFields::fatal(
                    code,
                    format!("cannot open a session on target \"{target}\": {error}"),
                )
                .with_hint("try again; if it persists, tell the gateway operator")
            }
        }
    }
}

impl From<Refusal> for StartupRefusal {
    fn from(r: Refusal) -> Self {
        StartupRefusal::Admission(r)
    }
}

/// The `FATAL` for a refused admission: the SQLSTATE for its kind.
fn admission_error(r: Refusal) -> ErrorFields {
    use RefusalKind::*;
    let code = match r.kind {
        BadCredential => sqlstate::INVALID_PASSWORD,
        NotAuthorized => sqlstate::INVALID_AUTHORIZATION,
        UnknownTarget => sqlstate::INVALID_CATALOG_NAME,
        PolicyRefused => sqlstate::INSUFFICIENT_PRIVILEGE,
        Unavailable => sqlstate::SYSTEM_ERROR,
    };
    let hint = match (r.hint, r.kind) {
        (Some(h), _) => Some(h),
        (None, UnknownTarget) => Some("set dbname to the name of a configured target".to_string()),
        (None, _) => None,
    };
    let fields = ErrorFields::fatal(code, r.message);
    match hint {
        Some(h) => fields.with_hint(h),
        None => fields,
    }
}
