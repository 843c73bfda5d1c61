//! `Bind`: creates a portal from a prepared statement. The relay reads the
//! two names at its start, and the parameter values only of a statement
//! held for approval (an approval covers the values the approver saw);
//! everything passes through untouched.

use super::{frame, CodecError, Reader};

/// The names a `Bind` message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal ("" = unnamed).
    pub portal: &'a str,
    /// Source prepared statement ("" = unnamed).
    pub statement: &'a str,
}

/// Decodes the names of a complete `B` frame, checking the rest of it as
/// PostgreSQL does before it replaces a portal (no values are collected).
pub fn decode(frame_bytes: &[u8]) -> Result<Bind<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'B')?);
    let portal = r.cstr("portal name")?;
    let statement = r.cstr("statement name")?;
    let n_formats = r.i16("parameter format count")?;
    if n_formats < 0 {
        return Err(CodecError::Invalid("Bind parameter format count"));
    }
    r.bytes(n_formats as usize * 2, "parameter formats")?;
    let n_values = r.i16("parameter count")?;
    if n_formats > 1 && n_formats != n_values {
        return Err(CodecError::Invalid("Bind parameter format count"));
    }
    for _ in 0..n_values.max(0) {
        match r.i32("parameter length")? {
            -1 => {}
            n if n < 0 => return Err(CodecError::Invalid("Bind parameter length")),
            n => {
                r.bytes(n as usize, "parameter value")?;
            }
        }
    }
    result_formats_end(&mut r)?;
    Ok(Bind { portal, statement })
}

/// The result format codes that end a `Bind`, then nothing: PostgreSQL
/// refuses anything else before it replaces a portal.
fn result_formats_end(r: &mut Reader<'_>) -> Result<(), CodecError> {
    let n_results = r.i16("result format count")?;
    if n_results < 0 {
        return Err(CodecError::Invalid("Bind result format count"));
    }
    r.bytes(n_results as usize * 2, "result formats")?;
    if !r.is_empty() {
        return Err(CodecError::Invalid("Bind has trailing bytes"));
    }
    Ok(())
}

/// The parameter values of a `Bind`, as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters<'a> {
    /// Each value (`None` = SQL NULL) with whether it is in binary format.
    pub values: Vec<(Option<&'a [u8]>, bool)>,
}

/// Decodes the parameter values of a complete `B` frame (format codes: none
/// = all text, one = all that format, else one per parameter).
pub fn decode_parameters(frame_bytes: &[u8]) -> Result<Parameters<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'B')?);
    r.cstr("portal name")?;
    r.cstr("statement name")?;
    let n_formats = r.i16("parameter format count")?;
    let mut formats = Vec::with_capacity(n_formats.max(0) as usize);
    for _ in 0..n_formats.max(0) {
        formats.push(r.i16("parameter format")? == 1);
    }
    let n_values = r.i16("parameter count")?.max(0) as usize;
    if formats.len() > 1 && formats.len() != n_values {
        return Err(CodecError::Invalid("Bind parameter format count"));
    }
    let mut values = Vec::with_capacity(n_values);
    for i in 0..n_values {
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => formats[i],
        };
        let len = r.i32("parameter length")?;
        let value = match len {
            -1 => None,
            n if n < 0 => return Err(CodecError::Invalid("Bind parameter length")),
            n => Some(r.bytes(n as usize, "parameter value")?),
        };
        values.push((value, binary));
    }
    result_formats_end(&mut r)?;
    Ok(Parameters { values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn bind(formats: &[i16], values: &[Option<&[u8]>]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_slice(b"p\0s\0");
        body.put_i16(formats.len() as i16);
        for f in formats {
            body.put_i16(*f);
        }
        body.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    body.put_i32(v.len() as i32);
                    body.put_slice(v);
                }
                None => body.put_i32(-1),
            }
        }
        body.put_i16(0);
        let mut frame = BytesMut::new();
        frame.put_u8(b'B');
        frame.put_i32(body.len() as i32 + 4);
        frame.put_slice(&body);
        frame
    }

    #[test]
    fn parameters_with_their_formats() {
        let f = bind(&[], &[Some(b"42"), None]);
        let p = decode_parameters(&f).unwrap();
        assert_eq!(p.values, vec![(Some(&b"42"[..]), false), (None, false)]);
        let f = bind(&[1], &[Some(&[0, 0, 0, 7])]);
        assert!(decode_parameters(&f).unwrap().values[0].1);
        let f = bind(&[0, 1], &[Some(b"a"), Some(b"b")]);
        let p = decode_parameters(&f).unwrap();
        assert_eq!((p.values[0].1, p.values[1].1), (false, true));
    }

    #[test]
    fn lies_about_counts_and_lengths_are_errors_not_panics() {
        let f = bind(&[0, 1, 0], &[Some(b"a")]);
        assert!(decode_parameters(&f).is_err());
        let mut f = bind(&[], &[Some(b"abc")]);
        let at = f.len() - 2 - 3 - 4; // the length of the one value
        f[at..at + 4].copy_from_slice(&1000i32.to_be_bytes());
        assert!(decode_parameters(&f).is_err());
    }
}
