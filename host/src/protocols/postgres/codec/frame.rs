//! Frame boundaries: a one-byte tag and a four-byte length that counts itself.
//!
//! The relay uses [`peek_frame`] to find where each message ends without
//! decoding it, so messages no policy looks at are forwarded untouched.

use super::CodecError;

/// The header of one tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// Total size on the wire: tag + length field + body.
    pub total_len: usize,
}

impl FrameHeader {
    /// Size of the body (after tag and length).
    pub fn body_len(&self) -> usize {
        self.total_len - 5
    }
}

/// Reads the header of the tagged message at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than five bytes are available. A length below
/// four or above `max_len` is an error: the caller never allocates for it.
pub fn peek_frame(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>, CodecError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(CodecError::LengthTooSmall(i64::from(len)));
    }
    let total_len = len as usize + 1;
    if total_len > max_len {
        return Err(CodecError::TooLarge {
            len: total_len as u64,
            max: max_len,
        });
    }
    Ok(Some(FrameHeader {
        tag: buf[0],
        total_len,
    }))
}

/// Returns the body of a complete frame, checking its tag.
pub fn body(frame: &[u8], expected: u8) -> Result<&[u8], CodecError> {
    let header = peek_frame(frame, usize::MAX)?.ok_or(CodecError::Truncated("message header"))?;
    if header.tag != expected {
        return Err(CodecError::UnexpectedTag {
            found: char::from(header.tag),
            expected: char::from(expected),
        });
    }
    frame
        .get(5..header.total_len)
        .ok_or(CodecError::Truncated("message body"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_five_bytes() {
        assert_eq!(peek_frame(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn rejects_small_and_huge_lengths() {
        assert!(matches!(
            peek_frame(b"Q\0\0\0\x03", 100),
            Err(CodecError::LengthTooSmall(3))
        ));
        assert!(matches!(
            peek_frame(b"Q\x7f\xff\xff\xff", 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            peek_frame(b"Q\xff\xff\xff\xff", 1 << 20),
            Err(CodecError::LengthTooSmall(-1))
        ));
    }

    #[test]
    fn reads_tag_and_total_length() {
        let h = peek_frame(b"Z\0\0\0\x05I", 100).unwrap().unwrap();
        assert_eq!(h.tag, b'Z');
        assert_eq!(h.total_len, 6);
        assert_eq!(h.body_len(), 1);
    }
}
