//! `Query`: one simple-protocol query string (possibly several statements).

use super::{frame, CodecError, Reader};

/// Decodes a complete `Q` frame into its SQL text, as bytes: the relay
/// checks they are UTF-8 itself, refusing the statement rather than the
/// session (see [`super::encoding`]).
pub fn decode(frame_bytes: &[u8]) -> Result<&[u8], CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'Q')?);
    let sql = r.cstr_bytes("query string")?;
    if !r.is_empty() {
        return Err(CodecError::Invalid("Query has trailing bytes"));
    }
    Ok(sql)
}

/// Encodes a `Q` frame.
pub fn encode(buf: &mut bytes::BytesMut, sql: &str) {
    super::MessageWriter::start(buf, Some(b'Q')).cstr(sql);
}
