//! Server errors as a masked session's client sees them: without the text
//! that could quote a masked value.

use bytes::{Bytes, BytesMut};

use crate::protocols::postgres::codec::error_response::{self, ErrorFields};

/// The server's error without what could quote a value, for sessions whose
/// policy masks results. A cast or function in a WHERE clause makes
/// PostgreSQL quote its input in many errors — `invalid input syntax for
/// type integer: "4111 1111 1111 1111"`, `improper relation name: ...`,
/// `relation "ada@example.com" does not exist`, `Key (card)=(...) already
/// exists` — so every server error keeps its SQLSTATE and severity but
/// loses its message, detail and hint, except integrity violations (class
/// 23), which keep their message (constraint names) and lose the detail,
/// and the classes whose messages never quote data (connections,
/// transactions, privileges, resources, operator intervention). `None`:
/// relay it as it is. An error the gateway cannot read is withheld whole.
pub(super) fn scrubbed_error(frame: &[u8]) -> Option<Bytes> {
    const QUOTES_NO_DATA: &[&str] = &[
        "08", "0A", "25", "28", "2D", "3D", "40", "53", "54", "55", "57", "58",
    ];
    let e = error_response::decode(frame).unwrap_or_default();
    let code = e.code;
    let class = code.get(..2).unwrap_or("");
    if QUOTES_NO_DATA.contains(&class) || code == "42501" {
        return None;
    }
    let valid = code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    let code: std::borrow::Cow<'static, str> = if valid {
        code.to_string().into()
    } else {
        "XX000".into()
    };
    let fields = if class == "23" {
        let mut f = ErrorFields::error("23000", e.message.to_string());
        f.code = code;
        f
    } else {
        let mut f = ErrorFields::error(
            "XX000",
            format!("the statement failed with SQLSTATE {code}; the database's message is withheld on this target because it may quote data masked for you"),
        )
        .with_hint("check the values, names and casts the statement uses, including in WHERE clauses; the SQLSTATE says which kind of error it is");
        f.code = code;
        f
    };
    let mut b = BytesMut::new();
    fields.encode(&mut b);
    Some(b.freeze())
}
