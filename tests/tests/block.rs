//! The `block` plugin loaded from its component, against real PostgreSQL: the
//! bypass matrix (every disguise of a refused statement is refused, nothing
//! reaches the database) and what is still allowed.

use portcullis_e2e::{db_error, plugin_wasm, GatewayOptions, TestGateway};

const USER: &str = "blocker@example.com";

/// The demo's rules, plus two of the tests' own.
fn block_rules() -> String {
    format!(
        r#"# Generous: debug builds of the gateway share two cores with the tests.
call_timeout_ms = 1000
{demo_rules}
[[plugins.config.rules]]
name = "no-secrets"
tables = ["public.secrets"]

[[plugins.config.rules]]
name = "items-frozen"
groups = ["freezers"]
actions = ["update", "delete"]
tables = ["public.items", "public.code_owned"]

[[plugins.config.rules]]
name = "interns-read-only"
groups = ["interns"]
kinds = ["insert", "update", "delete", "merge", "copy"]
"#,
        demo_rules = portcullis::demo::BLOCK_RULES,
    )
}

async fn gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions::plugin(
        "block",
        &plugin_wasm("block"),
        &block_rules(),
    ))
    .await
}

/// A file `COPY … TO PROGRAM` in the matrix would create if it ran.
fn program_output() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("portcullis-block-copy-{}", std::process::id()))
}

/// What the matrix's statements would change if any of them ran, read
/// back through the session itself.
#[derive(Debug, PartialEq)]
struct Effects {
    /// Rows of `items` 1..=100 with their original names.
    intact_items: i64,
    /// `current_user` and `session_user`.
    roles: (String, String),
    /// `work_mem` settings written by ALTER SYSTEM.
    altered_settings: i64,
    /// Large objects.
    large_objects: i64,
    /// The prepared statement `wipe`.
    prepared_wipe: i64,
    /// Whether COPY TO PROGRAM wrote its file.
    program_ran: bool,
    /// Rows of `items`.
    items: i64,
    /// Functions and rules the matrix would create.
    created_code: i64,
    /// Whether COPY TO a server file wrote it.
    file_written: bool,
}

/// A server file `COPY … TO 'file'` in the matrix would create if it ran.
fn server_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("portcullis-block-file-{}", std::process::id()))
}

async fn effects(c: &tokio_postgres::Client) -> Effects {
    let one = |sql: &'static str| async move {
        c.query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let roles = one("SELECT current_user::text, session_user::text").await;
    Effects {
        intact_items: one(
            "SELECT count(*) FROM items WHERE id BETWEEN 1 AND 100 AND name = 'item ' || id",
        )
        .await
        .get(0),
        roles: (roles.get(0), roles.get(1)),
        altered_settings: one(
            "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' AND name = 'work_mem'",
        )
        .await
        .get(0),
        large_objects: one("SELECT count(*) FROM pg_largeobject_metadata").await.get(0),
        prepared_wipe: one("SELECT count(*) FROM pg_prepared_statements WHERE name = 'wipe'")
            .await
            .get(0),
        program_ran: program_output().exists(),
        items: one("SELECT count(*) FROM items").await.get(0),
        created_code: one(
            "SELECT (SELECT count(*) FROM pg_proc WHERE proname LIKE 'probe_%') + (SELECT count(*) FROM pg_rules WHERE rulename LIKE 'probe_%') + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'probe_%')",
        )
        .await
        .get(0),
        file_written: server_file().exists(),
    }
}

#[tokio::test]
async fn the_bypass_matrix_is_refused_and_nothing_reaches_the_database() {
    portcullis_e2e::cluster()
        .cluster
        .psql(
            portcullis_e2e::DB,
            "DO $$ BEGIN CREATE ROLE block_probe NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .expect("probe role");
    let _ = std::fs::remove_file(program_output());
    let _ = std::fs::remove_file(server_file());
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let before = effects(&c).await;
    assert_eq!(before.intact_items, 100);
    assert!(!before.program_ran);
    let copy_to_program = format!(
        "COPY items TO PROGRAM 'cat > {}'",
        program_output().display()
    );
    let copy_to_file = format!("COPY items TO '{}'", server_file().display());
    // A file the server could read into `items` (a row the effects count).
    let input = std::env::temp_dir().join(format!("portcullis-block-in-{}", std::process::id()));
    std::fs::write(&input, "5000\tfrom a server file\t\\N\n").expect("input file");
    let _input_removed = RemovedOnDrop(input.clone());
    let copy_from_file = format!("COPY items FROM '{}'", input.display());
    let cases: &[(&str, &str)] = &[
        ("DELETE FROM items", "no-unbounded-writes"),
        ("delete   from\n\tITEMS", "no-unbounded-writes"),
        (
            "/* harmless */ DELETE /* really */ FROM items -- trailing",
            "no-unbounded-writes",
        ),
        ("DELETE FROM \"items\"", "no-unbounded-writes"),
        ("DELETE FROM public.items", "no-unbounded-writes"),
        (
            "WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d",
            "no-unbounded-writes",
        ),
        (
            "SELECT 1; DELETE FROM items; SELECT 2",
            "no-unbounded-writes",
        ),
        ("EXPLAIN ANALYZE DELETE FROM items", "no-unbounded-writes"),
        ("PREPARE wipe AS DELETE FROM items", "no-unbounded-writes"),
        ("UPDATE items SET name = 'x'", "no-unbounded-writes"),
        (
            "DO $$ BEGIN DELETE FROM items WHERE true; END $$",
            "no-destructive-ddl",
        ),
        ("DROP TABLE items", "no-destructive-ddl"),
        ("TRUNCATE items", "no-destructive-ddl"),
        ("ALTER SYSTEM SET work_mem = '1GB'", "no-destructive-ddl"),
        ("SELECT pg_read_file('/etc/passwd')", "no-server-files"),
        (
            "SELECT upper(pg_catalog.pg_read_file('/etc/passwd'))",
            "no-server-files",
        ),
        (
            "SELECT ARRAY[PG_READ_FILE('/etc/hostname')]",
            "no-server-files",
        ),
        (
            "SELECT name FROM items WHERE id IN (SELECT length(pg_ls_dir('.')))",
            "no-server-files",
        ),
        ("SELECT lo_import('/etc/passwd')", "no-server-files"),
        (&copy_to_program, "no-server-files"),
        ("SET ROLE block_probe", "no-role-switching"),
        (
            "SELECT set_config('role', 'block_probe', false)",
            "no-role-switching",
        ),
        (
            "SELECT pg_catalog.set_config('ROLE'::text, 'block_probe', false)",
            "no-role-switching",
        ),
        (
            "SELECT count(*) FROM (SELECT set_config(lower('ROLE'), 'block_probe', false)) x",
            "no-role-switching",
        ),
        ("RESET ROLE", "no-role-switching"),
        (&copy_from_file, "no-server-files"),
        (&copy_to_file, "no-server-files"),
        ("SELECT pg_stat_file('/etc/hostname')", "no-server-files"),
        ("DELETE FROM items WHERE true", "no-unbounded-writes"),
        ("DELETE FROM items WHERE 1 = 1", "no-unbounded-writes"),
        ("UPDATE items SET name = 'x' WHERE 'a' = 'a'", "no-unbounded-writes"),
        (
            "MERGE INTO items i USING items s ON i.id = s.id WHEN MATCHED THEN DELETE",
            "no-unbounded-writes",
        ),
        (
            "MERGE INTO items i USING items s ON i.id = s.id WHEN MATCHED THEN UPDATE SET name = 'x'",
            "no-unbounded-writes",
        ),
        (
            "INSERT INTO items SELECT * FROM items ON CONFLICT (id) DO UPDATE SET name = 'x'",
            "no-unbounded-writes",
        ),
        (
            "WITH u AS (UPDATE items SET name = 'x' WHERE true RETURNING 1) SELECT count(*) FROM u",
            "no-unbounded-writes",
        ),
        (
            "WITH items AS (SELECT 1) DELETE FROM items",
            "no-unbounded-writes",
        ),
        (
            "CREATE FUNCTION probe_wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM items'",
            "no-new-code",
        ),
        (
            "CREATE OR REPLACE PROCEDURE probe_proc() LANGUAGE sql AS $$DELETE FROM items$$",
            "no-new-code",
        ),
        (
            "CREATE RULE probe_rule AS ON INSERT TO items DO ALSO DELETE FROM items WHERE id = NEW.id",
            "no-new-code",
        ),
        (
            "CREATE TRIGGER probe_trigger AFTER INSERT ON items EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
            "no-new-code",
        ),
        ("SET SESSION AUTHORIZATION block_probe", "no-role-switching"),
        ("SELECT * FROM secrets", "no-secrets"),
        ("select * from PUBLIC.\"secrets\"", "no-secrets"),
    ];
    for (sql, rule) in cases {
        let err = c
            .simple_query(sql)
            .await
            .expect_err(&format!("{sql:?} must be refused"));
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501", "{sql}: {msg}");
        assert!(
            msg.starts_with(&format!("blocked by portcullis rule \"{rule}\"")),
            "{sql}: {msg}"
        );
        // The extended protocol: refused at Parse (one statement per Parse).
        if !sql.contains("; ") {
            let err = c
                .query(*sql, &[])
                .await
                .expect_err(&format!("{sql:?} must be refused (extended)"));
            assert_eq!(db_error(&err).0, "42501", "{sql} (extended): {err:?}");
        }
    }
    // Unparseable text is refused, not waved through.
    let err = c
        .simple_query("DELEET FROM items")
        .await
        .expect_err("garbage refused");
    assert!(db_error(&err).1.contains("does not parse"), "{err}");
    let _ = std::fs::remove_file(&input);
    // Nothing reached the database: every effect is as it was.
    let after = effects(&c).await;
    assert_eq!(after, before);
    assert_eq!(
        after.roles,
        ("postgres".to_string(), "postgres".to_string()),
        "no role switch took effect"
    );
}

#[tokio::test]
async fn bounded_and_harmless_statements_still_run() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    c.batch_execute("DELETE FROM items WHERE id = -1")
        .await
        .unwrap();
    c.batch_execute("UPDATE items SET name = name WHERE id = -5")
        .await
        .unwrap();
    let stmt = c
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    let name: String = c.query_one(&stmt, &[&7i32]).await.unwrap().get(0);
    assert_eq!(name, "item 7");
    c.batch_execute(
        "BEGIN; CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1); COMMIT",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn rules_apply_per_group() {
    let gw = gateway().await;
    let intern = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "intern@example.com".into(),
        groups: vec!["testers".into(), "interns".into()],
        ttl_secs: 60,
    });
    let c = gw
        .connect_with(&gw.pg_config("intern@example.com", &intern))
        .await
        .unwrap();
    let err = c
        .simple_query("INSERT INTO items VALUES (1000, 'x', 'y')")
        .await
        .expect_err("interns may not write");
    assert!(db_error(&err).1.contains("\"interns-read-only\""), "{err}");
    c.simple_query("SELECT 1").await.unwrap();
    // Someone else may.
    let other = gw.connect(USER).await;
    other
        .batch_execute(
            "INSERT INTO items VALUES (1000, 'x', 'y'); DELETE FROM items WHERE id = 1000",
        )
        .await
        .unwrap();
}

#[test]
fn the_local_harness_runs_scripted_events_against_the_component() {
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/block/examples");
    let wasm = plugin_wasm("block");
    let mut out = Vec::new();
    let ok = portcullis::plugins::tool::test(
        &wasm,
        Some(&examples.join("config.toml")),
        &examples.join("events.jsonl"),
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("deny             DELETE FROM orders  blocked by portcullis rule \"no-unbounded-writes\""), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok")).count(),
        8,
        "{text}"
    );

    // A wrong expectation is reported, not hidden.
    let events = portcullis_e2e::cluster().dir.join("wrong-expect.jsonl");
    std::fs::write(
        &events,
        r#"{"sql": "DROP TABLE customers", "expect": "allow"}"#,
    )
    .unwrap();
    let mut out = Vec::new();
    let ok = portcullis::plugins::tool::test(
        &wasm,
        Some(&examples.join("config.toml")),
        &events,
        &mut out,
    )
    .unwrap();
    assert!(!ok);
    assert!(String::from_utf8(out).unwrap().starts_with("FAIL"));

    let report =
        portcullis::plugins::tool::check(&wasm, Some(&examples.join("config.toml"))).unwrap();
    assert!(
        report.contains("contract: portcullis:policy@0.2"),
        "{report}"
    );
    assert!(report.contains("name: block"), "{report}");
}

#[tokio::test]
async fn reload_serves_new_sessions_with_the_new_version_and_refuses_a_broken_one() {
    let gw = TestGateway::start_with(GatewayOptions::plugin(
        "block",
        &plugin_wasm("block"),
        "call_timeout_ms = 1000\n\n[[plugins.config.rules]]\nname = \"no-role-switching\"\nrole_switching = true",
    ))
    .await;
    let before = gw.connect(USER).await;
    before
        .batch_execute("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // Version 2: also refuses unbounded writes.
    let v2 = format!(
        "{}\n[[plugins.config.rules]]\nname = \"no-unbounded-writes\"\nunbounded_writes = true\n",
        gw.config_text
    );
    let cfg = portcullis::config::Config::parse(&v2).unwrap();
    assert_eq!(gw.gateway.reload_plugins(&cfg).unwrap(), 1);

    // The session in flight finishes on the version it started with.
    before.batch_execute("DELETE FROM t").await.unwrap();
    // New sessions get the new version.
    let after = gw.connect(USER).await;
    after
        .batch_execute("CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    let err = after
        .batch_execute("DELETE FROM t")
        .await
        .expect_err("v2 refuses");
    assert!(db_error(&err).1.contains("no-unbounded-writes"), "{err}");

    // A broken version 3 is refused and version 2 keeps serving.
    let bogus = portcullis_e2e::cluster().dir.join("broken-block.wasm");
    std::fs::write(&bogus, b"not wasm").unwrap();
    let v3 = v2.replace(
        &format!("path = {:?}", plugin_wasm("block").display().to_string()),
        &format!("path = {:?}", bogus.display().to_string()),
    );
    assert_ne!(v3, v2);
    let cfg = portcullis::config::Config::parse(&v3).unwrap();
    let err = gw
        .gateway
        .reload_plugins(&cfg)
        .expect_err("broken plugin refused");
    assert!(err.to_string().contains("plugin block"), "{err}");
    let later = gw.connect(USER).await;
    later
        .batch_execute("CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    let err = later
        .batch_execute("DELETE FROM t")
        .await
        .expect_err("v2 still serves");
    assert!(db_error(&err).1.contains("no-unbounded-writes"), "{err}");
}

/// Calls into plugin `name` so far, from the gateway's metrics.
fn plugin_calls(name: &str) -> u64 {
    let prefix = format!("portcullis_plugin_call_seconds_count{{plugin=\"{name}\"}} ");
    portcullis::metrics::global()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

/// `block` declares its verdicts reusable for a statement's shape: within a
/// session, statements that differ only in their constants are judged once,
/// a refusal given from the memo is the same refusal, and a statement of
/// another shape is judged afresh.
#[tokio::test]
async fn verdicts_are_judged_once_per_statement_shape() {
    let name = "block-reuse";
    let gw = TestGateway::start_with(GatewayOptions::plugin(
        name,
        &plugin_wasm("block"),
        &block_rules(),
    ))
    .await;
    let c = gw.connect(USER).await;
    let start = plugin_calls(name);
    for id in 1..=40 {
        let rows = c
            .simple_query(&format!("SELECT name FROM items WHERE id = {id}"))
            .await
            .unwrap();
        let found = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(found, 1, "item {id}");
    }
    assert_eq!(plugin_calls(name) - start, 1, "40 selects of one shape");
    for _ in 0..5 {
        let err = c
            .simple_query("DELETE FROM items")
            .await
            .expect_err("refused every time");
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501");
        assert!(
            msg.starts_with("blocked by portcullis rule \"no-unbounded-writes\""),
            "{msg}"
        );
    }
    assert_eq!(plugin_calls(name) - start, 2, "the refusal was judged once");
    // Another shape is judged afresh: the bounded DELETE runs.
    c.simple_query("DELETE FROM items WHERE id = -1")
        .await
        .unwrap();
    c.simple_query("DELETE FROM items WHERE id = -2")
        .await
        .unwrap();
    assert_eq!(plugin_calls(name) - start, 3);
    // The memo is the session's: a new session asks the plugin again.
    let other = gw.connect(USER).await;
    other
        .simple_query("SELECT name FROM items WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(plugin_calls(name) - start, 4);
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100, "nothing was deleted");
}

/// Code already in the database, created directly (not through the
/// gateway): what statements calling or firing it do is judged too.
fn database_code() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        portcullis_e2e::cluster()
            .cluster
            .psql(
                portcullis_e2e::DB,
                "CREATE OR REPLACE FUNCTION code_wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM items'; \
                 CREATE OR REPLACE FUNCTION code_pl_wipe() RETURNS void LANGUAGE plpgsql AS $$BEGIN UPDATE items SET name = 'x'; END$$; \
                 CREATE OR REPLACE FUNCTION code_dyn(t text) RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DELETE FROM ' || t; END$$; \
                 CREATE OR REPLACE FUNCTION code_noop() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
                 CREATE OR REPLACE PROCEDURE code_proc() LANGUAGE sql AS $$DELETE FROM items$$; \
                 CREATE OR REPLACE FUNCTION code_trg_fn() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM items; RETURN NULL; END$$; \
                 CREATE TABLE IF NOT EXISTS code_log (id int); \
                 CREATE OR REPLACE TRIGGER code_trg AFTER INSERT ON code_log FOR EACH STATEMENT EXECUTE FUNCTION code_trg_fn(); \
                 CREATE TABLE IF NOT EXISTS code_notes (id int); \
                 CREATE OR REPLACE RULE code_rule AS ON INSERT TO code_notes DO ALSO DELETE FROM items; \
                 CREATE OR REPLACE VIEW code_items_v AS SELECT * FROM items; \
                 CREATE TABLE IF NOT EXISTS code_owner (id int PRIMARY KEY); \
                 CREATE TABLE IF NOT EXISTS code_owned (id int, owner int REFERENCES code_owner (id) ON DELETE CASCADE); \
                 INSERT INTO code_owner VALUES (1) ON CONFLICT DO NOTHING; \
                 INSERT INTO code_owned SELECT 1, 1 WHERE NOT EXISTS (SELECT 1 FROM code_owned)",
            )
            .expect("database code");
    });
}

#[tokio::test]
async fn what_code_in_the_database_does_is_judged_with_the_statement_that_runs_it() {
    database_code();
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let before = effects(&c).await;
    let logged = || async {
        let n: i64 = c
            .query_one(
                "SELECT (SELECT count(*) FROM code_log) + (SELECT count(*) FROM code_notes)",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        n
    };
    assert_eq!(logged().await, 0);
    let cases: &[(&str, &str)] = &[
        ("SELECT code_wipe()", "no-unbounded-writes"),
        ("SELECT public.code_wipe()", "no-unbounded-writes"),
        (
            "SELECT 1 FROM (SELECT code_wipe()) s",
            "no-unbounded-writes",
        ),
        ("CALL code_proc()", "no-unbounded-writes"),
        ("SELECT code_pl_wipe()", "no-unbounded-writes"),
        ("SELECT code_dyn('items')", "no-unreadable-code"),
        ("INSERT INTO code_log VALUES (1)", "no-unbounded-writes"),
        ("INSERT INTO code_notes VALUES (1)", "no-unbounded-writes"),
    ];
    for (sql, rule) in cases {
        let err = c.simple_query(sql).await.expect_err(sql);
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501", "{sql}: {msg}");
        assert!(
            msg.starts_with(&format!("blocked by portcullis rule \"{rule}\"")),
            "{sql}: {msg}"
        );
        let err = c.query(*sql, &[]).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql} (extended): {err}");
    }
    // Code that does nothing risky still runs.
    let one: i32 = c
        .query_one("SELECT code_noop()", &[])
        .await
        .expect("noop")
        .get(0);
    assert_eq!(one, 1);
    assert_eq!(effects(&c).await, before, "no item changed");
    assert_eq!(logged().await, 0);

    // An update through a view is an update of the table under it.
    let freezer = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "freezer@example.com".into(),
        groups: vec!["testers".into(), "freezers".into()],
        ttl_secs: 60,
    });
    let f = gw
        .connect_with(&gw.pg_config("freezer@example.com", &freezer))
        .await
        .expect("freezer connects");
    let err = f
        .simple_query("UPDATE code_items_v SET name = 'x' WHERE id = 1")
        .await
        .expect_err("an update through a view is refused");
    assert!(db_error(&err).1.contains("\"items-frozen\""), "{err}");
    assert_eq!(effects(&c).await, before, "no item changed");
    // A delete that a foreign key cascades into a frozen table.
    let err = f
        .simple_query("DELETE FROM code_owner WHERE id = 1")
        .await
        .expect_err("a cascading delete is refused");
    assert!(db_error(&err).1.contains("\"items-frozen\""), "{err}");
    let owned: i64 = c
        .query_one("SELECT count(*) FROM code_owned", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(owned, 1, "the owned row is still there");
}

/// A file removed when the test ends, passed or not.
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
