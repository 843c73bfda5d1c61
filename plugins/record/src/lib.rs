//! `record`: decides which statements the gateway records in its audit
//! store, with their outcome (rows, duration, SQLSTATE) — recording policy
//! as a plugin like every other guardrail.
//!
//! Configuration (`[plugins.config]`):
//!
//! - `statements`: `all` (default), `writes` (what the gateway judges may
//!   change data, schema or server state — the same judgement its
//!   read-only sessions are held to: INSERT/UPDATE/DELETE/MERGE, writes
//!   hidden in CTEs or in the code a statement runs, functions such as
//!   `nextval` or `set_config`, DDL, COPY FROM, CALL, DO, PREPARE/EXECUTE,
//!   EXPLAIN ANALYZE of a write, and text that does not parse), or `none`;
//! - `targets`: record only sessions on these targets (empty: all);
//! - `groups`: record only sessions of members of these groups (empty: all);
//! - `sample_rows`: keep the first N rows of each recorded result, as the
//!   client receives them — after every masking plugin in the chain
//!   (default 0, at most 1000);
//! - `command_lines`: on SSH targets, record each line typed in a shell
//!   (or read from a shell's script) as an event of kind `command-line`,
//!   in the sessions `targets` and `groups` select (default `true`; a line
//!   typed at a password prompt, unechoed, is not judged or stored).
//!
//! Statements that a plugin refuses or holds for approval are recorded by
//! the gateway whatever this plugin says, and so are refused typed lines.
//! SSH commands (exec, shell, subsystem), settings and SFTP operations are
//! always recorded, with the terminal recording of every exec and shell.

use portcullis_plugin_sdk::{
    export_plugin, may_write, parse_config, record_statement, reuse_verdict, CommandLine, PgQuery,
    Plugin, Session, Verdict,
};
use serde::Deserialize;

/// Which statements are recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Statements {
    #[default]
    All,
    Writes,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    statements: Statements,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    sample_rows: u32,
    #[serde(default = "yes")]
    command_lines: bool,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Self {
            statements: Statements::All,
            targets: Vec::new(),
            groups: Vec::new(),
            sample_rows: 0,
            command_lines: true,
        }
    }
}

/// The plugin; one instance per session: its configuration, and whether
/// this session is recorded at all.
#[derive(Default)]
pub struct Record {
    config: Config,
    session_recorded: bool,
}

impl Plugin for Record {
    const NAME: &'static str = "record";
    const VERSION: &'static str = "0.1.0";

    fn config_schema() -> String {
        include_str!("../schema.json").into()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        if self.config.sample_rows > 1000 {
            return Err("sample_rows must be at most 1000".into());
        }
        Ok(())
    }

    fn session_start(&mut self, session: &Session) -> Verdict {
        let c = &self.config;
        self.session_recorded = (c.targets.is_empty() || c.targets.contains(&session.target))
            && (c.groups.is_empty()
                || session.identity.groups.iter().any(|g| c.groups.contains(g)));
        Verdict::Allow
    }

    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        // What is recorded depends on the statements' summary only.
        reuse_verdict();
        if !self.session_recorded {
            return Verdict::Allow;
        }
        let wanted = match self.config.statements {
            Statements::All => true,
            Statements::Writes => may_write(query),
            Statements::None => false,
        };
        if wanted {
            record_statement(self.config.sample_rows);
        }
        Verdict::Allow
    }

    fn on_command_line(&mut self, _line: &CommandLine) -> Verdict {
        if self.session_recorded && self.config.command_lines {
            record_statement(0);
        }
        Verdict::Allow
    }
}

export_plugin!(Record);

#[cfg(test)]
mod tests {
    use portcullis_plugin_sdk::testing::{self, take_notes, StatementExt};

    use super::*;

    fn plugin(config: &str, target: &str, groups: &[&str]) -> Record {
        let mut p = Record::default();
        p.configure(config).expect("configuration accepted");
        let mut s = testing::session("alice@example.com", groups);
        s.target = target.into();
        p.session_start(&s);
        p
    }

    fn recorded(p: &mut Record, q: &PgQuery) -> Option<u32> {
        take_notes();
        assert_eq!(p.on_query(q), Verdict::Allow);
        take_notes().record
    }

    #[test]
    fn all_records_every_statement_with_its_sample_size() {
        let mut p = plugin(r#"{"sample_rows": 5}"#, "orders", &[]);
        let q = testing::query("select 1", [testing::statement("select")]);
        assert_eq!(recorded(&mut p, &q), Some(5));
    }

    #[test]
    fn writes_follows_the_gateways_judgement_of_each_statement() {
        let mut p = plugin(r#"{"statements": "writes"}"#, "orders", &[]);
        let read = testing::query("select * from t", [testing::statement("select").reads("t")]);
        testing::set_writes([None]);
        assert_eq!(recorded(&mut p, &read), None);
        let cte = testing::query(
            "with d as (delete from t returning *) select * from d",
            [testing::statement("select").writes("t")],
        );
        testing::set_writes([Some("the statement writes t".to_string())]);
        assert_eq!(recorded(&mut p, &cte), Some(0));
        // A statement the gateway gave no answer for counts as writing.
        let two = testing::query(
            "select 1; select 2",
            [testing::statement("select"), testing::statement("select")],
        );
        testing::set_writes([None]);
        assert_eq!(recorded(&mut p, &two), Some(0));
        let bad = testing::unparseable("selec 1");
        testing::set_writes([]);
        assert_eq!(recorded(&mut p, &bad), Some(0));
    }

    #[test]
    fn targets_and_groups_limit_the_sessions_recorded() {
        let q = testing::query("select 1", [testing::statement("select")]);
        let mut other = plugin(r#"{"targets": ["billing"]}"#, "orders", &[]);
        assert_eq!(recorded(&mut other, &q), None);
        let mut member = plugin(r#"{"groups": ["agents"]}"#, "orders", &["agents"]);
        assert_eq!(recorded(&mut member, &q), Some(0));
        let mut outsider = plugin(r#"{"groups": ["agents"]}"#, "orders", &["people"]);
        assert_eq!(recorded(&mut outsider, &q), None);
    }

    #[test]
    fn typed_lines_are_recorded_in_recorded_sessions_unless_turned_off() {
        let line = CommandLine {
            text: "rm -rf /tmp/x".into(),
            exact: true,
        };
        let typed = |p: &mut Record| {
            take_notes();
            assert_eq!(p.on_command_line(&line), Verdict::Allow);
            take_notes().record
        };
        assert_eq!(typed(&mut plugin("{}", "web-1", &[])), Some(0));
        assert_eq!(
            typed(&mut plugin(r#"{"command_lines": false}"#, "web-1", &[])),
            None
        );
        assert_eq!(
            typed(&mut plugin(r#"{"targets": ["db"]}"#, "web-1", &[])),
            None
        );
    }

    #[test]
    fn a_sample_larger_than_the_limit_is_refused() {
        let mut p = Record::default();
        assert!(p.configure(r#"{"sample_rows": 5000}"#).is_err());
    }
}
