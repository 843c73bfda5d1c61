//! The gateway's upstream credential from short-lived token sources: a
//! command, an OAuth2 client-credentials grant and an Azure managed identity,
//! each against a local fake and a PostgreSQL role whose password is the token.

use std::time::Duration;

use portcullis_e2e::fake_http::FakeEndpoint;
use portcullis_e2e::{cluster, GatewayOptions, TestGateway};
use serde_json::json;

const USER: &str = "cred@example.com";

/// A fresh upstream role whose password is a fresh token.
fn role_with_token_password(tag: &str) -> (String, String) {
    let n: u32 = std::process::id() ^ (tag.len() as u32 * 7919);
    let role = format!("tok_{tag}_{n}");
    let token = format!(
        "tok-{tag}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    cluster()
        .cluster
        .psql(
            portcullis_e2e::DB,
            &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{token}'"),
        )
        .unwrap();
    (role, token)
}

async fn current_user(gw: &TestGateway) -> String {
    let c = gw.connect(USER).await;
    c.query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn password_command_output_is_the_password_and_is_cached() {
    let (role, token) = role_with_token_password("cmd");
    let dir = &cluster().dir;
    let token_file = dir.join(format!("{role}.token"));
    let counter = dir.join(format!("{role}.count"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_user: role.clone(),
        upstream_password: None,
        target_extra: format!(
            "password_command = \"echo run >> '{}'; cat '{}'\"",
            counter.display(),
            token_file.display()
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(current_user(&gw).await, role);
    assert_eq!(current_user(&gw).await, role);
    let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
    assert_eq!(runs, 1, "the token is reused for the cache lifetime");
}

#[tokio::test]
async fn a_failing_source_gives_the_client_a_clear_error() {
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_password: None,
        target_extra: "password_command = \"echo 'az: not logged in' >&2; exit 3\"".into(),
        ..Default::default()
    })
    .await;
    let (code, msg) = gw.refused(USER, &gw.token(USER)).await;
    assert_eq!(code, "08001");
    assert!(
        msg.contains("cannot log in to target \"app\": its credential is unavailable"),
        "{msg}"
    );
}

#[tokio::test]
async fn oauth2_client_credentials_token_is_used_and_cached() {
    let (role, token) = role_with_token_password("oauth");
    let fake = FakeEndpoint::start(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
    )
    .await;
    let secret = cluster().dir.join(format!("{role}.secret"));
    std::fs::write(&secret, "s3cret value\n").unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_user: role.clone(),
        upstream_password: None,
        target_extra: format!(
            "[targets.oauth2]\ntoken_url = \"{}/token\"\nclient_id = \"gateway\"\nclient_secret_file = {:?}\nscope = \"db/.default\"",
            fake.url,
            secret.display().to_string()
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(current_user(&gw).await, role);
    assert_eq!(current_user(&gw).await, role);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "cached until shortly before expiry");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].body,
        "grant_type=client_credentials&client_id=gateway&client_secret=s3cret+value&scope=db%2F.default"
    );
}

#[tokio::test]
async fn an_expiring_token_is_fetched_again_for_new_connections() {
    let (role, token) = role_with_token_password("short");
    let fake = FakeEndpoint::start(json!({"access_token": token, "expires_in": 1})).await;
    let secret = cluster().dir.join(format!("{role}.secret"));
    std::fs::write(&secret, "x").unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_user: role.clone(),
        upstream_password: None,
        target_extra: format!(
            "[targets.oauth2]\ntoken_url = \"{}/token\"\nclient_id = \"gateway\"\nclient_secret_file = {:?}",
            fake.url,
            secret.display().to_string()
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(current_user(&gw).await, role);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(current_user(&gw).await, role);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn azure_managed_identity_token_is_used() {
    let (role, token) = role_with_token_password("azure");
    let fake = FakeEndpoint::start(json!({
        "access_token": token, "expires_in": "3599", "expires_on": "1900000000",
        "resource": "https://ossrdbms-aad.database.windows.net", "token_type": "Bearer"
    }))
    .await;
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_user: role.clone(),
        upstream_password: None,
        target_extra: format!(
            "[targets.azure_managed_identity]\nendpoint = \"{}/metadata/identity/oauth2/token\"\nclient_id = \"11111111-2222\"",
            fake.url
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(current_user(&gw).await, role);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0]
        .headers
        .iter()
        .any(|(k, v)| k == "metadata" && v == "true"));
    assert_eq!(
        reqs[0].uri,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net&client_id=11111111-2222"
    );
}
