//! Just-in-time approvals end to end, with identities from the test issuer
//! and real PostgreSQL: wait → approved / denied / timed out / cancelled by
//! the client; retry → approved → the same statement runs once, a different
//! one is still held; self-approval, outsiders and double votes refused; a
//! quorum of two; malformed decisions.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use portcullis::demo::issuer::TokenSpec;
use portcullis_e2e::{
    admin_call, cluster, db_error, plugin_wasm, secret_file, GatewayOptions, TestGateway, DB,
};
use tokio_postgres::AsyncMessage;

const REQUESTER: &str = "alice@example.com";
const ADMIN_TOKEN: &str = "approvals-test-admin-token-0123456789";

/// Tables the rules below hold statements on, created once.
fn tables() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut sql = String::new();
        for t in ["appr_wait", "appr_timeout", "appr_retry", "appr_quorum", "appr_bump", "appr_bump_wait", "appr_spell"] {
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (id int PRIMARY KEY, total int); INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 20) g ON CONFLICT DO NOTHING;"
            ));
        }
        cluster().cluster.psql(DB, &sql).expect("approval tables");
    });
}

const RULES: &str = r#"
[[plugins.config.rules]]
name = "orders-update"
kinds = ["update"]
tables = ["appr_wait"]
timeout_secs = 60

[[plugins.config.rules]]
name = "quick-timeout"
kinds = ["update"]
tables = ["appr_timeout"]
timeout_secs = 2

[[plugins.config.rules]]
name = "retry-delete"
kinds = ["delete"]
tables = ["appr_retry"]
mode = "retry"
grant_uses = 1

[[plugins.config.rules]]
name = "retry-bump"
kinds = ["update"]
tables = ["appr_bump"]
mode = "retry"
grant_uses = 1

[[plugins.config.rules]]
name = "wait-bump"
kinds = ["update"]
tables = ["appr_bump_wait"]
timeout_secs = 60

[[plugins.config.rules]]
name = "spelled-changes"
actions = ["update", "delete"]
tables = ["public.appr_spell"]
mode = "retry"

[[plugins.config.rules]]
name = "two-eyes"
kinds = ["update"]
tables = ["appr_quorum"]
min_approvals = 2
"#;

async fn gateway() -> TestGateway {
    gateway_with("").await
}

/// A gateway whose `[approvals]` table has `approvals` appended.
async fn gateway_with(approvals: &str) -> TestGateway {
    tables();
    let token_file = secret_file("approvals-admin-token", ADMIN_TOKEN);
    TestGateway::start_with(GatewayOptions {
        target_extra: "plugins = [\"approve\"]".into(),
        tail: format!(
            "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[approvals]\n{approvals}\n\n[[plugins]]\nname = \"approve\"\npath = {:?}\ncall_timeout_ms = 1000\n{RULES}",
            token_file.display().to_string(),
            plugin_wasm("approve").display().to_string(),
        ),
        ..Default::default()
    })
    .await
}

fn base(gw: &TestGateway) -> String {
    format!("http://{}", gw.gateway.admin_address.expect("admin API"))
}

fn token(gw: &TestGateway, user: &str, groups: &[&str]) -> String {
    gw.issuer.mint(&TokenSpec {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ttl_secs: 600,
    })
}

/// A client whose notices are delivered on the returned channel.
async fn client_with_notices(
    gw: &TestGateway,
    user: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let cfg = gw.pg_config(user, &gw.token(user));
    let (client, mut conn) = cfg
        .connect(portcullis_e2e::tls_connector())
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    (client, rx)
}

/// The pending request whose statement contains `needle` (waits up to 10 s).
async fn pending(gw: &TestGateway, needle: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (status, list) = admin_call(
            &base(gw),
            "GET",
            "/v1/approvals?status=pending",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        if let Some(a) = list.as_array().and_then(|l| {
            l.iter()
                .find(|a| a["sql"].as_str().unwrap_or("").contains(needle))
        }) {
            return a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no pending request for {needle:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `approver` decides request `id`.
/// An approval request as the admin API shows it.
async fn approval(gw: &TestGateway, id: &str) -> serde_json::Value {
    admin_call(
        &base(gw),
        "GET",
        &format!("/v1/approvals/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .1
}

async fn decide(
    gw: &TestGateway,
    approver: &str,
    groups: &[&str],
    id: &str,
    verb: &str,
    comment: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = comment.map(|c| serde_json::json!({ "comment": c }).to_string());
    admin_call(
        &base(gw),
        "POST",
        &format!("/v1/approvals/{id}/{verb}"),
        Some(&token(gw, approver, groups)),
        body.as_deref(),
    )
    .await
}

fn total(id: i32, table: &str) -> String {
    cluster()
        .cluster
        .psql(DB, &format!("SELECT total FROM {table} WHERE id = {id}"))
        .expect("read back")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_runs_the_statement_once_approved() {
    let gw = gateway().await;
    let (client, mut notices) = client_with_notices(&gw, REQUESTER).await;
    let sql = "UPDATE appr_wait SET total = 111 WHERE id = 1";
    let running = tokio::spawn(async move { client.simple_query(sql).await.map(|_| ()) });
    let request = pending(&gw, sql).await;
    let id = request["id"].as_str().expect("id").to_string();
    assert_eq!(request["user"], REQUESTER);
    assert_eq!(request["rule"], "orders-update");
    assert_eq!(request["mode"], "wait");
    let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .expect("a notice while waiting")
        .unwrap_or_default();
    assert!(
        notice.contains(&format!("waiting for approval {id}")),
        "{notice}"
    );
    assert!(!running.is_finished(), "the statement must wait");
    assert_eq!(total(1, "appr_wait"), "0");

    let (status, decided) = decide(
        &gw,
        "bob@example.com",
        &["approvers"],
        &id,
        "approve",
        Some("looks fine"),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("runs after approval")
        .expect("task")
        .expect("the statement succeeds");
    assert_eq!(total(1, "appr_wait"), "111");
    // Deciding again is a conflict.
    let (status, again) = decide(&gw, "carol@example.com", &["approvers"], &id, "deny", None).await;
    assert_eq!(status, 409, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_denied_fails_with_the_approver_s_words() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let sql = "UPDATE appr_wait SET total = 222 WHERE id = 2";
    let running = tokio::spawn(async move { client.simple_query(sql).await.map(|_| ()) });
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = decide(
        &gw,
        "carol@example.com",
        &["approvers"],
        &id,
        "deny",
        Some("not during the audit"),
    )
    .await;
    assert_eq!(status, 200);
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("answered after the denial")
        .expect("task")
        .expect_err("denied");
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(
        message.contains(&id) && message.contains("carol@example.com: not during the audit"),
        "{message}"
    );
    assert_eq!(total(2, "appr_wait"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_times_out_and_the_session_goes_on() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let started = Instant::now();
    let err = client
        .simple_query("UPDATE appr_timeout SET total = 3 WHERE id = 3")
        .await
        .expect_err("timed out");
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014");
    assert!(message.contains("timed out after 2 seconds"), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(total(3, "appr_timeout"), "0");
    client
        .simple_query("SELECT 1")
        .await
        .expect("the session is still usable");
    let (_, expired) = admin_call(
        &base(&gw),
        "GET",
        "/v1/approvals?status=expired",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(expired.as_array().map(Vec::len), Some(1), "{expired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_s_cancel_stops_the_wait() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let cancel = client.cancel_token();
    let sql = "UPDATE appr_wait SET total = 444 WHERE id = 4";
    let running = tokio::spawn(async move { client.simple_query(sql).await.map(|_| ()) });
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    cancel
        .cancel_query(portcullis_e2e::tls_connector())
        .await
        .expect("cancel request sent");
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("answered after the cancel")
        .expect("task")
        .expect_err("cancelled");
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014");
    assert!(
        message.contains("canceling statement due to user request"),
        "{message}"
    );
    let request = approval(&gw, &id).await;
    assert_eq!(request["status"], "cancelled");
    // Too late to approve.
    let (status, _) = decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 409);
    assert_eq!(total(4, "appr_wait"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_mode_grants_the_same_statement_once_and_holds_others() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let sql = "DELETE FROM appr_retry WHERE id = 5";
    let err = client.simple_query(sql).await.expect_err("held");
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501");
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(message.contains(&id), "{message}");
    let (status, decided) =
        decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["grant_uses_left"], 1);

    // Another statement is still held, and so is the same one from someone else.
    let other = client
        .simple_query("DELETE FROM appr_retry WHERE id = 6")
        .await
        .expect_err("a different statement is held");
    assert_eq!(db_error(&other).0, "42501");
    let someone = gw.connect("mallory@example.com").await;
    assert_eq!(
        db_error(&someone.simple_query(sql).await.expect_err("held")).0,
        "42501"
    );

    // The approved one runs once, then it is held again.
    client
        .simple_query(sql)
        .await
        .expect("runs under the grant");
    assert_eq!(
        cluster()
            .cluster
            .psql(DB, "SELECT count(*) FROM appr_retry WHERE id = 5")
            .expect("count")
            .trim(),
        "0"
    );
    let again = client
        .simple_query(sql)
        .await
        .expect_err("the grant is used up");
    assert_eq!(db_error(&again).0, "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_decide_and_a_quorum_of_two() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let sql = "UPDATE appr_quorum SET total = 7 WHERE id = 7";
    let running = tokio::spawn(async move { client.simple_query(sql).await.map(|_| ()) });
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();

    // The requester, even in the approver group, may not decide.
    let (status, own) = decide(
        &gw,
        REQUESTER,
        &["approvers", "testers"],
        &id,
        "approve",
        None,
    )
    .await;
    assert_eq!(status, 403, "{own}");
    assert!(
        own["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("own request"),
        "{own}"
    );
    // Someone outside the approver group may not either (not even call it).
    let (status, _) = decide(&gw, "dave@example.com", &["testers"], &id, "approve", None).await;
    assert_eq!(status, 403);
    // The static admin token is nobody: no decisions.
    let (status, _) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Malformed bodies and unknown ids.
    let (status, bad) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&token(&gw, "bob@example.com", &["approvers"])),
        Some("{not json"),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = decide(
        &gw,
        "bob@example.com",
        &["approvers"],
        "apr_nosuchrequest",
        "approve",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // One approval of two: still waiting; the same approver twice: conflict.
    let (status, first) =
        decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 200);
    assert_eq!(first["status"], "pending");
    let (status, _) = decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "one approval of two must not release the statement"
    );
    let (status, second) = decide(
        &gw,
        "carol@example.com",
        &["approvers"],
        &id,
        "approve",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(second["status"], "approved");
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("runs after the quorum")
        .expect("task")
        .expect("succeeds");
    assert_eq!(total(7, "appr_quorum"), "7");
}

/// A one-shot HTTP endpoint on loopback: returns its URL and the body of
/// the first `n` POSTs it receives.
async fn webhook_sink(n: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let handle = tokio::spawn(async move {
        let mut bodies = Vec::new();
        while bodies.len() < n {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let read = s.read(&mut chunk).await.expect("read");
                if read == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..read]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        bodies.push(body[..len].to_string());
                        break;
                    }
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
        bodies
    });
    (url, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_announce_requests_and_decisions() {
    let (url, received) = webhook_sink(2).await;
    let gw = gateway_with(&format!("webhook_url = {url:?}")).await;
    let client = gw.connect(REQUESTER).await;
    let sql = "UPDATE appr_wait SET total = 888 WHERE id = 8";
    let running = tokio::spawn(async move { client.simple_query(sql).await.map(|_| ()) });
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    decide(&gw, "bob@example.com", &["approvers"], &id, "deny", None).await;
    let _ = running.await;
    let bodies = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("two webhook calls")
        .expect("sink");
    let requested: serde_json::Value = serde_json::from_str(&bodies[0]).expect("JSON payload");
    assert_eq!(requested["event"], "approval.requested");
    assert_eq!(requested["approval"]["id"], id.as_str());
    assert_eq!(requested["approval"]["sql"], sql);
    assert_eq!(
        requested["approve_command"],
        format!("portcullis approvals approve {id}")
    );
    let decided: serde_json::Value = serde_json::from_str(&bodies[1]).expect("JSON payload");
    assert_eq!(decided["event"], "approval.decided");
    assert_eq!(decided["approval"]["status"], "denied");

    // The Slack-compatible format: one text with the commands.
    let (url, received) = webhook_sink(1).await;
    let gw = gateway_with(&format!(
        "webhook_url = {url:?}\nwebhook_format = \"slack\""
    ))
    .await;
    let client = gw.connect(REQUESTER).await;
    let err = client
        .simple_query("DELETE FROM appr_retry WHERE id = 9")
        .await
        .expect_err("held");
    assert_eq!(db_error(&err).0, "42501");
    let bodies = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("a webhook call")
        .expect("sink");
    let slack: serde_json::Value = serde_json::from_str(&bodies[0]).expect("JSON payload");
    let text = slack["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("requested by alice@example.com")
            && text.contains("portcullis approvals approve apr_"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_withdraws_its_request() {
    let gw = gateway().await;
    let sql = "UPDATE appr_wait SET total = 999 WHERE id = 10";
    let mut psql = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname={DB} user={REQUESTER} sslmode=require",
            gw.tls_addr.port()
        ))
        .args(["-X", "-c", sql])
        .env("PGPASSWORD", gw.token(REQUESTER))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    psql.kill().expect("kill psql");
    let _ = psql.wait();
    let start = Instant::now();
    loop {
        let request = approval(&gw, &id).await;
        if request["status"] == "cancelled" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still {request}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 409);
    assert_eq!(total(10, "appr_wait"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_pipelined_behind_a_held_one_run_after_it_in_order() {
    let gw = gateway().await;
    let client = std::sync::Arc::new(gw.connect(REQUESTER).await);
    let sql = "UPDATE appr_wait SET total = 1212 WHERE id = 12";
    let (c1, c2) = (client.clone(), client.clone());
    // Both queries are sent at once; the second reaches the gateway while
    // the first is held.
    let both = tokio::spawn(async move {
        let (first, second) = tokio::join!(
            c1.simple_query(sql),
            c2.simple_query("SELECT total FROM appr_wait WHERE id = 12")
        );
        (first.map(|_| ()), second)
    });
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!both.is_finished());
    decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    let (first, second) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("both answered")
        .expect("task");
    first.expect("the held UPDATE ran");
    let rows = second.expect("the SELECT ran");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        value.as_deref(),
        Some("1212"),
        "the SELECT saw the UPDATE: it ran after it"
    );
}

/// Exchanges `subject` for a child token acting as `actor`, with `extra`
/// form fields; returns the child token and its `jti`.
async fn child_token(
    gw: &TestGateway,
    subject: &str,
    actor: &str,
    extra: &[(&str, &str)],
) -> (String, String) {
    let (_, answer) = portcullis_e2e::exchange_child(gw, subject, actor, extra).await;
    let token = answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("exchange refused: {answer}"))
        .to_string();
    let jti = portcullis_e2e::jti_of(&token);
    (token, jti)
}

/// Whether row `id` of `appr_retry` is still there.
fn retry_row_exists(id: i32) -> bool {
    cluster()
        .cluster
        .psql(
            DB,
            &format!("SELECT count(*) FROM appr_retry WHERE id = {id}"),
        )
        .expect("count")
        .trim()
        == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_read_only_and_revoked_tokens_decide_nothing() {
    let key = cluster().dir.join(format!(
        "approvals-delegation-key-{}.pem",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&key);
    let gw = gateway_with(&format!(
        "\n[delegation]\nkey_file = {:?}\n",
        key.display().to_string()
    ))
    .await;
    let client = gw.connect(REQUESTER).await;
    let sql = "DELETE FROM appr_retry WHERE id = 9";
    client.simple_query(sql).await.expect_err("held");
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let carol = token(&gw, "carol@example.com", &["approvers"]);

    // An agent acting for carol, carrying her approver group, writable.
    let (agent, _) = child_token(&gw, &carol, "agent:triage", &[("read_only", "false")]).await;
    let (status, answer) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&agent),
        None,
    )
    .await;
    assert_eq!(status, 403, "an agent may not decide by default: {answer}");

    // A read-only child may read, not decide.
    let (read_only, _) = child_token(&gw, &carol, "agent:reader", &[]).await;
    let (status, _) = admin_call(&base(&gw), "GET", "/v1/approvals", Some(&read_only), None).await;
    assert_eq!(status, 200, "a read-only child reads");
    let (status, answer) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&read_only),
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");

    // The effect: nothing was approved, the statement is still held.
    assert_eq!(approval(&gw, &id).await["status"], "pending");
    assert!(approval(&gw, &id).await["votes"]
        .as_array()
        .is_some_and(|v| v.is_empty()));
    client.simple_query(sql).await.expect_err("still held");
    assert!(retry_row_exists(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_token_loses_its_approver_rights() {
    let key = cluster()
        .dir
        .join(format!("approvals-revoke-key-{}.pem", std::process::id()));
    let _ = std::fs::remove_file(&key);
    // Agents may decide requests of this rule: only revocation stops them.
    let gw = gateway_with(&format!(
        "agents_may_decide = [\"retry-delete\"]\n[delegation]\nkey_file = {:?}\n",
        key.display().to_string()
    ))
    .await;
    let client = gw.connect(REQUESTER).await;
    let carol = token(&gw, "carol@example.com", &["approvers"]);
    let (revoked, jti) = child_token(&gw, &carol, "agent:triage", &[("read_only", "false")]).await;
    let (status, answer) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/tokens/{jti}/revoke"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let sql = "DELETE FROM appr_retry WHERE id = 10";
    client.simple_query(sql).await.expect_err("held");
    let id = pending(&gw, sql).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    for (method, path) in [
        ("POST", format!("/v1/approvals/{id}/approve")),
        ("GET", "/v1/approvals".to_string()),
        ("GET", "/v1/sessions".to_string()),
    ] {
        let (status, answer) = admin_call(&base(&gw), method, &path, Some(&revoked), None).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
    }
    assert_eq!(approval(&gw, &id).await["status"], "pending");
    client.simple_query(sql).await.expect_err("still held");
    assert!(retry_row_exists(10));

    // A sibling that was not revoked may decide (the rule lets agents), and
    // then the statement runs: the refusals above were the revocation's doing.
    let (live, _) = child_token(&gw, &carol, "agent:triage", &[("read_only", "false")]).await;
    let (status, answer) = admin_call(
        &base(&gw),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&live),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    client
        .simple_query(sql)
        .await
        .expect("runs under the grant");
    assert!(!retry_row_exists(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_covers_one_run_with_the_values_the_approver_saw() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    let sql = "UPDATE appr_bump SET total = total + 1 WHERE id = $1";
    // Preparing runs nothing, so nothing is held yet.
    let stmt = client.prepare(sql).await.expect("prepare");
    let err = client
        .execute(&stmt, &[&1i32])
        .await
        .expect_err("the run is held (retry mode)");
    assert_eq!(db_error(&err).0, "42501");
    let request = pending(&gw, sql).await;
    let shown = request["sql"].as_str().expect("sql").to_string();
    assert!(
        shown.starts_with("-- $1 = \\x00000001 (binary)\n"),
        "{shown}"
    );
    let id = request["id"].as_str().expect("id").to_string();
    let (status, decided) =
        decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 200, "{decided}");

    // Other values are not covered.
    let err = client
        .execute(&stmt, &[&2i32])
        .await
        .expect_err("id 2 was not approved");
    assert_eq!(db_error(&err).0, "42501");
    assert_eq!(total(2, "appr_bump"), "0");
    // The approved values run once, and once only.
    client
        .execute(&stmt, &[&1i32])
        .await
        .expect("runs under the grant");
    assert_eq!(total(1, "appr_bump"), "1");
    let err = client
        .execute(&stmt, &[&1i32])
        .await
        .expect_err("one approval is one run");
    assert_eq!(db_error(&err).0, "42501");
    assert_eq!(total(1, "appr_bump"), "1", "the second run did not happen");
    client
        .simple_query("SELECT 1")
        .await
        .expect("the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_of_a_prepared_statement_waits_for_its_own_approval() {
    let gw = gateway().await;
    let client = std::sync::Arc::new(gw.connect(REQUESTER).await);
    let sql = "UPDATE appr_bump_wait SET total = total + 1 WHERE id = $1";
    let stmt = client.prepare(sql).await.expect("prepare");
    for (round, verb) in [(1, "approve"), (2, "deny")] {
        let (c, s) = (client.clone(), stmt.clone());
        let running = tokio::spawn(async move { c.execute(&s, &[&5i32]).await });
        let request = pending(&gw, sql).await;
        assert!(
            request["sql"]
                .as_str()
                .unwrap_or("")
                .contains("-- $1 = \\x00000005"),
            "{request}"
        );
        assert!(!running.is_finished(), "round {round}: the run waits");
        let id = request["id"].as_str().expect("id").to_string();
        let (status, decided) =
            decide(&gw, "bob@example.com", &["approvers"], &id, verb, None).await;
        assert_eq!(status, 200, "{decided}");
        let outcome = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("decided")
            .expect("task");
        match verb {
            "approve" => assert_eq!(outcome.expect("approved run"), 1),
            _ => assert_eq!(db_error(&outcome.expect_err("denied run")).0, "42501"),
        }
        // Only the approved run happened.
        assert_eq!(total(5, "appr_bump_wait"), "1", "round {round}");
    }
}

/// Messages a test writes into a buffer.
type Messages = dyn FnOnce(&mut bytes::BytesMut);

/// Sends what `build` writes, then reads up to each ReadyForQuery it owes;
/// returns the SQLSTATEs of the errors received.
async fn exchange_raw(
    s: &mut tokio::net::TcpStream,
    readies: usize,
    build: impl FnOnce(&mut bytes::BytesMut),
) -> Vec<String> {
    use portcullis_e2e::raw;
    let mut b = bytes::BytesMut::new();
    build(&mut b);
    raw::send(s, &b).await;
    let mut codes = Vec::new();
    for _ in 0..readies {
        let (_, c) = tokio::time::timeout(Duration::from_secs(20), raw::until_ready(s))
            .await
            .expect("an answer");
        codes.extend(c);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_cannot_be_run_around_its_approval() {
    use portcullis_e2e::raw;
    let gw = gateway().await;
    let mut s = raw::login(&gw, REQUESTER).await;
    let bump = "UPDATE appr_bump SET total = total + 1 WHERE id = $1";
    let codes = exchange_raw(&mut s, 1, |b| {
        raw::parse(b, "s1", bump);
        raw::parse(b, "", bump);
        raw::sync(b);
    })
    .await;
    assert!(
        codes.is_empty(),
        "preparing runs nothing and is not held: {codes:?}"
    );

    let attempts: Vec<(&str, Box<Messages>, usize)> = vec![
        // SQL EXECUTE of the protocol-level statement, plain and nested.
        ("EXECUTE", Box::new(|b| raw::query(b, "EXECUTE s1(3)")), 1),
        (
            "EXPLAIN ANALYZE EXECUTE",
            Box::new(|b| raw::query(b, "EXPLAIN ANALYZE EXECUTE s1(3)")),
            1,
        ),
        (
            "CREATE TABLE AS EXECUTE",
            Box::new(|b| raw::query(b, "CREATE TEMP TABLE sneaky AS EXECUTE s1(3)")),
            1,
        ),
        // A Parse that executes it.
        (
            "Parse of EXECUTE",
            Box::new(|b| {
                raw::parse(b, "x", "EXECUTE s1(3)");
                raw::bind(b, "", "x", &[]);
                raw::execute(b, "");
                raw::sync(b);
            }),
            1,
        ),
        // A second Parse of the name fails at the server (42P05): s1 is
        // still the UPDATE when it is bound.
        (
            "re-Parse of the name",
            Box::new(|b| {
                raw::parse(b, "s1", "SELECT 1");
                raw::sync(b);
                raw::bind(b, "", "s1", &["3"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
            2,
        ),
        // A Close the server skips after an error, then a run.
        (
            "Close skipped after an error",
            Box::new(|b| {
                raw::bind(b, "", "no_such_statement", &[]);
                raw::close(b, b'S', "s1");
                raw::sync(b);
                raw::bind(b, "", "s1", &["3"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
            2,
        ),
        // A Parse of the unnamed statement the server skips after an error
        // (the unnamed statement is prepared again first: every simple
        // Query, refused ones included, drops it, as in PostgreSQL).
        (
            "unnamed Parse skipped after an error",
            Box::new(move |b| {
                raw::parse(b, "", bump);
                raw::sync(b);
                raw::bind(b, "", "no_such_statement", &[]);
                raw::parse(b, "", "SELECT 1");
                raw::sync(b);
                raw::bind(b, "", "", &["3"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
            3,
        ),
    ];
    for (label, build, readies) in attempts {
        let codes = exchange_raw(&mut s, readies, build).await;
        assert!(
            codes.iter().any(|c| c == "42501"),
            "{label}: the run must be held: {codes:?}"
        );
        assert_eq!(
            total(3, "appr_bump"),
            "0",
            "{label}: the UPDATE ran unapproved"
        );
    }

    // The control: once its run is approved, EXECUTE s1(3) does run.
    let request = pending(&gw, "-- run by:\nEXECUTE s1(3)").await;
    let id = request["id"].as_str().expect("id").to_string();
    let shown = request["sql"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with(bump),
        "the approver sees the held statement: {shown}"
    );
    let (status, decided) =
        decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 200, "{decided}");
    let codes = exchange_raw(&mut s, 1, |b| raw::query(b, "EXECUTE s1(3)")).await;
    assert!(codes.is_empty(), "{codes:?}");
    assert_eq!(total(3, "appr_bump"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepare_is_judged_by_what_it_prepares_and_each_execute_is_held() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    client
        .simple_query("PREPARE bump_w AS UPDATE appr_bump SET total = total + 1 WHERE id = $1")
        .await
        .expect("preparing runs nothing");
    let err = client
        .simple_query("EXECUTE bump_w(4)")
        .await
        .expect_err("the run is held (retry mode)");
    assert_eq!(db_error(&err).0, "42501");
    assert_eq!(total(4, "appr_bump"), "0", "the UPDATE ran unapproved");
    let request = pending(&gw, "-- run by:\nEXECUTE bump_w(4)").await;
    let id = request["id"].as_str().expect("id").to_string();
    let (status, decided) =
        decide(&gw, "bob@example.com", &["approvers"], &id, "approve", None).await;
    assert_eq!(status, 200, "{decided}");
    client
        .simple_query("EXECUTE bump_w(4)")
        .await
        .expect("the approved run");
    assert_eq!(total(4, "appr_bump"), "1");
    let err = client
        .simple_query("EXECUTE bump_w(4)")
        .await
        .expect_err("one approval, one run");
    assert_eq!(db_error(&err).0, "42501");
    assert_eq!(total(4, "appr_bump"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_between_an_error_and_its_sync_cannot_unhold_a_statement() {
    use portcullis_e2e::raw;
    let gw = gateway().await;
    let mut s = raw::login(&gw, REQUESTER).await;
    let bump = "UPDATE appr_bump SET total = total + 1 WHERE id = $1";
    let codes = exchange_raw(&mut s, 1, |b| {
        raw::parse(b, "", bump);
        raw::sync(b);
    })
    .await;
    assert!(codes.is_empty(), "{codes:?}");
    // The server skips the Query and the Parse after the failed Bind; had
    // the gateway counted the Parse as first of a batch, the held unnamed
    // statement would run freely below.
    let mut b = bytes::BytesMut::new();
    raw::bind(&mut b, "", "no_such_statement", &[]);
    raw::query(&mut b, "SELECT 1");
    raw::parse(&mut b, "", "SELECT 2");
    raw::sync(&mut b);
    raw::bind(&mut b, "", "", &["5"]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_closed(&mut s).await;
    assert!(codes.iter().any(|c| c == "08P01"), "{codes:?}");
    assert_eq!(total(5, "appr_bump"), "0", "the held UPDATE ran unapproved");
}

/// `(rows, sum of totals)` of `appr_spell`, read directly.
fn spell_state() -> String {
    cluster()
        .cluster
        .psql(DB, "SELECT count(*) || ',' || sum(total) FROM appr_spell")
        .expect("appr_spell state")
        .trim()
        .to_string()
}

#[tokio::test]
async fn an_action_rule_holds_every_spelling_of_the_action() {
    let gw = gateway().await;
    let client = gw.connect(REQUESTER).await;
    cluster()
        .cluster
        .psql(DB, "UPDATE appr_spell SET total = 0; INSERT INTO appr_spell SELECT g, 0 FROM generate_series(1, 20) g ON CONFLICT DO NOTHING")
        .expect("reset appr_spell");
    let before = spell_state();
    assert_eq!(before, "20,0");
    let spellings = [
        "UPDATE appr_spell SET total = 1 WHERE id = 1",
        "MERGE INTO appr_spell t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET total = 1",
        "MERGE INTO appr_spell t USING appr_spell s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "INSERT INTO appr_spell VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET total = 1",
        "WITH u AS (UPDATE appr_spell SET total = 1 WHERE id = 1 RETURNING 1) SELECT count(*) FROM u",
        "WITH appr_spell AS (SELECT 1) UPDATE appr_spell SET total = 1 WHERE id = 1",
        "EXPLAIN ANALYZE UPDATE public.appr_spell SET total = 1 WHERE id = 1",
        "WITH d AS (DELETE FROM appr_spell WHERE id = 2 RETURNING 1) SELECT 1",
    ];
    for sql in spellings {
        let err = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}: {err}");
        let err = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql} (extended): {err}");
        assert_eq!(spell_state(), before, "{sql} changed rows");
    }
    // Reading the table and inserting into it are not what the rule names.
    client
        .simple_query("SELECT * FROM appr_spell WHERE id = 1")
        .await
        .expect("reads run");
    client
        .simple_query("INSERT INTO appr_spell VALUES (1000, 0) ON CONFLICT DO NOTHING")
        .await
        .expect("inserts run");
    client
        .simple_query("DELETE FROM appr_spell WHERE id = 1000")
        .await
        .expect_err("deletes are held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_or_move_of_a_portal_bound_from_a_held_statement_is_refused() {
    use portcullis_e2e::raw;
    let gw = gateway().await;
    let mut s = raw::login(&gw, REQUESTER).await;
    let before = total(4, "appr_bump");
    let attempts: Vec<(&str, Box<Messages>)> = vec![
        ("FETCH", Box::new(|b| raw::query(b, "FETCH ALL FROM p"))),
        ("MOVE", Box::new(|b| raw::query(b, "MOVE ALL IN p"))),
        (
            "quoted",
            Box::new(|b| raw::query(b, "FETCH NEXT FROM \"p\"")),
        ),
        (
            "extended MOVE",
            Box::new(|b| {
                raw::parse(b, "m", "MOVE ALL IN p");
                raw::bind(b, "", "m", &[]);
                raw::execute(b, "");
                raw::sync(b);
            }),
        ),
    ];
    for (label, attempt) in attempts {
        // In a transaction, a held UPDATE ... RETURNING is prepared and
        // bound into portal p: nothing runs yet.
        let codes = exchange_raw(&mut s, 2, |b| {
            raw::query(b, "BEGIN");
            raw::parse(
                b,
                "u",
                "UPDATE appr_bump SET total = total + 1 WHERE id = 4 RETURNING id",
            );
            raw::bind(b, "p", "u", &[]);
            raw::sync(b);
        })
        .await;
        assert!(codes.is_empty(), "{label}: {codes:?}");
        // PostgreSQL runs a RETURNING portal on its first FETCH or MOVE.
        let codes = exchange_raw(&mut s, 1, attempt).await;
        assert!(codes.iter().any(|c| c == "42501"), "{label}: {codes:?}");
        exchange_raw(&mut s, 2, |b| {
            raw::query(b, "ROLLBACK");
            raw::close(b, b'S', "u");
            raw::sync(b);
        })
        .await;
        assert_eq!(
            total(4, "appr_bump"),
            before,
            "{label}: the held UPDATE ran"
        );
    }
}

/// A message PostgreSQL refuses before acting on it (trailing bytes in a
/// Close, a Parse, a Flush) ends the session instead of making the gateway
/// forget a held statement; a Bind the server refuses (no such statement)
/// leaves the held portal in place, and so does the gateway. The held
/// UPDATE never runs unapproved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_server_refuses_cannot_unhold_a_statement() {
    use portcullis_e2e::raw;
    let gw = gateway().await;
    let bump = "UPDATE appr_bump SET total = total + 1 WHERE id = $1";
    let with_junk = |b: &mut bytes::BytesMut, tag: u8, body: &[u8]| {
        portcullis::protocols::postgres::codec::MessageWriter::start(b, Some(tag))
            .bytes(body)
            .bytes(b"junk");
    };
    let attempts: Vec<(&str, i32, Box<Messages>)> = vec![
        (
            "Close with trailing bytes",
            11,
            Box::new(move |b| {
                raw::parse(b, "w", bump);
                raw::sync(b);
                with_junk(b, b'C', b"Sw\0");
                raw::sync(b);
                raw::bind(b, "", "w", &["11"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
        ),
        (
            "Parse with trailing bytes",
            12,
            Box::new(move |b| {
                raw::parse(b, "", bump);
                raw::sync(b);
                with_junk(b, b'P', b"\0SELECT 1\0\0\0");
                raw::sync(b);
                raw::bind(b, "", "", &["12"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
        ),
        (
            "Flush with a body",
            13,
            Box::new(move |b| {
                raw::parse(b, "", bump);
                raw::sync(b);
                with_junk(b, b'H', b"");
                raw::parse(b, "", "SELECT 1");
                raw::sync(b);
                raw::bind(b, "", "", &["13"]);
                raw::execute(b, "");
                raw::sync(b);
            }),
        ),
    ];
    for (label, id, build) in attempts {
        let mut s = raw::login(&gw, REQUESTER).await;
        let mut b = bytes::BytesMut::new();
        build(&mut b);
        raw::send(&mut s, &b).await;
        let (_, codes) = raw::until_closed(&mut s).await;
        assert!(codes.contains(&"08P01".to_string()), "{label}: {codes:?}");
        assert_eq!(
            total(id, "appr_bump"),
            "0",
            "{label}: the UPDATE ran unapproved"
        );
    }
    // A refused Bind inside a transaction, rolled back to a savepoint: the
    // unnamed portal still holds the held run.
    let mut s = raw::login(&gw, REQUESTER).await;
    let named = |b: &mut bytes::BytesMut, name: &str, sql: &str| {
        raw::parse(b, name, sql);
        raw::bind(b, name, name, &[]);
        raw::execute(b, name);
        raw::close(b, b'P', name);
        raw::sync(b);
    };
    let codes = exchange_raw(&mut s, 6, |b| {
        raw::query(b, "BEGIN");
        raw::parse(b, "w", bump);
        raw::sync(b);
        raw::bind(b, "", "w", &["14"]);
        raw::sync(b);
        named(b, "sp", "SAVEPOINT s1");
        raw::bind(b, "", "no_such_statement", &[]);
        raw::sync(b);
        named(b, "rb", "ROLLBACK TO SAVEPOINT s1");
    })
    .await;
    assert_eq!(codes, vec!["26000".to_string()], "{codes:?}");
    let codes = exchange_raw(&mut s, 2, |b| {
        raw::execute(b, "");
        raw::sync(b);
        raw::query(b, "COMMIT");
    })
    .await;
    assert!(codes.contains(&"42501".to_string()), "{codes:?}");
    assert_eq!(total(14, "appr_bump"), "0", "the UPDATE ran unapproved");
}
