//! The relay over in-memory pipes: the test plays the client and the
//! server byte for byte, so the cases real clients rarely produce on
//! demand — a refusal in the middle of a pipeline, a message split across
//! reads, a client that vanishes mid-result — are asserted exactly.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::approvals::Approvals;
use crate::config::ApprovalSettings;
use crate::http_client::HttpClient;
use crate::policy::{QueryEvent, QueryNote, ResultColumn, ResultPlan, Row, RowEdit, ValueEdit};
use crate::protocols::postgres::codec::tags::backend as be;
use crate::protocols::postgres::codec::{peek_frame, MessageWriter};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Refuses statements that mention `DROP`; withholds results with a
/// column named `secret`; masks the first value of results with a column
/// named `card` (when it watches rows); records every statement (when it
/// records).
#[derive(Clone, Copy)]
struct TestPolicy {
    rows: bool,
    record: bool,
}

impl SessionPolicy for TestPolicy {
    fn may_record(&self) -> bool {
        self.record
    }

    fn on_query(&mut self, event: QueryEvent<'_>, note: &mut QueryNote) -> Verdict {
        if self.record {
            note.record = Some(crate::policy::Recording { sample_rows: 0 });
        }
        let (QueryEvent::Simple { sql } | QueryEvent::Parse { sql, .. }) = event;
        if sql.contains("DROP") {
            Verdict::Deny {
                reason: "no drops here".into(),
            }
        } else {
            Verdict::Allow
        }
    }

    fn wants_rows(&self) -> bool {
        self.rows
    }

    fn on_row_description(
        &mut self,
        columns: &[ResultColumn],
        _: Option<&[Lineage]>,
    ) -> ResultPlan {
        if columns.iter().any(|c| c.name == "secret") {
            ResultPlan::Deny {
                reason: "secret withheld".into(),
            }
        } else if columns.iter().any(|c| c.name == "card") {
            ResultPlan::Watch
        } else {
            ResultPlan::Pass
        }
    }

    fn on_data_rows(&mut self, rows: &[Row<'_>]) -> Vec<RowEdit> {
        (0..rows.len())
            .map(|row| RowEdit {
                row,
                column: 0,
                edit: ValueEdit::Replace(Bytes::from_static(b"****")),
            })
            .collect()
    }
}

use crate::policy::Verdict;

/// A policy that only refuses.
const PLAIN: TestPolicy = TestPolicy {
    rows: false,
    record: false,
};
/// A policy that refuses and watches rows.
const ROWS: TestPolicy = TestPolicy {
    rows: true,
    record: false,
};
use crate::protocols::postgres::sql::lineage::Lineage;

/// A relayed session: the test's ends of the client and server pipes, and
/// the relay's outcome.
struct Session {
    client: DuplexStream,
    server: DuplexStream,
    /// The audit log and the store behind it.
    log: Arc<crate::audit::AuditLog>,
    store: Arc<dyn Store>,
    relay: tokio::task::JoinHandle<EndReason>,
    /// Stops the session as the gateway's lifecycle would.
    stop: tokio::sync::oneshot::Sender<Stop>,
    _dir: crate::test_dir::TestDir,
}

/// Starts the relay between two pipes with [`TestPolicy`].
fn session(policy: TestPolicy) -> Session {
    let dir = crate::test_dir::TestDir::new("portcullis-pump");
    let store: Arc<dyn Store> = match SqliteStore::open(&dir.join("audit.db")) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("audit store: {e}"),
    };
    let log = crate::audit::AuditLog::start(store.clone(), Duration::from_millis(50));
    let http = match HttpClient::new(Duration::from_secs(1)) {
        Ok(h) => h,
        Err(e) => panic!("http client: {e}"),
    };
    let approvals = Arc::new(Approvals::new(
        store.clone(),
        ApprovalSettings::default(),
        http,
    ));
    let (cancel_tx, cancel) = tokio::sync::watch::channel(0u64);
    let ctx = SessionContext {
        log: log.clone(),
        session_id: 1,
        strict: false,
        identity: crate::identity::Identity {
            subject: "ada".into(),
            user: "ada".into(),
            groups: Vec::new(),
            issuer: "https://issuer.test".into(),
            actor_chain: Vec::new(),
            expires_at: 0,
            delegation: None,
        },
        target: "orders".into(),
        approvals,
        cancel,
        cancel_signal: Arc::new(cancel_tx),
        read_only: false,
        upstream_role: None,
        app_name: Default::default(),
        client_encoding: ClientEncoding::UTF8,
        server_converts: true,
    };
    let (client, relay_client) = tokio::io::duplex(64 * 1024);
    let (server, relay_server) = tokio::io::duplex(64 * 1024);
    let limits = Limits {
        max_message: 1 << 20,
        budget: Arc::new(MessageBudget::new(16 << 20)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<Stop>();
    let relay = tokio::spawn(async move {
        let (reason, _, _) = run(
            relay_client,
            relay_server,
            Box::new(policy),
            BytesMut::new(),
            limits,
            TargetCatalog::detached(),
            ctx,
            async move {
                match stopped.await {
                    Ok(why) => why,
                    Err(_) => std::future::pending().await,
                }
            },
        )
        .await;
        reason
    });
    Session {
        client,
        server,
        log,
        store,
        relay,
        stop,
        _dir: dir,
    }
}

/// Reads whole messages until one with tag `last` (inclusive), within a
/// bound; returns them as (tag, whole frame).
async fn read_until(s: &mut DuplexStream, last: u8) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let read = async {
        loop {
            while let Ok(Some(h)) = peek_frame(&buf, usize::MAX) {
                if buf.len() < h.total_len {
                    break;
                }
                let frame = buf.split_to(h.total_len).to_vec();
                out.push((h.tag, frame));
                if h.tag == last {
                    return;
                }
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        panic!("no message {:?} within 5 s; got {out:?}", last as char);
    }
    out
}

/// Reads until the other end closes (within a bound); returns the bytes.
async fn read_to_end(s: &mut DuplexStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        panic!("the relay did not close within 5 s");
    }
    all
}

fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(t, _)| *t as char).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn parse(b: &mut BytesMut, sql: &str) {
    MessageWriter::start(b, Some(fe::PARSE))
        .cstr("")
        .cstr(sql)
        .i16(0);
}

fn bind_execute(b: &mut BytesMut) {
    MessageWriter::start(b, Some(fe::BIND))
        .cstr("")
        .cstr("")
        .i16(0)
        .i16(0)
        .i16(0);
    MessageWriter::start(b, Some(fe::EXECUTE)).cstr("").i32(0);
}

fn sync(b: &mut BytesMut) {
    MessageWriter::start(b, Some(fe::SYNC));
}

fn query(b: &mut BytesMut, sql: &str) {
    MessageWriter::start(b, Some(fe::QUERY)).cstr(sql);
}

fn simple(b: &mut BytesMut, tag: u8) {
    MessageWriter::start(b, Some(tag));
}

fn row_description(b: &mut BytesMut, column: &str) {
    MessageWriter::start(b, Some(be::ROW_DESCRIPTION))
        .i16(1)
        .cstr(column)
        .u32(0)
        .i16(0)
        .u32(25)
        .i16(-1)
        .i32(-1)
        .i16(0);
}

fn data_row(b: &mut BytesMut, value: &[u8]) {
    MessageWriter::start(b, Some(be::DATA_ROW))
        .i16(1)
        .i32(value.len() as i32)
        .bytes(value);
}

fn command_complete(b: &mut BytesMut, tag: &str) {
    MessageWriter::start(b, Some(be::COMMAND_COMPLETE)).cstr(tag);
}

fn ready(b: &mut BytesMut) {
    MessageWriter::start(b, Some(be::READY_FOR_QUERY)).u8(b'I');
}

fn error(b: &mut BytesMut, code: &str, message: &str) {
    MessageWriter::start(b, Some(be::ERROR_RESPONSE))
        .u8(b'S')
        .cstr("ERROR")
        .u8(b'C')
        .cstr(code)
        .u8(b'M')
        .cstr(message)
        .u8(0);
}

/// The marker of the failing statement the relay sent upstream in a
/// refused statement's place (the quoted text in its SQL).
fn marker_in(failing: &[u8]) -> String {
    let text = String::from_utf8_lossy(failing).into_owned();
    match text.split('\'').nth(1) {
        Some(marker) if !marker.is_empty() => marker.to_string(),
        _ => panic!("no failing statement upstream: {text:?}"),
    }
}

/// The server's error for the failing statement: it quotes the marker.
fn marked_error(b: &mut BytesMut, marker: &str) {
    error(
        b,
        "22P02",
        &format!("invalid input syntax for type integer: \"{marker}\""),
    );
}

/// A refused statement in the middle of an extended pipeline never
/// reaches the server (nor does the rest of its batch); the server gets a
/// failing statement in its place, and the client gets the refusal — not
/// the server's marked error — after the answers to what came before it
/// and before the batch's ReadyForQuery.
#[tokio::test]
async fn a_refusal_in_a_pipeline_takes_its_place_in_order() {
    let mut s = session(PLAIN);
    let mut b = BytesMut::new();
    parse(&mut b, "SELECT 1");
    bind_execute(&mut b);
    parse(&mut b, "DROP TABLE orders");
    bind_execute(&mut b);
    sync(&mut b);
    s.client.write_all(&b).await.unwrap();

    let upstream = read_until(&mut s.server, fe::SYNC).await;
    assert_eq!(
        tags(&upstream),
        "PBEPS",
        "the refused Bind and Execute are dropped"
    );
    let sent: Vec<u8> = upstream.iter().flat_map(|(_, f)| f.clone()).collect();
    assert!(
        !contains(&sent, b"DROP"),
        "the refused statement reached the server"
    );
    let marker = marker_in(&upstream[3].1);

    let mut r = BytesMut::new();
    simple(&mut r, be::PARSE_COMPLETE);
    simple(&mut r, be::BIND_COMPLETE);
    data_row(&mut r, b"1");
    command_complete(&mut r, "SELECT 1");
    marked_error(&mut r, &marker);
    ready(&mut r);
    s.server.write_all(&r).await.unwrap();

    let answers = read_until(&mut s.client, be::READY_FOR_QUERY).await;
    assert_eq!(tags(&answers), "12DCEZ");
    let refusal = String::from_utf8_lossy(&answers[4].1).into_owned();
    assert!(refusal.contains("no drops here"), "{refusal}");
    assert!(refusal.contains("42501"), "{refusal}");
    let seen: Vec<u8> = answers.iter().flat_map(|(_, f)| f.clone()).collect();
    assert!(
        !contains(&seen, marker.as_bytes()),
        "the marked error reached the client"
    );
}

/// A result the policy withholds never reaches the client: not its
/// description, not a value of it; an error takes the place of its end.
#[tokio::test]
async fn a_withheld_result_sends_no_value_and_ends_in_an_error() {
    let mut s = session(ROWS);
    let mut b = BytesMut::new();
    query(&mut b, "SELECT secret FROM vault");
    s.client.write_all(&b).await.unwrap();
    let upstream = read_until(&mut s.server, fe::QUERY).await;
    assert_eq!(tags(&upstream), "Q");

    let mut r = BytesMut::new();
    row_description(&mut r, "secret");
    data_row(&mut r, b"hunter2");
    data_row(&mut r, b"swordfish");
    command_complete(&mut r, "SELECT 2");
    ready(&mut r);
    s.server.write_all(&r).await.unwrap();

    let answers = read_until(&mut s.client, be::READY_FOR_QUERY).await;
    assert_eq!(tags(&answers), "EZ");
    assert!(String::from_utf8_lossy(&answers[0].1).contains("secret withheld"));
    let seen: Vec<u8> = answers.iter().flat_map(|(_, f)| f.clone()).collect();
    assert!(!contains(&seen, b"hunter2") && !contains(&seen, b"swordfish"));
}

/// Sends `bytes` one at a time, letting the relay read each alone.
async fn trickle(to: &mut DuplexStream, bytes: &[u8]) {
    for byte in bytes {
        to.write_all(&[*byte]).await.unwrap();
        to.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
}

/// Messages split across reads, a byte at a time both ways, come out
/// whole and judged as if they had arrived at once: the statement
/// reaches the server byte for byte, a watched value is masked, a refused
/// statement never reaches the server, and the audit trail settles each
/// statement once.
#[tokio::test]
async fn messages_split_across_reads_are_judged_whole() {
    let mut s = session(TestPolicy {
        rows: true,
        record: true,
    });
    let mut b = BytesMut::new();
    query(&mut b, "SELECT card FROM wallet");
    trickle(&mut s.client, &b).await;
    let upstream = read_until(&mut s.server, fe::QUERY).await;
    assert_eq!(
        upstream[0].1,
        b.to_vec(),
        "the statement changed on its way"
    );

    let mut r = BytesMut::new();
    row_description(&mut r, "card");
    data_row(&mut r, b"4111111111111111");
    command_complete(&mut r, "SELECT 1");
    ready(&mut r);
    trickle(&mut s.server, &r).await;
    let answers = read_until(&mut s.client, be::READY_FOR_QUERY).await;
    assert_eq!(tags(&answers), "TDCZ");
    let seen: Vec<u8> = answers.iter().flat_map(|(_, f)| f.clone()).collect();
    assert!(contains(&answers[1].1, b"****"), "the value was not masked");
    assert!(
        !contains(&seen, b"4111"),
        "a card number reached the client"
    );

    // A refused statement that arrives a byte at a time never reaches
    // the server; the ReadyForQuery that arrived a byte at a time counted
    // once, so its refusal goes out before its own ReadyForQuery.
    let mut b = BytesMut::new();
    query(&mut b, "DROP TABLE wallet");
    trickle(&mut s.client, &b).await;
    let upstream = read_until(&mut s.server, fe::QUERY).await;
    assert!(
        !contains(&upstream[0].1, b"DROP"),
        "the refused statement reached the server"
    );
    let marker = marker_in(&upstream[0].1);
    let mut r = BytesMut::new();
    marked_error(&mut r, &marker);
    ready(&mut r);
    s.server.write_all(&r).await.unwrap();
    let answers = read_until(&mut s.client, be::READY_FOR_QUERY).await;
    assert_eq!(tags(&answers), "EZ");
    assert!(String::from_utf8_lossy(&answers[0].1).contains("no drops here"));

    // Each statement is recorded once, with its own outcome.
    drop(s.client);
    if tokio::time::timeout(Duration::from_secs(5), s.relay)
        .await
        .is_err()
    {
        panic!("the relay did not end within 5 s");
    }
    s.log.flush().await;
    let events = match s.store.events(1) {
        Ok(e) => e,
        Err(e) => panic!("events: {e}"),
    };
    let seen: Vec<(&str, &str, Option<u64>)> = events
        .iter()
        .map(|e| (&*e.sql, e.status.as_str(), e.rows))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("SELECT card FROM wallet", "ok", Some(1)),
            ("DROP TABLE wallet", "refused", None),
        ]
    );
}

/// A client that goes away in the middle of a large result ends the
/// session: the relay returns and closes its upstream connection (the
/// server's backend is not left waiting), however much was still coming.
#[tokio::test]
async fn a_client_that_vanishes_mid_result_ends_the_session() {
    let Session {
        client,
        mut server,
        relay,
        _dir,
        ..
    } = session(PLAIN);
    let mut client = client;
    let mut b = BytesMut::new();
    query(&mut b, "SELECT n FROM generate_series(1, 100000) n");
    client.write_all(&b).await.unwrap();
    read_until(&mut server, fe::QUERY).await;

    let mut r = BytesMut::new();
    row_description(&mut r, "n");
    // Far more than the pipes hold: the relay is mid-write when it goes.
    for _ in 0..20_000 {
        data_row(&mut r, b"12345678");
    }
    // The client reads a little of the result and goes away.
    let writer = tokio::spawn(async move {
        let _ = server.write_all(&r).await;
        server
    });
    let mut some = [0u8; 1024];
    let _ = client.read(&mut some).await;
    drop(client);
    let reason = match tokio::time::timeout(Duration::from_secs(5), relay).await {
        Ok(Ok(reason)) => reason,
        other => panic!("the relay did not end within 5 s: {other:?}"),
    };
    assert!(
        matches!(reason, EndReason::ClientClosed | EndReason::Error(_)),
        "{reason:?}"
    );
    let mut server = match writer.await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    // The upstream connection is closed: the server reads to its end.
    read_to_end(&mut server).await;
}

/// A session the gateway stops (its shutdown grace is over, or a token of
/// its chain was revoked) ends with a FATAL the client can read — the
/// SQLSTATE says which — and the upstream session is terminated, not left
/// waiting.
#[tokio::test]
async fn a_stopped_session_tells_the_client_why_and_ends_upstream() {
    for (why, code) in [
        (Stop::ShuttingDown, "57P01"),
        (Stop::Revoked("token tok-1 was revoked".into()), "28000"),
    ] {
        let mut s = session(PLAIN);
        let mut b = BytesMut::new();
        query(&mut b, "SELECT 1");
        s.client.write_all(&b).await.unwrap();
        read_until(&mut s.server, fe::QUERY).await;
        let revoked = matches!(why, Stop::Revoked(_));
        let _ = s.stop.send(why);
        let reason = match tokio::time::timeout(Duration::from_secs(5), s.relay).await {
            Ok(Ok(reason)) => reason,
            other => panic!("the relay did not end within 5 s: {other:?}"),
        };
        assert_eq!(
            matches!(reason, EndReason::Revoked(_)),
            revoked,
            "{reason:?}"
        );
        let told = read_until(&mut s.client, be::ERROR_RESPONSE).await;
        let fatal = String::from_utf8_lossy(&told[told.len() - 1].1).into_owned();
        assert!(fatal.contains("FATAL") && fatal.contains(code), "{fatal}");
        let upstream = read_to_end(&mut s.server).await;
        assert_eq!(upstream.first(), Some(&fe::TERMINATE), "{upstream:?}");
    }
}
