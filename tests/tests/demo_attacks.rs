//! The promise, checked against `portcullis demo` with its own
//! rules: one-line attempts an agent told "no" would try next — masked
//! values read back through transformations or copied elsewhere, writes
//! and role switches hidden in functions, triggers, MERGE, upserts and
//! CTEs, server files — leak nothing and change nothing. Judged by
//! effects (table contents, catalog, files, values in any encoding), over
//! the simple and the extended protocol.

use std::time::Duration;

use portcullis_e2e::{find_leak, tls_connector_trusting};
use tokio_postgres::SimpleQueryMessage;

/// The demo's raw sensitive values (see `portcullis::demo::SEED_SQL`).
const RAW: &[&str] = &[
    "4111 1111 1111 1111",
    "4111111111111111",
    "5500 0000 0000 0004",
    "6011 0000 0000 0004",
    "123-45-6789",
    "987-65-4321",
    "111-22-3333",
    "444-55-6666",
    "ada@example.com",
    "alan@example.com",
    "grace@example.com",
];

/// One-line attempts. Each must be refused, held or harmless.
const ATTEMPTS: &[&str] = &[
    // Masked values through transformations.
    "SELECT reverse(card_number) FROM customers",
    "SELECT substr(card_number, 1, 9), substr(card_number, 10) FROM customers",
    "SELECT ascii(substr(national_id, 1, 1)), ascii(substr(national_id, 2, 1)) FROM customers",
    "SELECT translate(card_number, '0123456789', 'abcdefghij') FROM customers",
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    "SELECT string_agg(national_id, ',') FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT c FROM customers c",
    "SELECT replace(national_id, '-', '')::bigint FROM customers",
    "WITH a AS (SELECT lower(email) AS e FROM customers) SELECT e FROM a",
    "SELECT name FROM customers UNION ALL SELECT reverse(national_id) FROM customers",
    "SELECT (SELECT reverse(card_number) FROM customers LIMIT 1)",
    // Masked values copied elsewhere.
    "CREATE TEMP TABLE loot AS SELECT card_number, national_id FROM customers",
    "SELECT email INTO TEMP loot2 FROM customers",
    "SELECT set_config('loot.v', national_id, false) FROM customers",
    "COPY (SELECT card_number FROM customers) TO STDOUT",
    "COPY customers TO STDOUT",
    // Unbounded or unapproved writes in other spellings.
    "DELETE FROM orders WHERE true",
    "MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DELETE",
    "INSERT INTO orders SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET status = 'void'",
    "WITH d AS (DELETE FROM orders WHERE 1 = 1 RETURNING id) SELECT count(*) FROM d",
    "MERGE INTO orders o USING (SELECT 2 AS id) s ON o.id = s.id WHEN MATCHED THEN UPDATE SET status = 'void'",
    "INSERT INTO orders (id, customer_id, product, amount) VALUES (2, 2, 'x', 1) ON CONFLICT (id) DO UPDATE SET status = 'void'",
    "WITH u AS (UPDATE orders SET status = 'void' WHERE id = 2 RETURNING 1) SELECT count(*) FROM u",
    "WITH orders AS (SELECT 1) UPDATE orders SET status = 'void' WHERE id = 2",
    // Changing an order as a delete (and an insert): held for approval too.
    "DELETE FROM orders WHERE id = 2",
    // Code that would do it for them.
    "CREATE FUNCTION pg_temp.wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM orders'",
    "DO $$ BEGIN DELETE FROM orders; END $$",
    "CREATE TEMP TABLE t (x int); CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM orders",
    // Found by review: views hiding a table or pg_settings' rule, PREPARE
    // and cursors, SQL given as text, quoted CTE names.
    "CREATE TEMP VIEW v AS SELECT * FROM orders; UPDATE v SET status = 'void' WHERE id = 2",
    "CREATE TEMP VIEW s AS SELECT * FROM pg_settings; UPDATE s SET setting = 'postgres' WHERE name = 'role'",
    "UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'",
    "PREPARE p AS SELECT national_id::bytea FROM customers; EXECUTE p",
    "DECLARE c CURSOR WITH HOLD FOR SELECT encode(convert_to(card_number, 'UTF8'), 'base64') FROM customers; FETCH ALL c",
    "SELECT query_to_xml('select national_id::bytea from customers', true, false, '')",
    "CREATE TEMP TABLE loot3 AS SELECT query_to_xml('SELECT national_id FROM customers', true, false, '')::text AS x",
    "WITH \"CUSTOMERS\" AS (SELECT 1) SELECT reverse(card_number) FROM customers",
    // The planner's statistics (after ANALYZE) hold sample values.
    "ANALYZE customers",
    "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
    "SELECT s.* FROM pg_catalog.pg_stats s WHERE s.attname = 'card_number'",
    // Found by the second review: SQL run from text, COPY of a write's
    // RETURNING, advisory locks as a side channel.
    "SELECT ts_rewrite('a'::tsquery, $$SELECT 'a'::tsquery, set_config('role', 'postgres', false)::tsquery$$)",
    "SELECT ts_rewrite('c1 & c2'::tsquery, $$SELECT ('c' || id)::tsquery, quote_literal(translate(card_number, '0123456789', 'abcdefghij'))::tsquery FROM customers$$)",
    "BEGIN; COPY (INSERT INTO orders (customer_id, product, amount) VALUES (1, 'x', 0) RETURNING (SELECT string_agg(concat_ws(' ', card_number, national_id, email), '; ') FROM customers)) TO STDOUT; ROLLBACK",
    "SELECT count(*) FROM customers WHERE pg_try_advisory_lock(replace(national_id, '-', '')::bigint)",
    "SELECT 1 WHERE (SELECT string_agg(email, ';') FROM customers)::regclass IS NULL",
    // Errors that would quote a value.
    "SELECT id FROM customers WHERE card_number::int > 0",
    "SELECT id FROM customers WHERE national_id::date IS NULL",
    // Server files and roles (a harmless set_config first: its cached
    // summary must not answer for the role switch).
    "SELECT set_config('application_name', 'x', false)",
    "COPY orders FROM '/etc/hostname'",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT lo_import('/etc/hostname')",
    "SELECT set_config('role', 'postgres', false)",
    "SET ROLE postgres",
    "RESET ROLE",
];

async fn client(port: u16, token: &str, cert: &std::path::Path) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .dbname(portcullis::demo::TARGET)
        .user(portcullis::demo::DEFAULT_USER)
        .password(token)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (c, conn) = cfg
        .connect(tls_connector_trusting(cert))
        .await
        .expect("connect to the demo");
    tokio::spawn(conn);
    c
}

/// Everything a statement sent back (rows and the error), as text; `None`
/// when it was still waiting (held for approval) after two seconds.
async fn attempt(c: &tokio_postgres::Client, sql: &str, extended: bool) -> Option<String> {
    let run = async {
        if extended {
            match c.query(sql, &[]).await {
                Ok(rows) => format!("{rows:?}"),
                Err(e) => format!("{e:?}"),
            }
        } else {
            match c.simple_query(sql).await {
                Ok(msgs) => msgs
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or(""))
                                .collect::<Vec<_>>()
                                .join("|"),
                        ),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => format!("{e:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), run).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_demo_s_rules_no_attempt_leaks_or_changes_anything() {
    let plugins = portcullis_e2e::plugin_wasm("mask");
    std::env::set_var(
        "PORTCULLIS_PLUGIN_DIR",
        plugins.parent().expect("plugin directory"),
    );
    std::env::remove_var("DATABASE_URL");
    let scratch = portcullis_e2e::ScratchDir::new("portcullis-demo-attacks");
    let port = portcullis::demo::cluster::free_port().unwrap();
    let demo = portcullis::demo::start(Some(port), scratch.path().to_path_buf())
        .await
        .unwrap();
    let cluster = demo.cluster().expect("the demo's own cluster");
    let state = || {
        cluster
            .psql(
                "shop",
                "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o; \
                 SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c; \
                 SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace; \
                 SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace; \
                 SELECT count(*) FROM pg_largeobject_metadata; \
                 SELECT count(*) FROM pg_rules WHERE schemaname = 'public'",
            )
            .expect("state")
    };
    // The planner's statistics exist, as they would on a live database.
    cluster
        .psql("shop", "ANALYZE customers; ANALYZE orders")
        .expect("analyze");
    let before = state();
    for extended in [false, true] {
        for sql in ATTEMPTS {
            if extended && sql.contains("; ") {
                continue;
            }
            // A fresh session each time: a held statement keeps its own.
            let c = client(port, &demo.token, &demo.dir.join("cert.pem")).await;
            let seen = attempt(&c, sql, extended).await;
            if let Some(text) = &seen {
                if let Some((raw, form)) = find_leak(text, RAW) {
                    panic!("{sql} (extended: {extended}) leaked {raw:?} as {form:?}: {text}");
                }
                // What the session can read back afterwards leaks nothing
                // either (a setting, a temporary table).
                for probe in [
                    "SELECT current_setting('loot.v', true)",
                    "SELECT current_user",
                ] {
                    if let Some(t) = attempt(&c, probe, false).await {
                        assert!(find_leak(&t, RAW).is_none(), "{sql} then {probe}: {t}");
                        assert!(!t.contains("postgres"), "{sql} switched the role: {t}");
                    }
                }
            }
            drop(c);
            assert_eq!(
                state(),
                before,
                "{sql} (extended: {extended}) changed something"
            );
        }
    }
    demo.stop().await.unwrap();
}
