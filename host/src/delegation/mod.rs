//! Delegation for nested agents: the gateway as an RFC 8693 token-exchange
//! issuer. A parent (a person's token, or a token the gateway minted) asks
//! for a *narrower*, shorter-lived token for a child agent; the child is a
//! distinct actor in every decision and record (`act` claim), and can never
//! do more than its parent.
//!
//! - [`GatewayIssuer`]: the gateway's signing key (created once, kept in a
//!   file), its JWKS, and the identity provider that makes the data path
//!   accept the gateway's own tokens;
//! - [`exchange`]: the token endpoint's rules — attenuation enforced, never
//!   trusted from the request.

pub mod exchange;
pub mod revocations;

use std::path::Path;

use serde_json::{json, Value};

use crate::config::{DelegationSettings, IdentityProvider, OneOrMany};
use crate::identity::jwks::{parse_keys, KeyEntry};
use crate::signing::SigningKey;

/// Why the gateway cannot issue tokens.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    /// The key file could not be read, created or parsed.
    #[error("delegation signing key {path}: {message}")]
    Key {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
}

/// The gateway's issuer of delegated tokens.
pub struct GatewayIssuer {
    key: SigningKey,
    /// Its settings.
    pub settings: DelegationSettings,
}

impl GatewayIssuer {
    /// Loads the signing key from `settings.key_file`, creating it (mode
    /// 0600) when the file does not exist.
    pub fn load(settings: &DelegationSettings) -> Result<Self, DelegationError> {
        let path = Path::new(&settings.key_file);
        let err = |message: String| DelegationError::Key {
            path: settings.key_file.clone(),
            message,
        };
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = SigningKey::generate_es256().map_err(|e| err(e.to_string()))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                write_private(path, &fresh.pem).map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the gateway's delegation signing key");
                fresh.pem
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let probe = SigningKey::from_es256_pem(&pem, "probe").map_err(|e| err(e.to_string()))?;
        let kid = key_id(probe.jwk());
        let key = SigningKey::from_es256_pem(&pem, &kid).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            key,
            settings: settings.clone(),
        })
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk()] })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign(claims)
    }

    /// The identity provider that accepts the gateway's own tokens (its
    /// keys fixed, never fetched).
    pub fn provider(&self) -> (IdentityProvider, Vec<KeyEntry>) {
        let cfg = IdentityProvider {
            name: "portcullis-delegation".into(),
            issuer: self.settings.issuer.clone(),
            audience: OneOrMany::One(self.settings.audience.clone()),
            jwks_uri: None,
            algorithms: vec!["ES256".into()],
            user_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            leeway_secs: 30,
            insecure_loopback_issuer: false,
            hmac_secret_file: None,
            jwks_min_refresh_secs: 3600,
            jwks_max_age_secs: u64::MAX / 4,
        };
        (cfg, parse_keys(&self.jwks()).unwrap_or_default())
    }
}

/// `gw-` and the first 16 hex digits of the SHA-256 of the key's public
/// coordinates: stable for a key, different across keys.
fn key_id(jwk: &Value) -> String {
    let material = format!(
        "{}.{}",
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or("")
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, material.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("gw-{hex}")
}

/// Writes a private file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
