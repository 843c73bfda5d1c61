//! `Describe` and `Close`: both name a prepared statement (`S`) or a portal
//! (`P`).

use super::{frame, CodecError, Reader};

/// What a `Describe` or `Close` refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A prepared statement.
    Statement(&'a str),
    /// A portal.
    Portal(&'a str),
}

fn decode_target(frame_bytes: &[u8], tag: u8) -> Result<Target<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, tag)?);
    let kind = r.u8("describe/close kind")?;
    let name = r.cstr("statement or portal name")?;
    if !r.is_empty() {
        // PostgreSQL refuses it before acting on it.
        return Err(CodecError::Invalid("Describe or Close has trailing bytes"));
    }
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        _ => Err(CodecError::Invalid("describe/close kind")),
    }
}

/// Decodes a complete `D` (Describe) frame from a client.
pub fn decode_describe(frame_bytes: &[u8]) -> Result<Target<'_>, CodecError> {
    decode_target(frame_bytes, b'D')
}

/// Decodes a complete `C` (Close) frame from a client.
pub fn decode_close(frame_bytes: &[u8]) -> Result<Target<'_>, CodecError> {
    decode_target(frame_bytes, b'C')
}

/// Encodes `Describe` of a portal.
pub fn encode_describe_portal(buf: &mut bytes::BytesMut, portal: &str) {
    super::MessageWriter::start(buf, Some(b'D'))
        .u8(b'P')
        .cstr(portal);
}

/// `Execute`: runs a portal.
pub mod execute {
    use super::super::{frame, CodecError, Reader};

    /// Decodes a complete `E` frame from a client: the portal name.
    pub fn decode(frame_bytes: &[u8]) -> Result<&str, CodecError> {
        let mut r = Reader::new(frame::body(frame_bytes, b'E')?);
        let portal = r.cstr("portal name")?;
        r.i32("maximum row count")?;
        if !r.is_empty() {
            return Err(CodecError::Invalid("Execute has trailing bytes"));
        }
        Ok(portal)
    }
}
