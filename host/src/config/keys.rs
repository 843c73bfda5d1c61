//! Which protocol each key of a `[[targets]]` or `[[listeners]]` table
//! belongs to. Shared keys (a target's name, who may use it, its plugin
//! chain, its durability; a listener's address and limits) mean the same
//! for every protocol; the rest are one protocol's own. A key that is not
//! known is refused with the keys each protocol takes, so `check-config`
//! says which key belongs to which protocol.

use super::model::Protocol;

/// Who a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Every protocol.
    All,
    /// These protocols only.
    Only(&'static [Protocol]),
}

const POSTGRES: Owner = Owner::Only(&[Protocol::Postgres]);
const SSH: Owner = Owner::Only(&[Protocol::Ssh]);
/// Keys every upstream shares: where it is and how long to wait for it.
const UPSTREAM: Owner = Owner::Only(&[Protocol::Postgres, Protocol::Ssh, Protocol::Kubernetes]);
/// Whom the gateway logs in as (a Kubernetes target impersonates instead).
const LOGIN: Owner = Owner::Only(&[Protocol::Postgres, Protocol::Ssh]);
/// The gateway's own secret (a password or a token) and upstream TLS.
const SECRET: Owner = Owner::Only(&[Protocol::Postgres, Protocol::Kubernetes]);
/// Terminal recordings (SSH exec and shell, Kubernetes exec and attach).
const TERMINAL: Owner = Owner::Only(&[Protocol::Ssh, Protocol::Kubernetes]);

/// The keys of a `[[targets]]` table.
pub const TARGET_KEYS: &[(&str, Owner)] = &[
    ("protocol", Owner::All),
    ("name", Owner::All),
    ("allow_groups", Owner::All),
    ("allow_users", Owner::All),
    ("plugins", Owner::All),
    ("durability", Owner::All),
    ("host", UPSTREAM),
    ("port", UPSTREAM),
    ("user", LOGIN),
    ("connect_timeout_secs", UPSTREAM),
    ("database", POSTGRES),
    ("password_env", SECRET),
    ("password_file", SECRET),
    ("password_command", SECRET),
    ("oauth2", SECRET),
    ("azure_managed_identity", SECRET),
    ("token_cache_secs", SECRET),
    ("tls", SECRET),
    ("tls_ca_file", SECRET),
    ("roles", POSTGRES),
    ("default_role", POSTGRES),
    ("private_key_file", SSH),
    ("known_hosts_file", SSH),
    ("recording_limit_mib", TERMINAL),
    ("local_forwarding", SSH),
    ("upstream_ca_key_file", SSH),
];

/// The keys of a `[[listeners]]` table.
pub const LISTENER_KEYS: &[(&str, Owner)] = &[
    ("protocol", Owner::All),
    ("address", Owner::All),
    ("max_clients", Owner::All),
    ("startup_timeout_secs", Owner::All),
    ("tls_cert_file", SECRET),
    ("tls_key_file", SECRET),
    ("plaintext_loopback_dev", SECRET),
    ("max_message_bytes", POSTGRES),
    ("host_key_file", SSH),
    ("user_ca_key_file", SSH),
];

/// A key of a `[[targets]]` or `[[listeners]]` table that belongs to
/// another protocol than the table's: where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    /// The key's path, e.g. `targets[1].database`.
    pub key: String,
    /// What is wrong and which keys the table's protocol takes.
    pub message: String,
}

/// Checks, on the parsed TOML before it becomes a configuration, that every
/// key of each `[[targets]]` and `[[listeners]]` table belongs to that
/// table's protocol (keys no protocol knows are left to the parser).
pub fn check_owners(raw: &toml::Table) -> Result<(), Misplaced> {
    for (section, singular, table) in [
        ("targets", "target", TARGET_KEYS),
        ("listeners", "listener", LISTENER_KEYS),
    ] {
        let Some(toml::Value::Array(entries)) = raw.get(section) else {
            continue;
        };
        for (i, entry) in entries.iter().enumerate() {
            let Some(entry) = entry.as_table() else {
                continue;
            };
            let protocol = match entry.get("protocol").and_then(|p| p.as_str()) {
                None => Protocol::Postgres,
                Some(name) => match Protocol::parse(name) {
                    Some(p) => p,
                    // The parser names the bad value.
                    None => continue,
                },
            };
            for key in entry.keys() {
                let Some((_, Owner::Only(owners))) = table.iter().find(|(k, _)| k == key) else {
                    continue;
                };
                if owners.contains(&protocol) {
                    continue;
                }
                let whose = owners
                    .iter()
                    .map(|p| format!("\"{}\"", p.as_str()))
                    .collect::<Vec<_>>()
                    .join(" and ");
                return Err(Misplaced {
                    key: format!("{section}[{i}].{key}"),
                    message: format!(
                        "`{key}` is a key of protocol {whose}, and this {singular} has protocol = \"{}\"{}",
                        protocol.as_str(),
                        described_for(section, table, protocol)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What a table of one protocol takes, in words.
fn described_for(section: &str, table: &[(&str, Owner)], protocol: Protocol) -> String {
    let own = table
        .iter()
        .filter(|(_, o)| match o {
            Owner::All => true,
            Owner::Only(ps) => ps.contains(&protocol),
        })
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "; a [[{section}]] table with protocol = \"{}\" takes: {own}",
        protocol.as_str()
    )
}

/// The protocols a key table serves, in order of first mention.
fn protocols(table: &[(&str, Owner)]) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = Vec::new();
    for (_, owner) in table {
        if let Owner::Only(ps) = owner {
            for p in *ps {
                if !out.contains(p) {
                    out.push(*p);
                }
            }
        }
    }
    out
}

/// What a table takes, in words: the shared keys, then each protocol's.
fn described(section: &str, table: &[(&str, Owner)]) -> String {
    let names = |keep: &dyn Fn(&Owner) -> bool| {
        table
            .iter()
            .filter(|(_, o)| keep(o))
            .map(|(k, _)| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "; a {section} table takes, for every protocol: {}",
        names(&|o| *o == Owner::All)
    );
    for p in protocols(table) {
        let own = names(&|o| matches!(o, Owner::Only(ps) if ps.contains(&p)));
        text.push_str(&format!("; for protocol = \"{}\": {own}", p.as_str()));
    }
    text
}

/// A parser error about an unknown key of `[[targets]]` or
/// `[[listeners]]`, with the list of expected keys replaced by the keys
/// each protocol takes; any other error as it is.
pub fn explain(message: String) -> String {
    const UNKNOWN: &str = "unknown field `";
    const EXPECTED: &str = ", expected one of ";
    let Some(at) = message.find(UNKNOWN) else {
        return message;
    };
    let Some(list) = message[at..].find(EXPECTED).map(|i| at + i) else {
        return message;
    };
    let start = list + EXPECTED.len();
    let end = message[start..]
        .find('\n')
        .map_or(message.len(), |i| start + i);
    let mut expected: Vec<&str> = message[start..end]
        .split(", ")
        .map(|k| k.trim().trim_matches('`'))
        .collect();
    expected.sort_unstable();
    for (section, table) in [
        ("[[targets]]", TARGET_KEYS),
        ("[[listeners]]", LISTENER_KEYS),
    ] {
        let mut keys: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        if keys == expected {
            return format!(
                "{}{}{}",
                &message[..list],
                described(section, table),
                &message[end..]
            );
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse_error(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// The tables list exactly the keys the parser takes: an unknown key is
    /// explained by them (if a key were added to a table's struct and not
    /// here, the parser's list would differ and the plain list would show).
    #[test]
    fn an_unknown_target_key_is_answered_with_each_protocols_keys() {
        let text = super::super::tests::MINIMAL
            .replace("user = \"gw\"", "user = \"gw\"\ndbname = \"shop\"");
        let e = parse_error(&text);
        assert!(e.contains("unknown field `dbname`"), "{e}");
        assert!(
            e.contains("a [[targets]] table takes, for every protocol: `protocol`, `name`"),
            "{e}"
        );
        assert!(
            e.contains("for protocol = \"postgres\": `host`, `port`, `user`, `connect_timeout_secs`, `database`"),
            "{e}"
        );
        assert!(!e.contains("expected one of"), "{e}");
    }

    #[test]
    fn an_unknown_listener_key_is_answered_with_each_protocols_keys() {
        let text = super::super::tests::MINIMAL.replace(
            "[[listeners]]\n",
            "[[listeners]]\nserver_name = \"db.example.com\"\n",
        );
        let e = parse_error(&text);
        assert!(e.contains("unknown field `server_name`"), "{e}");
        assert!(
            e.contains("a [[listeners]] table takes, for every protocol: `protocol`, `address`"),
            "{e}"
        );
        assert!(
            e.contains("for protocol = \"postgres\": `tls_cert_file`"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_protocol_is_refused_with_the_tables_own_keys() {
        // A PostgreSQL key on an SSH target.
        let ssh_target = super::super::tests::MINIMAL
            .replace("name = \"orders\"", "name = \"orders\"\nprotocol = \"ssh\"");
        let e = parse_error(&ssh_target);
        assert!(
            e.contains("`database` is a key of protocol \"postgres\", and this target has protocol = \"ssh\""),
            "{e}"
        );
        assert!(e.contains("`private_key_file`, `known_hosts_file`"), "{e}");
        assert!(e.contains("targets[0].database"), "{e}");
        // An SSH key on a PostgreSQL (default) target and listener.
        let e = parse_error(&super::super::tests::MINIMAL.replace(
            "name = \"orders\"",
            "name = \"orders\"\nknown_hosts_file = \"/etc/ssh/known_hosts\"",
        ));
        assert!(
            e.contains("`known_hosts_file` is a key of protocol \"ssh\", and this target has protocol = \"postgres\""),
            "{e}"
        );
        let e = parse_error(&super::super::tests::MINIMAL.replace(
            "[[listeners]]\n",
            "[[listeners]]\nhost_key_file = \"/etc/ssh/key\"\n",
        ));
        assert!(
            e.contains("`host_key_file` is a key of protocol \"ssh\", and this listener has protocol = \"postgres\""),
            "{e}"
        );
    }

    #[test]
    fn other_errors_are_left_alone() {
        let m = "unknown field `x`, expected one of `a`, `b`".to_string();
        assert_eq!(explain(m.clone()), m);
        assert_eq!(
            explain("missing field `name`".into()),
            "missing field `name`"
        );
    }
}
