//! The admin API and the CLI over it: authentication and authorization
//! (missing, forged and expired tokens, non-members, approvers, admins, the
//! static admin token), bad input answered with JSON errors, readiness and
//! metrics, and `portcullis sessions|audit|plugins` against a live gateway.

use std::process::Command;

use portcullis::demo::issuer::TokenSpec;
use portcullis_e2e::{
    admin_call, plugin_wasm, portcullis_bin, secret_file, GatewayOptions, TestGateway,
};

const ADMIN_TOKEN: &str = "static-admin-token-for-tests-0123456789";

async fn gateway() -> TestGateway {
    let token_file = secret_file("admin-token", &format!("{ADMIN_TOKEN}\n"));
    TestGateway::start_with(GatewayOptions {
        target_extra: "plugins = [\"block\", \"record\"]".into(),
        tail: format!(
            r#"
[admin]
address = "127.0.0.1:0"
token_file = {token_file:?}

[[plugins]]
name = "block"
path = {block:?}
call_timeout_ms = 1000
[plugins.config]
rules = [{{ name = "no-drop", kinds = ["drop"] }}]

[[plugins]]
name = "record"
path = {record:?}
call_timeout_ms = 1000
"#,
            token_file = token_file.display().to_string(),
            block = plugin_wasm("block").display().to_string(),
            record = plugin_wasm("record").display().to_string(),
        ),
        ..Default::default()
    })
    .await
}

fn base(gw: &TestGateway) -> String {
    format!(
        "http://{}",
        gw.gateway.admin_address.expect("admin API configured")
    )
}

fn token(gw: &TestGateway, user: &str, groups: &[&str]) -> String {
    gw.issuer.mint(&TokenSpec {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ttl_secs: 600,
    })
}

/// Calls the gateway's admin API.
async fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    admin_call(&base(gw), method, path, bearer, None).await
}

/// Asserts a JSON error with `status` whose message contains `needle`.
fn assert_error(reply: (u16, serde_json::Value), status: u16, needle: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error"]["status"], status, "{}", reply.1);
    let message = reply.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let gw = gateway().await;
    assert_error(
        call(&gw, "GET", "/v1/sessions", None).await,
        401,
        "missing bearer token",
    );
    assert_error(
        call(&gw, "GET", "/v1/sessions", Some("not-a-token")).await,
        401,
        "token refused",
    );
    let good = token(&gw, "root@example.com", &["admins"]);
    let forged = format!("{}AAAA", &good[..good.len() - 4]);
    assert_error(
        call(&gw, "GET", "/v1/sessions", Some(&forged)).await,
        401,
        "token refused",
    );
    let outsider = token(&gw, "someone@example.com", &["testers"]);
    assert_error(
        call(&gw, "GET", "/v1/sessions", Some(&outsider)).await,
        403,
        "none of the admin groups",
    );
    let approver = token(&gw, "approver@example.com", &["approvers"]);
    assert_eq!(
        call(&gw, "GET", "/v1/sessions", Some(&approver)).await.0,
        200
    );
    assert_error(
        call(&gw, "POST", "/v1/plugins/reload", Some(&approver)).await,
        403,
        "admin groups",
    );
    assert_error(
        call(&gw, "GET", "/v1/audit/export", Some(&approver)).await,
        403,
        "admin groups",
    );
    // Paths are matched decoded, permissions included: an encoded letter
    // neither hides an endpoint from its role check nor makes it unknown.
    assert_error(
        call(&gw, "GET", "/v1/%61udit/export", Some(&approver)).await,
        403,
        "admin groups",
    );
    assert_error(
        call(&gw, "GET", "/v1/sessions/%39%399999999", Some(&good)).await,
        404,
        "no session 999999999",
    );
    assert_error(
        call(&gw, "GET", "/v1/sessions/abc", Some(&good)).await,
        400,
        "not a session id",
    );
    assert_error(
        call(&gw, "GET", "/v1/sessions/999999999", Some(&good)).await,
        404,
        "no session 999999999",
    );
    assert_error(
        call(&gw, "GET", "/v1/sessions?limit=lots", Some(&good)).await,
        400,
        "limit",
    );
    assert_error(
        call(
            &gw,
            "GET",
            "/v1/audit/export?since=yesterday",
            Some(ADMIN_TOKEN),
        )
        .await,
        400,
        "since must be a time",
    );
    assert_error(
        call(&gw, "DELETE", "/v1/plugins", Some(ADMIN_TOKEN)).await,
        405,
        "not allowed",
    );
    assert_error(
        call(&gw, "GET", "/v2/nothing", Some(ADMIN_TOKEN)).await,
        404,
        "no such endpoint",
    );
    // The static admin token may do everything.
    let (status, reloaded) = call(&gw, "POST", "/v1/plugins/reload", Some(ADMIN_TOKEN)).await;
    // A gateway started from text, not a file, cannot reload from it.
    assert_eq!(status, 409, "{reloaded}");
    let (status, plugins) = call(&gw, "GET", "/v1/plugins", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = plugins
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.len(), 2, "{plugins}");
    assert!(
        names.contains(&"block") && names.contains(&"record"),
        "{plugins}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let gw = gateway().await;
    let client = gw.connect("metrics@example.com").await;
    client.simple_query("SELECT 1").await.expect("query");
    client
        .simple_query("DROP TABLE nothing")
        .await
        .expect_err("refused");
    assert_eq!(call(&gw, "GET", "/healthz", None).await.0, 200);
    let (status, ready) = call(&gw, "GET", "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["store_writable"], true);
    assert_eq!(ready["plugins_loaded"], 2);
    let (status, metrics) = call(&gw, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    for needle in [
        "portcullis_sessions_active",
        "portcullis_queries_total{verdict=\"deny\",plugin=\"block\"}",
        "portcullis_plugin_call_seconds_bucket{plugin=\"block\"",
        "portcullis_store_write_seconds_count",
        "portcullis_bytes_total{direction=\"to_client\"}",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
    let (status, doc) = call(&gw, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/sessions/{id}"].is_object(), "{doc}");
}

/// Runs the CLI against the gateway's admin API; returns stdout.
fn cli(gw: &TestGateway, args: &[&str]) -> String {
    let token_file = secret_file("cli-token", ADMIN_TOKEN);
    let out = Command::new(portcullis_bin())
        .args(args)
        .args(["--api", &base(gw), "--token-file"])
        .arg(&token_file)
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "portcullis {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_sessions_replays_one_and_exports_the_audit() {
    let gw = gateway().await;
    let user = "cli-user@example.com";
    let client = gw.connect(user).await;
    client
        .simple_query("CREATE TEMP TABLE cli_t AS SELECT generate_series(1, 4) AS n")
        .await
        .expect("create");
    client
        .simple_query("DROP TABLE cli_t")
        .await
        .expect_err("refused");
    drop(client);
    // Wait for the session's end to be committed.
    let mut id = None;
    for _ in 0..100 {
        gw.gateway.context.core.audit.flush().await;
        let listed = cli(
            &gw,
            &["sessions", "list", "--user", user, "--output", "json"],
        );
        let v: serde_json::Value = serde_json::from_str(&listed).expect("JSON output");
        if v[0]["ended_at"].is_number() {
            id = v[0]["id"].as_u64();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = id.expect("the session is listed and ended");
    let table = cli(&gw, &["sessions", "list", "--user", user]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(user) && table.contains("ended"), "{table}");

    let shown = cli(&gw, &["sessions", "show", &id.to_string()]);
    assert!(shown.contains(&format!("session {id}")), "{shown}");
    assert!(shown.contains("groups:  testers"), "{shown}");
    let timeline: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("TIME"))
        .collect();
    assert_eq!(timeline.len(), 3, "{shown}");
    assert!(
        timeline[1].contains("ok")
            && timeline[1].contains(" 4 ")
            && timeline[1].contains("CREATE TEMP TABLE cli_t"),
        "{shown}"
    );
    assert!(
        timeline[2].contains("refused by block (no-drop)")
            && timeline[2].contains("DROP TABLE cli_t"),
        "{shown}"
    );

    let exported = cli(&gw, &["audit", "export", "--since", "2000-01-01"]);
    let mine: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|e: &serde_json::Value| e["session_id"] == id)
        .collect();
    assert_eq!(mine.len(), 2, "{exported}");
    let none = cli(
        &gw,
        &[
            "audit",
            "export",
            "--since",
            "2000-01-01",
            "--until",
            "2000-01-02",
        ],
    );
    assert!(none.is_empty(), "{none}");

    let plugins = cli(&gw, &["plugins", "list"]);
    assert!(
        plugins.contains("block") && plugins.contains("record"),
        "{plugins}"
    );
}
