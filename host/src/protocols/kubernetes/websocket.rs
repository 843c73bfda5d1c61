//! Just enough of WebSocket (RFC 6455) to relay `kubectl exec` and
//! `attach` and to read what they carry: the opening handshake
//! on both sides, frames read whole before they are passed on, and the
//! few frames the gateway writes itself (a refusal, a close).
//!
//! No extension is ever negotiated (the gateway strips
//! `Sec-WebSocket-Extensions`), so a frame with a reserved bit set —
//! compressed, unreadable — ends the stream instead of passing.

use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue};

/// The subprotocols the gateway relays, best first: the Kubernetes
/// channel protocols (one byte of channel, then data) exec and attach
/// speak. (`base64.channel.k8s.io` and the older ones are not offered on;
/// nor is `base64url.bearer.authorization.k8s.io.…`, a token.)
pub const CHANNEL_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The GUID RFC 6455 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest frame the gateway reads (kubectl's and the API server's
/// are at most 32 KiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
/// A text frame.
pub const TEXT: u8 = 0x1;
/// A binary frame.
pub const BINARY: u8 = 0x2;
/// A close frame.
pub const CLOSE: u8 = 0x8;

/// What a client's upgrade request offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// The subprotocols offered that the gateway relays, in the client's
    /// order.
    pub protocols: Vec<String>,
}

/// How a client asks to upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Not at all.
    None,
    /// WebSocket, readable by the gateway.
    WebSocket(Offer),
    /// WebSocket the gateway cannot relay (why).
    BadWebSocket(String),
    /// SPDY (kubectl before 1.30, or with WebSockets turned off) or
    /// another protocol.
    Other(String),
}

/// Reads the client's upgrade request.
pub fn upgrade(headers: &HeaderMap) -> Upgrade {
    let Some(wanted) = headers
        .get(hyper::header::UPGRADE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    else {
        return Upgrade::None;
    };
    if !wanted.eq_ignore_ascii_case("websocket") {
        return Upgrade::Other(wanted);
    }
    let key = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|b| b.len() == 16)
        });
    let Some(key) = key else {
        return Upgrade::BadWebSocket("Sec-WebSocket-Key is missing or not 16 bytes".into());
    };
    if headers
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Upgrade::BadWebSocket("only WebSocket version 13 is spoken".into());
    }
    let protocols: Vec<String> = headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| CHANNEL_PROTOCOLS.contains(p))
        .map(str::to_string)
        .collect();
    Upgrade::WebSocket(Offer {
        key: key.to_string(),
        protocols,
    })
}

/// `Sec-WebSocket-Accept` for `key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A fresh `Sec-WebSocket-Key` (the gateway's own, upstream).
pub fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The headers of the gateway's own upgrade request to the API server:
/// its key, version 13, and the subprotocols the client offered.
pub fn request_headers(headers: &mut HeaderMap, key: &str, protocols: &[String]) {
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    headers.insert(
        hyper::header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(k) = HeaderValue::from_str(key) {
        headers.insert(hyper::header::SEC_WEBSOCKET_KEY, k);
    }
    if let Ok(p) = HeaderValue::from_str(&protocols.join(", ")) {
        headers.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, p);
    }
}

/// Checks the API server's `101` answer to the gateway's upgrade with
/// `key` offering `protocols`: the subprotocol it chose, or why the
/// answer cannot be relayed.
pub fn check_answer(
    headers: &HeaderMap,
    key: &str,
    protocols: &[String],
) -> Result<String, String> {
    let accept = headers
        .get(hyper::header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok());
    if accept != Some(accept_key(key).as_str()) {
        return Err("the API server's WebSocket answer has a wrong Sec-WebSocket-Accept".into());
    }
    if headers.contains_key(hyper::header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err("the API server chose a WebSocket extension the gateway did not offer".into());
    }
    let chosen = headers
        .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if !protocols.iter().any(|p| p == chosen) {
        return Err(format!(
            "the API server chose the subprotocol {chosen:?}, which was not offered"
        ));
    }
    Ok(chosen.to_string())
}

/// The gateway's `101` answer to a client: `offer` accepted with
/// `protocol`.
pub fn switching(offer: &Offer, protocol: &str) -> hyper::http::response::Builder {
    let builder = hyper::Response::builder()
        .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept_key(&offer.key));
    if protocol.is_empty() {
        builder
    } else {
        builder.header(hyper::header::SEC_WEBSOCKET_PROTOCOL, protocol)
    }
}

/// One frame read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// Its opcode.
    pub opcode: u8,
    /// Its payload, unmasked.
    pub payload: Vec<u8>,
    /// How many bytes it took on the wire.
    pub wire_len: usize,
}

/// Why frames cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A reserved bit is set: an extension the gateway cannot read.
    #[error("a frame uses a WebSocket extension (reserved bits set)")]
    Extension,
    /// The opcode is reserved.
    #[error("a frame has the reserved opcode {0:#x}")]
    Opcode(u8),
    /// A control frame is fragmented or longer than 125 bytes.
    #[error("a control frame is fragmented or too long")]
    Control,
    /// Masked when it must not be, or not when it must.
    #[error("a frame is {0} (clients mask every frame, servers none)")]
    Masking(&'static str),
    /// Longer than [`MAX_FRAME`].
    #[error("a frame of {0} bytes is longer than the gateway reads ({MAX_FRAME} bytes)")]
    TooLong(u64),
}

/// Reads one frame from the start of `buf`: `None` while it is not all
/// there. Frames from a client must be masked (`masked`), from a server
/// not.
pub fn read_frame(buf: &[u8], masked: bool) -> Result<Option<Frame>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Extension);
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    match opcode {
        CONTINUATION | TEXT | BINARY => {}
        0x8..=0xa => {
            if !fin || b1 & 0x7f > 125 {
                return Err(FrameError::Control);
            }
        }
        other => return Err(FrameError::Opcode(other)),
    }
    let is_masked = b1 & 0x80 != 0;
    if is_masked != masked {
        return Err(FrameError::Masking(if masked {
            "not masked"
        } else {
            "masked"
        }));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME as u64 {
        return Err(FrameError::TooLong(len));
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    // `len` ≤ MAX_FRAME, so it fits in usize.
    let end = at + len as usize;
    let Some(data) = buf.get(at..end) else {
        return Ok(None);
    };
    let mut payload = data.to_vec();
    if let Some(mask) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
        wire_len: end,
    }))
}

/// A whole frame the gateway writes: to a client unmasked, to a server
/// (`masked`) with a fresh mask.
pub fn write_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask: [u8; 4] = rand::random();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close frame with `code` (1000: normal; 1008: policy).
pub fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A control frame's payload is at most 125 bytes.
    let reason: String = reason.chars().take(60).collect();
    payload.extend_from_slice(reason.as_bytes());
    payload.truncate(125);
    write_frame(CLOSE, &payload, masked)
}

/// The messages of one direction of a channel protocol (`v4`, `v5`):
/// each data message's first byte names its channel (0 stdin, 1 stdout,
/// 2 stderr, 3 the error `Status`, 4 a terminal resize; 255 in `v5`
/// closes a channel). Messages may be cut into frames; a frame's data is
/// returned with the channel of its message.
#[derive(Debug, Default)]
pub struct Channels {
    /// The channel of the message being read, once its first byte came.
    current: Option<u8>,
    /// A message is being read (its first frame came, its last not yet).
    in_message: bool,
}

impl Channels {
    /// The channel and data a data frame carries (`None` for control
    /// frames, or a first frame with no byte yet).
    pub fn data<'a>(&mut self, frame: &'a Frame) -> Option<(u8, &'a [u8])> {
        if frame.opcode >= CLOSE {
            return None;
        }
        if frame.opcode != CONTINUATION || !self.in_message {
            self.current = None;
        }
        self.in_message = !frame.fin;
        let data = match self.current {
            Some(_) => &frame.payload[..],
            None => {
                let (&channel, rest) = frame.payload.split_first()?;
                self.current = Some(channel);
                rest
            }
        };
        self.current.map(|c| (c, data))
    }

    /// Whether a message is cut between frames (a frame of its own may
    /// not be written in between).
    pub fn mid_message(&self) -> bool {
        self.in_message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_are_read_whole_and_unmasked() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let wire = write_frame(BINARY, &payload, true);
            for cut in [0, 1, 2, wire.len() / 2, wire.len() - 1] {
                assert_eq!(
                    read_frame(&wire[..cut], true),
                    Ok(None),
                    "{len} cut at {cut}"
                );
            }
            let mut more = wire.clone();
            more.extend_from_slice(b"next");
            let frame = read_frame(&more, true).unwrap().unwrap();
            assert_eq!(frame.payload, payload);
            assert_eq!(frame.wire_len, wire.len());
            assert!(frame.fin);
            let plain = write_frame(BINARY, &payload, false);
            assert_eq!(read_frame(&plain, false).unwrap().unwrap().payload, payload);
        }
    }

    #[test]
    fn frames_that_cannot_be_read_end_the_stream() {
        let masked = write_frame(BINARY, b"x", true);
        assert!(matches!(
            read_frame(&masked, false),
            Err(FrameError::Masking(_))
        ));
        let plain = write_frame(BINARY, b"x", false);
        assert!(matches!(
            read_frame(&plain, true),
            Err(FrameError::Masking(_))
        ));
        let mut compressed = plain.clone();
        compressed[0] |= 0x40;
        assert_eq!(read_frame(&compressed, false), Err(FrameError::Extension));
        let mut reserved = plain.clone();
        reserved[0] = 0x83;
        assert_eq!(read_frame(&reserved, false), Err(FrameError::Opcode(3)));
        let huge = [0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert!(matches!(
            read_frame(&huge, false),
            Err(FrameError::TooLong(_))
        ));
        let fragmented_ping = [0x09, 0];
        assert_eq!(
            read_frame(&fragmented_ping, false),
            Err(FrameError::Control)
        );
    }

    #[test]
    fn a_channel_is_named_once_per_message() {
        let mut c = Channels::default();
        let first = Frame {
            fin: false,
            opcode: BINARY,
            payload: b"\x01ab".to_vec(),
            wire_len: 0,
        };
        let rest = Frame {
            fin: true,
            opcode: CONTINUATION,
            payload: b"\x02cd".to_vec(),
            wire_len: 0,
        };
        assert_eq!(c.data(&first), Some((1, &b"ab"[..])));
        assert!(c.mid_message());
        assert_eq!(c.data(&rest), Some((1, &b"\x02cd"[..])));
        assert!(!c.mid_message());
        let empty_first = Frame {
            fin: false,
            opcode: BINARY,
            payload: Vec::new(),
            wire_len: 0,
        };
        assert_eq!(c.data(&empty_first), None);
        assert_eq!(c.data(&rest), Some((2, &b"cd"[..])));
        let ping = Frame {
            fin: true,
            opcode: 0x9,
            payload: Vec::new(),
            wire_len: 0,
        };
        assert_eq!(c.data(&ping), None);
    }

    #[test]
    fn only_relayed_subprotocols_are_offered_on() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("base64url.bearer.authorization.k8s.io.dG9r, v5.channel.k8s.io, base64.channel.k8s.io, v4.channel.k8s.io"),
        );
        let Upgrade::WebSocket(offer) = upgrade(&h) else {
            panic!("a WebSocket offer")
        };
        assert_eq!(offer.protocols, ["v5.channel.k8s.io", "v4.channel.k8s.io"]);
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(matches!(upgrade(&h), Upgrade::Other(_)));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-key", HeaderValue::from_static("short"));
        assert!(matches!(upgrade(&h), Upgrade::BadWebSocket(_)));
    }
}
