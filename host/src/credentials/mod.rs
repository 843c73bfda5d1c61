//! The gateway's own upstream credentials: where each target's password comes
//! from, and caching of short-lived tokens.
//!
//! A target names at most one source: an environment variable, a file, a
//! command, an OAuth2 client-credentials grant or an Azure managed identity.
//! Static sources are read at every upstream login (so a rotated file is
//! picked up); tokens are reused until shortly before they expire and fetched
//! again for the next new upstream connection. Concurrent logins share one
//! fetch.

mod azure;
mod command;
mod oauth2;

use std::time::{Duration, Instant};

use crate::config::Target;
use crate::http_client::HttpClient;

/// Why a credential could not be obtained. Never contains the secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// A secret with the time after which it should be fetched again.
struct Cached {
    secret: String,
    refresh_at: Instant,
}

enum Source {
    None,
    Env(String),
    File(String),
    Command {
        command: String,
        default_ttl: Duration,
    },
    OAuth2(crate::config::OAuth2Source),
    Azure(crate::config::AzureManagedIdentity),
}

/// The credential of one target.
pub struct CredentialProvider {
    source: Source,
    http: HttpClient,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

/// A token and its lifetime as the source reported it.
pub struct FetchedToken {
    /// The token.
    pub secret: String,
    /// Seconds until it expires, when known.
    pub expires_in: Option<u64>,
}

/// When to fetch again: a minute before expiry, or halfway for short tokens.
fn refresh_at(expires_in: Duration) -> Instant {
    let margin = Duration::from_secs(60).min(expires_in / 2);
    Instant::now() + expires_in.saturating_sub(margin)
}

impl CredentialProvider {
    /// The provider for `target`'s configured source.
    pub fn new(target: &Target, http: HttpClient) -> Self {
        let source = if let Some(v) = &target.password_env {
            Source::Env(v.clone())
        } else if let Some(f) = &target.password_file {
            Source::File(f.clone())
        } else if let Some(c) = &target.password_command {
            Source::Command {
                command: c.clone(),
                default_ttl: Duration::from_secs(target.token_cache_secs),
            }
        } else if let Some(o) = &target.oauth2 {
            Source::OAuth2(o.clone())
        } else if let Some(a) = &target.azure_managed_identity {
            Source::Azure(a.clone())
        } else {
            Source::None
        };
        Self {
            source,
            http,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The password for the next upstream login (`None` = trust).
    pub async fn password(&self) -> Result<Option<String>, CredentialError> {
        let fetch_ttl = match &self.source {
            Source::None => return Ok(None),
            Source::Env(var) => {
                return std::env::var(var)
                    .map(Some)
                    .map_err(|_| CredentialError(format!("environment variable {var} is not set")))
            }
            Source::File(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| CredentialError(format!("cannot read {file}: {e}")))?;
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
            }
            Source::Command { default_ttl, .. } => *default_ttl,
            Source::OAuth2(_) | Source::Azure(_) => Duration::from_secs(300),
        };
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(Some(c.secret.clone()));
            }
        }
        let fetched = match &self.source {
            Source::Command { command, .. } => command::run(command).await?,
            Source::OAuth2(o) => oauth2::fetch(&self.http, o).await?,
            Source::Azure(a) => azure::fetch(&self.http, a).await?,
            Source::None | Source::Env(_) | Source::File(_) => {
                return Err(CredentialError("unreachable credential source".into()))
            }
        };
        let ttl = fetched
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(fetch_ttl);
        *cache = Some(Cached {
            secret: fetched.secret.clone(),
            refresh_at: refresh_at(ttl),
        });
        Ok(Some(fetched.secret))
    }
}

/// Seconds until the `exp` of a JWT-shaped string, read without verification
/// (the gateway only uses it to decide when to fetch again).
pub fn jwt_expires_in(token: &str) -> Option<u64> {
    let exp = crate::identity::unverified_expiry(token)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(exp.saturating_sub(now))
}

fn json_expiry(v: &serde_json::Value) -> Option<u64> {
    let field = |k: &str| match v.get(k) {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    field("expires_in")
}
