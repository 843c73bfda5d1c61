//! Splitting a JWT and reading its header and claims without trusting them
//! yet; the signature is checked in `provider` before any claim is used.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

use super::{AuthError, MAX_TOKEN_BYTES};

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JWT's header and claims, decoded but not verified.
#[derive(Debug)]
pub struct ParsedToken {
    /// Header `alg`.
    pub alg: String,
    /// Header `kid`, if any.
    pub kid: Option<String>,
    /// Claims object.
    pub claims: Map<String, Value>,
}

impl ParsedToken {
    /// Splits and decodes; refuses oversized, unsigned and `crit` tokens.
    pub fn parse(token: &str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::NotAToken);
        };
        let header = decode_json(h).map_err(|_| AuthError::NotAToken)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Malformed("header has no alg".into()))?
            .to_string();
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        if header.contains_key("crit") {
            return Err(AuthError::Crit);
        }
        // jku, x5u, jwk and x5c are ignored on purpose: keys come only from
        // the configured issuer's JWKS, never from the token itself.
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(AuthError::Malformed("kid is not a string".into())),
        };
        let claims = decode_json(p).map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        Ok(Self { alg, kid, claims })
    }

    /// The unverified `iss`, used only to choose which provider verifies.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

fn decode_json(part: &str) -> Result<Map<String, Value>, String> {
    let bytes = B64URL
        .decode(part)
        .map_err(|_| "not base64url".to_string())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON ({e})")),
    }
}

/// Encodes bytes as unpadded base64url (used for minting test tokens and JWKs).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.sig",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        )
    }

    #[test]
    fn refuses_none_crit_and_garbage() {
        assert_eq!(
            ParsedToken::parse(&tok(r#"{"alg":"none"}"#, "{}")).unwrap_err(),
            AuthError::AlgNone
        );
        assert_eq!(
            ParsedToken::parse(&tok(r#"{"alg":"RS256","crit":["x"]}"#, "{}")).unwrap_err(),
            AuthError::Crit
        );
        assert_eq!(
            ParsedToken::parse("hunter2").unwrap_err(),
            AuthError::NotAToken
        );
        assert_eq!(
            ParsedToken::parse(&"a".repeat(70_000)).unwrap_err(),
            AuthError::TooLarge
        );
    }

    #[test]
    fn reads_alg_kid_and_issuer() {
        let t = ParsedToken::parse(&tok(
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"https://idp"}"#,
        ))
        .unwrap();
        assert_eq!(t.alg, "ES256");
        assert_eq!(t.kid.as_deref(), Some("k1"));
        assert_eq!(t.issuer(), Some("https://idp"));
    }
}
