//! Building outgoing messages: a tag, a length patched in at the end, fields.

use bytes::{BufMut, BytesMut};

/// Appends one message to a buffer; the length is written when it is finished.
pub struct MessageWriter<'a> {
    buf: &'a mut BytesMut,
    len_at: usize,
}

impl<'a> MessageWriter<'a> {
    /// Starts a tagged message (`tag` = `None` for startup-style messages).
    pub fn start(buf: &'a mut BytesMut, tag: Option<u8>) -> Self {
        if let Some(tag) = tag {
            buf.put_u8(tag);
        }
        let len_at = buf.len();
        buf.put_i32(0);
        Self { buf, len_at }
    }

    /// Appends a NUL-terminated string.
    pub fn cstr(&mut self, s: &str) -> &mut Self {
        self.buf.put_slice(s.as_bytes());
        self.buf.put_u8(0);
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.put_slice(b);
        self
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    /// Appends a big-endian i16.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.put_i16(v);
        self
    }

    /// Appends a big-endian i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32(v);
        self
    }
}

impl Drop for MessageWriter<'_> {
    fn drop(&mut self) {
        let len = (self.buf.len() - self.len_at) as i32;
        self.buf[self.len_at..self.len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}
