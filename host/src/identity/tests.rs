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
                        "preferred_username": "svc", "groups": "a b"});
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
                      "preferred_username": "u"});
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
    let _ = std::fs::remove_file(file);
}

#[test]
fn human_durations() {
    assert_eq!(human_duration(1), "1 second");
    assert_eq!(human_duration(59), "59 seconds");
    assert_eq!(human_duration(240), "4 minutes");
    assert_eq!(human_duration(3 * 86400), "3 days");
}
