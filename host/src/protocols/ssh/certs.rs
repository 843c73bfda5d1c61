//! Gateway-minted SSH user certificates: `portcullis ssh login` sends a
//! token and a public key to the admin API, and the gateway's user CA signs
//! a certificate for that key. Its principal is the user, its key id names
//! the token (`jti`, or the subject for a provider's own token), and it
//! never outlives the token; the identity behind it — groups, issuer, the
//! actor chain of a delegated token — stays on the gateway, stored under
//! the certificate's serial. A login with such a certificate is admitted
//! with that identity, checked again like a token (expiry, revocation of
//! the token or any ancestor, the target's groups).
//!
//! A certificate is checked against the gateway's own CA key (the
//! signature is verified against that key, not only against the key inside
//! the certificate), must be a user certificate inside its validity
//! window, name the stored user among its principals, and carry no
//! critical option (the gateway mints none; an unknown one refuses it).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Fingerprint, HashAlg};
use russh::keys::{Certificate, PrivateKey, PublicKey};

use crate::identity::Identity;
use crate::store::{IssuedCertificate, Store};

/// The longest a certificate is valid, whatever the token's expiry.
pub const MAX_VALIDITY: Duration = Duration::from_secs(12 * 3600);

/// How long the gateway's own certificate for a host is valid: long
/// enough to log in, never long enough to matter if it leaked.
pub const UPSTREAM_VALIDITY: Duration = Duration::from_secs(300);

/// A fresh ed25519 key (the gateway's key for a target's certificates).
pub fn fresh_key() -> PrivateKey {
    PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &rand::random::<[u8; 32]>(),
    ))
}

/// Writes `key` as an OpenSSH private key file readable by its owner only,
/// replacing one already there.
pub fn write_key(path: &Path, key: &PrivateKey) -> std::io::Result<()> {
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ = std::fs::remove_file(path);
    crate::delegation::write_private(path, &text)
}

/// How far back a certificate's validity starts (clocks differ).
const BACKDATE: u64 = 60;

/// Why a certificate was not minted or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The CA key could not be read.
    #[error("the SSH user CA key {path}: {message}")]
    Key {
        /// Its file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The public key sent is not one.
    #[error("not an OpenSSH public key (expected one line such as `ssh-ed25519 AAAA...`): {0}")]
    PublicKey(String),
    /// The token expires too soon to cover a certificate.
    #[error("the token expires in less than a minute; get a fresh one first")]
    Expiring,
    /// Signing failed.
    #[error("the certificate could not be signed: {0}")]
    Sign(String),
    /// The subject asked for too many certificates this hour.
    #[error("{MAX_PER_HOUR} certificates were minted for this subject in the last hour; use the one you have (it is valid as long as your token)")]
    TooMany,
    /// The same key is both the user CA and a host's upstream CA.
    #[error("target {0}: upstream_ca_key_file is the same key as an SSH listener's user_ca_key_file; a certificate minted for a user would then log in to the host directly, past the gateway: use two keys")]
    SharedCa(String),
    /// A certificate offered at login is not acceptable.
    #[error("{0}")]
    Refused(String),
}

/// The gateway's SSH user CA.
pub struct UserCa {
    key: PrivateKey,
    fingerprint: Fingerprint,
}

/// A certificate just minted, and what the gateway keeps of it.
pub struct Minted {
    /// The certificate (`ssh-ed25519-cert-v01@openssh.com ...`).
    pub certificate: Certificate,
    /// Its serial, under which the identity is kept.
    pub serial: u64,
    /// Its key id.
    pub key_id: String,
    /// Unix seconds it is valid until.
    pub valid_before: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl UserCa {
    /// Loads the CA's private key (an OpenSSH private key file).
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| CertError::Key {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self::from_key(key))
    }

    /// The CA of `key`.
    pub fn from_key(key: PrivateKey) -> Self {
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256);
        Self { key, fingerprint }
    }

    /// The CA's public key, for `TrustedUserCAKeys`-style trust.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs a certificate for `public_key` (one OpenSSH public key line)
    /// of `identity`, valid until the token expires (at most
    /// [`MAX_VALIDITY`]).
    pub fn mint(&self, public_key: &str, identity: &Identity) -> Result<Minted, CertError> {
        let key = PublicKey::from_openssh(public_key.trim())
            .map_err(|e| CertError::PublicKey(e.to_string()))?;
        let now = now_secs();
        let valid_before = identity.expires_at.min(now + MAX_VALIDITY.as_secs());
        if valid_before < now + 60 {
            return Err(CertError::Expiring);
        }
        let serial: u64 = rand::random();
        let nonce: [u8; 32] = rand::random();
        let token = identity
            .delegation
            .as_ref()
            .map(|d| format!("jti={}", d.jti))
            .unwrap_or_else(|| format!("sub={}", identity.subject));
        let key_id = format!("portcullis user={} {token}", identity.user);
        let sign = |e: russh::keys::ssh_key::Error| CertError::Sign(e.to_string());
        let mut builder = Builder::new(
            nonce.to_vec(),
            key.key_data().clone(),
            now.saturating_sub(BACKDATE),
            valid_before,
        )
        .map_err(sign)?;
        builder
            .serial(serial)
            .map_err(sign)?
            .cert_type(CertType::User)
            .map_err(sign)?
            .key_id(key_id.clone())
            .map_err(sign)?
            .valid_principal(identity.user.clone())
            .map_err(sign)?;
        for extension in ["permit-pty", "permit-user-rc"] {
            builder.extension(extension, "").map_err(sign)?;
        }
        let certificate = builder.sign(&self.key).map_err(sign)?;
        Ok(Minted {
            certificate,
            serial,
            key_id,
            valid_before,
        })
    }

    /// Signs the gateway's own certificate for `key` to log in to a host as
    /// `user`, valid for [`UPSTREAM_VALIDITY`], its key id `key_id` (the
    /// host's log shows it).
    pub fn sign_upstream(
        &self,
        key: &PublicKey,
        user: &str,
        key_id: &str,
    ) -> Result<Certificate, CertError> {
        let now = now_secs();
        let sign = |e: russh::keys::ssh_key::Error| CertError::Sign(e.to_string());
        let nonce: [u8; 32] = rand::random();
        let mut builder = Builder::new(
            nonce.to_vec(),
            key.key_data().clone(),
            now.saturating_sub(BACKDATE),
            now + UPSTREAM_VALIDITY.as_secs(),
        )
        .map_err(sign)?;
        builder
            .serial(rand::random())
            .map_err(sign)?
            .cert_type(CertType::User)
            .map_err(sign)?
            .key_id(key_id)
            .map_err(sign)?
            .valid_principal(user)
            .map_err(sign)?;
        for extension in ["permit-pty", "permit-user-rc"] {
            builder.extension(extension, "").map_err(sign)?;
        }
        builder.sign(&self.key).map_err(sign)
    }

    /// Checks a certificate offered at login: signed by this CA, a user
    /// certificate, valid now, with principals and no critical option.
    pub fn check(&self, cert: &Certificate) -> Result<(), CertError> {
        let refused = |why: &str| Err(CertError::Refused(why.to_string()));
        if cert.validate_at(now_secs(), [&self.fingerprint]).is_err() {
            return refused("the certificate was not signed by this gateway, or it has expired; run `portcullis ssh login` again");
        }
        if cert.cert_type() != CertType::User {
            return refused("not a user certificate");
        }
        if !cert.critical_options().is_empty() {
            return refused(
                "the certificate carries critical options this gateway does not honour",
            );
        }
        if cert.valid_principals().is_empty() {
            return refused("the certificate names no principal");
        }
        Ok(())
    }
}

/// An SSH listener as `portcullis ssh login` tells the client about it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ListenerInfo {
    /// Its address as bound (`0.0.0.0:2222` means every address of the
    /// gateway's host).
    pub address: String,
    /// Its host key, one OpenSSH public key line (for known_hosts).
    pub host_key: String,
}

/// What the admin API's `POST /v1/ssh/certificates` answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IssuedLogin {
    /// The certificate, one line (`ssh-ed25519-cert-v01@openssh.com ...`).
    pub certificate: String,
    /// Its serial.
    pub serial: u64,
    /// Its key id (names the token).
    pub key_id: String,
    /// Its principal: the token's user.
    pub principals: Vec<String>,
    /// Unix seconds it is valid until (never after the token expires).
    pub valid_before: u64,
    /// The gateway's SSH listeners, to reach and to pin.
    pub listeners: Vec<ListenerInfo>,
}

/// The gateway's user CA and where its SSH listeners are: what the admin
/// API needs to serve `portcullis ssh login`.
pub struct SshLogin {
    /// The CA.
    pub ca: Arc<UserCa>,
    listeners: RwLock<Vec<ListenerInfo>>,
    /// Certificates minted per subject in the current hour.
    minted: std::sync::Mutex<(u64, std::collections::HashMap<String, u32>)>,
}

/// Certificates one subject may have minted per hour (a login per few
/// minutes is plenty; more is a client looping, or abuse of the store).
pub const MAX_PER_HOUR: u32 = 30;

impl SshLogin {
    /// Logins signed by `ca`; listeners are added as they are bound.
    pub fn new(ca: Arc<UserCa>) -> Self {
        Self {
            ca,
            listeners: RwLock::new(Vec::new()),
            minted: std::sync::Mutex::new((0, std::collections::HashMap::new())),
        }
    }

    /// Notes a bound SSH listener that accepts the CA's certificates.
    pub fn add_listener(&self, info: ListenerInfo) {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(info);
    }

    /// Mints a certificate for `public_key` of `identity` and keeps the
    /// identity under its serial in `store`.
    pub async fn issue(
        &self,
        store: Arc<dyn Store>,
        public_key: &str,
        identity: &Identity,
    ) -> Result<IssuedLogin, CertError> {
        {
            let hour = now_secs() / 3600;
            let mut m = self.minted.lock().unwrap_or_else(|p| p.into_inner());
            if m.0 != hour {
                *m = (hour, std::collections::HashMap::new());
            }
            let count = m.1.entry(identity.subject.clone()).or_insert(0);
            if *count >= MAX_PER_HOUR {
                return Err(CertError::TooMany);
            }
            *count += 1;
        }
        let minted = self.ca.mint(public_key, identity)?;
        let kept = IssuedCertificate {
            serial: minted.serial,
            key_id: minted.key_id.clone(),
            identity_json: serde_json::to_string(identity)
                .map_err(|e| CertError::Sign(e.to_string()))?,
            issued_at: crate::store::now_micros(),
            valid_before: minted.valid_before,
        };
        tokio::task::spawn_blocking(move || store.save_ssh_certificate(&kept))
            .await
            .map_err(|e| CertError::Sign(e.to_string()))?
            .map_err(|e| CertError::Sign(format!("the certificate could not be recorded: {e}")))?;
        let certificate = minted
            .certificate
            .to_openssh()
            .map_err(|e| CertError::Sign(e.to_string()))?;
        Ok(IssuedLogin {
            certificate,
            serial: minted.serial,
            key_id: minted.key_id,
            principals: vec![identity.user.clone()],
            valid_before: minted.valid_before,
            listeners: self
                .listeners
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }
}

/// The identity behind a certificate offered at login: checked against
/// `ca`, then looked up in `store` by serial (the key id and principal
/// must be those minted). Why not, in words for the log.
pub async fn identity_of(
    ca: &UserCa,
    store: Arc<dyn Store>,
    cert: &Certificate,
) -> Result<Identity, CertError> {
    ca.check(cert)?;
    let serial = cert.serial();
    let kept = tokio::task::spawn_blocking(move || store.ssh_certificate(serial))
        .await
        .map_err(|e| CertError::Refused(e.to_string()))?
        .map_err(|e| CertError::Refused(format!("the gateway's records cannot be read: {e}")))?
        .ok_or_else(|| {
            CertError::Refused(format!(
                "certificate {serial} was not minted by this gateway's records"
            ))
        })?;
    let identity: Identity = serde_json::from_str(&kept.identity_json).map_err(|e| {
        CertError::Refused(format!(
            "certificate {serial}: its record is unreadable: {e}"
        ))
    })?;
    if kept.key_id != cert.key_id() || cert.valid_principals() != [identity.user.clone()] {
        return Err(CertError::Refused(format!(
            "certificate {serial} does not match what the gateway minted under that serial"
        )));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn identity(expires_in: u64) -> Identity {
        Identity {
            subject: "sub-1".into(),
            user: "alice@example.com".into(),
            groups: vec!["ops".into()],
            issuer: "https://issuer.test".into(),
            actor_chain: Vec::new(),
            expires_at: now_secs() + expires_in,
            delegation: None,
        }
    }

    fn public_line(k: &PrivateKey) -> String {
        k.public_key().to_openssh().expect("public key line")
    }

    #[test]
    fn a_minted_certificate_is_accepted_and_never_outlives_the_token() {
        let ca = UserCa::from_key(key(1));
        let client = key(2);
        let minted = ca
            .mint(&public_line(&client), &identity(600))
            .expect("minted");
        let cert = &minted.certificate;
        assert!(ca.check(cert).is_ok());
        assert_eq!(cert.valid_principals(), ["alice@example.com".to_string()]);
        assert_eq!(cert.serial(), minted.serial);
        assert!(cert.valid_before() <= now_secs() + 600);
        assert!(cert.key_id().contains("sub=sub-1"));
        assert_eq!(cert.public_key(), client.public_key().key_data());
        let long = ca
            .mint(&public_line(&client), &identity(7 * 24 * 3600))
            .expect("minted");
        assert!(long.valid_before <= now_secs() + MAX_VALIDITY.as_secs());
        assert!(matches!(
            ca.mint(&public_line(&client), &identity(10)),
            Err(CertError::Expiring)
        ));
        assert!(matches!(
            ca.mint("not a key", &identity(600)),
            Err(CertError::PublicKey(_))
        ));
    }

    #[test]
    fn another_cas_certificate_is_refused() {
        let ours = UserCa::from_key(key(1));
        let theirs = UserCa::from_key(key(3));
        let cert = theirs
            .mint(&public_line(&key(2)), &identity(600))
            .expect("minted")
            .certificate;
        assert!(ours.check(&cert).is_err());
    }
}
