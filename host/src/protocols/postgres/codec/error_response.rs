//! `ErrorResponse` and `NoticeResponse`: typed fields (severity, SQLSTATE,
//! message, detail, hint) in both directions.

use std::borrow::Cow;

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter, Reader};

/// Severity of an error or notice as PostgreSQL spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session is closed after this message.
    Fatal,
    /// A notice.
    Notice,
    /// A warning notice.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// The fields of an error or notice the gateway builds itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity.
    pub severity: Severity,
    /// Five-character SQLSTATE, see [`super::sqlstate`] (or one a server
    /// sent).
    pub code: std::borrow::Cow<'static, str>,
    /// Primary message: what went wrong.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint: what to do about it.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An `ERROR` with the given code and message.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: std::borrow::Cow::Borrowed(code),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A `FATAL` with the given code and message.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Encodes as `ErrorResponse` (`E`), or `NoticeResponse` (`N`) for notices.
    pub fn encode(&self, buf: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => b'E',
            Severity::Notice | Severity::Warning => b'N',
        };
        let mut w = MessageWriter::start(buf, Some(tag));
        w.u8(b'S').cstr(self.severity.as_str());
        w.u8(b'V').cstr(self.severity.as_str());
        w.u8(b'C').cstr(&self.code);
        w.u8(b'M').cstr(&self.message);
        if let Some(d) = &self.detail {
            w.u8(b'D').cstr(d);
        }
        if let Some(h) = &self.hint {
            w.u8(b'H').cstr(h);
        }
        w.u8(0);
    }
}

/// An error or notice received from a server, fields borrowed. The server
/// writes them in the session's client encoding: bytes that are not UTF-8
/// are read lossily (never refused: an error must always be understood).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedError<'a> {
    /// Localized severity (`S`).
    pub severity: Cow<'a, str>,
    /// SQLSTATE (`C`).
    pub code: Cow<'a, str>,
    /// Primary message (`M`).
    pub message: Cow<'a, str>,
    /// Detail (`D`).
    pub detail: Option<Cow<'a, str>>,
    /// Hint (`H`).
    pub hint: Option<Cow<'a, str>>,
}

/// Decodes a complete `E` or `N` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<ReceivedError<'_>, CodecError> {
    let tag = *frame_bytes.first().ok_or(CodecError::Truncated("tag"))?;
    let tag = if tag == b'N' { b'N' } else { b'E' };
    let mut r = Reader::new(frame::body(frame_bytes, tag)?);
    let mut out = ReceivedError::default();
    loop {
        let field = r.u8("error field type")?;
        if field == 0 {
            break;
        }
        let value = String::from_utf8_lossy(r.cstr_bytes("error field")?);
        match field {
            b'S' => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            b'D' => out.detail = Some(value),
            b'H' => out.hint = Some(value),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = BytesMut::new();
        ErrorFields::error("28P01", "token expired 3 minutes ago")
            .with_hint("get a new token")
            .encode(&mut buf);
        let e = decode(&buf).unwrap();
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "28P01");
        assert_eq!(e.message, "token expired 3 minutes ago");
        assert_eq!(e.hint.as_deref(), Some("get a new token"));
        // A message in another encoding (LATIN1 here) is read, not refused.
        let mut latin1 = BytesMut::new();
        ErrorFields::error("22P02", "x").encode(&mut latin1);
        let frame = [&latin1[..latin1.len() - 4], b"\xab 4111 \xbb\0\0"].concat();
        let len = (frame.len() - 1) as u32;
        let mut frame = frame;
        frame[1..5].copy_from_slice(&len.to_be_bytes());
        let e = decode(&frame).unwrap();
        assert_eq!(e.code, "22P02");
    }
}
