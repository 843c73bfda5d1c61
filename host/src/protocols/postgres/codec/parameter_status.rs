//! `ParameterStatus`: a run-time parameter the server reports.

use std::borrow::Cow;

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter, Reader};

/// Decodes a complete `S` frame from the server into (name, value). A
/// value in the session's client encoding (`application_name` with
/// non-ASCII letters in a LATIN1 session) is read lossily, never refused.
pub fn decode(frame_bytes: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'S')?);
    let name = String::from_utf8_lossy(r.cstr_bytes("parameter name")?);
    let value = String::from_utf8_lossy(r.cstr_bytes("parameter value")?);
    Ok((name, value))
}

/// Encodes an `S` frame; `value` is the server's bytes as they are.
pub fn encode(buf: &mut BytesMut, name: &str, value: &[u8]) {
    MessageWriter::start(buf, Some(b'S'))
        .cstr(name)
        .bytes(value)
        .u8(0);
}
