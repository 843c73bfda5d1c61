//! `Bind`: creates a portal from a prepared statement. The relay reads only
//! the two names at its start; parameters and formats pass through untouched.

use super::{frame, CodecError, Reader};

/// The names a `Bind` message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal ("" = unnamed).
    pub portal: &'a str,
    /// Source prepared statement ("" = unnamed).
    pub statement: &'a str,
}

/// Decodes the names of a complete `B` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<Bind<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'B')?);
    let portal = r.cstr("portal name")?;
    let statement = r.cstr("statement name")?;
    Ok(Bind { portal, statement })
}
