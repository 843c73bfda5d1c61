//! Client encodings. PostgreSQL converts the text a client sends from the
//! session's `client_encoding` to the server's encoding before it reads it,
//! and only UTF-8 is read by the gateway exactly as the server reads it:
//!
//! - client-only encodings (`SJIS`, `BIG5`, `GBK`, ...) hide ASCII bytes,
//!   a backslash among them, inside multibyte characters;
//! - `EUC_JP` and `EUC_TW` map two byte sequences to one character, so two
//!   dollar-quote tags the gateway tells apart are one tag to the server;
//! - in single-byte encodings a character is one byte to the client and two
//!   or three to a UTF-8 server, so names are cut at 63 bytes elsewhere.
//!
//! So sessions run in UTF-8 (on a UTF-8 or `SQL_ASCII` server, which do not
//! convert it): any other client encoding is refused, at start and when a
//! statement would switch to it. Reading other encodings needs PostgreSQL's
//! own conversion tables (a named gap).

/// PostgreSQL's spelling-insensitive form of an encoding name
/// (`clean_encoding_name`: letters and digits only, lower case).
pub fn clean_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether `name` is UTF-8 (`UTF8`, `utf-8`, `Unicode`, ...).
pub fn is_utf8(name: &str) -> bool {
    matches!(clean_name(name).as_str(), "utf8" | "unicode")
}

/// Whether a server encoding reads UTF-8 text unconverted (UTF-8 itself, or
/// `SQL_ASCII`, which does not convert).
pub fn server_reads_utf8(name: &str) -> bool {
    is_utf8(name) || clean_name(name) == "sqlascii"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_as_postgres_compares_them() {
        for n in ["UTF8", "utf-8", "Unicode", "U.T.F.8"] {
            assert!(is_utf8(n), "{n}");
        }
        for n in [
            "LATIN1",
            "SJIS",
            "windows932",
            "S.JIS",
            "Shift-JIS.",
            "EUC_JP",
            "SQL_ASCII",
        ] {
            assert!(!is_utf8(n), "{n}");
        }
        assert!(server_reads_utf8("SQL_ASCII"));
        assert!(!server_reads_utf8("EUC_JP"));
    }
}
