//! What a first-party plugin's SSH rule matches (`block` refuses it,
//! `approve` holds it): command patterns anywhere on a command line, an
//! allow-list every command must be on, command lines that cannot be read
//! whole, interactive shells, subsystems and environment variables. See
//! [`crate::shell`] for how a command line is read and what no rule over
//! its text can guarantee.

use serde::Deserialize;

use crate::shell::{self, name_matches, Pattern};
use crate::SshRequest;

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
    }

    /// What in `request` the rule matches, as a phrase a verdict can end
    /// with "is not allowed" or "needs approval" (``running `rm -rf /`
    /// (pattern `rm *`)``); `None` when it does not match.
    pub fn check(&self, request: &SshRequest) -> Option<String> {
        match request {
            SshRequest::Exec(line) => self.check_line(line),
            SshRequest::Shell(_) if self.shell => Some("an interactive shell".into()),
            SshRequest::Shell(_) if self.only_commands.is_some() => Some(
                "an interactive shell (this rule allows only listed commands, and commands typed in a shell are not checked)".into(),
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
            _ => None,
        }
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
