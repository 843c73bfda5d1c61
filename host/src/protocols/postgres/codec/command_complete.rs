//! `CommandComplete`: the server finished one statement; its tag says what
//! and, for most statements, how many rows.

use super::{frame, CodecError, Reader};

/// Decodes the command tag of a complete `C` frame (`SELECT 5`, `INSERT 0 1`).
pub fn decode(frame_bytes: &[u8]) -> Result<&str, CodecError> {
    Reader::new(frame::body(frame_bytes, b'C')?).cstr("command tag")
}

/// The row count a command tag reports (`SELECT 5` → 5, `INSERT 0 3` → 3);
/// `None` for tags without one (`CREATE TABLE`, `BEGIN`).
pub fn rows(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let first = words.next()?;
    let last = words.next_back()?;
    if first.is_empty() {
        return None;
    }
    last.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_from_tags() {
        assert_eq!(rows("SELECT 5"), Some(5));
        assert_eq!(rows("INSERT 0 3"), Some(3));
        assert_eq!(rows("COPY 1000000"), Some(1_000_000));
        assert_eq!(rows("CREATE TABLE"), None);
        assert_eq!(rows("BEGIN"), None);
        let mut b = bytes::BytesMut::new();
        b.extend_from_slice(&[b'C', 0, 0, 0, 13]);
        b.extend_from_slice(b"UPDATE 7\0");
        assert_eq!(decode(&b).ok(), Some("UPDATE 7"));
    }
}
