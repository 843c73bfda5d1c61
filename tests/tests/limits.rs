//! Resource limits against hostile clients (issue 18 item 7): a length on
//! the wire costs no memory until its bytes arrive, the gateway-wide budget
//! for buffered messages ends only the session that would exceed it, and
//! the admin API bounds bodies, connections and header read time.
//!
//! The tests of this file run one at a time (`SERIAL`): one of them
//! measures this process's memory, which the others would disturb.

use std::time::{Duration, Instant};

use portcullis::protocols::postgres::codec::error_response;
use portcullis_e2e::raw::{read_msg, send};
use portcullis_e2e::{secret_file, GatewayOptions, TestGateway};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "raw@example.com";
const ADMIN_TOKEN: &str = "static-admin-token-for-limit-tests-0123";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Logs in on the plaintext development listener as the test's user.
async fn login(gw: &TestGateway) -> TcpStream {
    portcullis_e2e::raw::login(gw, USER).await
}

/// The header of a `Query` whose whole message is `total` bytes long.
fn query_header(total: usize) -> Vec<u8> {
    let mut h = vec![b'Q'];
    h.extend_from_slice(&u32::try_from(total - 1).unwrap().to_be_bytes());
    h
}

/// A whole `Query` of about `size` bytes: `SELECT length('xxx...')`.
fn big_query(size: usize) -> Vec<u8> {
    let sql = format!("SELECT length('{}')\0", "x".repeat(size));
    let mut q = query_header(sql.len() + 5);
    q.extend_from_slice(sql.as_bytes());
    q
}

/// This process's (virtual size, resident set), in bytes.
fn memory() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let mut pages = statm.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let page = 4096;
    (pages.next().unwrap() * page, pages.next().unwrap() * page)
}

/// Waits until `f` holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Reads messages until the gateway closes the connection; returns the
/// (severity, SQLSTATE) of every `ErrorResponse`.
async fn errors_until_closed<S: AsyncRead + Unpin>(s: &mut S) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let read_all = async {
        while let Some((tag, frame)) = read_msg(s).await {
            if tag == b'E' {
                let e = error_response::decode(&frame).unwrap();
                errors.push((e.severity.to_string(), e.code.to_string()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the gateway closes the session");
    errors
}

async fn select_one(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("an ordinary query still works")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_lengths_reserve_no_memory_before_the_bytes_arrive() {
    let _serial = SERIAL.lock().await;
    let gw = TestGateway::start().await;
    let ordinary = gw.connect("ada@example.com").await;
    assert_eq!(select_one(&ordinary).await, 1);
    const CLIENTS: usize = 8;
    const ANNOUNCED: usize = 512 << 20;
    let mut sockets = Vec::new();
    for _ in 0..CLIENTS {
        sockets.push(login(&gw).await);
    }
    let (size_before, rss_before) = memory();
    for s in &mut sockets {
        let mut start = query_header(ANNOUNCED);
        start.extend_from_slice(b"SELECT ");
        send(s, &start).await;
    }
    // Once every session has read its header, each holds (only) a read
    // chunk of the budget for its message
    // (measured either way, so a gateway without the budget fails on memory).
    let budget = gw.gateway.context.message_budget.clone();
    let all_read = eventually(10, || budget.in_use() >= CLIENTS * 32 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (size_after, rss_after) = memory();
    let grown_size = size_after.saturating_sub(size_before);
    let grown_rss = rss_after.saturating_sub(rss_before);
    eprintln!(
        "announced {CLIENTS} x {ANNOUNCED} bytes: virtual size +{grown_size} bytes, RSS +{grown_rss} bytes, budget in use {}",
        budget.in_use()
    );
    // Reserving the announced lengths would add 4 GiB of address space
    // (untouched pages do not show in RSS, so the virtual size is the
    // measure that sees a reservation).
    assert!(grown_size < 256 << 20, "virtual size grew by {grown_size}");
    assert!(grown_rss < 64 << 20, "RSS grew by {grown_rss}");
    assert!(all_read, "the sessions read their headers");
    assert!(budget.in_use() <= CLIENTS * 128 * 1024);
    // The gateway still serves others.
    assert_eq!(select_one(&ordinary).await, 1);
    let fresh = gw.connect("bob@example.com").await;
    assert_eq!(select_one(&fresh).await, 1);
    drop(sockets);
    assert!(
        eventually(10, || budget.in_use() == 0).await,
        "closed sessions give their share back"
    );
}

/// A gateway whose budget for buffered messages is 1 MiB.
async fn small_budget_gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        tail: "[gateway]\nbuffered_message_budget_bytes = 1048576\n".into(),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_budget_ends_only_its_own_session() {
    let _serial = SERIAL.lock().await;
    let gw = small_budget_gateway().await;
    let other = gw.connect("ada@example.com").await;
    assert_eq!(select_one(&other).await, 1);
    let mut s = login(&gw).await;
    let query = big_query(2 << 20);
    let (mut rd, mut wr) = s.split();
    let writer = async {
        // The gateway may close before all of it is written.
        let _ = wr.write_all(&query).await;
    };
    let (errors, ()) = tokio::join!(errors_until_closed(&mut rd), writer);
    assert_eq!(errors, vec![("FATAL".to_string(), "53200".to_string())]);
    // Others go on; a message within the budget goes through.
    assert_eq!(select_one(&other).await, 1);
    let row = other
        .query_one(&format!("SELECT length('{}')", "y".repeat(600 << 10)), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 600 << 10);
    let budget = gw.gateway.context.message_budget.clone();
    assert!(eventually(10, || budget.in_use() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_would_take_the_total_over_the_budget_is_refused() {
    let _serial = SERIAL.lock().await;
    let gw = small_budget_gateway().await;
    let budget = gw.gateway.context.message_budget.clone();
    // A holds most of the budget with a message that has not fully arrived.
    let mut a = login(&gw).await;
    let a_query = big_query(900 << 10);
    send(&mut a, &a_query[..600 << 10]).await;
    assert!(
        eventually(10, || budget.in_use() >= 900 << 10).await,
        "A's message holds its share: {} bytes",
        budget.in_use()
    );
    // B's message does not fit beside it.
    let mut b = login(&gw).await;
    let b_query = big_query(200 << 10);
    let _ = b.write_all(&b_query).await;
    let errors = errors_until_closed(&mut b).await;
    assert_eq!(errors, vec![("FATAL".to_string(), "53200".to_string())]);
    // A finishes and is answered; then C's message fits.
    send(&mut a, &a_query[600 << 10..]).await;
    let mut answered = false;
    while let Some((tag, frame)) = read_msg(&mut a).await {
        assert_ne!(tag, b'E', "{:?}", error_response::decode(&frame));
        if tag == b'Z' {
            answered = true;
            break;
        }
    }
    assert!(answered, "A's statement ran");
    assert!(eventually(10, || budget.in_use() == 0).await);
    let c = gw.connect("carol@example.com").await;
    let row = c
        .query_one(&format!("SELECT length('{}')", "z".repeat(200 << 10)), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 200 << 10);
}

/// A gateway with the admin API and the given `[admin]` limits.
async fn admin_gateway(limits: &str) -> TestGateway {
    let token_file = secret_file("limits-admin-token", &format!("{ADMIN_TOKEN}\n"));
    TestGateway::start_with(GatewayOptions {
        tail: format!(
            "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n{limits}\n",
            token_file.display().to_string()
        ),
        ..Default::default()
    })
    .await
}

fn admin_addr(gw: &TestGateway) -> std::net::SocketAddr {
    gw.gateway.admin_address.expect("admin API configured")
}

/// Sends a raw HTTP request and returns the response's status (0 when the
/// connection closed without one).
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut response)).await;
    status_of(&response)
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn reload_request(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/plugins/reload HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\nconnection: close\r\n{headers}\r\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bodies_over_the_limit_get_413_and_never_reach_the_handler() {
    let _serial = SERIAL.lock().await;
    let gw = admin_gateway("max_body_bytes = 4096").await;
    let addr = admin_addr(&gw);
    // Within the limit the handler runs: this gateway has no configuration
    // file to reload from, so it answers 409.
    let small = reload_request("content-length: 2\r\n", b"{}");
    assert_eq!(raw_http(addr, &small).await, 409);
    // Over the limit by Content-Length: refused before routing.
    let body = vec![b'a'; 10_000];
    let declared = reload_request("content-length: 10000\r\n", &body);
    assert_eq!(raw_http(addr, &declared).await, 413);
    // Over the limit without a length: cut off while it is read.
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 4000).as_bytes());
        chunked.extend_from_slice(&[b'b'; 4000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = reload_request("transfer-encoding: chunked\r\n", &chunked);
    assert_eq!(raw_http(addr, &streamed).await, 413);
}

/// The status of `GET /healthz` on a connection of its own.
async fn healthz(addr: std::net::SocketAddr) -> u16 {
    raw_http(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_sending_headers_too_slowly_are_closed() {
    let _serial = SERIAL.lock().await;
    let gw = admin_gateway("header_read_timeout_secs = 1").await;
    let addr = admin_addr(&gw);
    assert_eq!(healthz(addr).await, 200);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 1024];
    // One header line every 300 ms, never finishing the request.
    while started.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"x-slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert!(closed, "a slow client is disconnected");
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The listener still serves others.
    assert_eq!(healthz(addr).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_over_the_cap_are_refused() {
    let _serial = SERIAL.lock().await;
    let gw = admin_gateway("max_connections = 2\nheader_read_timeout_secs = 60").await;
    let addr = admin_addr(&gw);
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let idle: Vec<TcpStream> = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = raw_http(addr, healthz).await;
    assert!(
        status == 503 || status == 0,
        "a connection over the cap is refused, got {status}"
    );
    // A slot freed is a slot served.
    drop(idle);
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served && Instant::now() < deadline {
        served = raw_http(addr, healthz).await == 200;
        if !served {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(served, "connections are served again once below the cap");
}
