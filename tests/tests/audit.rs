//! The audit trail against real PostgreSQL: what the `record` plugin selects
//! is stored with its outcome (rows, SQLSTATE, duration), refusals are
//! stored whatever it says, sessions carry identity, addresses and bytes,
//! and under load every statement is stored exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::store::{EventRecord, EventStatus, SessionQuery, SessionRecord, Store};
use portcullis_e2e::{db_error, plugin_wasm, GatewayOptions, TestGateway};

/// Options for a gateway whose target runs `block` (no DROP) then `record`
/// with `record_config`, and `durability`. Calls get a generous deadline:
/// the load test starts 50 sessions at once on two cores.
fn options(record_config: &str, durability: &str) -> GatewayOptions {
    GatewayOptions {
        target_extra: format!("plugins = [\"block\", \"record\"]\ndurability = {durability:?}"),
        tail: format!(
            r#"
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
[plugins.config]
{record_config}
"#,
            block = plugin_wasm("block").display().to_string(),
            record = plugin_wasm("record").display().to_string(),
        ),
        ..Default::default()
    }
}

fn store(gw: &TestGateway) -> Arc<dyn Store> {
    gw.gateway.context.core.audit.store().clone()
}

/// The ended session of `user` (waits for its end to be committed).
async fn ended_session(gw: &TestGateway, user: &str) -> SessionRecord {
    let start = Instant::now();
    loop {
        gw.gateway.context.core.audit.flush().await;
        let sessions = store(gw)
            .sessions(&SessionQuery {
                user: Some(user.into()),
                ..Default::default()
            })
            .expect("sessions");
        if let Some(s) = sessions.into_iter().find(|s| s.ended_at.is_some()) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the session's end was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_recording_matches_what_the_client_did() {
    let gw = TestGateway::start_with(options("sample_rows = 0", "batched")).await;
    let user = "recorded@example.com";
    let client = gw.connect(user).await;
    client
        .batch_execute(
            "CREATE TEMP TABLE audit_t (id int); INSERT INTO audit_t SELECT generate_series(1, 3)",
        )
        .await
        .expect("create and insert");
    let stmt = client
        .prepare("SELECT id FROM audit_t WHERE id >= $1")
        .await
        .expect("prepare");
    assert_eq!(
        client
            .query(&stmt, &[&2i32])
            .await
            .expect("first run")
            .len(),
        2
    );
    assert_eq!(
        client
            .query(&stmt, &[&1i32])
            .await
            .expect("second run")
            .len(),
        3
    );
    let err = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(db_error(&err).0, "22012");
    let refused = client
        .simple_query("DROP TABLE audit_t")
        .await
        .expect_err("refused");
    assert_eq!(db_error(&refused).0, "42501");
    drop(client);

    let session = ended_session(&gw, user).await;
    assert_eq!(session.target, portcullis_e2e::DB);
    assert_eq!(session.identity.groups, vec!["testers".to_string()]);
    assert_eq!(session.protocol, "postgres");
    assert!(
        session.client_addr.starts_with("127.0.0.1:"),
        "{}",
        session.client_addr
    );
    assert!(
        session.bytes_from_client > 100 && session.bytes_to_client > 100,
        "{session:?}"
    );
    assert_eq!(
        session.end_reason.as_deref(),
        Some("client closed the session")
    );

    let events = store(&gw).events(session.id).expect("events");
    let seen: Vec<(&str, EventStatus, Option<u64>)> =
        events.iter().map(|e| (&*e.sql, e.status, e.rows)).collect();
    assert_eq!(
        seen,
        vec![
            (
                "CREATE TEMP TABLE audit_t (id int); INSERT INTO audit_t SELECT generate_series(1, 3)",
                EventStatus::Ok,
                Some(3)
            ),
            ("SELECT id FROM audit_t WHERE id >= $1", EventStatus::Ok, Some(2)),
            ("SELECT id FROM audit_t WHERE id >= $1", EventStatus::Ok, Some(3)),
            ("SELECT 1/0", EventStatus::Error, None),
            ("DROP TABLE audit_t", EventStatus::Refused, None),
        ],
        "{events:#?}"
    );
    assert_eq!(*events[0].kinds, ["create", "insert"]);
    assert_eq!(*events[0].tables_written, ["audit_t"]);
    assert_eq!(&*events[1].protocol, "extended");
    assert_eq!(events[3].sqlstate.as_deref(), Some("22012"));
    let drop_event: &EventRecord = &events[4];
    assert_eq!(drop_event.verdict, "deny");
    assert_eq!(drop_event.decided_by.as_deref(), Some("block"));
    assert_eq!(drop_event.rule.as_deref(), Some("no-drop"));
    assert!(events[..4].iter().all(|e| e.duration_us.is_some()));
    assert!(events
        .windows(2)
        .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at));
}

#[tokio::test]
async fn writes_only_recording_skips_reads_but_keeps_refusals() {
    let gw = TestGateway::start_with(options("statements = \"writes\"", "strict")).await;
    let user = "writer@example.com";
    let client = gw.connect(user).await;
    client.simple_query("SELECT 1").await.expect("read");
    client
        .simple_query("CREATE TEMP TABLE w (id int)")
        .await
        .expect("ddl");
    client
        .simple_query("DROP TABLE w")
        .await
        .expect_err("refused");
    drop(client);
    let session = ended_session(&gw, user).await;
    let events = store(&gw).events(session.id).expect("events");
    let seen: Vec<(&str, EventStatus)> = events.iter().map(|e| (&*e.sql, e.status)).collect();
    assert_eq!(
        seen,
        vec![
            ("CREATE TEMP TABLE w (id int)", EventStatus::Ok),
            ("DROP TABLE w", EventStatus::Refused),
        ]
    );
}

/// "Writes" is the gateway's own judgement, the one read-only sessions are
/// held to: a SELECT that advances a sequence or changes a setting is
/// recorded as a write; plain reads and SHOW are not.
#[tokio::test]
async fn writes_only_recording_keeps_writes_made_through_functions() {
    let gw = TestGateway::start_with(options("statements = \"writes\"", "batched")).await;
    let user = "functions@example.com";
    let client = gw.connect(user).await;
    for sql in [
        "SELECT 1",
        "CREATE TEMP SEQUENCE recorded_seq",
        "SELECT nextval('recorded_seq')",
        "SHOW search_path",
        "SELECT set_config('application_name', 'changed', false)",
    ] {
        client.simple_query(sql).await.expect(sql);
    }
    drop(client);
    let session = ended_session(&gw, user).await;
    let events = store(&gw).events(session.id).expect("events");
    let seen: Vec<&str> = events.iter().map(|e| &*e.sql).collect();
    assert_eq!(
        seen,
        vec![
            "CREATE TEMP SEQUENCE recorded_seq",
            "SELECT nextval('recorded_seq')",
            "SELECT set_config('application_name', 'changed', false)",
        ]
    );
}

#[tokio::test]
async fn a_sample_keeps_the_first_rows_as_the_client_saw_them_after_masking() {
    let table = format!("sampled_{}", std::process::id());
    portcullis_e2e::cluster()
        .cluster
        .psql(
            portcullis_e2e::DB,
            &format!(
                "CREATE TABLE {table} (id int, card text); INSERT INTO {table} VALUES (1, '4111 1111 1111 1111'), (2, '5500 0000 0000 0004'), (3, '6011 0000 0000 0004')"
            ),
        )
        .expect("seed");
    let mut opts = options("sample_rows = 2", "batched");
    opts.target_extra = "plugins = [\"mask\", \"record\"]".into();
    opts.tail.push_str(&format!(
        r#"
[[plugins]]
name = "mask"
path = {mask:?}
call_timeout_ms = 1000
[plugins.config]
[[plugins.config.rules]]
column = "{table}.card"
action = "partial"
keep = 4
"#,
        mask = plugin_wasm("mask").display().to_string()
    ));
    let gw = TestGateway::start_with(opts).await;
    let user = "sampled@example.com";
    let client = gw.connect(user).await;
    let sql = format!("SELECT id, card FROM {table} ORDER BY id");
    client.simple_query(&sql).await.expect("simple");
    let rows = client
        .query(&sql, &[])
        .await
        .expect("extended, binary results");
    assert_eq!(rows.len(), 3);
    drop(client);
    let session = ended_session(&gw, user).await;
    let events = store(&gw).events(session.id).expect("events");
    let samples: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| *e.sql == *sql)
        .map(|e| serde_json::from_str(e.sample.as_deref().unwrap_or("null")).expect("sample JSON"))
        .collect();
    assert_eq!(samples.len(), 2, "{events:#?}");
    assert_eq!(
        samples[0],
        serde_json::json!({
            "columns": ["id", "card"],
            "rows": [["1", "**** **** **** 1111"], ["2", "**** **** **** 0004"]]
        })
    );
    // Binary results: the int is kept as hex, the masked text as text bytes.
    assert_eq!(
        samples[1]["rows"][0][1],
        "\\x2a2a2a2a202a2a2a2a202a2a2a2a2031313131"
    );
    assert_eq!(samples[1]["rows"].as_array().map(Vec::len), Some(2));
    for e in &events {
        let text = e.sample.clone().unwrap_or_default();
        let raws = [
            "4111 1111 1111 1111",
            "5500 0000 0000 0004",
            "6011 0000 0000 0004",
        ];
        if let Some((raw, form)) = portcullis_e2e::find_leak(&text, &raws) {
            panic!("raw value {raw:?} in a sample (as {form:?}): {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_statement_is_stored_exactly_once() {
    const SESSIONS: usize = 50;
    // Enough concurrent commits to exercise group commit; throughput is
    // measured by bench/run (+ record batched / strict), not here.
    const STATEMENTS: usize = 200;
    let gw = Arc::new(TestGateway::start_with(options("sample_rows = 0", "batched")).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("load{s}@example.com");
            let client = gw.connect(&user).await;
            let mut latencies = Vec::with_capacity(STATEMENTS);
            for i in 0..STATEMENTS {
                let t = Instant::now();
                client
                    .simple_query(&format!("SELECT {i} AS n"))
                    .await
                    .expect("statement");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("session task"));
    }
    let elapsed = started.elapsed();
    gw.gateway.context.core.audit.flush().await;
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let total = SESSIONS * STATEMENTS;
    println!(
        "audit load: {total} statements in {:.1} s = {:.0} statements/s, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        p99.as_secs_f64() * 1000.0
    );
    let mut stored = 0usize;
    let mut keys = std::collections::HashSet::new();
    store(&gw)
        .export_events(0, i64::MAX, &mut |e| {
            if e.sql.ends_with(" AS n") {
                stored += 1;
                assert!(keys.insert((e.session_id, e.seq)), "stored twice: {e:?}");
                assert_eq!(e.status, EventStatus::Ok);
            }
            Ok(())
        })
        .expect("export");
    assert_eq!(stored, total);
}
