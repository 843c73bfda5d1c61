//! What a first-party plugin's SSH rule matches (`block` refuses it,
//! `approve` holds it): command patterns anywhere on a command line, an
//! allow-list every command must be on, command lines that cannot be read
//! whole, interactive shells, subsystems and environment variables. See
//! [`crate::shell`] for how a command line is read and what no rule over
//! its text can guarantee.

use serde::Deserialize;

use crate::shell::{self, name_matches, Pattern};
use crate::{CommandLine, FileOperation, SshRequest};

/// The longest exec line a rule reads; a longer one matches every rule
/// about command lines (it is refused or held, not waved through).
pub const MAX_LINE: usize = 16 * 1024;

/// An SSH rule's conditions as configured (the keys a rule table takes
/// beside its name and audience).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRuleConfig {
    /// Command patterns that match wherever they appear on a line (`rm
    /// *`, `systemctl stop *`).
    #[serde(default)]
    pub commands: Vec<String>,
    /// The only commands allowed: every simple command must match one
    /// pattern from its first word; lines that cannot be read whole,
    /// compound syntax, redirections to files, shells, subsystems (SFTP
    /// writes files a later command may run: `~/.ssh/rc`, `~/.bashrc`) and
    /// environment variables (`BASH_ENV`) all match.
    #[serde(default)]
    pub only_commands: Option<Vec<String>>,
    /// Command lines that cannot be read whole (substitutions, expansions,
    /// shells and interpreters, variables set for a command).
    #[serde(default)]
    pub opaque_commands: bool,
    /// Interactive shells.
    #[serde(default)]
    pub shell: bool,
    /// Subsystems by name (`sftp`; `*` wildcards).
    #[serde(default)]
    pub subsystems: Vec<String>,
    /// Environment variables by name (`LD_*`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Local port forwards by endpoint, `host:port` with `*` wildcards
    /// (`*:22`, `10.0.0.*:*`); an address is matched in its usual form
    /// whatever its spelling, and any spelling of the host's loopback also
    /// as `127.0.0.1` and `localhost` (see [`forward_spellings`]); a host
    /// that cannot be read matches.
    #[serde(default)]
    pub forwards: Vec<String>,
    /// The only endpoints a local forward may reach (`db.internal:5432`,
    /// `10.0.0.*:5432`); every other forward matches. An entry with an
    /// address lists addresses only (never a name that looks like one),
    /// an entry with a name that name only. Safer than `forwards`: what a
    /// pattern did not foresee is refused rather than let through.
    #[serde(default)]
    pub only_forwards: Option<Vec<String>>,
    /// SFTP paths the rule matches when read (opened for reading, listed):
    /// `*` wildcards over the whole path (`/etc/*`, `*.ssh/*`).
    #[serde(default)]
    pub file_reads: Vec<String>,
    /// SFTP paths the rule matches when changed: written, created,
    /// removed, renamed (either name), linked, made or removed as a
    /// directory, their attributes set.
    #[serde(default)]
    pub file_writes: Vec<String>,
}

/// An SSH rule, ready to match.
#[derive(Debug, Clone, Default)]
pub struct SshRule {
    commands: Vec<Pattern>,
    only_commands: Option<Vec<Pattern>>,
    opaque_commands: bool,
    shell: bool,
    subsystems: Vec<String>,
    env: Vec<String>,
    forwards: Vec<String>,
    only_forwards: Option<Vec<String>>,
    file_reads: Vec<String>,
    file_writes: Vec<String>,
}

impl SshRule {
    /// The rule `config` describes; an error names an empty pattern.
    pub fn new(rule: &str, config: &SshRuleConfig) -> Result<Self, String> {
        let patterns = |list: &[String]| {
            list.iter()
                .map(|p| {
                    Pattern::parse(p)
                        .ok_or_else(|| format!("rule {rule:?}: a command pattern is empty"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            commands: patterns(&config.commands)?,
            only_commands: config.only_commands.as_deref().map(patterns).transpose()?,
            opaque_commands: config.opaque_commands,
            shell: config.shell,
            subsystems: config.subsystems.clone(),
            env: config.env.clone(),
            forwards: lowercase(&config.forwards),
            only_forwards: config.only_forwards.as_deref().map(lowercase),
            file_reads: config.file_reads.clone(),
            file_writes: config.file_writes.clone(),
        })
    }

    /// Whether the rule says nothing about SSH.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
            && self.only_commands.is_none()
            && !self.opaque_commands
            && !self.shell
            && self.subsystems.is_empty()
            && self.env.is_empty()
            && self.forwards.is_empty()
            && self.only_forwards.is_none()
            && self.file_reads.is_empty()
            && self.file_writes.is_empty()
    }

    /// What in an SFTP `operation` the rule matches, as [`Self::check`]
    /// says it; `None` when it does not match. A path with a `..` part
    /// matches every pattern of its kind (where it leads depends on the
    /// directory it is read from).
    pub fn check_file(&self, operation: &FileOperation) -> Option<String> {
        let (patterns, verb, paths): (&[String], &str, Vec<&str>) = match operation {
            FileOperation::Read(p) => (&self.file_reads, "reading", vec![p]),
            FileOperation::ListDirectory(p) => (&self.file_reads, "listing", vec![p]),
            FileOperation::Write(p) => (&self.file_writes, "writing", vec![p]),
            FileOperation::Remove(p) => (&self.file_writes, "removing", vec![p]),
            FileOperation::Rename((a, b)) => (&self.file_writes, "renaming", vec![a, b]),
            FileOperation::MakeDirectory(p) => (&self.file_writes, "making the directory", vec![p]),
            FileOperation::RemoveDirectory(p) => {
                (&self.file_writes, "removing the directory", vec![p])
            }
            FileOperation::SetAttributes(p) => {
                (&self.file_writes, "changing the attributes of", vec![p])
            }
        };
        if patterns.is_empty() {
            return None;
        }
        let listing = matches!(operation, FileOperation::ListDirectory(_));
        let moves_a_tree = matches!(
            operation,
            FileOperation::Rename(_) | FileOperation::RemoveDirectory(_)
        );
        for path in paths {
            let clean = clean_path(path);
            if clean.is_empty() || clean.split('/').any(|part| part == "..") {
                return Some(format!(
                    "{verb} `{path}` (a path a rule cannot place: empty, an open file's, or with `..`)"
                ));
            }
            // A directory holds what is under it: renaming or removing it
            // (or linking to it, a rename here) moves that too — for an
            // absolute pattern, anything it names under the path; for one
            // that starts with a wildcard (`*.ssh/*`), what sits directly
            // in it. A listing shows only names: it matches a pattern for
            // the path or for everything in it.
            let under = match clean.ends_with('/') {
                true => clean.clone(),
                false => format!("{clean}/"),
            };
            let matched = patterns.iter().find(|p| {
                shell::glob(p, &clean)
                    || (listing && shell::glob(p, &format!("{under}*")))
                    || (moves_a_tree
                        && match p.starts_with('/') {
                            true => shell::glob_prefix(p, &under),
                            false => shell::glob(p, &format!("{under}x")),
                        })
            });
            if let Some(p) = matched {
                return Some(format!("{verb} `{path}` (pattern `{p}`)"));
            }
        }
        None
    }

    /// What in `request` the rule matches, as a phrase a verdict can end
    /// with "is not allowed" or "needs approval" (``running `rm -rf /`
    /// (pattern `rm *`)``); `None` when it does not match.
    pub fn check(&self, request: &SshRequest) -> Option<String> {
        match request {
            SshRequest::Exec(line) => self.check_line(line),
            SshRequest::Shell(_) if self.shell => Some("an interactive shell".into()),
            SshRequest::Shell(_) if self.only_commands.is_some() => Some(
                "an interactive shell (this rule allows only listed commands, and lines typed in a shell are checked only as advice)".into(),
            ),
            SshRequest::Subsystem(name) if name_matches(&self.subsystems, name) => {
                Some(format!("the `{name}` subsystem"))
            }
            SshRequest::Subsystem(name) if self.only_commands.is_some() => Some(format!(
                "the `{name}` subsystem (this rule allows only listed commands, and a subsystem can write files they would run)"
            )),
            SshRequest::Env((name, _)) if name_matches(&self.env, name) => {
                Some(format!("setting the environment variable `{name}`"))
            }
            SshRequest::Env((name, _)) if self.only_commands.is_some() => Some(format!(
                "setting the environment variable `{name}` (this rule allows only listed commands, which a variable could change)"
            )),
            SshRequest::DirectTcpip(endpoint) => self.check_forward(&endpoint.host, endpoint.port),
            _ => None,
        }
    }

    /// What in a line typed in a shell the rule matches, as
    /// [`Self::check`] says it. `commands` and `opaque_commands` apply as
    /// to an exec line; `only_commands` was applied to the shell itself
    /// (it refuses shells, or an approver let this one through). Verdicts
    /// on typed lines are advisory: the text is the gateway's
    /// reconstruction, and what a line runs can hide in many ways.
    pub fn check_typed(&self, line: &CommandLine) -> Option<String> {
        let only = Self {
            only_commands: None,
            ..self.clone()
        };
        let what = only.check_line(&line.text)?;
        Some(format!("a shell line {what}"))
    }

    fn check_forward(&self, host: &str, port: u16) -> Option<String> {
        let what = format!("forwarding a port to {host}:{port}");
        let Some(endpoint) = Endpoint::read(host) else {
            return (!self.forwards.is_empty() || self.only_forwards.is_some()).then(|| {
                format!("{what} (a host the gateway cannot read as a name or an address)")
            });
        };
        if let Some(p) = self
            .forwards
            .iter()
            .find(|p| endpoint.spellings(port).iter().any(|s| shell::glob(p, s)))
        {
            return Some(format!("{what} (pattern `{p}`)"));
        }
        if let Some(only) = &self.only_forwards {
            if !only.iter().any(|p| endpoint.listed(p, port)) {
                return Some(format!(
                    "{what} (not on this rule's list of allowed endpoints)"
                ));
            }
        }
        if self.only_commands.is_some() {
            return Some(format!(
                "{what} (this rule allows only listed commands, and a forward reaches past them)"
            ));
        }
        None
    }

    /// Whether the rule looks at exec lines at all.
    fn judges_lines(&self) -> bool {
        !self.commands.is_empty() || self.only_commands.is_some() || self.opaque_commands
    }

    fn check_line(&self, text: &str) -> Option<String> {
        if text.len() > MAX_LINE && self.judges_lines() {
            return Some(format!(
                "a command line of {} bytes (one longer than {MAX_LINE} bytes is not read)",
                text.len()
            ));
        }
        let line = shell::parse(text);
        let opaque = || {
            format!(
                "a command line the gateway cannot read whole ({})",
                line.opaque.join("; ")
            )
        };
        if self.opaque_commands && !line.opaque.is_empty() {
            return Some(opaque());
        }
        for command in &line.commands {
            if let Some(p) = self.commands.iter().find(|p| p.matches_within(command)) {
                return Some(format!("running `{}` (pattern `{}`)", command.join(" "), p));
            }
        }
        let only = self.only_commands.as_ref()?;
        if !line.opaque.is_empty() {
            return Some(opaque());
        }
        if line.compound {
            return Some("compound shell syntax (if, for, while, case, functions) under an allow-list of simple commands".into());
        }
        if line.writes_files {
            return Some("a redirection that writes a file under an allow-list of commands".into());
        }
        let off_list = line
            .commands
            .iter()
            .find(|c| !only.iter().any(|p| p.matches(c)))?;
        Some(format!(
            "running `{}` (not on this rule's list of allowed commands)",
            off_list.join(" ")
        ))
    }
}

/// A path as file patterns see it: repeated `/` and `.` parts removed.
fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    match absolute {
        true => format!("/{joined}"),
        // `.` alone (the home directory) stays a place.
        false if joined.is_empty() && !path.is_empty() => ".".into(),
        false => joined,
    }
}

/// Endpoint patterns as matched: lower-case, IPv6 brackets removed
/// (`[::1]:22` is matched as `::1:22`).
fn lowercase(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .map(|p| p.to_ascii_lowercase().replace(['[', ']'], ""))
        .collect()
}

/// A forward's endpoint host, read as the host's resolver would.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// An address, in its usual form (an IPv4 address mapped into IPv6
    /// is the IPv4 address), whatever spelling it came in.
    Address(std::net::IpAddr),
    /// A name: lower-cased, without a trailing dot.
    Name(String),
}

impl Endpoint {
    /// `host` as sent; `None` when it is empty or holds whitespace or
    /// control characters (older resolvers read a prefix of such a text).
    fn read(host: &str) -> Option<Self> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        // A numeric IPv6 zone (`::1%0`) names an interface, not another
        // address.
        let unzoned = match host.split_once('%') {
            Some((address, _)) if address.contains(':') => address,
            _ => host,
        };
        if let Ok(v6) = unzoned.parse::<std::net::Ipv6Addr>() {
            return Some(Self::Address(match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            }));
        }
        if host.contains('%') {
            return None;
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        Some(match inet_aton(&name) {
            Some(v4) => Self::Address(v4.into()),
            None => Self::Name(name),
        })
    }

    /// Whether it is this machine, as the host sees it: a loopback or
    /// unspecified address, or `localhost`.
    fn is_loopback(&self) -> bool {
        match self {
            Self::Address(ip) => ip.is_loopback() || ip.is_unspecified(),
            Self::Name(name) => {
                name == "localhost"
                    || name.ends_with(".localhost")
                    || name == "localhost.localdomain"
            }
        }
    }

    /// What `forwards` patterns are matched against (any match is a
    /// match): the host as read, and for any spelling of the host's own
    /// loopback also `127.0.0.1` and `localhost`, so that a pattern on
    /// either names them all.
    fn spellings(&self, port: u16) -> Vec<String> {
        let mut out = vec![match self {
            Self::Address(ip) => format!("{ip}:{port}"),
            Self::Name(name) => format!("{name}:{port}"),
        }];
        if self.is_loopback() {
            for alias in ["127.0.0.1", "localhost"] {
                let spelled = format!("{alias}:{port}");
                if !out.contains(&spelled) {
                    out.push(spelled);
                }
            }
        }
        out
    }

    /// Whether an `only_forwards` entry lists it. An entry whose host is
    /// an address pattern (digits, dots, colons, hex and `*` only) lists
    /// only addresses — never a name, which could be
    /// `10.0.0.5.attacker.example` resolving anywhere — and an entry with
    /// a name lists only that name.
    fn listed(&self, entry: &str, port: u16) -> bool {
        let Some((host, _)) = entry.rsplit_once(':') else {
            return false;
        };
        if host.chars().all(|c| c == '*') {
            return shell::glob(entry, &self.spellings(port)[0]);
        }
        let address_pattern = host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '*'))
            && host.chars().any(|c| c.is_ascii_digit() || c == ':');
        match self {
            Self::Address(ip) => address_pattern && shell::glob(entry, &format!("{ip}:{port}")),
            Self::Name(name) => !address_pattern && shell::glob(entry, &format!("{name}:{port}")),
        }
    }
}

/// The ways `forwards` patterns see a forward's endpoint (see
/// `Endpoint::spellings`); `None` for a host that cannot be read.
pub fn forward_spellings(host: &str, port: u16) -> Option<Vec<String>> {
    Endpoint::read(host).map(|e| e.spellings(port))
}

/// An IPv4 address in the spellings C's `inet_aton` accepts: one to four
/// parts, each decimal, octal (`0` first) or hexadecimal (`0x` first),
/// the last part filling the remaining bytes.
fn inet_aton(text: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 8 {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let tail_bytes = 4 - leading.len();
    if tail_bytes < 4 && *last >= 1u32 << (8 * tail_bytes) {
        return None;
    }
    let mut address = 0u32;
    for (i, v) in leading.iter().enumerate() {
        address |= v << (8 * (3 - i));
    }
    address |= last;
    Some(std::net::Ipv4Addr::from(address))
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> SshRule {
        let config: SshRuleConfig = serde_json::from_str(json).expect("config");
        SshRule::new("test", &config).expect("rule")
    }

    fn exec(line: &str) -> SshRequest {
        SshRequest::Exec(line.into())
    }

    #[test]
    fn typed_lines_meet_command_patterns_but_not_the_allow_list() {
        let typed = |text: &str| CommandLine {
            text: text.into(),
            exact: false,
        };
        let r = rule(r#"{"commands": ["rm *"], "opaque_commands": true}"#);
        let why = r.check_typed(&typed("sudo rm -rf /srv")).expect("matched");
        assert!(
            why.starts_with("a shell line running `sudo rm -rf /srv`"),
            "{why}"
        );
        assert!(r.check_typed(&typed("echo $(cat /etc/shadow)")).is_some());
        assert_eq!(r.check_typed(&typed("ls -l")), None);
        // The allow-list judged the shell itself (an approver let it run).
        let only = rule(r#"{"only_commands": ["ls *"]}"#);
        assert!(only.check(&SshRequest::Shell(None)).is_some());
        assert_eq!(only.check_typed(&typed("uptime")), None);
    }

    #[test]
    fn command_patterns_match_every_spelling_of_the_same_words() {
        let r = rule(r#"{"commands": ["rm *"]}"#);
        for line in [
            "rm -rf /tmp/x",
            "'r'm -rf /tmp/x",
            "r\\m x",
            "/bin/rm x",
            "ls; rm x",
            "true && sudo rm x",
            "ls | xargs rm",
            "(rm x)",
            "{ rm x; }",
        ] {
            assert!(r.check(&exec(line)).is_some(), "{line}");
        }
        assert!(r.check(&exec("ls -la")).is_none());
        // What the text does not show is not matched by patterns alone...
        assert!(r.check(&exec("$(echo cm0= | base64 -d) x")).is_none());
        // ...and is by `opaque_commands`.
        let strict = rule(r#"{"commands": ["rm *"], "opaque_commands": true}"#);
        for line in [
            "$(printf rm) x",
            "bash -c 'rm x'",
            "echo cm0= | base64 -d | sh",
            "`printf rm` x",
        ] {
            assert!(strict.check(&exec(line)).is_some(), "{line}");
        }
    }

    fn forward(host: &str, port: u16) -> SshRequest {
        SshRequest::DirectTcpip(crate::Endpoint {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn forward_patterns_match_every_spelling_of_an_address() {
        let r = rule(r#"{"forwards": ["127.0.0.1:*", "*.internal:22", "10.0.0.*:5432"]}"#);
        for (host, port) in [
            ("127.0.0.1", 80),
            ("127.1", 80),
            ("0x7f.0.0.1", 80),
            ("0x7f000001", 80),
            ("2130706433", 80),
            ("0177.0.0.1", 80),
            ("::ffff:127.0.0.1", 80),
            ("[::ffff:7f00:1]", 80),
            ("DB.Internal", 22),
            ("db.internal.", 22),
            ("10.0.0.9", 5432),
            ("012.0.0.9", 5432),
            // A zone names an interface, not another address.
            ("::ffff:127.0.0.1%0", 80),
            ("[::ffff:7f00:1%lo]", 80),
            // Every spelling of the host's own loopback is 127.0.0.1.
            ("127.0.0.2", 80),
            ("::1", 80),
            ("0", 80),
            ("0.0.0.0", 80),
            ("::", 80),
            ("localhost", 80),
            ("LocalHost.", 80),
            // Hosts that cannot be read match.
            ("", 80),
            ("127.0.0.1 x", 80),
            ("db\n", 80),
        ] {
            assert!(r.check(&forward(host, port)).is_some(), "{host}:{port}");
        }
        for (host, port) in [("10.0.0.9", 5433), ("db.internal", 2222), ("192.0.2.1", 80)] {
            assert!(r.check(&forward(host, port)).is_none(), "{host}:{port}");
        }
        // `localhost:*` names the loopback as well.
        let local = rule(r#"{"forwards": ["localhost:*"]}"#);
        for host in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(local.check(&forward(host, 22)).is_some(), "{host}");
        }
        assert_eq!(inet_aton("256.0.0.1"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("1.2.65536"), None);
        assert_eq!(inet_aton("db"), None);
    }

    #[test]
    fn an_endpoint_allow_list_refuses_every_other_forward() {
        let r = rule(r#"{"only_forwards": ["db.internal:5432", "10.0.0.*:5432", "[fd00::5]:22"]}"#);
        for (host, port) in [
            ("db.internal", 5432),
            ("10.0.0.5", 5432),
            ("DB.INTERNAL.", 5432),
            // The resolver reads it as 10.0.0.5.
            ("0xa000005", 5432),
            ("fd00::5", 22),
            ("[FD00:0::5]", 22),
        ] {
            assert!(r.check(&forward(host, port)).is_none(), "{host}:{port}");
        }
        for (host, port) in [
            ("db.internal", 22),
            ("10.0.1.6", 5432),
            // Names shaped like a listed address resolve anywhere.
            ("10.0.0.5.nip.io", 5432),
            ("10.0.0.x.127.0.0.1.sslip.io", 5432),
            ("", 5432),
            ("10.0.0.5 ", 5432),
        ] {
            assert!(r.check(&forward(host, port)).is_some(), "{host}:{port}");
        }
        // A host wildcard lists every host on its port.
        let any = rule(r#"{"only_forwards": ["*:443"]}"#);
        assert!(any.check(&forward("10.1.2.3", 443)).is_none());
        assert!(any.check(&forward("api.example", 443)).is_none());
        assert!(any.check(&forward("api.example", 80)).is_some());
        // An allow-list of commands refuses forwards too.
        let commands = rule(r#"{"only_commands": ["uptime"]}"#);
        assert!(commands.check(&forward("db.internal", 5432)).is_some());
        // Commands alone say nothing about forwards.
        assert!(rule(r#"{"commands": ["rm *"]}"#)
            .check(&forward("db.internal", 5432))
            .is_none());
    }

    #[test]
    fn file_rules_match_paths_however_they_are_spelled() {
        let r = rule(r#"{"file_writes": ["/etc/*", "*.ssh/*"], "file_reads": ["/etc/shadow"]}"#);
        let write = |p: &str| FileOperation::Write(p.into());
        for path in [
            "/etc/motd",
            "//etc//motd",
            "/./etc/motd",
            ".ssh/authorized_keys",
            "./.ssh/rc",
        ] {
            assert!(r.check_file(&write(path)).is_some(), "{path}");
        }
        assert!(r.check_file(&write("/tmp/x")).is_none());
        assert!(r.check_file(&write("../../etc/motd")).is_some());
        assert!(r
            .check_file(&FileOperation::Rename((
                "/tmp/x".into(),
                "/etc/cron.d/x".into()
            )))
            .is_some());
        assert!(r
            .check_file(&FileOperation::Remove("/etc/passwd".into()))
            .is_some());
        assert!(r
            .check_file(&FileOperation::Read("/etc/shadow".into()))
            .is_some());
        assert!(r
            .check_file(&FileOperation::Read("/etc/motd".into()))
            .is_none());
        // A directory holding what a pattern names is that too.
        for op in [
            FileOperation::Rename((".ssh".into(), "x".into())),
            FileOperation::Rename(("x".into(), ".ssh".into())),
            FileOperation::Rename(("/etc".into(), "/tmp/e".into())),
            FileOperation::RemoveDirectory("/".into()),
        ] {
            assert!(r.check_file(&op).is_some(), "{op:?}");
        }
        assert!(r.check_file(&write("/tmp")).is_none());
        assert!(r
            .check_file(&FileOperation::Rename(("/tmp/a".into(), "/tmp/b".into())))
            .is_none());
        assert!(r.check_file(&write("./x")).is_none());
        // A listing matches the path or everything in it, not one file.
        let dirs = rule(r#"{"file_reads": ["/secret/*", "/etc/shadow"]}"#);
        let list = |p: &str| FileOperation::ListDirectory(p.into());
        assert!(dirs.check_file(&list("/secret")).is_some());
        assert!(dirs.check_file(&list("/etc")).is_none());
        assert!(dirs.check_file(&list(".")).is_none());
        // An open file's attributes (no path) match every write rule.
        assert!(r
            .check_file(&FileOperation::SetAttributes(String::new()))
            .is_some());
        // A rule without file patterns says nothing about files.
        assert!(rule(r#"{"commands": ["rm *"]}"#)
            .check_file(&write("/etc/motd"))
            .is_none());
    }

    #[test]
    fn an_allow_list_refuses_everything_else() {
        let r = rule(r#"{"only_commands": ["systemctl status *", "journalctl *", "uptime"]}"#);
        for line in [
            "systemctl status nginx",
            "uptime; journalctl -u nginx -n 50",
            "uptime 2>&1",
        ] {
            assert!(
                r.check(&exec(line)).is_none(),
                "{line}: {:?}",
                r.check(&exec(line))
            );
        }
        for line in [
            "systemctl restart nginx",
            "uptime; rm -rf /",
            "uptime > /etc/motd",
            "journalctl $(rm x)",
            "if true; then uptime; fi",
            "X=1 uptime",
            "bash -c uptime",
        ] {
            assert!(r.check(&exec(line)).is_some(), "{line}");
        }
        assert!(r.check(&SshRequest::Shell(None)).is_some());
        assert!(r.check(&SshRequest::Subsystem("sftp".into())).is_some());
        assert!(r
            .check(&SshRequest::Env(("BASH_ENV".into(), "/tmp/x".into())))
            .is_some());
        let long = format!("uptime {}", "x".repeat(MAX_LINE));
        assert!(r.check(&exec(&long)).is_some());
        assert!(rule(r#"{"shell": true}"#).check(&exec(&long)).is_none());
    }

    #[test]
    fn shells_subsystems_and_env_by_name() {
        let r = rule(r#"{"shell": true, "subsystems": ["sftp"], "env": ["LD_*"]}"#);
        assert!(r.check(&SshRequest::Shell(None)).is_some());
        assert!(r.check(&SshRequest::Subsystem("sftp".into())).is_some());
        assert!(r.check(&SshRequest::Subsystem("netconf".into())).is_none());
        assert!(r
            .check(&SshRequest::Env(("LD_PRELOAD".into(), "/x".into())))
            .is_some());
        assert!(r
            .check(&SshRequest::Env(("LANG".into(), "C".into())))
            .is_none());
        assert!(r.check(&exec("ls")).is_none());
        assert!(rule("{}").is_empty());
        assert!(!r.is_empty());
    }
}
