//! The wire protocol spoken by hand, for tests that need message sequences
//! no driver sends: log in on the plaintext development listener, build
//! single messages, read tagged messages back.

use bytes::BytesMut;
use portcullis::protocols::postgres::codec::{error_response, peek_frame, startup, MessageWriter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{TestGateway, DB};

/// Reads one tagged message (tag, whole frame).
pub async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let h = peek_frame(&head, 1 << 26).ok()??;
    let mut frame = head.to_vec();
    frame.resize(h.total_len, 0);
    s.read_exact(&mut frame[5..]).await.ok()?;
    Some((h.tag, frame))
}

/// Writes `buf` and flushes.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) {
    s.write_all(buf).await.expect("write to the gateway");
    s.flush().await.expect("flush to the gateway");
}

/// Logs `user` in on the plaintext development listener and returns the
/// socket after the first ReadyForQuery.
pub async fn login(gw: &TestGateway, user: &str) -> TcpStream {
    login_with(gw, user, &[]).await
}

/// [`login`] with further start-up parameters (`client_encoding`, ...).
pub async fn login_with(gw: &TestGateway, user: &str, params: &[(&str, &str)]) -> TcpStream {
    let mut s = TcpStream::connect(gw.plain_addr).await.expect("connect");
    let mut b = BytesMut::new();
    let mut all = vec![("user", user), ("database", DB)];
    all.extend_from_slice(params);
    startup::encode_startup(&mut b, &all);
    send(&mut s, &b).await;
    let (tag, _) = read_msg(&mut s).await.expect("authentication request");
    assert_eq!(tag, b'R');
    b.clear();
    portcullis::protocols::postgres::codec::authentication::encode_password(
        &mut b,
        &gw.token(user),
    );
    send(&mut s, &b).await;
    loop {
        let (tag, frame) = read_msg(&mut s).await.expect("greeting");
        assert_ne!(tag, b'E', "{:?}", error_response::decode(&frame));
        if tag == b'Z' {
            return s;
        }
    }
}

/// Every message up to and including the next ReadyForQuery: the tags, and
/// the SQLSTATE of each ErrorResponse.
pub async fn until_ready(s: &mut TcpStream) -> (Vec<u8>, Vec<String>) {
    read_while(s, |tag| tag != b'Z').await
}

/// Every message until the gateway closes the connection (or 10 s pass):
/// the tags, and the SQLSTATE of each ErrorResponse.
pub async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Vec<String>) {
    let read = read_while(s, |_| true);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap_or_default()
}

/// Reads messages while `go_on(tag)` holds for the last one read.
async fn read_while(s: &mut TcpStream, go_on: impl Fn(u8) -> bool) -> (Vec<u8>, Vec<String>) {
    let mut tags = Vec::new();
    let mut codes = Vec::new();
    while let Some((tag, frame)) = read_msg(s).await {
        tags.push(tag);
        if tag == b'E' {
            if let Ok(e) = error_response::decode(&frame) {
                codes.push(e.code.to_string());
            }
        }
        if !go_on(tag) {
            break;
        }
    }
    (tags, codes)
}

/// A `Parse` of `sql` as `statement`, no parameter types.
pub fn parse(b: &mut BytesMut, statement: &str, sql: &str) {
    parse_bytes(b, statement.as_bytes(), sql.as_bytes());
}

/// A `Parse` of raw bytes (names and text in a client encoding other than
/// UTF-8), no parameter types.
pub fn parse_bytes(b: &mut BytesMut, statement: &[u8], sql: &[u8]) {
    MessageWriter::start(b, Some(b'P'))
        .bytes(statement)
        .u8(0)
        .bytes(sql)
        .u8(0)
        .i16(0);
}

/// A `Bind` of `statement` into `portal` with text parameters.
pub fn bind(b: &mut BytesMut, portal: &str, statement: &str, params: &[&str]) {
    let mut w = MessageWriter::start(b, Some(b'B'));
    w.cstr(portal)
        .cstr(statement)
        .i16(0)
        .i16(params.len() as i16);
    for p in params {
        w.i32(p.len() as i32).bytes(p.as_bytes());
    }
    w.i16(0);
}

/// An `Execute` of `portal`, all rows.
pub fn execute(b: &mut BytesMut, portal: &str) {
    MessageWriter::start(b, Some(b'E')).cstr(portal).i32(0);
}

/// A `Close` of a statement (`b'S'`) or portal (`b'P'`).
pub fn close(b: &mut BytesMut, kind: u8, name: &str) {
    MessageWriter::start(b, Some(b'C')).u8(kind).cstr(name);
}

/// A `Sync`.
pub fn sync(b: &mut BytesMut) {
    MessageWriter::start(b, Some(b'S'));
}

/// A simple `Query`.
pub fn query(b: &mut BytesMut, sql: &str) {
    portcullis::protocols::postgres::codec::query::encode(b, sql);
}

/// A `Flush`.
pub fn flush(b: &mut BytesMut) {
    MessageWriter::start(b, Some(b'H'));
}

/// A `CopyData` carrying `data`.
pub fn copy_data(b: &mut BytesMut, data: &[u8]) {
    MessageWriter::start(b, Some(b'd')).bytes(data);
}

/// A `CopyDone`.
pub fn copy_done(b: &mut BytesMut) {
    MessageWriter::start(b, Some(b'c'));
}

/// A simple `Query` of raw bytes (text in a client encoding other than
/// UTF-8).
pub fn query_bytes(b: &mut BytesMut, sql: &[u8]) {
    MessageWriter::start(b, Some(b'Q')).bytes(sql).u8(0);
}
