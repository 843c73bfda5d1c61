//! The untagged first packet of a connection: `StartupMessage`, `SSLRequest`,
//! `GSSENCRequest` and `CancelRequest`.

use bytes::BytesMut;

use super::{CodecError, MessageWriter, Reader};

/// PostgreSQL's limit on the size of a startup packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// Request code of `SSLRequest`.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of `GSSENCRequest`.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of `CancelRequest`.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as a version number (major << 16 | minor).
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// One decoded untagged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel the query running on another connection.
    CancelRequest(CancelRequest),
    /// The real start of a session.
    Startup(StartupMessage<'a>),
}

/// `CancelRequest`: identifies a session by process id and secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest {
    /// Process id the client was given in `BackendKeyData`.
    pub process_id: i32,
    /// Secret key the client was given in `BackendKeyData`.
    pub secret_key: i32,
}

/// `StartupMessage`: protocol version and `name=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage<'a> {
    /// Requested major version.
    pub major: u16,
    /// Requested minor version.
    pub minor: u16,
    /// Parameters in the order the client sent them.
    pub params: Vec<(&'a str, &'a str)>,
}

impl<'a> StartupMessage<'a> {
    /// The value of parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Reads the length of the untagged packet at the start of `buf`.
///
/// `Ok(None)` until four bytes are there; an error when the length is outside
/// 8..=[`MAX_STARTUP_PACKET`].
pub fn peek_startup_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(CodecError::LengthTooSmall(i64::from(len)));
    }
    if len as usize > MAX_STARTUP_PACKET {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: MAX_STARTUP_PACKET,
        });
    }
    Ok(Some(len as usize))
}

/// Decodes one complete untagged packet (including its length field).
pub fn decode(packet: &[u8]) -> Result<StartupPacket<'_>, CodecError> {
    let mut r = Reader::new(packet);
    let len = r.i32("startup length")?;
    if len as usize != packet.len() {
        return Err(CodecError::Invalid("startup packet length"));
    }
    let code = r.i32("startup code")?;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => Ok(StartupPacket::CancelRequest(CancelRequest {
            process_id: r.i32("cancel process id")?,
            secret_key: r.i32("cancel secret key")?,
        })),
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            let mut params = Vec::new();
            loop {
                let name = r.cstr("startup parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr("startup parameter value")?;
                params.push((name, value));
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params,
            }))
        }
    }
}

/// Encodes a protocol 3.0 `StartupMessage` with the given parameters.
pub fn encode_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let mut w = MessageWriter::start(buf, None);
    w.i32(PROTOCOL_3_0);
    for (k, v) in params {
        w.cstr(k).cstr(v);
    }
    w.u8(0);
}

/// Encodes an `SSLRequest`.
pub fn encode_ssl_request(buf: &mut BytesMut) {
    MessageWriter::start(buf, None).i32(SSL_REQUEST_CODE);
}

/// Encodes a `CancelRequest`.
pub fn encode_cancel(buf: &mut BytesMut, req: CancelRequest) {
    MessageWriter::start(buf, None)
        .i32(CANCEL_REQUEST_CODE)
        .i32(req.process_id)
        .i32(req.secret_key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_startup() {
        let mut buf = BytesMut::new();
        encode_startup(&mut buf, &[("user", "alice"), ("database", "orders")]);
        let StartupPacket::Startup(m) = decode(&buf).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!((m.major, m.minor), (3, 0));
        assert_eq!(m.param("database"), Some("orders"));
        assert_eq!(m.param("user"), Some("alice"));
    }

    #[test]
    fn decodes_requests() {
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        assert_eq!(decode(&buf).unwrap(), StartupPacket::SslRequest);
        buf.clear();
        encode_cancel(
            &mut buf,
            CancelRequest {
                process_id: 7,
                secret_key: -3,
            },
        );
        assert_eq!(
            decode(&buf).unwrap(),
            StartupPacket::CancelRequest(CancelRequest {
                process_id: 7,
                secret_key: -3
            })
        );
    }

    #[test]
    fn rejects_unterminated_params() {
        let mut buf = BytesMut::new();
        encode_startup(&mut buf, &[("user", "alice")]);
        let n = buf.len();
        // Drop the final terminator and fix the length.
        let mut bad = buf[..n - 1].to_vec();
        let len = (bad.len() as i32).to_be_bytes();
        bad[..4].copy_from_slice(&len);
        assert!(decode(&bad).is_err());
    }
}
