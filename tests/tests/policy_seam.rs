//! The policy seam seen from a real client: refused statements come back as
//! ordinary errors in the right place of a pipeline, the session stays usable,
//! row edits reach the client, and a session can be refused at start.

use std::sync::Arc;

use futures_util::future::join_all;
use portcullis::policy::{
    Policy, QueryEvent, QueryNote, ResultColumn, ResultPlan, Row, RowEdit, SessionInfo,
    SessionPolicy, SessionRefused, ValueEdit, Verdict,
};
use portcullis_e2e::{db_error, GatewayOptions, TestGateway};
use tokio_postgres::SimpleQueryMessage;

const USER: &str = "policy@example.com";

/// Refuses statements that mention `forbidden`, masks `public.items.secret`
/// (by its resolved source, whatever the alias), withholds results with a
/// column named `withhold`, refuses user blocked@example.com.
struct TestPolicy;

struct TestSession {
    masked: Vec<usize>,
}

impl Policy for TestPolicy {
    fn start_session(&self, info: &SessionInfo) -> Result<Box<dyn SessionPolicy>, SessionRefused> {
        if info.identity.user == "blocked@example.com" {
            return Err(SessionRefused {
                reason: "blocked users may not connect".into(),
            });
        }
        Ok(Box::new(TestSession { masked: Vec::new() }))
    }
}

impl SessionPolicy for TestSession {
    fn on_query(&mut self, event: QueryEvent<'_>, _note: &mut QueryNote) -> Verdict {
        if event.sql().contains("forbidden") {
            Verdict::Deny {
                reason: "the word 'forbidden' is not allowed".into(),
            }
        } else {
            Verdict::Allow
        }
    }

    fn wants_rows(&self) -> bool {
        true
    }

    fn on_row_description(
        &mut self,
        columns: &[ResultColumn],
        _lineage: Option<&[portcullis::protocols::postgres::sql::lineage::Lineage]>,
    ) -> ResultPlan {
        if columns.iter().any(|c| c.name == "withhold") {
            return ResultPlan::Deny {
                reason: "results with a column named withhold are withheld".into(),
            };
        }
        self.masked = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.source.as_deref() == Some("public.items.secret"))
            .map(|(i, _)| i)
            .collect();
        if self.masked.is_empty() {
            ResultPlan::Pass
        } else {
            ResultPlan::Watch
        }
    }

    fn on_data_rows(&mut self, rows: &[Row<'_>]) -> Vec<RowEdit> {
        let mut edits = Vec::new();
        for (r, values) in rows.iter().enumerate() {
            for &column in &self.masked {
                if values.get(column).is_some_and(|v| v.is_some()) {
                    edits.push(RowEdit {
                        row: r,
                        column,
                        edit: ValueEdit::Replace(bytes::Bytes::from_static(b"****")),
                    });
                }
            }
        }
        edits
    }
}

async fn gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        policy: Arc::new(TestPolicy),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn refused_simple_query_is_an_error_and_the_session_goes_on() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let err = c.simple_query("SELECT 'forbidden'").await.err().unwrap();
    let (code, msg) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(msg.contains("the word 'forbidden' is not allowed"), "{msg}");
    let msgs = c.simple_query("SELECT 'fine'").await.unwrap();
    assert!(matches!(&msgs[1], SimpleQueryMessage::Row(r) if r.get(0) == Some("fine")));
}

#[tokio::test]
async fn refused_parse_in_a_pipeline_fails_only_that_statement_in_order() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let queries = [
        "SELECT 1::int",
        "SELECT 2::int /* forbidden */",
        "SELECT 3::int",
    ];
    let results = join_all(queries.iter().map(|q| c.query_one(*q, &[]))).await;
    assert_eq!(results[0].as_ref().unwrap().get::<_, i32>(0), 1);
    let err = results[1].as_ref().expect_err("second is refused");
    assert_eq!(db_error(err).0, "42501");
    assert_eq!(results[2].as_ref().unwrap().get::<_, i32>(0), 3);
    // Prepared statements after a refusal still work.
    let stmt = c.prepare("SELECT $1::text").await.unwrap();
    let v: String = c.query_one(&stmt, &[&"ok"]).await.unwrap().get(0);
    assert_eq!(v, "ok");
}

#[tokio::test]
async fn row_edits_reach_the_client_even_through_an_alias() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let row = c
        .query_one(
            "SELECT id, name, secret AS harmless FROM items WHERE id = 5",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, String>(1), "item 5");
    assert_eq!(row.get::<_, String>(2), "****");
    let msgs = c
        .simple_query("SELECT secret FROM items WHERE id <= 3")
        .await
        .unwrap();
    let masked = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("****")))
        .count();
    assert_eq!(masked, 3);
    // A result without masked columns is not touched.
    let msgs = c
        .simple_query("SELECT name FROM items WHERE id = 1")
        .await
        .unwrap();
    assert!(matches!(&msgs[1], SimpleQueryMessage::Row(r) if r.get(0) == Some("item 1")));
}

#[tokio::test]
async fn a_withheld_result_is_an_error_in_its_place_and_the_session_goes_on() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    // Simple protocol: the error replaces the result; later statements of the
    // same Query are not shown, as after any error.
    let err = c
        .simple_query("SELECT 1 AS withhold; SELECT 2 AS fine")
        .await
        .expect_err("withheld");
    let (code, msg) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(msg.contains("column named withhold"), "{msg}");
    // Extended protocol in a pipeline: only the withheld one fails.
    let queries = [
        "SELECT 1::int AS a",
        "SELECT 2::int AS withhold",
        "SELECT 3::int AS c",
    ];
    let results = join_all(queries.iter().map(|q| c.query_one(*q, &[]))).await;
    assert_eq!(results[0].as_ref().unwrap().get::<_, i32>(0), 1);
    assert_eq!(
        db_error(results[1].as_ref().expect_err("withheld")).0,
        "42501"
    );
    assert_eq!(results[2].as_ref().unwrap().get::<_, i32>(0), 3);
    // A prepared statement executed twice: masked both times, in binary.
    let stmt = c
        .prepare("SELECT secret AS s FROM items WHERE id = $1")
        .await
        .unwrap();
    for id in [1i32, 2] {
        let v: String = c.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert_eq!(v, "****");
    }
    let msgs = c.simple_query("SELECT 'still here'").await.unwrap();
    assert!(matches!(&msgs[1], SimpleQueryMessage::Row(r) if r.get(0) == Some("still here")));
}

#[tokio::test]
async fn session_start_refusal_is_fatal_with_reason() {
    let gw = gateway().await;
    let token = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "blocked@example.com".into(),
        groups: vec!["testers".into()],
        ttl_secs: 60,
    });
    let err = gw
        .connect_with(&gw.pg_config("blocked@example.com", &token))
        .await
        .err()
        .unwrap();
    let (code, msg) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(msg.contains("blocked users may not connect"), "{msg}");
}

#[tokio::test]
async fn a_refusal_after_an_upstream_error_in_the_same_batch_yields_one_error() {
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    c.batch_execute("CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    // One simple-protocol batch is judged whole: a write, an upstream error
    // and a refused statement in it get one error, and none of it runs.
    let err = c
        .simple_query("INSERT INTO t VALUES (1); SELECT 1/0; SELECT 'forbidden'")
        .await
        .expect_err("the batch is refused");
    assert_eq!(db_error(&err).0, "42501");
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing of the refused batch ran");
    // Extended protocol: an upstream error, then a refused statement, in one
    // pipeline; each statement gets exactly one answer and the session goes on.
    let results = join_all([
        c.query("SELECT 1/0", &[]),
        c.query("SELECT 'forbidden'", &[]),
        c.query("SELECT 3", &[]),
    ])
    .await;
    assert_eq!(db_error(results[0].as_ref().unwrap_err()).0, "22012");
    assert_eq!(db_error(results[1].as_ref().unwrap_err()).0, "42501");
    assert_eq!(results[2].as_ref().unwrap()[0].get::<_, i32>(0), 3);
    let v: i32 = c.query_one("SELECT 4", &[]).await.unwrap().get(0);
    assert_eq!(v, 4);
}

/// Rows of `tx_probe` with value `v` (the table is created on first use).
fn tx_probe_rows(v: i64) -> String {
    let c = &portcullis_e2e::cluster().cluster;
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CREATED.get_or_init(|| {
        c.psql(
            portcullis_e2e::DB,
            "CREATE TABLE IF NOT EXISTS tx_probe (v bigint)",
        )
        .expect("probe table");
    });
    c.psql(
        portcullis_e2e::DB,
        &format!("SELECT count(*) FROM tx_probe WHERE v = {v}"),
    )
    .expect("count")
    .trim()
    .to_string()
}

#[tokio::test]
async fn a_refusal_inside_a_transaction_aborts_it_as_postgres_would() {
    tx_probe_rows(0);
    let gw = gateway().await;
    let c = gw.connect(USER).await;
    let v = std::process::id() as i64 * 10;

    // Simple protocol: the refusal is an error, the transaction is aborted,
    // and COMMIT rolls the earlier INSERT back.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("INSERT INTO tx_probe VALUES ({v})"))
        .await
        .unwrap();
    let err = c
        .simple_query("SELECT 'forbidden'")
        .await
        .expect_err("refused");
    assert_eq!(db_error(&err).0, "42501", "the client sees the refusal");
    let err = c
        .simple_query("SELECT 1")
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(db_error(&err).0, "25P02");
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        tx_probe_rows(v),
        "0",
        "the INSERT before the refusal was committed"
    );

    // Extended protocol, the same.
    c.simple_query("BEGIN").await.unwrap();
    c.execute(&format!("INSERT INTO tx_probe VALUES ({})", v + 1), &[])
        .await
        .unwrap();
    let err = c
        .query("SELECT 'forbidden'", &[])
        .await
        .expect_err("refused");
    assert_eq!(db_error(&err).0, "42501");
    let err = c.query("SELECT 1", &[]).await.expect_err("aborted");
    assert_eq!(db_error(&err).0, "25P02");
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(tx_probe_rows(v + 1), "0");

    // Outside a transaction nothing lingers: the session goes on.
    let err = c
        .simple_query("SELECT 'forbidden'")
        .await
        .expect_err("refused");
    assert_eq!(db_error(&err).0, "42501");
    let n: i32 = c.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
}
