//! The `mask` plugin loaded from its component, against real PostgreSQL: the
//! masking matrix (aliases, `SELECT *`, table aliases, subqueries, CTEs,
//! UNION, JOIN, a view, a partition, derived expressions) through the simple
//! protocol, the extended protocol with binary results (tokio-postgres),
//! psql and psycopg — no raw value ever reaches the client — plus COPY TO,
//! exemptions by group and the strict `derived = "refuse"` mode.

use std::process::Command;
use std::sync::OnceLock;

use portcullis::demo::issuer::TokenSpec;
use portcullis_e2e::{cluster, db_error, plugin_wasm, GatewayOptions, TestGateway, DB};
use tokio_postgres::SimpleQueryMessage;

const USER: &str = "masked@example.com";

/// The raw sensitive values of `crm.customers` (and `crm.payments`).
const RAW: &[&str] = &[
    "4111 1111 1111 1111",
    "4111111111111111",
    "5500 0000 0000 0004",
    "3400 0000 0000 009",
    "6011 0000 0000 0004",
    "6011000000000004",
    "ada@example.com",
    "alan@example.com",
    "grace@example.com",
    "edsger@example.com",
    "123-45-6789",
    "987-65-4321",
    "111-22-3333",
    "444-55-6666",
];
// Not listed: `card_bin` (978000123). A masked number inside an expression
// such as `row_to_json(c)` is not something a detector can recognise; that
// is what `derived = "refuse"` is for (see the strict-mode test).

const SEED: &str = r#"
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
  id int PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  card_number text NOT NULL,
  national_id varchar(11) NOT NULL,
  card_bin bigint NOT NULL
);
INSERT INTO crm.customers VALUES
  (1, 'Ada Lovelace',    'ada@example.com',    '4111 1111 1111 1111', '123-45-6789', 978000123),
  (2, 'Alan Turing',     'alan@example.com',   '5500 0000 0000 0004', '987-65-4321', 978000123),
  (3, 'Grace Hopper',    'grace@example.com',  '3400 0000 0000 009',  '111-22-3333', 978000123),
  (4, 'Edsger Dijkstra', 'edsger@example.com', '6011 0000 0000 0004', '444-55-6666', 978000123);
CREATE VIEW crm.customer_view AS SELECT id, name, email, card_number, national_id FROM crm.customers;
CREATE TABLE crm.payments (id int, card_number text, paid_on date) PARTITION BY RANGE (paid_on);
CREATE TABLE crm.payments_2026 PARTITION OF crm.payments FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO crm.payments VALUES (1, '4111 1111 1111 1111', '2026-05-01');
CREATE TABLE crm.notes (id int, note text);
"#;

fn seeded() {
    static SEEDED: OnceLock<()> = OnceLock::new();
    SEEDED.get_or_init(|| {
        cluster().cluster.psql(DB, SEED).expect("seed crm schema");
    });
}

fn rules(derived: &str) -> String {
    format!(
        r#"call_timeout_ms = 1000
[plugins.config]
hash_key = "test-only-hash-key-0123456789"
derived = "{derived}"

[[plugins.config.rules]]
column = "crm.customers.card_number"
action = "partial"

[[plugins.config.rules]]
column = "customers.email"
action = "hash"

[[plugins.config.rules]]
column = "national_id"
action = "redact"
except_groups = ["auditors"]

[[plugins.config.rules]]
column = "crm.customers.card_bin"
action = "null"

[[plugins.config.rules]]
column = "crm.payments.card_number"
action = "partial"
"#
    )
}

async fn gateway(derived: &str) -> TestGateway {
    seeded();
    TestGateway::start_with(GatewayOptions::plugin(
        "mask",
        &plugin_wasm("mask"),
        &rules(derived),
    ))
    .await
}

/// Fails if any raw value appears in `text`, in any letter case, in hex or
/// in base64.
fn assert_no_raw(sql: &str, text: &str) {
    if let Some((raw, form)) = portcullis_e2e::find_leak(text, RAW) {
        panic!("raw value {raw:?} leaked (as {form:?}) for {sql:?}: {text}");
    }
}

async fn simple_text(c: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let mut out = String::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push_str(r.get(i).unwrap_or("NULL"));
                out.push('|');
            }
            out.push('\n');
        }
    }
    out
}

/// Every shape of query that reads a masked column.
const MATRIX: &[&str] = &[
    "SELECT * FROM crm.customers",
    "SELECT card_number AS harmless, email AS e, national_id AS n FROM crm.customers",
    "SELECT c.card_number, c.email, c.national_id FROM crm.customers c",
    "SELECT x, y, z FROM (SELECT card_number AS x, email AS y, national_id AS z FROM crm.customers) s",
    "WITH t AS (SELECT * FROM crm.customers) SELECT card_number, email, national_id FROM t",
    "SELECT card_number FROM crm.customers UNION ALL SELECT email FROM crm.customers UNION ALL SELECT national_id FROM crm.customers",
    "SELECT o.id, c.card_number, c.email FROM crm.customers c JOIN crm.customers o ON o.id = c.id",
    "SELECT * FROM crm.customer_view",
    "SELECT card_number FROM crm.payments",
    "SELECT card_number FROM crm.payments_2026",
    "SELECT upper(national_id), upper(email), upper(card_number) FROM crm.customers",
    "SELECT national_id || '', email || '', card_number || '' FROM crm.customers",
    "SELECT row_to_json(c) FROM crm.customers c",
    "SELECT array_agg(national_id), array_agg(email), array_agg(card_number) FROM crm.customers",
    "SELECT national_id::text, card_number::varchar(40), email::bytea::text FROM crm.customers",
    "SELECT encode(email::bytea, 'base64'), encode(card_number::bytea, 'hex'), encode(national_id::bytea, 'base64') FROM crm.customers",
    "SELECT replace(card_number, ' ', '') FROM crm.customers",
    "SELECT json_agg(c) FROM crm.customer_view c",
    "SELECT (SELECT email FROM crm.customers WHERE id = 1)",
];

#[tokio::test]
async fn the_masking_matrix_leaks_nothing_over_the_simple_protocol() {
    let gw = gateway("detect").await;
    let c = gw.connect(USER).await;
    for sql in MATRIX {
        let text = simple_text(&c, sql).await;
        assert!(!text.is_empty(), "{sql} returned no rows");
        assert_no_raw(sql, &text);
    }
    // What the rules promise, value by value.
    let text = simple_text(
        &c,
        "SELECT name, card_number, email, national_id, card_bin FROM crm.customers WHERE id = 1",
    )
    .await;
    assert_eq!(
        text.trim_end(),
        format!(
            "Ada Lovelace|**** **** **** 1111|{}|[redacted]|NULL|",
            hash_of(&c).await
        )
    );
    // Unmasked columns and other tables are untouched.
    let text = simple_text(&c, "SELECT name FROM items WHERE id = 2").await;
    assert_eq!(text.trim_end(), "item 2|");
}

/// The mask of ada's email, read twice: equal values give equal masks.
async fn hash_of(c: &tokio_postgres::Client) -> String {
    let a = simple_text(c, "SELECT email FROM crm.customers WHERE id = 1").await;
    let b = simple_text(
        c,
        "SELECT c.email FROM crm.customers c WHERE c.name LIKE 'Ada%'",
    )
    .await;
    assert_eq!(a, b);
    assert!(a.starts_with("h:"), "{a}");
    a.trim_end().trim_end_matches('|').to_string()
}

#[tokio::test]
async fn the_masking_matrix_leaks_nothing_with_binary_results() {
    let gw = gateway("detect").await;
    let c = gw.connect(USER).await;
    for sql in MATRIX {
        // tokio-postgres prepares, binds binary results and executes.
        let rows = c
            .query(*sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let mut text = String::new();
        for r in &rows {
            for i in 0..r.len() {
                let ty = r.columns()[i].type_().clone();
                let v = match ty {
                    tokio_postgres::types::Type::INT4 => {
                        r.get::<_, Option<i32>>(i).map(|v| v.to_string())
                    }
                    tokio_postgres::types::Type::INT8 => {
                        r.get::<_, Option<i64>>(i).map(|v| v.to_string())
                    }
                    tokio_postgres::types::Type::TEXT_ARRAY
                    | tokio_postgres::types::Type::VARCHAR_ARRAY => {
                        r.get::<_, Option<Vec<String>>>(i).map(|v| v.join(","))
                    }
                    tokio_postgres::types::Type::JSON => {
                        // Binary json is its text; read it raw.
                        r.get::<_, Option<RawText>>(i).map(|v| v.0)
                    }
                    _ => r.get::<_, Option<String>>(i),
                };
                text.push_str(&v.unwrap_or_else(|| "NULL".into()));
                text.push('|');
            }
            text.push('\n');
        }
        assert!(!text.is_empty(), "{sql} returned no rows");
        assert_no_raw(sql, &text);
    }
    // A masked bigint in binary format is NULL, never replacement bytes.
    let row = c
        .query_one(
            "SELECT card_bin, card_number, national_id FROM crm.customers WHERE id = $1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    assert_eq!(row.get::<_, String>(1), "**** **** **** 0004");
    assert_eq!(row.get::<_, String>(2), "[redacted]");
    // A prepared statement executed again (described once, bound twice).
    let stmt = c
        .prepare("SELECT card_number AS x FROM crm.customers WHERE id = $1")
        .await
        .unwrap();
    for id in [1i32, 4] {
        let v: String = c.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert!(v.starts_with("**** **** **** "), "{v}");
    }
}

/// A json value read as its raw bytes.
struct RawText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for RawText {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawText(String::from_utf8(raw.to_vec())?))
    }
    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSON
    }
}

#[tokio::test]
async fn copy_to_is_refused_for_masked_identities_and_exemptions_work() {
    let gw = gateway("detect").await;
    let c = gw.connect(USER).await;
    for sql in [
        "COPY crm.customers TO STDOUT",
        "COPY (SELECT * FROM crm.customer_view) TO STDOUT",
        "COPY (SELECT upper(email) FROM crm.customers) TO STDOUT (FORMAT csv)",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains("COPY ... TO is not allowed"), "{msg}");
    }
    // COPY FROM (a write, no data out) still works.
    c.batch_execute("CREATE TEMP TABLE landing (v text)")
        .await
        .unwrap();
    let sink = c
        .copy_in::<_, bytes::Bytes>("COPY landing FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"x\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);

    // An auditor sees national ids (but not card numbers).
    let token = gw.issuer.mint(&TokenSpec {
        user: "auditor@example.com".into(),
        groups: vec!["testers".into(), "auditors".into()],
        ttl_secs: 60,
    });
    let a = gw
        .connect_with(&gw.pg_config("auditor@example.com", &token))
        .await
        .unwrap();
    let text = simple_text(
        &a,
        "SELECT national_id, card_number FROM crm.customers WHERE id = 1",
    )
    .await;
    assert_eq!(text.trim_end(), "123-45-6789|**** **** **** 1111|");
}

#[tokio::test]
async fn strict_mode_refuses_derived_values_but_not_counts() {
    let gw = gateway("refuse").await;
    let c = gw.connect(USER).await;
    for sql in [
        "SELECT upper(national_id) FROM crm.customers",
        "SELECT row_to_json(c) FROM crm.customers c",
        "SELECT * FROM crm.customer_view",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        let (code, msg) = db_error(&err);
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains("computed"), "{msg}");
        // Extended protocol too.
        let err = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}");
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM crm.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    let text = simple_text(&c, "SELECT card_number FROM crm.customers WHERE id = 3").await;
    assert_eq!(text.trim_end(), "**** **** ***0 009|");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_see_only_masks() {
    let gw = gateway("detect").await;
    let out = Command::new("psql")
        .arg(gw.conninfo(USER))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", "SELECT * FROM crm.customers"])
        .args(["-c", "SELECT row_to_json(c) FROM crm.customers c"])
        .env("PGPASSWORD", gw.token(USER))
        .output()
        .expect("psql is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("**** **** **** 1111"), "{stdout}");
    assert_no_raw("psql", &stdout);

    let script = r#"
import os, psycopg
with psycopg.connect(os.environ["CONNINFO"], password=os.environ["TOKEN"]) as conn:
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            cur.execute("SELECT card_number, national_id, card_bin, array_agg(email) OVER () FROM crm.customers WHERE id = %s", (1,))
            print(repr(cur.fetchone()))
"#;
    let stdout = gw.python(USER, script);
    let lines: Vec<&str> = stdout.lines().collect();
    // Text results: the derived array is masked in place. Binary results:
    // the host cannot vouch for edited bytes of a binary array, so it is NULL.
    assert_eq!(
        lines,
        [
            "('**** **** **** 1111', '[redacted]', None, ['***@*******.***'])",
            "('**** **** **** 1111', '[redacted]', None, None)",
        ],
        "{stdout}"
    );
    assert_no_raw("psycopg", &stdout);
}

#[tokio::test]
async fn masking_stays_in_step_with_errors_in_a_pipeline() {
    let gw = gateway("detect").await;
    let c = gw.connect(USER).await;
    // Pipelined: each query is its own Parse/Describe/Sync then
    // Bind/Execute/Sync; an error voids only its own batch.
    let queries = [
        "SELECT card_number FROM crm.customers WHERE id = 1",
        "SELECT 1 / (id - id) FROM crm.customers WHERE id = 1",
        "SELECT name, national_id FROM crm.customers WHERE id = 2",
        "SELECT no_such_column FROM crm.customers",
        "SELECT email AS e FROM crm.customers WHERE id = 3",
    ];
    let results =
        futures_util::future::join_all(queries.iter().map(|q| c.query_opt(*q, &[]))).await;
    let text = |i: usize, col: usize| -> String {
        results[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e:?}", queries[i]))
            .as_ref()
            .expect("a row")
            .get(col)
    };
    assert_eq!(text(0, 0), "**** **** **** 1111");
    assert_eq!(
        db_error(results[1].as_ref().expect_err("division by zero")).0,
        "22012"
    );
    assert_eq!(text(2, 0), "Alan Turing");
    assert_eq!(text(2, 1), "[redacted]");
    assert_eq!(
        db_error(results[3].as_ref().expect_err("no such column")).0,
        "42703"
    );
    assert!(text(4, 0).starts_with("h:"), "{}", text(4, 0));
    // And a simple-protocol batch with an error in the middle.
    let err = c
        .simple_query(
            "SELECT card_number FROM crm.customers WHERE id = 1; SELECT 1/0; SELECT card_number FROM crm.customers",
        )
        .await
        .expect_err("division by zero");
    assert_eq!(db_error(&err).0, "22012");
    let after = simple_text(&c, "SELECT card_number FROM crm.customers WHERE id = 4").await;
    assert_eq!(after.trim_end(), "**** **** **** 0004|");
}

/// Spellings that compute a value from a masked column.
const COMPUTED: &[&str] = &[
    "SELECT reverse(card_number) FROM crm.customers",
    "SELECT substr(card_number, 1, 9) || '-' || substr(card_number, 10) FROM crm.customers",
    "SELECT ascii(substr(email, 1, 1)), ascii(substr(email, 2, 1)) FROM crm.customers",
    "SELECT card_bin + 0 FROM crm.customers",
    "SELECT string_agg(card_number, ',') FROM crm.customers",
    "SELECT translate(card_number, '0123456789', 'abcdefghij') FROM crm.customers",
    "SELECT md5(national_id), length(national_id) FROM crm.customers",
    "SELECT row_to_json(c) FROM crm.customers c",
    "SELECT c FROM crm.customers c",
    "SELECT * FROM crm.customer_view",
    "SELECT x FROM (SELECT reverse(card_number) AS x FROM crm.customers) s",
    "WITH a AS (SELECT upper(email) AS e FROM crm.customers) SELECT e FROM a",
    "SELECT name FROM crm.customers UNION ALL SELECT reverse(card_number) FROM crm.customers",
    "SELECT (SELECT reverse(email) FROM crm.customers LIMIT 1)",
    "SELECT l.r FROM crm.customers c, LATERAL (SELECT reverse(c.card_number) AS r) l",
    "SELECT regexp_replace(card_number, '(.)', '\\1 ', 'g') FROM crm.payments",
    "SELECT reverse(card_number) FROM crm.payments_2026",
    "SELECT id, card_number = '4111 1111 1111 1111', card_number LIKE '4%' FROM crm.customers",
    "SELECT id, reverse(card_number) FROM crm.customers WHERE id = 1 UNION ALL SELECT 2, 'clean'",
];

/// Every value of a result read over the extended protocol (binary where
/// tokio-postgres asks for it) as text: UTF-8 as it is, other bytes in hex.
async fn extended_text(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql} (extended): {e:?}"));
    let mut out = String::new();
    for r in &rows {
        for i in 0..r.len() {
            match r.get::<_, Option<AnyBytes>>(i) {
                None => out.push_str("NULL"),
                Some(AnyBytes(b)) => match String::from_utf8(b) {
                    Ok(s) => out.push_str(&s),
                    Err(e) => out.push_str(&hex(e.as_bytes())),
                },
            }
            out.push('|');
        }
        out.push('\n');
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Any value, as the bytes the client received.
struct AnyBytes(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for AnyBytes {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyBytes(raw.to_vec()))
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Statements that would copy masked values somewhere they are not masked,
/// and how to tell they did not run.
const COPIES: &[(&str, &str)] = &[
    (
        "CREATE TABLE crm.copy1 AS SELECT card_number FROM crm.customers",
        "SELECT count(*) FROM pg_class WHERE relname = 'copy1'",
    ),
    (
        "SELECT email INTO crm.copy2 FROM crm.customers",
        "SELECT count(*) FROM pg_class WHERE relname = 'copy2'",
    ),
    (
        "CREATE MATERIALIZED VIEW crm.copy3 AS SELECT reverse(national_id) FROM crm.customers",
        "SELECT count(*) FROM pg_class WHERE relname = 'copy3'",
    ),
    (
        "INSERT INTO crm.notes SELECT id, reverse(card_number) FROM crm.customers",
        // Other tests write their own notes: count only copied values.
        "SELECT count(*) FROM crm.notes n JOIN crm.customers c ON n.note = reverse(c.card_number)",
    ),
    (
        "WITH x AS (INSERT INTO crm.notes SELECT id, email FROM crm.customers RETURNING 1) SELECT count(*) FROM x",
        "SELECT count(*) FROM crm.notes n JOIN crm.customers c ON n.note = c.email",
    ),
    (
        "UPDATE crm.customers SET name = card_number WHERE id = 1",
        "SELECT count(*) FROM crm.customers WHERE name <> 'Ada Lovelace' AND id = 1",
    ),
    (
        "SELECT set_config('probe.v', email, false) FROM crm.customers",
        "SELECT count(*) FROM crm.customers WHERE current_setting('probe.v', true) IS NOT NULL AND current_setting('probe.v', true) <> ''",
    ),
];

#[tokio::test]
async fn lineage_masks_computed_values_whole_refuses_copies_and_masks_plain_ones() {
    let gw = gateway("lineage").await;
    let c = gw.connect(USER).await;
    for sql in COMPUTED {
        for (protocol, text) in [
            ("simple", simple_text(&c, sql).await),
            ("extended", extended_text(&c, sql).await),
        ] {
            assert!(!text.is_empty(), "{sql} ({protocol}) returned no rows");
            assert_no_raw(sql, &text);
            // Character codes, lengths, numbers and comparisons computed
            // from masked columns are NULL; text computed from them is
            // redacted whole.
            for forbidden in [
                "97",
                "100",
                "4111",
                "1111",
                "978000123",
                "true",
                "9876",
                "|t|",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{sql} ({protocol}) shows {forbidden:?}: {text}"
                );
            }
        }
    }
    let text = simple_text(
        &c,
        "SELECT ascii(substr(email, 1, 1)), length(national_id), card_bin + 0, reverse(card_number), upper(name) FROM crm.customers WHERE id = 1",
    )
    .await;
    assert_eq!(text.trim_end(), "NULL|NULL|NULL|[redacted]|ADA LOVELACE|");
    // The clean branch of a UNION with a masked one: the column is masked.
    let text = extended_text(
        &c,
        "SELECT id, reverse(card_number) FROM crm.customers WHERE id = 1 UNION ALL SELECT 2, 'clean'",
    )
    .await;
    assert!(
        text.contains("[redacted]") && !text.contains("clean"),
        "{text}"
    );
    for (sql, check) in COPIES {
        let err = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}: {err}");
        let err = c.query(*sql, &[]).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql} (extended): {err}");
        let left = cluster()
            .cluster
            .psql(DB, check)
            .expect("check")
            .trim()
            .to_string();
        assert_eq!(left, "0", "{sql} ran: {check}");
    }
    // Plain columns, however they are reached, come back masked.
    for sql in [
        "SELECT card_number, email, national_id FROM crm.customers",
        "SELECT x FROM (SELECT card_number AS x FROM crm.customers) s",
        "WITH t AS (SELECT card_number, email FROM crm.customers) SELECT card_number, email FROM t",
        "SELECT name, count(*) FROM crm.customers GROUP BY name",
    ] {
        let text = simple_text(&c, sql).await;
        assert!(!text.is_empty(), "{sql} returned no rows");
        assert_no_raw(sql, &text);
    }
    // Someone the rules do not apply to computes freely.
    let auditor = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "auditor@example.com".into(),
        groups: vec!["testers".into(), "auditors".into()],
        ttl_secs: 60,
    });
    let a = gw
        .connect_with(&gw.pg_config("auditor@example.com", &auditor))
        .await
        .expect("auditor connects");
    let text = simple_text(
        &a,
        "SELECT reverse(national_id) FROM crm.customers WHERE id = 1",
    )
    .await;
    assert_eq!(text.trim_end(), "9876-54-321|");
}

#[tokio::test]
async fn errors_raised_on_masked_values_do_not_quote_them() {
    let gw = gateway("lineage").await;
    let c = gw.connect(USER).await;
    for (sql, code) in [
        (
            "SELECT id FROM crm.customers WHERE card_number::int > 0",
            "22P02",
        ),
        (
            "SELECT id FROM crm.customers WHERE national_id::date IS NOT NULL",
            "22008",
        ),
        (
            "SELECT id FROM crm.customers ORDER BY email::numeric",
            "22P02",
        ),
    ] {
        for extended in [false, true] {
            let err = if extended {
                c.query(sql, &[]).await.expect_err(sql)
            } else {
                c.simple_query(sql).await.expect_err(sql)
            };
            let Some(db) = err.as_db_error() else {
                panic!("{sql}: {err:?}");
            };
            assert_eq!(db.code().code(), code, "{sql}: {db:?}");
            let text = format!("{} {:?} {:?}", db.message(), db.detail(), db.hint());
            assert_no_raw(sql, &text);
        }
        // The session goes on.
        assert!(
            !simple_text(&c, "SELECT name FROM crm.customers WHERE id = 1")
                .await
                .is_empty()
        );
    }
}

/// Every message up to the next ReadyForQuery, as text (rows included).
async fn raw_text(s: &mut tokio::net::TcpStream) -> String {
    let mut out = String::new();
    while let Some((tag, frame)) = portcullis_e2e::raw::read_msg(s).await {
        out.push_str(&String::from_utf8_lossy(&frame));
        out.push('\n');
        if tag == b'Z' {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_portal_name_given_to_another_query_is_described_again() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    raw::query(&mut b, "BEGIN");
    raw::send(&mut s, &b).await;
    raw_text(&mut s).await;
    // Portal p reads a harmless column and is described by its first run.
    b.clear();
    raw::parse(&mut b, "s1", "SELECT name FROM crm.customers");
    raw::bind(&mut b, "p", "s1", &[]);
    raw::execute(&mut b, "p");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let first = raw_text(&mut s).await;
    assert!(first.contains("Ada Lovelace"), "{first}");
    // SQL gives the name p to a cursor over masked columns ...
    b.clear();
    raw::query(
        &mut b,
        "CLOSE p; DECLARE p CURSOR FOR SELECT card_number, national_id, email FROM crm.customers",
    );
    raw::send(&mut s, &b).await;
    raw_text(&mut s).await;
    // ... and a protocol Execute of p must not use p's old description.
    b.clear();
    raw::execute(&mut b, "p");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let rows = raw_text(&mut s).await;
    assert_no_raw("Execute of the redeclared portal", &rows);
    // Within one batch too: SQL run through the protocol redeclares q.
    b.clear();
    raw::parse(&mut b, "s2", "SELECT name FROM crm.customers");
    raw::bind(&mut b, "q", "s2", &[]);
    raw::execute(&mut b, "q");
    raw::parse(&mut b, "s3", "CLOSE q");
    raw::bind(&mut b, "", "s3", &[]);
    raw::execute(&mut b, "");
    raw::parse(
        &mut b,
        "s4",
        "DECLARE q CURSOR FOR SELECT email, card_number FROM crm.customers",
    );
    raw::bind(&mut b, "", "s4", &[]);
    raw::execute(&mut b, "");
    raw::execute(&mut b, "q");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let rows = raw_text(&mut s).await;
    assert_no_raw("Execute of a portal redeclared in the batch", &rows);
}

#[tokio::test]
async fn each_result_is_masked_by_its_own_statements_lineage() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    let c = gw.connect(USER).await;
    // Byte-for-byte the same description (a computed int4 column named v),
    // first clean, then computed from a masked column: a pass remembered
    // for the first must not let the second through.
    for _ in 0..2 {
        let clean = simple_text(&c, "SELECT 7 AS v").await;
        assert_eq!(clean.trim_end(), "7|");
        let masked = simple_text(
            &c,
            "SELECT length(card_number) AS v FROM crm.customers WHERE id = 1",
        )
        .await;
        assert_eq!(masked.trim_end(), "NULL|");
        let clean = extended_text(&c, "SELECT 7 AS v").await;
        assert_eq!(clean.trim_end(), "\0\0\0\u{7}|", "int4 7 in binary");
        let masked = extended_text(
            &c,
            "SELECT length(card_number) AS v FROM crm.customers WHERE id = 1",
        )
        .await;
        assert_eq!(masked.trim_end(), "NULL|");
    }
    // Several statements in one Query: each result meets its own lineage,
    // counted past statements that return no rows.
    let text = simple_text(
        &c,
        "SELECT 'first'::text AS v; SET application_name = 'x'; SELECT reverse(card_number) AS v FROM crm.customers WHERE id = 1; SELECT upper(name) AS v FROM crm.customers WHERE id = 1; SELECT reverse(email) AS v FROM crm.customers WHERE id = 2",
    )
    .await;
    assert_eq!(
        text, "first|\n[redacted]|\nADA LOVELACE|\n[redacted]|\n",
        "{text}"
    );

    // A second Parse of a taken name fails on the server, which keeps the
    // first statement: its runs are masked by the first one's lineage.
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    raw::parse(
        &mut b,
        "s1",
        "SELECT reverse(card_number) AS v FROM crm.customers WHERE id = 1",
    );
    raw::sync(&mut b);
    raw::parse(&mut b, "s1", "SELECT 'plain'::text AS v");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    raw_text(&mut s).await;
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes, vec!["42P05".to_string()], "the second Parse fails");
    b.clear();
    raw::bind(&mut b, "p", "s1", &[]);
    raw::execute(&mut b, "p");
    raw::sync(&mut b);
    // The unnamed statement, replaced in the same batch.
    raw::parse(&mut b, "", "SELECT 'plain'::text AS v");
    raw::parse(
        &mut b,
        "",
        "SELECT reverse(email) AS v FROM crm.customers WHERE id = 2",
    );
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let rows = raw_text(&mut s).await + &raw_text(&mut s).await;
    assert_no_raw("runs of a statement whose name was taken again", &rows);
    assert!(!rows.contains("plain"), "{rows}");
    assert_eq!(rows.matches("[redacted]").count(), 2, "{rows}");
}

/// Sends `b` and then a clean and a masked query, reads `answers` answers
/// up to ReadyForQuery (`b`'s and the two queries'), and checks that each
/// query met its own lineage: the gateway's count of ReadyForQuery is in
/// step with the server's.
async fn in_step(
    s: &mut tokio::net::TcpStream,
    b: &mut bytes::BytesMut,
    answers: usize,
    what: &str,
) {
    use portcullis_e2e::raw;
    raw::query(b, "SELECT 'plain'::text AS v");
    raw::query(b, &format!("SELECT t AS v FROM ({DISGUISED}) d"));
    raw::send(s, b).await;
    let mut seen = String::new();
    for _ in 0..answers {
        seen += &raw_text(s).await;
    }
    assert!(seen.contains("plain"), "{what}: {seen}");
    assert_card_hidden(what, &seen);
    assert_eq!(seen.matches("[redacted]").count(), 1, "{what}: {seen}");
}

/// Computed from the card number in forms the detectors do not know:
/// letters for digits, and the digits as a number.
const DISGUISED: &str = "SELECT name, translate(card_number, '0123456789', 'abcdefghij') AS t, replace(card_number, ' ', '')::numeric AS n FROM crm.customers WHERE id = 1";

/// Fails if `text` shows Ada's card number, disguised or not.
fn assert_card_hidden(what: &str, text: &str) {
    assert_no_raw(what, text);
    for form in ["ebbb", "4111111111111111", "4111"] {
        assert!(!text.contains(form), "{what} shows {form:?}: {text}");
    }
}

#[tokio::test]
async fn queries_run_later_by_name_are_masked_by_what_they_run() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    // Prepared with the protocol, run with SQL EXECUTE and FETCH.
    raw::parse(&mut b, "s1", DISGUISED);
    raw::sync(&mut b);
    raw::query(&mut b, "EXECUTE s1");
    raw::query(&mut b, "BEGIN");
    raw::send(&mut s, &b).await;
    let mut seen = String::new();
    for _ in 0..3 {
        seen += &raw_text(&mut s).await;
    }
    b.clear();
    raw::bind(&mut b, "p1", "s1", &[]);
    raw::sync(&mut b);
    raw::query(&mut b, "FETCH ALL FROM p1");
    // Prepared and declared with SQL, run with SQL.
    raw::query(
        &mut b,
        &format!("DECLARE c CURSOR FOR {DISGUISED}; FETCH ALL FROM c; ROLLBACK"),
    );
    raw::query(&mut b, &format!("PREPARE sp AS {DISGUISED}; EXECUTE sp"));
    // A NULL computed from a masked column must not tell either.
    raw::query(
        &mut b,
        "SELECT nullif(substr(card_number, 1, 1), '4') AS v FROM crm.customers WHERE id = 1",
    );
    raw::send(&mut s, &b).await;
    for _ in 0..5 {
        seen += &raw_text(&mut s).await;
    }
    assert_card_hidden("runs by name", &seen);
    assert!(seen.contains("Ada Lovelace"), "the rows came: {seen}");
    assert_eq!(seen.matches("[redacted]").count(), 5, "{seen}");

    // Rows of a prepared statement stored into a table: refused, and the
    // table does not exist.
    let c = gw.connect(USER).await;
    c.batch_execute("PREPARE sp2 AS SELECT name, card_number FROM crm.customers")
        .await
        .expect("prepare");
    let err = c
        .batch_execute("CREATE TEMP TABLE y AS EXECUTE sp2")
        .await
        .expect_err("CREATE TABLE AS EXECUTE of masked columns");
    assert_eq!(db_error(&err).0, "42501", "{err:?}");
    let missing: bool = c
        .query_one("SELECT to_regclass('pg_temp.y') IS NULL", &[])
        .await
        .expect("check")
        .get(0);
    assert!(missing, "the copy was made");
}

#[tokio::test]
async fn names_longer_than_postgres_compares_are_refused() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    let mut s = raw::login(&gw, USER).await;
    let long = "x".repeat(63);
    let mut b = BytesMut::new();
    // PostgreSQL would take both names as the same statement.
    raw::parse(&mut b, &format!("{long}1"), DISGUISED);
    raw::sync(&mut b);
    raw::bind(&mut b, "", &format!("{long}2"), &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let first = raw::until_ready(&mut s).await;
    let second = raw::until_ready(&mut s).await;
    assert_eq!(first.1, vec!["42501".to_string()], "{first:?}");
    assert_eq!(second.1, vec!["42501".to_string()], "{second:?}");
    assert!(!second.0.contains(&b'D'), "no rows: {second:?}");
    // 63 bytes are fine.
    b.clear();
    raw::parse(&mut b, &long, "SELECT name FROM crm.customers WHERE id = 1");
    raw::bind(&mut b, &long, &long, &[]);
    raw::execute(&mut b, &long);
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let rows = raw_text(&mut s).await;
    assert!(rows.contains("Ada Lovelace"), "{rows}");
}

#[tokio::test]
async fn syncs_sent_during_copy_in_do_not_shift_results() {
    use bytes::BytesMut;
    use futures_util::SinkExt;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    // tokio-postgres's COPY: Bind, Execute, Sync before the data, which
    // PostgreSQL ignores while it copies in.
    let c = gw.connect(USER).await;
    for round in 0..2 {
        let sink = c
            .copy_in("COPY crm.notes FROM STDIN")
            .await
            .expect("copy in");
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"7\tcopied\n"))
            .await
            .expect("row");
        sink.finish().await.expect("finish");
        let clean = simple_text(&c, "SELECT 'plain'::text AS v").await;
        assert_eq!(clean.trim_end(), "plain|", "round {round}");
        let masked = simple_text(&c, &format!("SELECT t AS v FROM ({DISGUISED}) d")).await;
        assert_eq!(masked.trim_end(), "[redacted]|", "round {round}");
        // A refusal still reaches the statement it belongs to.
        let err = c
            .simple_query("CREATE TEMP TABLE z AS SELECT card_number FROM crm.customers")
            .await
            .expect_err("masked copy");
        assert_eq!(db_error(&err).0, "42501");
        let n: i64 = c
            .query_one("SELECT count(*) FROM crm.notes WHERE note = 'copied'", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, round + 1);
    }

    // Several Syncs inside an extended COPY: all ignored by the server.
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    raw::parse(&mut b, "cp", "COPY crm.notes FROM STDIN");
    raw::bind(&mut b, "", "cp", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::sync(&mut b);
    raw::sync(&mut b);
    raw::copy_data(&mut b, b"8\textended\n");
    raw::copy_done(&mut b);
    raw::sync(&mut b);
    in_step(&mut s, &mut b, 3, "after an extended COPY with extra Syncs").await;

    // A COPY that fails as soon as it starts (FREEZE outside the
    // transaction that made the table): the counts stay in step.
    let mut s = raw::login(&gw, USER).await;
    b.clear();
    raw::parse(&mut b, "fz", "COPY crm.notes FROM STDIN (FREEZE)");
    raw::bind(&mut b, "", "fz", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let mut tags = Vec::new();
    while let Some((tag, _)) = raw::read_msg(&mut s).await {
        tags.push(tag);
        if tag == b'E' {
            break;
        }
    }
    assert!(tags.contains(&b'E'), "{tags:?}");
    b.clear();
    raw::copy_done(&mut b);
    raw::sync(&mut b);
    in_step(&mut s, &mut b, 3, "after a COPY that failed at once").await;

    // A Sync between CopyData and CopyDone is answered or not depending
    // on whether a row failed: the session ends.
    let mut s = raw::login(&gw, USER).await;
    b.clear();
    raw::parse(&mut b, "cp", "COPY crm.notes FROM STDIN");
    raw::bind(&mut b, "", "cp", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::copy_data(&mut b, b"notanint\tx\n");
    raw::sync(&mut b);
    raw::query(&mut b, &format!("SELECT t AS v FROM ({DISGUISED}) d"));
    raw::send(&mut s, &b).await;
    let (tags, codes) = raw::until_closed(&mut s).await;
    assert!(codes.contains(&"08P01".to_string()), "{tags:?} {codes:?}");
    assert!(!tags.contains(&b'D'), "{tags:?}");

    // After a COPY query, anything but copy data before its end breaks
    // the protocol: the session ends, nothing is shown.
    let mut s = raw::login(&gw, USER).await;
    b.clear();
    raw::query(&mut b, "COPY crm.notes FROM STDIN");
    raw::sync(&mut b);
    raw::sync(&mut b);
    raw::copy_done(&mut b);
    raw::query(&mut b, &format!("SELECT t AS v FROM ({DISGUISED}) d"));
    raw::send(&mut s, &b).await;
    let (tags, codes) = raw::until_closed(&mut s).await;
    assert!(codes.contains(&"08P01".to_string()), "{tags:?} {codes:?}");
    assert!(!tags.contains(&b'D'), "{tags:?}");
}

#[tokio::test]
async fn standard_conforming_strings_stays_on() {
    let gw = gateway("lineage").await;
    let c = gw.connect(USER).await;
    for sql in [
        "SET standard_conforming_strings = off",
        "RESET standard_conforming_strings",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}: {err:?}");
        let on: String = c
            .query_one("SHOW standard_conforming_strings", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(on, "on", "{sql} turned it off");
    }
    // What pg_dump writes passes.
    c.batch_execute("SET standard_conforming_strings = on")
        .await
        .expect("on stays allowed");
    // Off from the start (the client's start-up options): no session.
    let mut cfg = gw.pg_config(USER, &gw.token(USER));
    cfg.options("-c standard_conforming_strings=off");
    let refused = gw.connect_with(&cfg).await;
    assert!(refused.is_err(), "a session with it off was opened");
}

/// Whether a login with start-up parameters `params` is refused, and the
/// SQLSTATE it is refused with.
async fn login_refusal(
    gw: &portcullis_e2e::TestGateway,
    params: &[(&str, &str)],
) -> Option<String> {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let mut s = tokio::net::TcpStream::connect(gw.plain_addr)
        .await
        .expect("connect");
    let mut b = BytesMut::new();
    let mut all = vec![("user", USER), ("database", portcullis_e2e::DB)];
    all.extend_from_slice(params);
    portcullis::protocols::postgres::codec::startup::encode_startup(&mut b, &all);
    raw::send(&mut s, &b).await;
    raw::read_msg(&mut s).await.expect("authentication request");
    b.clear();
    portcullis::protocols::postgres::codec::authentication::encode_password(
        &mut b,
        &gw.token(USER),
    );
    raw::send(&mut s, &b).await;
    while let Some((tag, frame)) = raw::read_msg(&mut s).await {
        match tag {
            b'E' => {
                return portcullis::protocols::postgres::codec::error_response::decode(&frame)
                    .ok()
                    .map(|e| e.code.into_owned())
            }
            b'Z' => return None,
            _ => {}
        }
    }
    Some("closed".into())
}

#[tokio::test]
async fn sessions_stay_in_utf8() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    // A multibyte client encoding from the start, however it is set:
    // refused. (GBK hides a backslash in E'€\'; EUC_JP reads two byte
    // sequences as one character.) Single-byte ones are read.
    for params in [
        &[("client_encoding", "GBK")][..],
        &[("client_encoding", "EUC_JP")],
        &[("options", "-c client_encoding=SJIS")],
    ] {
        let refused = login_refusal(&gw, params).await;
        assert!(refused.is_some(), "{params:?} was let in");
    }
    for encoding in ["utf-8", "LATIN1"] {
        assert_eq!(
            login_refusal(&gw, &[("client_encoding", encoding)]).await,
            None
        );
    }
    // Masks hold in a single-byte session: plain and computed values, with
    // a statement whose text is not ASCII.
    let mut s = raw::login_with(&gw, USER, &[("client_encoding", "LATIN1")]).await;
    let mut b = BytesMut::new();
    raw::query_bytes(
        &mut b,
        b"SELECT card_number, reverse(card_number) || '\xe9' AS r FROM crm.customers WHERE id = 1",
    );
    raw::send(&mut s, &b).await;
    let text = raw_text(&mut s).await;
    assert!(
        !text.contains("4111") && text.contains("[redacted]"),
        "{text}"
    );

    // Switching mid-session, in any spelling, even when switched back
    // before the Sync (no ParameterStatus is sent then): refused, and the
    // statement between never runs.
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    for spelling in ["windows932", "S.JIS", "Shift-JIS."] {
        b.clear();
        raw::parse(&mut b, "", &format!("SET client_encoding = '{spelling}'"));
        raw::bind(&mut b, "", "", &[]);
        raw::execute(&mut b, "");
        raw::parse(&mut b, "", "INSERT INTO crm.notes VALUES (98, 'between')");
        raw::bind(&mut b, "", "", &[]);
        raw::execute(&mut b, "");
        raw::parse(&mut b, "", "SET client_encoding = 'UTF8'");
        raw::bind(&mut b, "", "", &[]);
        raw::execute(&mut b, "");
        raw::sync(&mut b);
        raw::send(&mut s, &b).await;
        let (_, codes) = raw::until_ready(&mut s).await;
        assert_eq!(codes, vec!["42501".to_string()], "{spelling}");
    }
    let notes = cluster()
        .cluster
        .psql(DB, "SELECT count(*) FROM crm.notes WHERE id = 98")
        .expect("count");
    assert_eq!(notes.trim(), "0", "the statement between ran");
    // Text that is not UTF-8 is refused; the session goes on.
    b.clear();
    raw::query_bytes(&mut b, b"SELECT 'caf\xe9' AS x");
    raw::query(&mut b, "SELECT 'after' AS x");
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes.len(), 1, "{codes:?}");
    let after = raw_text(&mut s).await;
    assert!(after.contains("after"), "{after}");
    // Code the gateway cannot read may switch the encoding itself: what
    // follows it is judged only after its ReadyForQuery (which brings the
    // switch, and ends the session), and the rest of its batch is refused.
    // In SJIS "Ł\" (C5 81 5C) is two characters, the second swallowing the
    // backslash: the string ends early and the INSERT runs.
    const SWITCH: &str = "DO $$ BEGIN EXECUTE 'SET client_encoding = ''SJIS'''; END $$";
    const HIDDEN: &str = "SELECT E'Ł\\'; INSERT INTO crm.notes VALUES (97, $$hidden$$); -- '";
    let mut s = raw::login(&gw, USER).await;
    b.clear();
    raw::query(&mut b, SWITCH);
    raw::query(&mut b, HIDDEN);
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_closed(&mut s).await;
    assert!(codes.contains(&"0A000".to_string()), "{codes:?}");
    let mut s = raw::login(&gw, USER).await;
    b.clear();
    raw::parse(&mut b, "", SWITCH);
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::parse(&mut b, "", HIDDEN.split(';').next().unwrap_or_default());
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::query(&mut b, HIDDEN);
    raw::send(&mut s, &b).await;
    // The refused batch rolls the SET back; the Query after it is then
    // read in UTF-8 by both (or the session ended, had the switch held).
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(
        codes,
        vec!["42501".to_string()],
        "the rest of the batch is refused"
    );
    raw::until_ready(&mut s).await;
    let hidden = cluster()
        .cluster
        .psql(DB, "SELECT count(*) FROM crm.notes WHERE id = 97")
        .expect("count");
    assert_eq!(hidden.trim(), "0", "the hidden INSERT ran");

    let c = gw.connect(USER).await;
    for sql in [
        "SET client_encoding = 'GBK'",
        "SET NAMES 'SJIS'",
        "SELECT set_config('client_encoding', 'BIG5', false)",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}");
    }
    c.batch_execute("SET client_encoding = 'UTF8'; RESET client_encoding")
        .await
        .expect("UTF-8 stays allowed");
}

/// An `Execute` of `portal` that returns at most `rows` rows.
fn execute_rows(b: &mut bytes::BytesMut, portal: &str, rows: i32) {
    portcullis::protocols::postgres::codec::MessageWriter::start(b, Some(b'E'))
        .cstr(portal)
        .i32(rows);
}

#[tokio::test]
async fn what_a_name_runs_is_fixed_when_it_runs() {
    use bytes::BytesMut;
    use portcullis_e2e::raw;
    let gw = gateway("lineage").await;
    const CLEAN: &str = "SELECT 1::numeric AS n FROM crm.customers";
    const MASKED: &str = "SELECT replace(card_number, ' ', '')::numeric AS n FROM crm.customers";
    let mut s = raw::login(&gw, USER).await;
    let mut b = BytesMut::new();
    // A portal running EXECUTE s, described while s is clean (a pass is
    // remembered), run after s became masked.
    raw::parse(&mut b, "s", CLEAN);
    raw::parse(&mut b, "e", "EXECUTE s");
    raw::bind(&mut b, "p", "e", &[]);
    raw::execute(&mut b, "p");
    raw::sync(&mut b);
    raw::query(&mut b, "BEGIN");
    raw::send(&mut s, &b).await;
    let mut seen = raw_text(&mut s).await + &raw_text(&mut s).await;
    b.clear();
    raw::bind(&mut b, "p", "e", &[]);
    describe_portal(&mut b, "p");
    raw::close(&mut b, b'S', "s");
    raw::parse(&mut b, "s", MASKED);
    raw::execute(&mut b, "p");
    raw::sync(&mut b);
    // A portal suspended after one row of the masked s, continued after s
    // became clean.
    raw::bind(&mut b, "q", "e", &[]);
    execute_rows(&mut b, "q", 1);
    raw::close(&mut b, b'S', "s");
    raw::parse(&mut b, "s", CLEAN);
    raw::execute(&mut b, "q");
    raw::sync(&mut b);
    raw::query(&mut b, "ROLLBACK");
    raw::send(&mut s, &b).await;
    for _ in 0..3 {
        seen += &raw_text(&mut s).await;
    }
    for raw_number in ["4111111111111111", "5500000000000004", "340000000000009"] {
        assert!(!seen.contains(raw_number), "{raw_number} leaked: {seen}");
    }

    // A cursor name the gateway saw closed, reused by a function that
    // opens a cursor it cannot see: its rows are masked whole.
    cluster()
        .cluster
        .psql(
            DB,
            "CREATE OR REPLACE FUNCTION crm.open_report(c refcursor) RETURNS refcursor LANGUAGE plpgsql AS $$ BEGIN OPEN c FOR SELECT translate(card_number, '0123456789', 'abcdefghij') AS t FROM crm.customers; RETURN c; END $$",
        )
        .expect("function");
    let c = gw.connect(USER).await;
    for script in [
        "BEGIN; DECLARE c1 CURSOR FOR SELECT 'x'::text AS t; CLOSE c1; SELECT crm.open_report('c1'); FETCH ALL c1; ROLLBACK",
        "BEGIN; DECLARE c2 CURSOR WITH HOLD FOR SELECT 'x'::text AS t; COMMIT; CLOSE c2; BEGIN; SELECT crm.open_report('c2'); FETCH ALL c2; ROLLBACK",
    ] {
        let text = match c.simple_query(script).await {
            Ok(msgs) => msgs
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("|"),
            Err(e) => format!("{e:?}"),
        };
        c.batch_execute("ROLLBACK").await.ok();
        assert_card_hidden(script, &text);
    }
}

/// A `Describe` of a portal.
fn describe_portal(b: &mut bytes::BytesMut, portal: &str) {
    portcullis::protocols::postgres::codec::MessageWriter::start(b, Some(b'D'))
        .u8(b'P')
        .cstr(portal);
}
