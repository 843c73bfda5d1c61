//! `DataRow`: one row of a result. Values are borrowed from the frame; the
//! relay decodes rows only when a policy asked to see them.

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter, Reader};

/// Decodes a complete `D` frame into its values (`None` = SQL NULL).
pub fn decode(frame_bytes: &[u8]) -> Result<Vec<Option<&[u8]>>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'D')?);
    let n = r.i16("column count")?;
    if n < 0 {
        return Err(CodecError::Invalid("column count"));
    }
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32("value length")?;
        if len == -1 {
            values.push(None);
        } else if len < 0 {
            return Err(CodecError::Invalid("value length"));
        } else {
            values.push(Some(r.bytes(len as usize, "column value")?));
        }
    }
    if !r.is_empty() {
        return Err(CodecError::Invalid("DataRow has trailing bytes"));
    }
    Ok(values)
}

/// Encodes a `D` frame from values.
pub fn encode<'v>(buf: &mut BytesMut, values: impl ExactSizeIterator<Item = Option<&'v [u8]>>) {
    let mut w = MessageWriter::start(buf, Some(b'D'));
    w.i16(values.len() as i16);
    for v in values {
        match v {
            None => {
                w.i32(-1);
            }
            Some(b) => {
                w.i32(b.len() as i32).bytes(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_null() {
        let mut buf = BytesMut::new();
        let vals: Vec<Option<&[u8]>> = vec![Some(b"1"), None, Some(b"")];
        encode(&mut buf, vals.clone().into_iter());
        assert_eq!(decode(&buf).unwrap(), vals);
    }
}
