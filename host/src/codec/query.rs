//! `Query`: one simple-protocol query string (possibly several statements).

use super::{frame, CodecError, Reader};

/// Decodes a complete `Q` frame into its SQL text.
pub fn decode(frame_bytes: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'Q')?);
    r.cstr("query string")
}

/// Encodes a `Q` frame.
pub fn encode(buf: &mut bytes::BytesMut, sql: &str) {
    super::MessageWriter::start(buf, Some(b'Q')).cstr(sql);
}
