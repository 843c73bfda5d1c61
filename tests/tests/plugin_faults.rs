//! The fault matrix: purpose-built bad plugins (trap, infinite loop, memory
//! bomb, huge output) and bad files (wrong sha256, not a component, another
//! contract version). The event fails closed with a clear error, the session
//! and the gateway keep serving, other sessions are unaffected, and a bad
//! file is refused at load. A plugin that fails on a batch of rows keeps
//! the columns it watches hidden for the rest of that result.

use std::time::{Duration, Instant};

use portcullis_e2e::{cluster, db_error, plugin_wasm, GatewayOptions, TestGateway};

const USER: &str = "faults@example.com";

fn faulty(mode: &str, extra: &str) -> GatewayOptions {
    GatewayOptions::plugin(
        "faulty",
        &plugin_wasm("faulty"),
        &format!("memory_limit_mib = 16\ncall_timeout_ms = 20\n{extra}\n[plugins.config]\nmode = \"{mode}\""),
    )
}

/// Rows of the probe table with `note` (the table is created on first use).
fn probe_rows(note: &str) -> i64 {
    let c = &cluster().cluster;
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CREATED.get_or_init(|| {
        c.psql(
            portcullis_e2e::DB,
            "CREATE TABLE IF NOT EXISTS fault_probe (note text)",
        )
        .expect("probe table");
    });
    c.psql(
        portcullis_e2e::DB,
        &format!("SELECT count(*) FROM fault_probe WHERE note = '{note}'"),
    )
    .expect("count")
    .trim()
    .parse()
    .expect("a number")
}

#[tokio::test]
async fn every_failure_fails_the_event_closed_and_the_gateway_keeps_serving() {
    probe_rows("");
    for (mode, expect) in [
        // A Rust panic prints its message before it traps: that write fails the call.
        ("trap", "wrote to stdout or stderr"),
        ("loop", "timed out after 20 ms"),
        ("memory", "failed"),
        ("huge", "failed"),
    ] {
        let gw = TestGateway::start_with(faulty(mode, "")).await;
        let c = gw.connect(USER).await;
        let bystander = gw.connect(USER).await;
        let started = Instant::now();
        let insert = format!("INSERT INTO fault_probe VALUES ('boom {mode}')");
        let err = c
            .simple_query(&insert)
            .await
            .expect_err(&format!("{mode}: the event must fail closed"));
        assert_eq!(
            probe_rows(&format!("boom {mode}")),
            0,
            "{mode}: the statement ran"
        );
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501", "{mode}: {msg}");
        assert!(msg.starts_with("plugin \"faulty\" failed"), "{mode}: {msg}");
        assert!(msg.contains(expect), "{mode}: {msg}");
        assert!(msg.contains("fails closed"), "{mode}: {msg}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode} took {:?}",
            started.elapsed()
        );
        // The same session goes on with a fresh instance; others never noticed.
        let rows = c.simple_query("SELECT 1").await.unwrap();
        assert_eq!(
            rows.len(),
            3,
            "{mode}: RowDescription, row, CommandComplete"
        );
        bystander.simple_query("SELECT 2").await.unwrap();
        // And it fails the same way again (no half-broken instance is reused).
        let again = c
            .simple_query("SELECT 'boom again'")
            .await
            .expect_err("again");
        assert!(db_error(&again).1.contains(expect), "{mode}");
        gw.connect(USER)
            .await
            .simple_query("SELECT 3")
            .await
            .unwrap();
    }
}

/// The faulty plugin masking result columns named `secret`, failing in
/// `mode`'s way on the `fail_on_batch`-th batch of rows of an instance.
fn faulty_rows(mode: &str, fail_on_batch: u32) -> GatewayOptions {
    GatewayOptions::plugin(
        "faulty",
        &plugin_wasm("faulty"),
        &format!(
            "memory_limit_mib = 16\ncall_timeout_ms = 20\n[plugins.config]\nmode = \"{mode}\"\nmask_column = \"secret\"\nfail_on_batch = {fail_on_batch}"
        ),
    )
}

/// A result long enough to reach the client in many batches.
const MANY_SECRETS: &str =
    "SELECT g AS id, 'secret ' || g AS secret FROM generate_series(1, 100000) g";

/// Every `secret` value the client received: masked or NULL, never raw.
fn assert_no_secret_left(label: &str, values: &[Option<String>]) {
    let raw: Vec<&String> = values
        .iter()
        .flatten()
        .filter(|v| v.as_str() != "masked")
        .collect();
    assert!(
        raw.is_empty(),
        "{label}: {} values left unmasked after the plugin failed, e.g. {:?}",
        raw.len(),
        raw.first()
    );
    let nulled = values.iter().filter(|v| v.is_none()).count();
    assert!(
        nulled > 0,
        "{label}: the plugin never failed (the result had too few batches?)"
    );
}

#[tokio::test]
async fn a_plugin_that_fails_on_rows_keeps_them_hidden_to_the_end_of_the_result() {
    for (mode, batch) in [("trap", 1), ("trap", 3), ("loop", 2)] {
        let label = format!("{mode} on batch {batch}");
        let gw = TestGateway::start_with(faulty_rows(mode, batch)).await;
        let c = gw.connect(USER).await;

        // Simple protocol.
        let values: Vec<Option<String>> = c
            .simple_query(MANY_SECRETS)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(1).map(str::to_string)),
                _ => None,
            })
            .collect();
        assert_eq!(values.len(), 100_000, "{label}: every row arrives");
        assert_no_secret_left(&format!("{label}, simple"), &values);

        // Extended protocol, binary results, on the same session.
        let values: Vec<Option<String>> = c
            .query(MANY_SECRETS, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(1))
            .collect();
        assert_eq!(values.len(), 100_000, "{label}: every row arrives");
        assert_no_secret_left(&format!("{label}, extended"), &values);

        // The next result gets a fresh instance: it masks (or, when its own
        // first batch is the failing one, fails closed again), never raw.
        let row = c
            .query_one("SELECT 'secret 1' AS secret", &[])
            .await
            .unwrap();
        let expected = if batch == 1 { None } else { Some("masked") };
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            expected,
            "{label}"
        );
    }
}

#[tokio::test]
async fn fail_open_lets_the_event_through() {
    probe_rows("");
    let gw = TestGateway::start_with(faulty("trap", "failure = \"fail-open\"")).await;
    let c = gw.connect(USER).await;
    c.simple_query("INSERT INTO fault_probe VALUES ('boom open')")
        .await
        .unwrap();
    assert_eq!(probe_rows("boom open"), 1, "fail-open ran the statement");
}

#[tokio::test]
async fn a_file_that_does_not_match_its_pin_is_refused() {
    let opts = faulty("trap", &format!("sha256 = \"{}\"", "ab".repeat(32)));
    let err = TestGateway::try_start_with(opts)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("plugin faulty:"), "{err}");
    assert!(err.contains("but the configuration pins abab"), "{err}");

    // The right pin is accepted.
    let bytes = std::fs::read(plugin_wasm("faulty")).unwrap();
    let sha = portcullis::plugins::sha256_hex(&bytes);
    let gw = TestGateway::start_with(faulty("trap", &format!("sha256 = \"{sha}\""))).await;
    gw.connect(USER)
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_plugin_is_refused() {
    let bogus = cluster().dir.join("not-a-plugin.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0garbage").unwrap();
    let err = TestGateway::try_start_with(GatewayOptions::plugin("bogus", &bogus, ""))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("plugin bogus:"), "{err}");
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[tokio::test]
async fn a_plugin_built_for_another_contract_version_is_refused() {
    // A complete, working plugin, built against portcullis:policy@0.1.0.
    let err = TestGateway::try_start_with(GatewayOptions::plugin(
        "old",
        &plugin_wasm("old_contract"),
        "",
    ))
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("plugin old: does not implement portcullis:policy@0.2"),
        "{err}"
    );
    assert!(err.contains("built for another contract version"), "{err}");
}

#[tokio::test]
async fn a_plugin_built_for_the_previous_0_2_contract_still_runs() {
    // Built against portcullis:policy@0.2.1; this gateway speaks 0.2.2.
    let gw = TestGateway::start_with(GatewayOptions::plugin(
        "prior",
        &plugin_wasm("prior_contract"),
        "",
    ))
    .await;
    let c = gw.connect("prior@example.com").await;
    let err = c
        .simple_query("DROP TABLE items")
        .await
        .expect_err("DROP refused by the 0.2.1 plugin");
    let (code, msg) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(msg.contains("refused by a 0.2.1 plugin"), "{msg}");
    let rows = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 100, "the table is still there");
}

#[tokio::test]
async fn a_configuration_the_schema_rejects_names_the_key() {
    let err = TestGateway::try_start_with(GatewayOptions::plugin(
        "block",
        &plugin_wasm("block"),
        "call_timeout_ms = 1000\n[[plugins.config.rules]]\nname = \"r\"\nkind = [\"drop\"]",
    ))
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("plugin block: [plugins.config] key rules[0].kind is not known"),
        "{err}"
    );
}
