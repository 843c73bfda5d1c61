//! Protocol edges, spoken byte by byte with a raw socket: version
//! negotiation, GSSENC refusal, direct TLS, start-up timeout, connection
//! limit, oversized messages, and cancel requests with unknown keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use portcullis::policy::{
    Policy, QueryEvent, QueryNote, SessionInfo, SessionPolicy, SessionRefused, Verdict,
};
use portcullis::protocols::postgres::codec::MessageWriter;
use portcullis::protocols::postgres::codec::{error_response, query, startup};
use portcullis_e2e::raw::{self, read_msg, send};
use portcullis_e2e::{cluster, GatewayOptions, TestGateway, DB};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const USER: &str = "raw@example.com";

/// Logs in on the plaintext development listener as the test's user.
async fn login(gw: &TestGateway) -> TcpStream {
    portcullis_e2e::raw::login(gw, USER).await
}

#[tokio::test]
async fn newer_minor_version_and_pq_options_get_negotiate_protocol_version() {
    let gw = TestGateway::start().await;
    let mut s = TcpStream::connect(gw.plain_addr).await.unwrap();
    let mut b = BytesMut::new();
    {
        let mut w = portcullis::protocols::postgres::codec::MessageWriter::start(&mut b, None);
        w.i32((3 << 16) | 2);
        w.cstr("user").cstr(USER).cstr("database").cstr(DB);
        w.cstr("_pq_.fancy_option").cstr("on");
        w.u8(0);
    }
    send(&mut s, &b).await;
    let (tag, frame) = read_msg(&mut s).await.unwrap();
    assert_eq!(tag, b'v');
    let mut r = portcullis::protocols::postgres::codec::Reader::new(&frame[5..]);
    assert_eq!(r.i32("version").unwrap(), 3 << 16);
    assert_eq!(r.i32("count").unwrap(), 1);
    assert_eq!(r.cstr("option").unwrap(), "_pq_.fancy_option");
    let (tag, _) = read_msg(&mut s).await.unwrap();
    assert_eq!(tag, b'R', "then the password request");
}

#[tokio::test]
async fn gssenc_request_is_declined_and_startup_goes_on() {
    let gw = TestGateway::start().await;
    let mut s = TcpStream::connect(gw.plain_addr).await.unwrap();
    let mut b = BytesMut::new();
    portcullis::protocols::postgres::codec::MessageWriter::start(&mut b, None)
        .i32(startup::GSSENC_REQUEST_CODE);
    send(&mut s, &b).await;
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    b.clear();
    startup::encode_startup(&mut b, &[("user", USER), ("database", DB)]);
    send(&mut s, &b).await;
    assert_eq!(read_msg(&mut s).await.unwrap().0, b'R');
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql() {
    let gw = TestGateway::start().await;
    let mut roots = rustls::RootCertStore::empty();
    for c in portcullis::tls::load_certs(&cluster().cert).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    let tcp = TcpStream::connect(gw.tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut b = BytesMut::new();
    startup::encode_startup(&mut b, &[("user", USER), ("database", DB)]);
    send(&mut tls, &b).await;
    assert_eq!(read_msg(&mut tls).await.unwrap().0, b'R');
    b.clear();
    portcullis::protocols::postgres::codec::authentication::encode_password(
        &mut b,
        &gw.token(USER),
    );
    send(&mut tls, &b).await;
    loop {
        let (tag, _) = read_msg(&mut tls).await.unwrap();
        assert_ne!(tag, b'E');
        if tag == b'Z' {
            break;
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped_after_the_startup_timeout() {
    let gw = TestGateway::start_with(GatewayOptions {
        listener_extra: "startup_timeout_secs = 1".into(),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(gw.tls_addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within the timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn clients_over_the_limit_get_too_many_connections() {
    let gw = TestGateway::start_with(GatewayOptions {
        listener_extra: "max_clients = 2".into(),
        ..Default::default()
    })
    .await;
    let _a = gw.connect(USER).await;
    let _b = gw.connect(USER).await;
    let (code, msg) = gw.refused(USER, &gw.token(USER)).await;
    assert_eq!(code, "53300", "{msg}");
    assert!(msg.contains("too many clients"), "{msg}");
    drop(_a);
    // A slot frees up once a session ends.
    let token = gw.token(USER);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if gw.connect_with(&gw.pg_config(USER, &token)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_oversized_message_is_a_protocol_error_not_an_allocation() {
    let gw = TestGateway::start_with(GatewayOptions {
        listener_extra: "max_message_bytes = 1048576".into(),
        ..Default::default()
    })
    .await;
    let mut s = login(&gw).await;
    // A Query announcing 1 GiB; nothing else follows.
    let mut b = BytesMut::from(&b"Q"[..]);
    b.extend_from_slice(&(1i32 << 30).to_be_bytes());
    send(&mut s, &b).await;
    let (tag, frame) = read_msg(&mut s).await.expect("an error, then close");
    assert_eq!(tag, b'E');
    let e = error_response::decode(&frame).unwrap();
    assert_eq!(e.code, "08P01");
    assert_eq!(e.severity, "FATAL");
    assert!(e.message.contains("exceeds the maximum"), "{}", e.message);
    assert!(read_msg(&mut s).await.is_none(), "connection closed");

    // A message below the limit is fine.
    let mut s = login(&gw).await;
    let mut b = BytesMut::new();
    query::encode(&mut b, &format!("SELECT '{}'", "x".repeat(500_000)));
    send(&mut s, &b).await;
    let mut tags = Vec::new();
    while let Some((tag, _)) = read_msg(&mut s).await {
        tags.push(tag);
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, [b'T', b'D', b'C', b'Z']);
}

#[tokio::test]
async fn garbage_length_is_refused_without_panic() {
    let gw = TestGateway::start().await;
    let mut s = login(&gw).await;
    send(&mut s, &BytesMut::from(&b"Q\x00\x00\x00\x02"[..])).await;
    let (tag, frame) = read_msg(&mut s).await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(error_response::decode(&frame).unwrap().code, "08P01");
    // The gateway still serves others.
    gw.connect(USER)
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn cancel_with_an_unknown_key_is_ignored() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    // A statement is running when the bogus cancel arrives: a gateway that
    // forwarded it to any session would cancel this one.
    let sleeping = tokio::spawn(async move {
        c.simple_query("SELECT pg_sleep(1.5) /* bogus-cancel-victim */")
            .await
            .map(|_| ())
    });
    portcullis_e2e::wait_until_running("bogus-cancel-victim").await;
    let mut s = TcpStream::connect(gw.plain_addr).await.unwrap();
    let mut b = BytesMut::new();
    startup::encode_cancel(
        &mut b,
        startup::CancelRequest {
            process_id: 1,
            secret_key: 12345,
        },
    );
    send(&mut s, &b).await;
    let mut buf = [0u8; 8];
    assert_eq!(
        s.read(&mut buf).await.unwrap_or(0),
        0,
        "closed without an answer"
    );
    sleeping
        .await
        .unwrap()
        .expect("the running statement was not cancelled");
}

/// Refuses statements that mention `forbidden`.
struct RefuseForbidden;

impl Policy for RefuseForbidden {
    fn start_session(&self, _: &SessionInfo) -> Result<Box<dyn SessionPolicy>, SessionRefused> {
        Ok(Box::new(RefuseForbidden))
    }
}

impl SessionPolicy for RefuseForbidden {
    fn on_query(&mut self, event: QueryEvent<'_>, _note: &mut QueryNote) -> Verdict {
        if event.sql().contains("forbidden") {
            Verdict::Deny {
                reason: "forbidden".into(),
            }
        } else {
            Verdict::Allow
        }
    }
}

/// An unnamed `Parse`, `Bind` and `Execute` of `sql`.
fn extended(b: &mut BytesMut, sql: &str) {
    raw::parse(b, "", sql);
    raw::bind(b, "", "", &[]);
    raw::execute(b, "");
}

/// Tags received up to and including the next ReadyForQuery.
async fn until_ready(s: &mut TcpStream) -> Vec<u8> {
    raw::until_ready(s).await.0
}

#[tokio::test]
async fn refusals_in_one_extended_batch_follow_postgres_error_semantics() {
    let gw = TestGateway::start_with(GatewayOptions {
        policy: Arc::new(RefuseForbidden),
        ..Default::default()
    })
    .await;
    let mut s = login(&gw).await;

    // ok, refused, (skipped) — one batch: the ok statement's results, then
    // one error, then ReadyForQuery.
    let mut b = BytesMut::new();
    extended(&mut b, "SELECT 1");
    extended(&mut b, "SELECT 'forbidden'");
    extended(&mut b, "SELECT 3");
    raw::sync(&mut b);
    send(&mut s, &b).await;
    assert_eq!(until_ready(&mut s).await, b"12DCEZ".to_vec());

    // Upstream error first, refusal after it: still exactly one error.
    let mut b = BytesMut::new();
    extended(&mut b, "SELECT 1/0");
    extended(&mut b, "SELECT 'forbidden'");
    raw::sync(&mut b);
    send(&mut s, &b).await;
    assert_eq!(until_ready(&mut s).await, b"1EZ".to_vec(), "one error only");

    // And the session goes on.
    let mut b = BytesMut::new();
    extended(&mut b, "SELECT 4");
    raw::sync(&mut b);
    send(&mut s, &b).await;
    assert_eq!(until_ready(&mut s).await, b"12DCZ".to_vec());
}

fn function_call(b: &mut BytesMut, oid: u32) {
    MessageWriter::start(b, Some(b'F'))
        .u32(oid)
        .i16(0) // argument format codes
        .i16(0) // arguments
        .i16(0); // result format: text
}

#[tokio::test]
async fn function_calls_pass_without_plugins_and_are_refused_with_them() {
    // pg_backend_pid() has OID 2026.
    let plain = TestGateway::start().await;
    let mut s = login(&plain).await;
    let mut b = BytesMut::new();
    function_call(&mut b, 2026);
    send(&mut s, &b).await;
    assert_eq!(until_ready(&mut s).await, b"VZ".to_vec());

    let guarded = TestGateway::start_with(GatewayOptions::plugin(
        "block",
        &portcullis_e2e::plugin_wasm("block"),
        "call_timeout_ms = 1000",
    ))
    .await;
    let mut s = login(&guarded).await;
    send(&mut s, &b).await;
    let mut tags = Vec::new();
    let mut message = String::new();
    while let Some((tag, frame)) = read_msg(&mut s).await {
        tags.push(tag);
        if tag == b'E' {
            message = error_response::decode(&frame).unwrap().message.to_string();
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, b"EZ".to_vec());
    assert!(
        message.contains("FunctionCall protocol message is not allowed"),
        "{message}"
    );
}

/// A Query sent inside an unfinished extended batch (no Sync yet): the
/// server runs it or, after an error in the batch, skips it without a
/// ReadyForQuery; the gateway cannot tell which, so it ends the session
/// with a protocol error instead of relaying out of step.
#[tokio::test]
async fn a_query_inside_an_unfinished_extended_batch_is_a_protocol_error() {
    let gw = TestGateway::start().await;
    let mut s = login(&gw).await;
    let mut b = BytesMut::new();
    extended(&mut b, "SELECT 1");
    query::encode(&mut b, "SELECT 2");
    send(&mut s, &b).await;
    let (tags, codes) = portcullis_e2e::raw::until_closed(&mut s).await;
    assert_eq!(codes, ["08P01"], "{tags:?}");
    assert!(!tags.contains(&b'Z'), "the session ended: {tags:?}");
    // Others are not affected.
    gw.connect(USER)
        .await
        .simple_query("SELECT 3")
        .await
        .unwrap();
}

/// A client that sends a refused Parse, then Flush, and waits before its
/// Sync (cursors, pipelines) gets the refusal, not the error the gateway
/// provoked upstream in its place; a Close before a Query (pgjdbc closes
/// unused statements that way) is not an unfinished batch.
#[tokio::test]
async fn a_refusal_before_a_late_sync_and_a_close_before_a_query() {
    let gw = TestGateway::start_with(GatewayOptions {
        policy: Arc::new(RefuseForbidden),
        ..Default::default()
    })
    .await;
    let mut s = login(&gw).await;
    let mut b = BytesMut::new();
    extended(&mut b, "SELECT 'forbidden'");
    raw::flush(&mut b);
    send(&mut s, &b).await;
    // The server answers the provoked error now; the client waits, then syncs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = BytesMut::new();
    raw::sync(&mut b);
    send(&mut s, &b).await;
    let (tags, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes, ["42501"], "{tags:?}");

    // Close of a statement and a portal, then a Query, with no Sync between.
    let mut b = BytesMut::new();
    raw::close(&mut b, b'S', "unused");
    raw::close(&mut b, b'P', "unused");
    raw::query(&mut b, "SELECT 5");
    send(&mut s, &b).await;
    let (tags, codes) = raw::until_ready(&mut s).await;
    assert!(codes.is_empty(), "{codes:?} {tags:?}");
    assert_eq!(tags, b"33TDCZ".to_vec());
}
