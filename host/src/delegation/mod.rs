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
    /// The key it signed with before the last rotation, still published so
    /// the tokens it signed stay valid until they expire.
    previous: Option<SigningKey>,
    /// Its settings.
    pub settings: DelegationSettings,
}

/// Reads an ES256 key from a PEM file and names it by its public key.
fn read_key(path: &Path) -> Result<Option<SigningKey>, String> {
    let pem = match std::fs::read_to_string(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let probe = SigningKey::from_es256_pem(&pem, "probe").map_err(|e| e.to_string())?;
    let kid = key_id(probe.jwk());
    SigningKey::from_es256_pem(&pem, &kid)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The file the previous key is kept in.
fn previous_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".previous");
    std::path::PathBuf::from(p)
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
        let previous = previous_path(path);
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let due = age.is_some_and(|a| a.as_secs() >= settings.rotate_days * 86_400);
        if due {
            // Rotate: the current key becomes the previous one (still
            // published), a fresh key signs from now on.
            std::fs::rename(path, &previous).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "rotating the delegation signing key");
        }
        let key = match read_key(path).map_err(err)? {
            Some(k) => k,
            None => {
                let fresh = SigningKey::generate_es256().map_err(|e| err(e.to_string()))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                write_private(path, &fresh.pem).map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the gateway's delegation signing key");
                read_key(path)
                    .map_err(err)?
                    .ok_or_else(|| err("the new key vanished".into()))?
            }
        };
        let previous = read_key(&previous).map_err(err)?;
        Ok(Self {
            key,
            previous,
            settings: settings.clone(),
        })
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = std::iter::once(self.key.jwk())
            .chain(self.previous.as_ref().map(SigningKey::jwk))
            .collect();
        json!({ "keys": keys })
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
            jwks_max_stale_secs: u64::MAX / 4,
            require_iat: true,
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

/// Writes a new private file readable by its owner only (it must not
/// exist yet).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> DelegationSettings {
        DelegationSettings {
            issuer: "urn:portcullis:gateway".into(),
            audience: "portcullis".into(),
            key_file: dir.join("key.pem").display().to_string(),
            max_depth: 3,
            max_ttl_secs: 3600,
            rotate_days: 30,
        }
    }

    #[test]
    fn an_old_key_is_rotated_and_stays_published_until_the_next_rotation(
    ) -> Result<(), DelegationError> {
        let dir = crate::test_dir::TestDir::new("portcullis-keys");
        let s = settings(&dir);
        let first = GatewayIssuer::load(&s)?;
        let first_kid = first.jwks()["keys"][0]["kid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // The same key on the next start while it is young.
        assert_eq!(
            GatewayIssuer::load(&s)?.jwks()["keys"][0]["kid"],
            first_kid.as_str()
        );
        // 31 days later: a new key signs, the old one is still published.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&s.key_file)
            .and_then(|f| f.set_modified(old))
            .map_err(|e| DelegationError::Key {
                path: s.key_file.clone(),
                message: e.to_string(),
            })?;
        let rotated = GatewayIssuer::load(&s)?;
        let kids: Vec<String> = rotated.jwks()["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(kids.len(), 2);
        assert_ne!(kids[0], first_kid, "a fresh key signs");
        assert_eq!(kids[1], first_kid, "the previous key is still published");
        assert_eq!(rotated.provider().1.len(), 2, "both keys verify");
        Ok(())
    }
}
