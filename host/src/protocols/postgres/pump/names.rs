//! Names of prepared statements and portals, checked before the rest of a
//! message is read: PostgreSQL compares names by their first 63 bytes and
//! reads them in the session's client encoding, so a name the gateway
//! tracks must mean one thing to both.

use crate::protocols::postgres::codec::tags::frontend as fe;

/// The longest prepared statement or portal name the gateway accepts:
/// PostgreSQL compares names by their first 63 bytes (NAMEDATALEN - 1), so
/// two longer names that differ only after them would be one to the
/// server and two to the gateway.
pub(super) const MAX_NAME: usize = 63;

/// Why a message naming `name` is refused, if it is: too long, or (when
/// names are tracked) not ASCII, as PostgreSQL converts names from the
/// client encoding too, so such a name could be another to the server.
pub(super) fn bad_name(name: &[u8], tracked: bool) -> Option<String> {
    if tracked && !name.is_ascii() {
        let shown = String::from_utf8_lossy(name);
        return Some(format!(
            "prepared statement and portal names must be ASCII through this gateway (\"{shown}\" is not): PostgreSQL reads a name in the session's client_encoding, so another name could mean the same statement to the server; use ASCII names"
        ));
    }
    if name.len() <= MAX_NAME {
        return None;
    }
    let shown: String = String::from_utf8_lossy(name).chars().take(20).collect();
    Some(format!(
        "prepared statement and portal names longer than {MAX_NAME} bytes are not accepted by this gateway (\"{shown}...\" has {} bytes): PostgreSQL compares only their first {MAX_NAME} bytes; use shorter names",
        name.len()
    ))
}

/// Why a Parse (statement), Bind (portal, statement), Describe or Close
/// (after its kind byte) or Execute is refused for a name that is too long
/// or (when `tracked`) not ASCII, read without decoding the rest of the
/// message. A Query names nothing.
pub(super) fn message_name_problem(tag: u8, frame: &[u8], tracked: bool) -> Option<String> {
    let body = frame.get(5..).unwrap_or_default();
    let (body, count) = match tag {
        fe::QUERY => return None,
        fe::BIND => (body, 2),
        fe::EXECUTE | fe::PARSE => (body, 1),
        _ => (body.get(1..).unwrap_or_default(), 1),
    };
    body.split(|&b| b == 0)
        .take(count)
        .find_map(|name| bad_name(name, tracked))
}
