//! `Parse`: the extended protocol's prepare step.

use super::{frame, CodecError, Reader};

/// A decoded `Parse` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Prepared statement name (empty for the unnamed statement).
    pub statement: &'a str,
    /// SQL text, as bytes (the relay checks they are UTF-8, see
    /// [`super::encoding`]).
    pub query: &'a [u8],
    /// Number of parameter types the client specified.
    pub param_type_count: u16,
    /// Those types: one big-endian OID of 4 bytes each (0 = unspecified).
    pub param_types: &'a [u8],
}

/// Decodes a complete `P` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<Parse<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'P')?);
    let statement = r.cstr("statement name")?;
    let query = r.cstr_bytes("query string")?;
    let n = r.i16("parameter type count")?;
    if n < 0 {
        return Err(CodecError::Invalid("parameter type count"));
    }
    let param_types = r.bytes(n as usize * 4, "parameter types")?;
    if !r.is_empty() {
        // PostgreSQL refuses it before acting on it.
        return Err(CodecError::Invalid("Parse has trailing bytes"));
    }
    Ok(Parse {
        statement,
        query,
        param_type_count: n as u16,
        param_types,
    })
}
