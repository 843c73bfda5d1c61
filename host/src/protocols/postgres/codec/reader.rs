//! A cursor over a message body for borrowed, panic-free field parsing.

use super::CodecError;

/// Reads protocol fields from a byte slice; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads `n` raw bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// Reads a big-endian 16-bit signed integer.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, CodecError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian 32-bit signed integer.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, CodecError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian 32-bit unsigned integer.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a NUL-terminated UTF-8 string (without the NUL).
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.cstr_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidString(what))
    }

    /// Reads a NUL-terminated string in whatever encoding (without the NUL).
    pub fn cstr_bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::InvalidString(what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}
