//! `application_name`: the person behind a session upstream, the client's
//! own name for the client.
//!
//! The gateway logs in upstream with `application_name` naming the person
//! (`report-tool via portcullis: alice@example.com`), so `pg_stat_activity`
//! and the server log say who runs what. Clients read their own name back
//! (the `ParameterStatus` at start-up and after `SET`/`RESET`, `SHOW
//! application_name`, `current_setting('application_name')`), and pools
//! compare it with what they set: what the server reports as the gateway's
//! name is turned back into the name the client asked for, as PostgreSQL
//! would have reported it. Anything the client sets itself passes as it is.

use bytes::BytesMut;

use crate::identity::Identity;
use crate::protocols::postgres::codec::error_response::{ErrorFields, Severity};
use crate::protocols::postgres::codec::{data_row, parameter_status, peek_frame, sqlstate};

/// PostgreSQL's identifier limit in bytes (`NAMEDATALEN - 1`), which is
/// also what `pg_stat_activity` keeps of an `application_name`.
const MAX_IDENTIFIER: usize = 63;

/// The parameter's name.
const NAME: &str = "application_name";

/// The name the gateway gives a session upstream: the client's application
/// (if any) and the person, with the person kept whole where 63 bytes allow
/// (for a long actor chain, the principal and the current actor).
pub fn upstream_name(client: Option<&str>, identity: &Identity) -> String {
    let who = identity.chain_text();
    let app = client.filter(|a| !a.is_empty());
    let mut name = match app {
        Some(a) => format!("{a} via portcullis: {who}"),
        None => format!("portcullis: {who}"),
    };
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    let bare = format!("portcullis: {who}");
    if let Some(a) = app.filter(|_| bare.len() + " via ".len() < MAX_IDENTIFIER) {
        // A long application name is cut, never the person.
        let room = MAX_IDENTIFIER - bare.len() - " via ".len();
        return format!("{} via {bare}", cut(a, room));
    }
    // PostgreSQL turns non-ASCII into "?", so the elision is ASCII.
    name = bare;
    if let (true, Some(current)) = (name.len() > MAX_IDENTIFIER, identity.actor_chain.first()) {
        name = if identity.actor_chain.len() > 1 {
            format!("portcullis: {} > ... > {current}", identity.user)
        } else {
            format!("portcullis: {} > {current}", identity.user)
        };
    }
    cut(&name, MAX_IDENTIFIER).to_string()
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The notice PostgreSQL sends right after `AuthenticationOk` when a
/// client's start-up `application_name` is longer than it keeps (the
/// gateway's own, shorter name draws none from the server).
pub fn truncation_notice(client: Option<&str>) -> Option<ErrorFields> {
    let name = client.filter(|n| n.len() > MAX_IDENTIFIER)?;
    Some(ErrorFields {
        severity: Severity::Notice,
        code: std::borrow::Cow::Borrowed(sqlstate::NAME_TOO_LONG),
        message: format!(
            "identifier \"{name}\" will be truncated to \"{}\"",
            cut(name, MAX_IDENTIFIER)
        ),
        detail: None,
        hint: None,
    })
}

/// How `application_name` reads on each side of one session.
#[derive(Debug, Clone, Default)]
pub struct AppName {
    /// The value the server reported for the gateway's name at start-up.
    upstream: Option<Vec<u8>>,
    /// What PostgreSQL would have reported to the client for its own name.
    client: Vec<u8>,
}

impl AppName {
    /// Reads the upstream's start-up `greeting` (its `ParameterStatus`
    /// messages and final `ReadyForQuery`) for the value the server holds
    /// for the gateway's name, and returns the greeting the client gets:
    /// the same, with `application_name` as the client set it.
    pub fn learn(greeting: &[u8], client: Option<&str>) -> (AppName, BytesMut) {
        let mut major = 0u32;
        let mut upstream = None;
        let mut pos = 0;
        while let Ok(Some(h)) = peek_frame(&greeting[pos..], greeting.len()) {
            let Some(frame) = greeting.get(pos..pos + h.total_len) else {
                break;
            };
            if h.tag == b'S' {
                if let Ok((name, value)) = parameter_status::decode(frame) {
                    if name == NAME {
                        upstream = Some((pos, h.total_len, value.as_bytes().to_vec()));
                    } else if name == "server_version" {
                        major = value
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .and_then(|m| m.parse().ok())
                            .unwrap_or(0);
                    }
                }
            }
            pos += h.total_len;
        }
        let names = AppName {
            upstream: upstream.as_ref().map(|(_, _, v)| v.clone()),
            client: reported(client.unwrap_or(""), major).into_bytes(),
        };
        let mut out = BytesMut::with_capacity(greeting.len());
        match upstream {
            Some((at, len, _)) => {
                out.extend_from_slice(&greeting[..at]);
                parameter_status::encode(&mut out, NAME, &names.client);
                out.extend_from_slice(&greeting[at + len..]);
            }
            None => out.extend_from_slice(greeting),
        }
        (names, out)
    }

    /// The `ParameterStatus` frame the client gets for a complete one from
    /// the server, when it reports the gateway's name; `None` keeps it.
    pub fn status_for_client(&self, frame: &[u8]) -> Option<BytesMut> {
        let upstream = self.upstream.as_deref()?;
        let (name, value) = parameter_status::decode(frame).ok()?;
        if name != NAME || value.as_bytes() != upstream {
            return None;
        }
        let mut out = BytesMut::new();
        parameter_status::encode(&mut out, NAME, &self.client);
        Some(out)
    }

    /// The size of a one-column `DataRow` frame holding the gateway's name:
    /// only rows of that size are looked at.
    pub fn row_size(&self) -> Option<usize> {
        self.upstream.as_ref().map(|u| 1 + 4 + 2 + 4 + u.len())
    }

    /// The `DataRow` frame the client gets for a complete one-column row
    /// that holds the gateway's name (`SHOW application_name`,
    /// `current_setting('application_name')`); `None` keeps it. Rows of
    /// several columns (a `pg_stat_activity` listing) keep the name the
    /// server holds.
    pub fn row_for_client(&self, frame: &[u8]) -> Option<BytesMut> {
        let upstream = self.upstream.as_deref()?;
        let values = data_row::decode(frame).ok()?;
        if values.len() != 1 || values[0] != Some(upstream) {
            return None;
        }
        let mut out = BytesMut::new();
        data_row::encode(&mut out, std::iter::once(Some(self.client.as_slice())));
        Some(out)
    }
}

/// `name` as a PostgreSQL server of major version `major` reports it: cut
/// to 63 bytes on a character boundary, then bytes outside printable ASCII
/// become `?` before version 16 and `\xNN` from 16 on.
fn reported(name: &str, major: u32) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in cut(name, MAX_IDENTIFIER).as_bytes() {
        if (32..=126).contains(&b) {
            out.push(b as char);
        } else if major >= 16 {
            out.push_str(&format!("\\x{b:02x}"));
        } else {
            out.push('?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::postgres::codec::ready_for_query;

    fn identity(user: &str, chain: &[&str]) -> Identity {
        Identity {
            subject: user.into(),
            user: user.into(),
            groups: Vec::new(),
            issuer: "https://issuer.example".into(),
            actor_chain: chain.iter().map(|s| s.to_string()).collect(),
            expires_at: 0,
            delegation: None,
        }
    }

    fn greeting(app: &str) -> BytesMut {
        let mut g = BytesMut::new();
        parameter_status::encode(&mut g, "server_version", b"15.8 (Debian 15.8-0+deb12u1)");
        parameter_status::encode(&mut g, NAME, app.as_bytes());
        parameter_status::encode(&mut g, "TimeZone", b"UTC");
        ready_for_query::encode(&mut g, ready_for_query::TransactionStatus::Idle);
        g
    }

    #[test]
    fn the_person_is_named_upstream_and_a_long_application_is_cut_not_the_person() {
        let alice = identity("alice@example.com", &[]);
        assert_eq!(
            upstream_name(Some("psql"), &alice),
            "psql via portcullis: alice@example.com"
        );
        assert_eq!(upstream_name(None, &alice), "portcullis: alice@example.com");
        let long = upstream_name(Some(&"a".repeat(80)), &alice);
        assert_eq!(long.len(), 63);
        assert!(
            long.ends_with(" via portcullis: alice@example.com"),
            "{long}"
        );
        let chained = identity(
            "alice@example.com",
            &["agent:c-with-a-long-name", "agent:b-with-a-long-name"],
        );
        assert_eq!(
            upstream_name(Some("job"), &chained),
            "portcullis: alice@example.com > ... > agent:c-with-a-long-name"
        );
    }

    #[test]
    fn the_client_reads_back_its_own_name() {
        let (names, out) = AppName::learn(&greeting("psql via portcullis: a"), Some("psql"));
        assert_eq!(out, greeting("psql"));
        let mut s = BytesMut::new();
        parameter_status::encode(&mut s, NAME, b"psql via portcullis: a");
        assert_eq!(names.status_for_client(&s).unwrap(), {
            let mut e = BytesMut::new();
            parameter_status::encode(&mut e, NAME, b"psql");
            e
        });
        // A name the client set itself passes.
        let mut own = BytesMut::new();
        parameter_status::encode(&mut own, NAME, b"pool-2");
        assert!(names.status_for_client(&own).is_none());
        let mut row = BytesMut::new();
        data_row::encode(
            &mut row,
            std::iter::once(Some(&b"psql via portcullis: a"[..])),
        );
        assert_eq!(names.row_size(), Some(row.len()));
        assert_eq!(
            data_row::decode(&names.row_for_client(&row).unwrap()).unwrap(),
            vec![Some(&b"psql"[..])]
        );
        let mut two = BytesMut::new();
        data_row::encode(
            &mut two,
            [Some(&b"psql via portcullis: a"[..]), None].into_iter(),
        );
        assert!(names.row_for_client(&two).is_none());
    }

    #[test]
    fn a_long_name_reads_back_cut_with_postgres_notice() {
        let long = "x".repeat(65);
        assert_eq!(reported(&long, 15), "x".repeat(63));
        assert_eq!(reported(&"\u{e9}".repeat(40), 15), "?".repeat(62));
        let notice = truncation_notice(Some(&long)).expect("notice");
        assert_eq!(notice.code, "42622");
        assert_eq!(
            notice.message,
            format!(
                "identifier \"{long}\" will be truncated to \"{}\"",
                "x".repeat(63)
            )
        );
        assert!(truncation_notice(Some(&"x".repeat(63))).is_none());
        assert!(truncation_notice(None).is_none());
    }

    #[test]
    fn cuts_on_a_char_boundary() {
        let s = "\u{e9}".repeat(40); // 80 bytes
        assert_eq!(cut(&s, 63).len(), 62);
    }

    #[test]
    fn no_name_reads_back_empty_and_non_ascii_as_the_server_would() {
        let (_, out) = AppName::learn(&greeting("portcullis: a"), None);
        assert_eq!(out, greeting(""));
        assert_eq!(reported("caf\u{e9}", 15), "caf??");
        assert_eq!(reported("caf\u{e9}", 16), "caf\\xc3\\xa9");
    }
}
