//! OAuth2 client-credentials grant (RFC 6749 §4.4).

use super::{json_expiry, CredentialError, FetchedToken};
use crate::config::OAuth2Source;
use crate::http_client::HttpClient;

/// Requests a token from the configured endpoint.
pub async fn fetch(http: &HttpClient, cfg: &OAuth2Source) -> Result<FetchedToken, CredentialError> {
    let secret = std::fs::read_to_string(&cfg.client_secret_file)
        .map_err(|e| CredentialError(format!("cannot read {}: {e}", cfg.client_secret_file)))?;
    let secret = secret.trim();
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", cfg.client_id.as_str()),
        ("client_secret", secret),
    ];
    if let Some(scope) = &cfg.scope {
        form.push(("scope", scope.as_str()));
    }
    let v = http
        .request_json(hyper::Method::POST, &cfg.token_url, &[], Some(&form))
        .await
        .map_err(|e| CredentialError(format!("OAuth2 token request failed: {e}")))?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CredentialError(format!("{} returned no access_token", cfg.token_url)))?;
    Ok(FetchedToken {
        secret: token.to_string(),
        expires_in: json_expiry(&v),
    })
}
