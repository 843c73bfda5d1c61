//! Azure managed identity: a token from the instance metadata service.

use super::{json_expiry, CredentialError, FetchedToken};
use crate::config::AzureManagedIdentity;
use crate::http_client::{form_encode, HttpClient};

/// Requests a token for the configured resource.
pub async fn fetch(
    http: &HttpClient,
    cfg: &AzureManagedIdentity,
) -> Result<FetchedToken, CredentialError> {
    let mut query = vec![
        ("api-version", "2018-02-01"),
        ("resource", cfg.resource.as_str()),
    ];
    if let Some(id) = &cfg.client_id {
        query.push(("client_id", id.as_str()));
    }
    let url = format!("{}?{}", cfg.endpoint, form_encode(&query));
    let v = http
        .request_json(hyper::Method::GET, &url, &[("Metadata", "true")], None)
        .await
        .map_err(|e| {
            CredentialError(format!("Azure managed identity token request failed: {e}"))
        })?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CredentialError("the metadata service returned no access_token".into()))?;
    Ok(FetchedToken {
        secret: token.to_string(),
        expires_in: json_expiry(&v),
    })
}
