//! Client encodings. PostgreSQL converts the text a client sends from the
//! session's `client_encoding` to the server's encoding before it reads it;
//! the gateway converts it the same way before it reads it, and forwards
//! the client's bytes unchanged.
//!
//! Read: UTF-8, `SQL_ASCII` (on a UTF-8 server PostgreSQL does not convert
//! it, only checks that it is UTF-8) and the single-byte encodings
//! (`LATIN1`–`LATIN10`, `WIN1250`–`WIN1258`, `WIN866`, `WIN874`, `KOI8R`,
//! `ISO_8859_5`–`8`), each byte one character by PostgreSQL's own tables.
//! Refused, at start and when a statement would switch to one:
//!
//! - client-only multibyte encodings (`SJIS`, `BIG5`, `GBK`, `UHC`,
//!   `GB18030`, `JOHAB`) hide ASCII bytes, a backslash among them, inside
//!   multibyte characters;
//! - `EUC_*` and `MULE_INTERNAL` map some byte sequences alike, so two
//!   dollar-quote tags the gateway tells apart could be one to the server;
//! - `KOI8U`, whose common decoders differ from PostgreSQL's table in a few
//!   letters (a name the gateway reads one way would be another table).
//!
//! Reading those needs PostgreSQL's own multibyte conversion tables (a
//! named gap in docs/configuration.md).

use std::borrow::Cow;

/// A client encoding the gateway reads, by PostgreSQL's canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEncoding {
    /// PostgreSQL's name for it (`UTF8`, `LATIN9`, `WIN1252`, ...).
    pub name: &'static str,
    table: Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// UTF-8 (and `SQL_ASCII`, checked as UTF-8).
    Utf8,
    /// ISO 8859-1: byte n is U+00nn.
    Latin1,
    /// A single-byte table, with what PostgreSQL's own table does
    /// otherwise than the decoder: for the C1 range, and bytes it leaves
    /// without a character.
    SingleByte(&'static encoding_rs::Encoding, C1, &'static [u8]),
}

/// Where PostgreSQL's table for bytes 0x80–0x9F differs from the decoder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum C1 {
    /// As the decoder reads them.
    Decoder,
    /// Byte n is U+00nn (ISO 8859-9, whose decoder is windows-1254).
    Controls,
    /// Bytes the decoder reads as C1 controls have no character (the
    /// windows code pages: PostgreSQL refuses their unassigned bytes).
    Unassigned,
}

/// Every encoding the gateway reads: PostgreSQL's canonical name, its
/// table, and the other names PostgreSQL accepts for it (compared cleaned).
static READ: &[(&str, Table, &[&str])] = {
    use encoding_rs::*;
    use Table::*;
    &[
        ("UTF8", Utf8, &["unicode"]),
        ("SQL_ASCII", Utf8, &[]),
        ("LATIN1", Latin1, &["iso88591"]),
        (
            "LATIN2",
            SingleByte(&ISO_8859_2_INIT, C1::Decoder, &[]),
            &["iso88592"],
        ),
        (
            "LATIN3",
            SingleByte(&ISO_8859_3_INIT, C1::Decoder, &[]),
            &["iso88593"],
        ),
        (
            "LATIN4",
            SingleByte(&ISO_8859_4_INIT, C1::Decoder, &[]),
            &["iso88594"],
        ),
        // ISO 8859-9 is windows-1254 from 0xA0 on.
        (
            "LATIN5",
            SingleByte(&WINDOWS_1254_INIT, C1::Controls, &[]),
            &["iso88599"],
        ),
        (
            "LATIN6",
            SingleByte(&ISO_8859_10_INIT, C1::Decoder, &[]),
            &["iso885910"],
        ),
        (
            "LATIN7",
            SingleByte(&ISO_8859_13_INIT, C1::Decoder, &[]),
            &["iso885913"],
        ),
        (
            "LATIN8",
            SingleByte(&ISO_8859_14_INIT, C1::Decoder, &[]),
            &["iso885914"],
        ),
        (
            "LATIN9",
            SingleByte(&ISO_8859_15_INIT, C1::Decoder, &[]),
            &["iso885915"],
        ),
        (
            "LATIN10",
            SingleByte(&ISO_8859_16_INIT, C1::Decoder, &[]),
            &["iso885916"],
        ),
        (
            "ISO_8859_5",
            SingleByte(&ISO_8859_5_INIT, C1::Decoder, &[]),
            &[],
        ),
        (
            "ISO_8859_6",
            SingleByte(&ISO_8859_6_INIT, C1::Decoder, &[]),
            &[],
        ),
        (
            "ISO_8859_7",
            SingleByte(&ISO_8859_7_INIT, C1::Decoder, &[]),
            &[],
        ),
        (
            "ISO_8859_8",
            SingleByte(&ISO_8859_8_INIT, C1::Decoder, &[]),
            &[],
        ),
        (
            "WIN1250",
            SingleByte(&WINDOWS_1250_INIT, C1::Unassigned, &[]),
            &["windows1250"],
        ),
        (
            "WIN1251",
            SingleByte(&WINDOWS_1251_INIT, C1::Unassigned, &[]),
            &["windows1251", "win"],
        ),
        (
            "WIN1252",
            SingleByte(&WINDOWS_1252_INIT, C1::Unassigned, &[]),
            &["windows1252"],
        ),
        (
            "WIN1253",
            SingleByte(&WINDOWS_1253_INIT, C1::Unassigned, &[]),
            &["windows1253"],
        ),
        (
            "WIN1254",
            SingleByte(&WINDOWS_1254_INIT, C1::Unassigned, &[]),
            &["windows1254"],
        ),
        (
            "WIN1255",
            SingleByte(&WINDOWS_1255_INIT, C1::Unassigned, &[0xCA]),
            &["windows1255"],
        ),
        (
            "WIN1256",
            SingleByte(&WINDOWS_1256_INIT, C1::Unassigned, &[]),
            &["windows1256"],
        ),
        (
            "WIN1257",
            SingleByte(&WINDOWS_1257_INIT, C1::Unassigned, &[]),
            &["windows1257"],
        ),
        (
            "WIN1258",
            SingleByte(&WINDOWS_1258_INIT, C1::Unassigned, &[]),
            &["windows1258", "abc", "tcvn", "tcvn5712", "vscii"],
        ),
        (
            "WIN866",
            SingleByte(&IBM866_INIT, C1::Decoder, &[]),
            &["windows866", "alt"],
        ),
        (
            "WIN874",
            SingleByte(&WINDOWS_874_INIT, C1::Unassigned, &[]),
            &["windows874"],
        ),
        (
            "KOI8R",
            SingleByte(&KOI8_R_INIT, C1::Decoder, &[]),
            &["koi8"],
        ),
    ]
};

impl ClientEncoding {
    /// UTF-8, the encoding sessions start in unless they say otherwise.
    pub const UTF8: ClientEncoding = ClientEncoding {
        name: "UTF8",
        table: Table::Utf8,
    };

    /// The encoding PostgreSQL calls `name` (any spelling it accepts), if
    /// the gateway reads it.
    pub fn named(name: &str) -> Option<ClientEncoding> {
        let clean = clean_name(name);
        READ.iter()
            .find(|(n, _, aliases)| clean_name(n) == clean || aliases.contains(&clean.as_str()))
            .map(|&(name, table, _)| ClientEncoding { name, table })
    }

    /// Whether it is read as UTF-8 (`UTF8`, `SQL_ASCII`): the only ones a
    /// `SQL_ASCII` database, which converts nothing, is served in.
    pub fn reads_as_utf8(&self) -> bool {
        self.table == Table::Utf8
    }

    /// Its index in the gateway's list (for an atomic), and back.
    pub fn index(self) -> u8 {
        READ.iter()
            .position(|(n, _, _)| *n == self.name)
            .map_or(0, |i| i as u8)
    }

    /// The encoding at `index` (UTF-8 for one out of range).
    pub fn at(index: u8) -> ClientEncoding {
        READ.get(index as usize)
            .map_or(Self::UTF8, |&(name, table, _)| ClientEncoding {
                name,
                table,
            })
    }

    /// `bytes` as PostgreSQL converts them to UTF-8, or `None` for bytes it
    /// refuses (not UTF-8; a byte with no character in the table).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        match self.table {
            // UTF-8 (the common case) is checked once; ASCII is itself in
            // every encoding read.
            Table::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            _ if bytes.is_ascii() => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            Table::Latin1 => Some(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
            Table::SingleByte(enc, c1, holes) => {
                if bytes.iter().any(|b| holes.contains(b)) {
                    return None;
                }
                if c1 == C1::Controls {
                    let mut out = String::with_capacity(bytes.len() + 8);
                    for &b in bytes {
                        if (0x80..0xA0).contains(&b) {
                            out.push(char::from(b));
                        } else {
                            out.push_str(
                                &enc.decode_without_bom_handling_and_without_replacement(&[b])?,
                            );
                        }
                    }
                    return Some(Cow::Owned(out));
                }
                let text = enc.decode_without_bom_handling_and_without_replacement(bytes)?;
                let control = |c: char| ('\u{80}'..='\u{9f}').contains(&c);
                if c1 == C1::Unassigned && text.chars().any(control) {
                    return None;
                }
                Some(text)
            }
        }
    }
}

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

/// Whether the gateway reads a session whose `client_encoding` is `name`.
pub fn is_read(name: &str) -> bool {
    ClientEncoding::named(name).is_some()
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

    #[test]
    fn single_byte_encodings_are_read_and_multibyte_client_ones_are_not() {
        for n in [
            "LATIN9",
            "latin-9",
            "ISO8859-15",
            "WIN1252",
            "windows-1252",
            "SQL_ASCII",
            "koi8",
        ] {
            assert!(is_read(n), "{n}");
        }
        for n in [
            "SJIS",
            "Shift-JIS.",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "EUC_JP",
            "KOI8U",
            "MULE_INTERNAL",
        ] {
            assert!(!is_read(n), "{n}");
        }
        let latin9 = ClientEncoding::named("LATIN9").expect("LATIN9");
        assert_eq!(
            latin9.decode(b"caf\xe9 \xa4").as_deref(),
            Some("caf\u{e9} \u{20ac}")
        );
        let latin1 = ClientEncoding::named("LATIN1").expect("LATIN1");
        assert_eq!(latin1.decode(b"\xa4\x80").as_deref(), Some("\u{a4}\u{80}"));
        let latin5 = ClientEncoding::named("LATIN5").expect("LATIN5");
        assert_eq!(latin5.decode(b"\x80\xfd").as_deref(), Some("\u{80}\u{131}"));
        assert_eq!(ClientEncoding::UTF8.decode(b"caf\xe9"), None);
        assert_eq!(ClientEncoding::at(latin9.index()), latin9);
    }
}
