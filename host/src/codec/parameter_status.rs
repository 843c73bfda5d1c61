//! `ParameterStatus`: a run-time parameter the server reports.

use super::{frame, CodecError, Reader};

/// Decodes a complete `S` frame from the server into (name, value).
pub fn decode(frame_bytes: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'S')?);
    Ok((r.cstr("parameter name")?, r.cstr("parameter value")?))
}
