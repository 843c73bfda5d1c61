//! Client encodings: the SQL text a client sends is in the session's
//! `client_encoding`, and PostgreSQL converts it to the server's encoding
//! before it reads it. The gateway reads it the same way for its checks and
//! forwards the bytes unchanged.
//!
//! - UTF-8: read as it is; text that is not valid UTF-8 is refused, as
//!   PostgreSQL refuses it.
//! - Every other encoding a server may use (`SQL_ASCII`, `LATIN1`..`LATIN10`,
//!   `WIN1250`..`WIN1258`, `KOI8R`, `EUC_JP`, `MULE_INTERNAL`, ...) keeps
//!   ASCII bytes for ASCII characters and uses only bytes from 0x80 up
//!   for the others. Each such byte is read as the Latin-1 character of
//!   the same number: quotes, backslashes, semicolons and keywords are
//!   where PostgreSQL sees them, and other characters stay other
//!   characters (a rule naming a table with non-ASCII letters matches
//!   only in UTF-8 sessions).
//! - Client-only encodings (`SJIS`, `BIG5`, `GBK`, `UHC`, `GB18030`,
//!   `JOHAB`, `SHIFT_JIS_2004`) put ASCII bytes (a backslash among them)
//!   inside multibyte characters: text with any byte from 0x80 up is
//!   refused in such a session, plain ASCII passes.

use std::borrow::Cow;

/// How the gateway reads a session's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientEncoding {
    /// UTF-8.
    #[default]
    Utf8,
    /// An ASCII-safe encoding other than UTF-8, read byte for byte.
    AsciiSafe,
    /// A client-only encoding: ASCII text only.
    AsciiOnly,
}

/// Encodings whose multibyte characters may contain ASCII bytes.
const CLIENT_ONLY: &[&str] = &[
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
];

/// Why text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// Not valid UTF-8 in a UTF-8 session.
    #[error("the statement is not valid UTF-8, the session's client_encoding")]
    NotUtf8,
    /// Non-ASCII text in a client-only encoding.
    #[error("the session's client_encoding is one whose multibyte characters can contain ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB), so the gateway accepts only ASCII text in it; use UTF8, or an encoding PostgreSQL can store")]
    NotAscii,
}

impl ClientEncoding {
    /// The encoding PostgreSQL names `name` (as in ParameterStatus
    /// `client_encoding`; case and `-`/`_` are ignored).
    pub fn from_name(name: &str) -> Self {
        let canonical: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if matches!(canonical.as_str(), "UTF8" | "UNICODE") {
            return ClientEncoding::Utf8;
        }
        let client_only = CLIENT_ONLY.iter().any(|e| e.replace('_', "") == canonical)
            || matches!(
                canonical.as_str(),
                "SHIFTJIS"
                    | "WIN932"
                    | "WIN936"
                    | "WIN949"
                    | "WIN950"
                    | "CP932"
                    | "CP936"
                    | "CP949"
                    | "CP950"
                    | "MSKANJI"
                    | "TCVN"
                    | "TCVN5712"
                    | "VSCII"
            );
        if client_only {
            ClientEncoding::AsciiOnly
        } else {
            ClientEncoding::AsciiSafe
        }
    }

    /// `bytes` as the gateway reads them.
    pub fn text<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, EncodingError> {
        if bytes.is_ascii() {
            // ASCII is ASCII in every encoding PostgreSQL supports.
            return Ok(Cow::Borrowed(
                std::str::from_utf8(bytes).map_err(|_| EncodingError::NotUtf8)?,
            ));
        }
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| EncodingError::NotUtf8),
            ClientEncoding::AsciiSafe => {
                Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
            }
            ClientEncoding::AsciiOnly => Err(EncodingError::NotAscii),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_postgres_reports_them() {
        assert_eq!(ClientEncoding::from_name("UTF8"), ClientEncoding::Utf8);
        assert_eq!(ClientEncoding::from_name("unicode"), ClientEncoding::Utf8);
        for e in [
            "LATIN1",
            "LATIN9",
            "WIN1252",
            "SQL_ASCII",
            "EUC_JP",
            "KOI8R",
            "ISO_8859_5",
        ] {
            assert_eq!(
                ClientEncoding::from_name(e),
                ClientEncoding::AsciiSafe,
                "{e}"
            );
        }
        for e in [
            "SJIS",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "JOHAB",
            "Shift_JIS_2004",
        ] {
            assert_eq!(
                ClientEncoding::from_name(e),
                ClientEncoding::AsciiOnly,
                "{e}"
            );
        }
    }

    #[test]
    fn text_keeps_the_ascii_structure_postgres_sees() {
        // LATIN1 "SELECT 'café'": é is 0xE9.
        let latin1 = b"SELECT 'caf\xe9' AS x";
        let t = ClientEncoding::AsciiSafe.text(latin1).unwrap();
        assert_eq!(t, "SELECT 'café' AS x");
        assert_eq!(
            ClientEncoding::Utf8.text(latin1),
            Err(EncodingError::NotUtf8)
        );
        // SJIS: 0x95 0x5C is one character whose second byte is a backslash.
        let sjis = b"SELECT E'\x95\x5c' AS x";
        assert!(ClientEncoding::AsciiOnly.text(sjis).is_err());
        assert_eq!(
            ClientEncoding::AsciiOnly.text(b"SELECT 1").unwrap(),
            "SELECT 1"
        );
    }
}
