//! Who is connecting: validates the OIDC token a client sends as its password
//! and turns it into an [`Identity`].
//!
//! - `token` splits a JWT and reads its header and claims *before* trusting
//!   them, so refusals can say precisely what is wrong;
//! - `jwks` keeps each issuer's signing keys, refreshed on unknown `kid`
//!   (rate-limited) and when stale;
//! - `provider` checks one token against one issuer's rules;
//! - this module picks the provider by `iss`.

pub mod delegated;
pub mod jwks;
pub mod provider;
mod token;

pub use token::b64url;

use std::sync::Arc;

pub use provider::Provider;

use crate::config::IdentityProvider;
use crate::http_client::HttpClient;

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// An authenticated principal, as plugins and audit records see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `sub` claim.
    pub subject: String,
    /// Value of the provider's user claim (what `user` in startup must equal).
    pub user: String,
    /// Groups from the provider's groups claim.
    pub groups: Vec<String>,
    /// `iss` claim.
    pub issuer: String,
    /// Actors between the subject and this connection (empty until delegation).
    pub actor_chain: Vec<String>,
    /// Token expiry (seconds since the epoch).
    pub expires_at: u64,
    /// The narrowed scope of a delegated token (`None` for a principal's own).
    pub delegation: Option<Delegation>,
}

impl Delegation {
    /// This token and its ancestors: revoking any of them revokes it.
    pub fn lineage(&self) -> impl Iterator<Item = &str> {
        self.ancestors
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.jti.as_str()))
    }
}

impl Identity {
    /// The principal and the agents acting for it, in the order they
    /// delegated: `alice@example.com > agent:planner > agent:report-writer`.
    pub fn chain_text(&self) -> String {
        chain_text(&self.user, &self.actor_chain)
    }
}

/// `alice@example.com > agent:planner > agent:report-writer` for a user and
/// its actor chain (outermost, i.e. current, actor first).
pub fn chain_text(user: &str, actor_chain: &[String]) -> String {
    std::iter::once(user)
        .chain(actor_chain.iter().rev().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" > ")
}

/// What a delegated token (minted by a gateway through token exchange) may
/// do, and where it sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delegation {
    /// This token's id (`jti`).
    pub jti: String,
    /// The token it was minted from, if that was a delegated token too.
    pub parent: Option<String>,
    /// The first delegated token of the chain.
    pub root: String,
    /// Hops from the principal's own token (1 = minted from it).
    pub depth: u32,
    /// The delegated tokens it descends from, root first (parent last).
    pub ancestors: Vec<String>,
    /// Targets it may use (`None`: every target the principal may use).
    pub targets: Option<Vec<String>>,
    /// Whether only statements that cannot write may run.
    pub read_only: bool,
}

/// Why a token was refused. Messages never contain the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The password is not a JWT at all.
    #[error("the password is not a token: send an OIDC access token from your identity provider as the password")]
    NotAToken,
    /// The token is larger than [`MAX_TOKEN_BYTES`].
    #[error("token is larger than 64 KiB")]
    TooLarge,
    /// The header or payload is not valid base64url JSON.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// `alg` is `none`.
    #[error("token algorithm \"none\" is never accepted: tokens must be signed")]
    AlgNone,
    /// `alg` is not in the provider's allow-list.
    #[error("token algorithm {alg} is not allowed for issuer {issuer} (allowed: {allowed})")]
    AlgNotAllowed {
        /// Header `alg`.
        alg: String,
        /// Issuer.
        issuer: String,
        /// Allowed list.
        allowed: String,
    },
    /// The token has a `crit` header.
    #[error("token has a \"crit\" header with extensions this gateway does not understand")]
    Crit,
    /// No provider has this issuer.
    #[error("token issuer {0:?} is not a configured identity provider")]
    UnknownIssuer(String),
    /// The token has no `iss`.
    #[error("token has no issuer (iss claim)")]
    NoIssuer,
    /// No key with this kid.
    #[error("signing key kid={kid} is not published by issuer {issuer}")]
    UnknownKey {
        /// Header `kid`.
        kid: String,
        /// Issuer.
        issuer: String,
    },
    /// `alg` does not fit the key type.
    #[error("token algorithm {alg} does not match the {kty} key kid={kid}")]
    KeyMismatch {
        /// Header `alg`.
        alg: String,
        /// Key type of the JWK.
        kty: String,
        /// Key id.
        kid: String,
    },
    /// The signature is wrong.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` missing.
    #[error("token has no expiry (exp claim); only short-lived tokens are accepted")]
    NoExpiry,
    /// `iat` missing while the provider requires it (RFC 9068).
    #[error("token has no issued-at time (iat claim), which access tokens must carry (RFC 9068)")]
    NoIssuedAt,
    /// `exp` passed.
    #[error("token expired {0} ago")]
    Expired(String),
    /// `nbf` in the future.
    #[error("token is not valid yet (valid in {0})")]
    NotYetValid(String),
    /// `iat` in the future.
    #[error("token was issued in the future (in {0}); check the clocks")]
    IssuedInFuture(String),
    /// `aud` does not contain an accepted audience.
    #[error("token audience is {found}, expected {expected}")]
    Audience {
        /// What the token says.
        found: String,
        /// What the provider accepts.
        expected: String,
    },
    /// The user claim is missing.
    #[error("token has no {0:?} claim to name the user")]
    NoUserClaim(String),
    /// Keys could not be fetched.
    #[error("cannot fetch signing keys of issuer {issuer}: {message}")]
    KeysUnavailable {
        /// Issuer.
        issuer: String,
        /// Cause.
        message: String,
    },
}

impl AuthError {
    /// A short, stable label for metrics (`expired`, `bad_signature`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::NotAToken => "not_a_token",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed(_) => "malformed",
            AuthError::AlgNone | AuthError::AlgNotAllowed { .. } => "algorithm",
            AuthError::Crit => "crit",
            AuthError::UnknownIssuer(_) | AuthError::NoIssuer => "issuer",
            AuthError::UnknownKey { .. } | AuthError::KeyMismatch { .. } => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::NoExpiry => "no_expiry",
            AuthError::NoIssuedAt => "no_issued_at",
            AuthError::Expired(_) => "expired",
            AuthError::NotYetValid(_) | AuthError::IssuedInFuture(_) => "not_yet_valid",
            AuthError::Audience { .. } => "audience",
            AuthError::NoUserClaim(_) => "no_user_claim",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
        }
    }

    /// A hint for the client on what to do next.
    pub fn hint(&self) -> &'static str {
        match self {
            AuthError::Expired(_) | AuthError::NotYetValid(_) | AuthError::IssuedInFuture(_) => {
                "get a fresh token from your identity provider and connect again"
            }
            AuthError::KeysUnavailable { .. } => {
                "the gateway could not reach the identity provider; try again or tell the gateway operator"
            }
            AuthError::NoIssuedAt => {
                "use an access token rather than another kind of token, or ask the gateway operator to set require_iat = false for this issuer"
            }
            _ => "use an access token issued for this gateway by a configured identity provider as the password",
        }
    }
}

/// All configured providers, selected by the token's `iss`.
#[derive(Clone)]
pub struct Authenticator {
    providers: Arc<Vec<Provider>>,
}

impl Authenticator {
    /// Builds providers from configuration (no network access yet).
    pub fn new(configs: &[IdentityProvider], http: HttpClient) -> std::io::Result<Self> {
        let providers = configs
            .iter()
            .map(|c| Provider::new(c.clone(), http.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            providers: Arc::new(providers),
        })
    }

    /// Like [`Self::new`], plus the gateway's own issuer of delegated tokens
    /// with fixed keys.
    pub fn with_own_issuer(
        configs: &[IdentityProvider],
        http: HttpClient,
        own: Option<(IdentityProvider, Vec<jwks::KeyEntry>)>,
    ) -> std::io::Result<Self> {
        let mut providers = configs
            .iter()
            .map(|c| Provider::new(c.clone(), http.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        if let Some((cfg, keys)) = own {
            providers.push(Provider::with_fixed_keys(cfg, http, keys));
        }
        Ok(Self {
            providers: Arc::new(providers),
        })
    }

    /// Fetches every provider's keys once, so the first client does not wait.
    /// Failures are logged, not fatal: keys are fetched again on demand.
    pub async fn prefetch(&self) {
        for p in self.providers.iter() {
            if let Err(e) = p.refresh_keys().await {
                tracing::warn!(provider = %p.name(), error = %e, "could not fetch signing keys at start-up");
            }
        }
    }

    /// Names of providers whose signing keys are not fetched yet (empty
    /// when every provider can validate tokens).
    pub fn providers_without_keys(&self) -> Vec<String> {
        self.providers
            .iter()
            .filter(|p| !p.has_keys())
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Validates `token` and returns the identity it proves.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let parsed = token::ParsedToken::parse(token)?;
        let iss = parsed.issuer().ok_or(AuthError::NoIssuer)?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer() == iss)
            .ok_or_else(|| AuthError::UnknownIssuer(iss.to_string()))?;
        provider.validate(token, &parsed).await
    }
}

/// Renders seconds as "3 minutes", "45 seconds", "2 hours".
pub fn human_duration(secs: u64) -> String {
    let (n, unit) = if secs < 120 {
        (secs, "second")
    } else if secs < 2 * 3600 {
        (secs / 60, "minute")
    } else if secs < 2 * 86400 {
        (secs / 3600, "hour")
    } else {
        (secs / 86400, "day")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The `exp` claim of a JWT-shaped string, *without* verifying it.
pub fn unverified_expiry(token: &str) -> Option<u64> {
    token::ParsedToken::parse(token)
        .ok()?
        .claims
        .get("exp")?
        .as_u64()
}

#[cfg(test)]
mod tests;
