//! Provider rules that need no issuer: HMAC providers and claim checks.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::IdentityProvider;

fn provider(extra: &str) -> (Provider, std::path::PathBuf) {
    let secret = std::env::temp_dir().join(format!(
        "portcullis-hmac-{}-{}",
        std::process::id(),
        extra.len()
    ));
    std::fs::write(&secret, "shared-secret\n").unwrap();
    let cfg: IdentityProvider = toml::from_str(&format!(
        "name = \"hs\"\nissuer = \"https://hs.example.com\"\naudience = \"gw\"\nalgorithms = [\"HS256\"]\nhmac_secret_file = {:?}\n{extra}",
        secret.display().to_string()
    ))
    .unwrap();
    let http = crate::http_client::HttpClient::new(Duration::from_secs(1)).unwrap();
    (Provider::new(cfg, http).unwrap(), secret)
}

fn sign(alg: Algorithm, key: &[u8], claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

fn now() -> u64 {
    crate::demo::issuer::now()
}

#[tokio::test]
async fn hmac_provider_accepts_its_secret_and_nothing_else() {
    let (p, file) = provider("");
    let claims = json!({"iss": "https://hs.example.com", "aud": "gw", "exp": now() + 60,
                        "iat": now(), "preferred_username": "svc", "groups": "a b"});
    let good = sign(Algorithm::HS256, b"shared-secret", &claims);
    let id = p
        .validate(&good, &token::ParsedToken::parse(&good).unwrap())
        .await
        .unwrap();
    assert_eq!(id.user, "svc");
    assert_eq!(id.groups, ["a", "b"]);

    let wrong = sign(Algorithm::HS256, b"other", &claims);
    let err = p
        .validate(&wrong, &token::ParsedToken::parse(&wrong).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);

    let hs512 = sign(Algorithm::HS512, b"shared-secret", &claims);
    let err = p
        .validate(&hs512, &token::ParsedToken::parse(&hs512).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::AlgNotAllowed { .. }), "{err}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn claim_checks_and_messages() {
    let (p, file) = provider("leeway_secs = 10");
    let base = json!({"iss": "https://hs.example.com", "aud": ["x", "gw"], "exp": 1000,
                      "iat": 800, "preferred_username": "u"});
    let claims = |patch: serde_json::Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.as_object().unwrap().clone()
    };
    assert!(
        p.check_claims(&claims(json!({})), 1005).is_ok(),
        "within leeway"
    );
    assert_eq!(
        p.check_claims(&claims(json!({})), 1000 + 3 * 3600)
            .unwrap_err()
            .to_string(),
        "token expired 3 hours ago"
    );
    assert_eq!(
        p.check_claims(&claims(json!({"exp": null})), 900)
            .unwrap_err(),
        AuthError::NoExpiry
    );
    assert!(matches!(
        p.check_claims(&claims(json!({"nbf": 2000})), 900)
            .unwrap_err(),
        AuthError::NotYetValid(_)
    ));
    assert!(matches!(
        p.check_claims(&claims(json!({"iat": 5000})), 900)
            .unwrap_err(),
        AuthError::IssuedInFuture(_)
    ));
    assert_eq!(
        p.check_claims(&claims(json!({"aud": null})), 900)
            .unwrap_err()
            .to_string(),
        "token audience is missing, expected gw"
    );
    assert_eq!(
        p.check_claims(&claims(json!({"preferred_username": null})), 900)
            .unwrap_err(),
        AuthError::NoUserClaim("preferred_username".into())
    );
    // RFC 9068: access tokens carry iat; an issuer may be exempted.
    assert_eq!(
        p.check_claims(&claims(json!({"iat": null})), 900)
            .unwrap_err(),
        AuthError::NoIssuedAt
    );
    let (lax, lax_file) = provider("leeway_secs = 10\nrequire_iat = false");
    assert!(lax.check_claims(&claims(json!({"iat": null})), 900).is_ok());
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(lax_file);
}

#[test]
fn human_durations() {
    assert_eq!(human_duration(1), "1 second");
    assert_eq!(human_duration(59), "59 seconds");
    assert_eq!(human_duration(240), "4 minutes");
    assert_eq!(human_duration(3 * 86400), "3 days");
}

/// A provider for a development issuer at `url`, with the given JWKS ages.
fn jwks_provider(url: &str, max_age_secs: u64, min_refresh_secs: u64) -> Provider {
    stale_provider(url, max_age_secs, min_refresh_secs, 86_400)
}

/// [`jwks_provider`] that refuses keys older than `max_stale_secs`.
fn stale_provider(
    url: &str,
    max_age_secs: u64,
    min_refresh_secs: u64,
    max_stale_secs: u64,
) -> Provider {
    let cfg: IdentityProvider = toml::from_str(&format!(
        "name = \"dev\"\nissuer = {url:?}\naudience = \"gw\"\nalgorithms = [\"ES256\"]\n\
         insecure_loopback_issuer = true\njwks_max_age_secs = {max_age_secs}\n\
         jwks_min_refresh_secs = {min_refresh_secs}\njwks_max_stale_secs = {max_stale_secs}"
    ))
    .unwrap();
    let http = crate::http_client::HttpClient::new(Duration::from_secs(2)).unwrap();
    Provider::new(cfg, http).unwrap()
}

async fn validate_dev(
    p: &Provider,
    issuer: &crate::demo::issuer::DevIssuer,
) -> Result<Identity, AuthError> {
    let token = issuer.mint(&crate::demo::issuer::TokenSpec {
        user: "alice".into(),
        groups: vec![],
        ttl_secs: 60,
    });
    p.validate(&token, &token::ParsedToken::parse(&token).unwrap())
        .await
}

#[tokio::test]
async fn stale_keys_and_a_failing_issuer_do_not_turn_every_login_into_a_fetch() {
    let key = crate::demo::issuer::DevKey::generate_es256().unwrap();
    let issuer = crate::demo::issuer::DevIssuer::start(key, "gw", 0)
        .await
        .unwrap();
    // Keys are stale as soon as they are fetched; attempts at most every second.
    let p = std::sync::Arc::new(jwks_provider(issuer.url(), 0, 1));
    validate_dev(&p, &issuer)
        .await
        .expect("keys fetched, token valid");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = issuer.jwks_fetches();
    issuer.set_jwks_failing(true);

    // Twenty logins one after another and twenty at once.
    for _ in 0..20 {
        validate_dev(&p, &issuer)
            .await
            .expect("cached keys still serve");
    }
    let mut at_once = Vec::new();
    for _ in 0..20 {
        let p = p.clone();
        let token = issuer.mint(&crate::demo::issuer::TokenSpec {
            user: "alice".into(),
            groups: vec![],
            ttl_secs: 60,
        });
        at_once.push(tokio::spawn(async move {
            p.validate(&token, &token::ParsedToken::parse(&token).unwrap())
                .await
        }));
    }
    for t in at_once {
        t.await.unwrap().expect("cached keys still serve");
    }
    let asked = issuer.jwks_fetches() - before;
    assert_eq!(
        asked, 1,
        "one attempt per jwks_min_refresh_secs, not one per login"
    );
}

#[tokio::test]
async fn an_issuer_that_never_answered_is_not_asked_once_per_login() {
    let key = crate::demo::issuer::DevKey::generate_es256().unwrap();
    let issuer = crate::demo::issuer::DevIssuer::start(key, "gw", 0)
        .await
        .unwrap();
    issuer.set_jwks_failing(true);
    let p = jwks_provider(issuer.url(), 900, 1);
    for _ in 0..10 {
        let err = validate_dev(&p, &issuer).await.unwrap_err();
        assert!(matches!(err, AuthError::KeysUnavailable { .. }), "{err}");
    }
    assert_eq!(issuer.jwks_fetches(), 1);
    // The issuer recovers: after the back-off the next login fetches again.
    issuer.set_jwks_failing(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    validate_dev(&p, &issuer)
        .await
        .expect("keys fetched once the issuer answers");
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn keys_past_their_stale_limit_are_not_trusted_while_the_issuer_is_silent() {
    let key = crate::demo::issuer::DevKey::generate_es256().unwrap();
    let issuer = crate::demo::issuer::DevIssuer::start(key, "gw", 0)
        .await
        .unwrap();
    let p = stale_provider(issuer.url(), 0, 0, 1);
    validate_dev(&p, &issuer).await.expect("fresh keys");
    issuer.set_jwks_failing(true);
    validate_dev(&p, &issuer)
        .await
        .expect("stale but within the limit: still served");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = validate_dev(&p, &issuer).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable { .. }), "{err}");
    // The issuer answers again: logins work again.
    issuer.set_jwks_failing(false);
    validate_dev(&p, &issuer).await.expect("fetched again");
}
