//! Signing keys: a private key (ES256 or RS256) with its public JWK, able to
//! sign JWTs. The gateway signs delegated tokens with one; the development
//! issuer of `portcullis demo` and the tests use the same type.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::identity::b64url;

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct SigningError(pub String);

/// A private signing key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id published in the JWKS and put in token headers.
    pub kid: String,
    /// Signature algorithm.
    pub alg: Algorithm,
    /// PKCS#8 PEM of the private key.
    pub pem: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh ES256 (P-256) key with a random kid.
    pub fn generate_es256() -> Result<Self, SigningError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SigningError(e.to_string()))?;
        Self::from_es256_pem(
            &kp.serialize_pem(),
            &format!("dev-{:08x}", rand::random::<u32>()),
        )
    }

    /// An ES256 key from a PKCS#8 PEM.
    pub fn from_es256_pem(pem: &str, kid: &str) -> Result<Self, SigningError> {
        let kp = rcgen::KeyPair::from_pem(pem).map_err(|e| SigningError(e.to_string()))?;
        let raw = kp.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(SigningError("not an uncompressed P-256 public key".into()));
        }
        let encoding =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| SigningError(e.to_string()))?;
        Ok(Self {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            pem: pem.to_string(),
            encoding,
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
            }),
        })
    }

    /// An RS256 key from a PKCS#8 PEM and its public JWK (`n`, `e`).
    pub fn from_rsa_pem(pem: &str, public_jwk: &Value, kid: &str) -> Result<Self, SigningError> {
        let encoding =
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| SigningError(e.to_string()))?;
        let (Some(n), Some(e)) = (public_jwk.get("n"), public_jwk.get("e")) else {
            return Err(SigningError("RSA JWK needs n and e".into()));
        };
        Ok(Self {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            pem: pem.to_string(),
            encoding,
            jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}),
        })
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` with this key (header: alg and kid).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        // Signing a JSON value with a valid key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }
}
