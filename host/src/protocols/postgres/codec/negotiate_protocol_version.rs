//! `NegotiateProtocolVersion`: tells a client which minor version and which
//! `_pq_.` options the gateway does not support, as PostgreSQL does.

use bytes::BytesMut;

use super::MessageWriter;

/// Encodes a `v` frame: newest supported minor version and unsupported options.
pub fn encode(buf: &mut BytesMut, newest_minor: i32, unsupported: &[&str]) {
    let mut w = MessageWriter::start(buf, Some(b'v'));
    w.i32((3 << 16) | newest_minor);
    w.i32(unsupported.len() as i32);
    for o in unsupported {
        w.cstr(o);
    }
}
