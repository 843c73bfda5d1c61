//! An issuer's signing keys: fetched by OIDC discovery or from `jwks_uri`,
//! kept in memory, looked up by `kid`.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::http_client::HttpClient;

/// One verification key from a JWKS.
#[derive(Clone)]
pub struct KeyEntry {
    /// Key id (`kid`), if the JWK has one.
    pub kid: Option<String>,
    /// Key type (`RSA`, `EC`, `OKP`).
    pub kty: String,
    /// The JWK's own `alg`, if it pins one.
    pub alg: Option<String>,
    /// Key ready for signature verification.
    pub key: DecodingKey,
}

/// Finds the JWKS URL: the configured one, or the discovery document's.
pub async fn jwks_url(
    http: &HttpClient,
    issuer: &str,
    configured: Option<&str>,
    insecure_loopback: bool,
) -> Result<String, String> {
    if let Some(u) = configured {
        return Ok(u.to_string());
    }
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = http.get_json(&discovery).await.map_err(|e| e.to_string())?;
    let doc_issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if doc_issuer != issuer {
        return Err(format!(
            "discovery document at {discovery} names issuer {doc_issuer:?}, expected {issuer:?}"
        ));
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("discovery document at {discovery} has no jwks_uri"))?;
    let plain_ok = insecure_loopback && crate::config::url_is_loopback(uri);
    if !uri.starts_with("https://") && !plain_ok {
        return Err(format!("jwks_uri {uri:?} from discovery is not https"));
    }
    Ok(uri.to_string())
}

/// Fetches and parses a JWKS; keys that cannot be used (encryption keys,
/// unknown types) are skipped.
pub async fn fetch(http: &HttpClient, url: &str) -> Result<Vec<KeyEntry>, String> {
    let doc = http.get_json(url).await.map_err(|e| e.to_string())?;
    parse_keys(&doc).map_err(|e| format!("{url}: {e}"))
}

/// The signature keys of a JWKS document (encryption keys and keys it
/// cannot use are skipped).
pub fn parse_keys(doc: &Value) -> Result<Vec<KeyEntry>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "not a JWKS (no \"keys\" array)".to_string())?;
    let mut out = Vec::new();
    for raw in keys {
        if raw.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(KeyEntry {
            kid: raw.get("kid").and_then(Value::as_str).map(str::to_string),
            kty: raw
                .get("kty")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            alg: raw.get("alg").and_then(Value::as_str).map(str::to_string),
            key,
        });
    }
    Ok(out)
}
