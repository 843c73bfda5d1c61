//! Token validation through the real data path: every refusal reaches a real
//! client as a FATAL with the right SQLSTATE and a message a person can act on.

use portcullis::demo::issuer::{now, DevKey, TokenSpec};
use portcullis_e2e::{db_error, fixture, TestGateway, AUDIENCE};
use serde_json::{json, Value};

const USER: &str = "tester@example.com";

fn claims(gw: &TestGateway) -> Value {
    gw.issuer.claims(&TokenSpec {
        user: USER.into(),
        groups: vec!["testers".into()],
        ttl_secs: 600,
    })
}

fn b64(v: &Value) -> String {
    portcullis::identity::b64url(v.to_string().as_bytes())
}

#[tokio::test]
async fn valid_es256_token_connects_and_runs_queries() {
    let gw = TestGateway::start().await;
    let client = gw.connect(USER).await;
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn valid_rs256_token_connects() {
    let gw = TestGateway::start().await;
    let pem = std::fs::read_to_string(fixture("rsa-test-key.pem")).unwrap();
    let jwk: Value =
        serde_json::from_slice(&std::fs::read(fixture("rsa-test-key.jwk.json")).unwrap()).unwrap();
    let rsa = DevKey::from_rsa_pem(&pem, &jwk, "rsa-1").unwrap();
    gw.issuer.add_key(rsa, true);
    let token = gw.issuer.mint(&TokenSpec {
        user: USER.into(),
        groups: vec!["testers".into()],
        ttl_secs: 60,
    });
    assert!(
        token.starts_with(&portcullis::identity::b64url(br#"{"typ":"JWT","alg":"RS256""#)[..10])
    );
    let client = gw.connect_with(&gw.pg_config(USER, &token)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn expired_token_says_how_long_ago() {
    let gw = TestGateway::start().await;
    let mut c = claims(&gw);
    c["exp"] = json!(now() - 240);
    let (code, msg) = gw.refused(USER, &gw.issuer.current_key().sign(&c)).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("token expired 4 minutes ago"), "{msg}");
    assert!(!msg.contains("eyJ"), "the token must not be echoed: {msg}");
}

#[tokio::test]
async fn token_within_leeway_is_accepted_and_not_yet_valid_is_refused() {
    let gw = TestGateway::start().await;
    let mut c = claims(&gw);
    c["exp"] = json!(now() - 30); // within the default 60 s leeway
    let token = gw.issuer.current_key().sign(&c);
    gw.connect_with(&gw.pg_config(USER, &token)).await.unwrap();

    let mut c = claims(&gw);
    c["nbf"] = json!(now() + 600);
    let (code, msg) = gw.refused(USER, &gw.issuer.current_key().sign(&c)).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("not valid yet"), "{msg}");
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let gw = TestGateway::start().await;
    let mut c = claims(&gw);
    c["aud"] = json!("someone-else");
    let (code, msg) = gw.refused(USER, &gw.issuer.current_key().sign(&c)).await;
    assert_eq!(code, "28P01");
    assert!(
        msg.contains(&format!(
            "audience is someone-else, expected other-audience or {AUDIENCE}"
        )),
        "{msg}"
    );

    let mut c = claims(&gw);
    c["iss"] = json!("https://evil.example.com");
    let (code, msg) = gw.refused(USER, &gw.issuer.current_key().sign(&c)).await;
    assert_eq!(code, "28P01");
    assert!(
        msg.contains("\"https://evil.example.com\" is not a configured identity provider"),
        "{msg}"
    );
}

#[tokio::test]
async fn unsigned_and_hmac_confusion_tokens_are_refused() {
    let gw = TestGateway::start().await;
    let c = claims(&gw);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    let (code, msg) = gw.refused(USER, &none).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("\"none\" is never accepted"), "{msg}");

    // The classic confusion attack: HS256 keyed with the RSA public key.
    let jwk: Value =
        serde_json::from_slice(&std::fs::read(fixture("rsa-test-key.jwk.json")).unwrap()).unwrap();
    let public = jwk.to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(gw.issuer.current_key().kid);
    let forged = jsonwebtoken::encode(
        &header,
        &c,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    let (code, msg) = gw.refused(USER, &forged).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("algorithm HS256 is not allowed"), "{msg}");
}

#[tokio::test]
async fn unknown_kid_and_tampered_payload_are_refused() {
    let gw = TestGateway::start().await;
    let stranger = DevKey::generate_es256().unwrap();
    let (code, msg) = gw.refused(USER, &stranger.sign(&claims(&gw))).await;
    assert_eq!(code, "28P01");
    assert!(
        msg.contains(&format!(
            "signing key kid={} is not published by issuer",
            stranger.kid
        )),
        "{msg}"
    );

    let token = gw.token(USER);
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims(&gw);
    c["groups"] = json!(["testers", "admins"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    let (code, msg) = gw.refused(USER, &tampered).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("signature is invalid"), "{msg}");
}

#[tokio::test]
async fn startup_user_must_match_token_user() {
    let gw = TestGateway::start().await;
    let token = gw.token("alice@example.com");
    let (code, msg) = gw.refused("bob@example.com", &token).await;
    assert_eq!(code, "28000");
    assert!(
        msg.contains("user \"bob@example.com\" does not match token user \"alice@example.com\""),
        "{msg}"
    );
}

#[tokio::test]
async fn target_authorization_by_group_and_user() {
    let gw = TestGateway::start().await;
    let outsider = gw.issuer.mint(&TokenSpec {
        user: "eve@example.com".into(),
        groups: vec!["marketing".into()],
        ttl_secs: 60,
    });
    let (code, msg) = gw.refused("eve@example.com", &outsider).await;
    assert_eq!(code, "28000");
    assert!(msg.contains("not allowed to use target \"app\""), "{msg}");

    // Allowed by name, without any group.
    let solo = gw.issuer.mint(&TokenSpec {
        user: "solo@example.com".into(),
        groups: vec![],
        ttl_secs: 60,
    });
    gw.connect_with(&gw.pg_config("solo@example.com", &solo))
        .await
        .unwrap();
}

#[tokio::test]
async fn password_that_is_not_a_token_is_refused() {
    let gw = TestGateway::start().await;
    let (code, msg) = gw.refused(USER, "hunter2").await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("not a token"), "{msg}");
}

#[tokio::test]
async fn key_rotation_at_the_issuer_is_picked_up_without_restart() {
    let gw = TestGateway::start().await;
    gw.connect(USER).await; // keys cached
    let fetches = gw.issuer.jwks_fetches();
    let new_key = DevKey::generate_es256().unwrap();
    gw.issuer.add_key(new_key, true);
    gw.issuer.retire_old_keys();
    // jwks_min_refresh_secs = 1 in the test config.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let client = gw.connect(USER).await;
    client.simple_query("SELECT 1").await.unwrap();
    assert!(gw.issuer.jwks_fetches() > fetches);
}

#[tokio::test]
async fn a_flood_of_bogus_kids_does_not_hammer_the_issuer() {
    let gw = TestGateway::start().await;
    gw.connect(USER).await;
    let before = gw.issuer.jwks_fetches();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let bogus = DevKey::generate_es256().unwrap();
        gw.refused(USER, &bogus.sign(&claims(&gw))).await;
    }
    let elapsed = started.elapsed().as_secs() + 1;
    let fetched = gw.issuer.jwks_fetches() - before;
    // At most one refetch per jwks_min_refresh_secs (1 s here).
    assert!(fetched <= elapsed + 1, "{fetched} fetches in {elapsed} s");
}

#[tokio::test]
async fn plaintext_is_refused_on_tls_listener_and_allowed_on_dev_listener() {
    let gw = TestGateway::start().await;
    let token = gw.token(USER);
    let mut cfg = gw.pg_config(USER, &token);
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let Err(err) = cfg.connect(tokio_postgres::NoTls).await else {
        panic!("a plaintext client must be refused on the TLS listener");
    };
    let (code, msg) = db_error(&err);
    assert_eq!(code, "28000");
    assert!(msg.contains("only over TLS"), "{msg}");

    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(gw.plain_addr.port())
        .user(USER)
        .password(&token)
        .dbname(portcullis_e2e::DB)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_token_without_iat_is_refused_unless_its_issuer_is_exempted() {
    let gw = TestGateway::start().await;
    let mut c = claims(&gw);
    c.as_object_mut().expect("claims").remove("iat");
    let token = gw.issuer.current_key().sign(&c);
    let (code, msg) = gw.refused(USER, &token).await;
    assert_eq!(code, "28P01");
    assert!(msg.contains("no issued-at time (iat claim)"), "{msg}");

    // An issuer that omits iat, exempted by its operator: the same token works.
    let lax = TestGateway::start_with(portcullis_e2e::GatewayOptions {
        provider_extra: "require_iat = false".into(),
        ..Default::default()
    })
    .await;
    let mut c = claims(&lax);
    c.as_object_mut().expect("claims").remove("iat");
    let token = lax.issuer.current_key().sign(&c);
    let client = lax
        .connect_with(&lax.pg_config(USER, &token))
        .await
        .expect("accepted");
    client.simple_query("SELECT 1").await.expect("runs");
}
