//! `BackendKeyData`: the process id and secret a client needs to cancel.

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter, Reader};

/// Process id and secret key of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKeyData {
    /// Backend process id (what `pg_backend_pid()` returns).
    pub process_id: i32,
    /// Secret key that authorizes a `CancelRequest`.
    pub secret_key: i32,
}

/// Decodes a complete `K` frame.
///
/// Protocol 3.2 allows longer keys; a key that is not four bytes is reported
/// as invalid because the gateway speaks 3.0 upstream.
pub fn decode(frame_bytes: &[u8]) -> Result<BackendKeyData, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'K')?);
    let process_id = r.i32("backend process id")?;
    let secret_key = r.i32("backend secret key")?;
    if !r.is_empty() {
        return Err(CodecError::Invalid("BackendKeyData length"));
    }
    Ok(BackendKeyData {
        process_id,
        secret_key,
    })
}

/// Encodes a `K` frame.
pub fn encode(buf: &mut BytesMut, key: BackendKeyData) {
    MessageWriter::start(buf, Some(b'K'))
        .i32(key.process_id)
        .i32(key.secret_key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = BytesMut::new();
        let key = BackendKeyData {
            process_id: 4242,
            secret_key: -1,
        };
        encode(&mut buf, key);
        assert_eq!(decode(&buf).unwrap(), key);
    }
}
