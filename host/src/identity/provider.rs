//! One identity provider: its rules (issuer, audiences, algorithms, claims,
//! leeway) and its key cache.

use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{self, KeyEntry};
use super::token::ParsedToken;
use super::{human_duration, AuthError, Identity};
use crate::config::IdentityProvider;
use crate::http_client::HttpClient;

struct KeyCache {
    keys: Vec<KeyEntry>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted, whatever its outcome: no fetch
    /// starts sooner than `jwks_min_refresh_secs` after it, so neither
    /// bogus key ids nor a failing issuer turn logins into fetches.
    attempted_at: Option<Instant>,
}

/// A configured issuer and its keys.
pub struct Provider {
    cfg: IdentityProvider,
    http: HttpClient,
    cache: RwLock<KeyCache>,
    fetch_lock: tokio::sync::Mutex<()>,
    hmac: Option<DecodingKey>,
    /// Keys given at construction and never fetched (the gateway's own).
    fixed_keys: bool,
}

fn key_type_for(alg: &str) -> &'static str {
    match alg.get(..2) {
        Some("RS") | Some("PS") => "RSA",
        Some("ES") => "EC",
        Some("Ed") => "OKP",
        _ => "oct",
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Provider {
    /// A provider from its configuration; reads the HMAC secret file if any.
    pub fn new(cfg: IdentityProvider, http: HttpClient) -> std::io::Result<Self> {
        let hmac = match &cfg.hmac_secret_file {
            Some(f) => {
                let secret = std::fs::read(f)?;
                let trimmed = secret.trim_ascii();
                Some(DecodingKey::from_secret(trimmed))
            }
            None => None,
        };
        Ok(Self {
            cfg,
            http,
            cache: RwLock::new(KeyCache {
                keys: Vec::new(),
                fetched_at: None,
                attempted_at: None,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            hmac,
            fixed_keys: false,
        })
    }

    /// A provider whose keys are `keys`, never fetched (the gateway's own
    /// issuer of delegated tokens).
    pub fn with_fixed_keys(cfg: IdentityProvider, http: HttpClient, keys: Vec<KeyEntry>) -> Self {
        Self {
            cfg,
            http,
            cache: RwLock::new(KeyCache {
                keys,
                fetched_at: Some(Instant::now()),
                attempted_at: Some(Instant::now()),
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            hmac: None,
            fixed_keys: true,
        }
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The exact issuer this provider accepts.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Whether the provider can validate tokens without fetching first:
    /// it has an HMAC secret or a non-empty set of keys.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some()
            || !self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys
                .is_empty()
    }

    /// Fetches the JWKS now (discovery first when no `jwks_uri` is set).
    pub async fn refresh_keys(&self) -> Result<(), AuthError> {
        if self.hmac.is_some() || self.fixed_keys {
            return Ok(());
        }
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked().await
    }

    /// Fetches the JWKS unless another fetch was attempted less than
    /// `jwks_min_refresh_secs` ago (callers queued behind a fetch in flight
    /// use its outcome instead of starting their own).
    async fn refresh_if_due(&self) -> Result<(), AuthError> {
        if self.hmac.is_some() || self.fixed_keys {
            return Ok(());
        }
        let _guard = self.fetch_lock.lock().await;
        if !self.fetch_due() {
            return Ok(());
        }
        self.fetch_locked().await
    }

    /// Whether the last fetch attempt is at least `jwks_min_refresh_secs` old.
    fn fetch_due(&self) -> bool {
        let min_refresh = Duration::from_secs(self.cfg.jwks_min_refresh_secs);
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .attempted_at
            .is_none_or(|t| t.elapsed() >= min_refresh)
    }

    /// One fetch; the caller holds `fetch_lock`.
    async fn fetch_locked(&self) -> Result<(), AuthError> {
        let result = async {
            let url = jwks::jwks_url(
                &self.http,
                &self.cfg.issuer,
                self.cfg.jwks_uri.as_deref(),
                self.cfg.insecure_loopback_issuer,
            )
            .await?;
            jwks::fetch(&self.http, &url).await
        }
        .await;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.attempted_at = Some(Instant::now());
        match result {
            Ok(keys) => {
                tracing::debug!(provider = %self.cfg.name, keys = keys.len(), "fetched signing keys");
                cache.keys = keys;
                cache.fetched_at = cache.attempted_at;
                Ok(())
            }
            Err(message) => Err(AuthError::KeysUnavailable {
                issuer: self.cfg.issuer.clone(),
                message,
            }),
        }
    }

    fn lookup(&self, kid: Option<&str>, kty: &str) -> Option<KeyEntry> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        match kid {
            Some(k) => cache
                .keys
                .iter()
                .find(|e| e.kid.as_deref() == Some(k))
                .cloned(),
            None => {
                let mut of_type = cache.keys.iter().filter(|e| e.kty == kty);
                match (of_type.next(), of_type.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }

    fn cache_age(&self) -> Option<Duration> {
        if self.fixed_keys {
            return Some(Duration::ZERO);
        }
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.fetched_at.map(|t| t.elapsed())
    }

    async fn find_key(&self, kid: Option<&str>, kty: &str) -> Result<KeyEntry, AuthError> {
        let max_age = Duration::from_secs(self.cfg.jwks_max_age_secs);
        let age = self.cache_age();
        // Stale keys: refetch, but not more often than jwks_min_refresh_secs
        // while the issuer fails, so a failing issuer is not asked once per login.
        if age.is_none_or(|a| a > max_age) && self.fetch_due() {
            if let Err(e) = self.refresh_if_due().await {
                if age.is_none() {
                    return Err(e);
                }
                tracing::warn!(provider = %self.cfg.name, error = %e, "JWKS refresh failed; using cached keys");
            }
        }
        let max_stale = Duration::from_secs(self.cfg.jwks_max_stale_secs);
        if let Some(age) = self.cache_age().filter(|a| *a > max_stale) {
            return Err(AuthError::KeysUnavailable {
                issuer: self.cfg.issuer.clone(),
                message: format!(
                    "its keys were last fetched {} ago and it has not answered since; logins are refused until it does (jwks_max_stale_secs)",
                    human_duration(age.as_secs())
                ),
            });
        }
        if self.cache_age().is_none() {
            // Never fetched, and the last attempt failed moments ago.
            return Err(AuthError::KeysUnavailable {
                issuer: self.cfg.issuer.clone(),
                message: format!(
                    "the last attempt to fetch its keys failed; the gateway tries again at most every {} s",
                    self.cfg.jwks_min_refresh_secs
                ),
            });
        }
        if let Some(k) = self.lookup(kid, kty) {
            return Ok(k);
        }
        // Unknown kid: the issuer may have rotated its keys. Refetch, but not
        // more often than jwks_min_refresh_secs, so bogus kids cannot flood it.
        if self.fetch_due() {
            self.refresh_if_due().await?;
            if let Some(k) = self.lookup(kid, kty) {
                return Ok(k);
            }
        }
        Err(AuthError::UnknownKey {
            kid: kid.unwrap_or("(none)").to_string(),
            issuer: self.cfg.issuer.clone(),
        })
    }

    /// Verifies signature and claims of an already-split token.
    pub async fn validate(&self, token: &str, parsed: &ParsedToken) -> Result<Identity, AuthError> {
        if !self.cfg.algorithms.contains(&parsed.alg) {
            return Err(AuthError::AlgNotAllowed {
                alg: parsed.alg.clone(),
                issuer: self.cfg.issuer.clone(),
                allowed: self.cfg.algorithms.join(", "),
            });
        }
        let alg = Algorithm::from_str(&parsed.alg).map_err(|_| AuthError::AlgNotAllowed {
            alg: parsed.alg.clone(),
            issuer: self.cfg.issuer.clone(),
            allowed: self.cfg.algorithms.join(", "),
        })?;
        let kty = key_type_for(&parsed.alg);
        let key = match &self.hmac {
            Some(secret) => secret.clone(),
            None => {
                let entry = self.find_key(parsed.kid.as_deref(), kty).await?;
                let pinned_other = entry.alg.as_deref().is_some_and(|a| a != parsed.alg);
                if entry.kty != kty || pinned_other {
                    return Err(AuthError::KeyMismatch {
                        alg: parsed.alg.clone(),
                        kty: entry.kty.clone(),
                        kid: entry.kid.clone().unwrap_or_else(|| "(none)".into()),
                    });
                }
                entry.key
            }
        };
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::KeyMismatch {
                    alg: parsed.alg.clone(),
                    kty: kty.into(),
                    kid: parsed.kid.clone().unwrap_or_else(|| "(none)".into()),
                },
                _ => AuthError::BadSignature,
            })?;
        self.check_claims(&data.claims, now_secs())
    }

    /// Checks verified claims against this provider's rules at time `now`.
    pub fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        now: u64,
    ) -> Result<Identity, AuthError> {
        let leeway = self.cfg.leeway_secs;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.cfg.issuer {
            return Err(AuthError::UnknownIssuer(iss.to_string()));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::NoExpiry)?;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired(human_duration(now - exp)));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid(human_duration(nbf - now)));
            }
        }
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat > now.saturating_add(leeway) => {
                return Err(AuthError::IssuedInFuture(human_duration(iat - now)));
            }
            Some(_) => {}
            None if self.cfg.require_iat => return Err(AuthError::NoIssuedAt),
            None => {}
        }
        let accepted = self.cfg.audience.as_slice();
        let found: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !found.iter().any(|a| accepted.iter().any(|x| x == a)) {
            return Err(AuthError::Audience {
                found: if found.is_empty() {
                    "missing".into()
                } else {
                    found.join(", ")
                },
                expected: accepted.join(" or "),
            });
        }
        let user = claims
            .get(&self.cfg.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AuthError::NoUserClaim(self.cfg.user_claim.clone()))?;
        let groups = match claims.get(&self.cfg.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or(user)
                .to_string(),
            user: user.to_string(),
            groups,
            issuer: iss.to_string(),
            actor_chain: super::delegated::actor_chain(claims),
            expires_at: exp,
            delegation: super::delegated::delegation(claims),
        })
    }
}
