//! `block`: refuses statements by rule, before they reach the database.
//!
//! Each rule has a name (shown to the client), optional `groups`/`users` it
//! applies to (everyone when both are empty), and what it matches:
//!
//! - `kinds`: statement kinds (`drop`, `truncate`, `alter-system`, `do`, ...);
//! - `unbounded_writes`: UPDATE or DELETE without WHERE (also inside CTEs and
//!   EXPLAIN ANALYZE);
//! - `tables`: tables read or written (`public.orders`, `orders`, `audit.*`);
//! - `functions`: functions called anywhere (`pg_read_file`, `lo_*`, `dblink*`);
//! - `copy_program`: `COPY ... TO/FROM PROGRAM`;
//! - `role_switching`: `SET ROLE`, `SET SESSION AUTHORIZATION`.
//!
//! A text with several statements is refused when any statement is.
//! Unparseable SQL is refused unless `allow_unparseable = true`.

use portcullis_plugin_sdk::names::{display_table, function_matches, TablePattern};
use portcullis_plugin_sdk::{
    deny_by, export_plugin, parse_config, reuse_verdict, PgQuery, Plugin, Session, Statement,
    Verdict,
};
use serde::Deserialize;

/// Plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    allow_unparseable: bool,
    /// Schemas an unqualified table name resolves through (default `public`).
    #[serde(default = "default_search_path")]
    search_path: Vec<String>,
}

fn default_search_path() -> Vec<String> {
    vec!["public".into()]
}

/// One rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    unbounded_writes: bool,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    copy_program: bool,
    #[serde(default)]
    role_switching: bool,
}

/// The plugin; one instance per session.
#[derive(Default)]
pub struct Block {
    config: Config,
    patterns: Vec<Vec<TablePattern>>,
    user: String,
    groups: Vec<String>,
}

impl Block {
    fn applies(&self, rule: &Rule) -> bool {
        (rule.groups.is_empty() && rule.users.is_empty())
            || rule.users.contains(&self.user)
            || rule.groups.iter().any(|g| self.groups.contains(g))
    }

    /// Why `rule` refuses `stmt`, if it does.
    fn check(&self, rule: &Rule, patterns: &[TablePattern], stmt: &Statement) -> Option<String> {
        let kind = stmt.kind.as_str();
        if rule.kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
            return Some(format!(
                "{} statements are not allowed",
                kind.to_uppercase()
            ));
        }
        if rule.unbounded_writes && !stmt.has_where {
            let table = stmt
                .tables_written
                .first()
                .map(display_table)
                .unwrap_or_default();
            let what = if kind == "update" {
                "UPDATE"
            } else if kind == "delete" {
                "DELETE"
            } else {
                "UPDATE or DELETE"
            };
            return Some(format!("{what} without WHERE on {table}"));
        }
        if rule.copy_program && stmt.copy_program {
            return Some("COPY ... PROGRAM runs commands on the database server".into());
        }
        if rule.role_switching && matches!(kind, "set-role" | "set-session-authorization") {
            return Some("switching roles is not allowed".into());
        }
        let search: Vec<&str> = self.config.search_path.iter().map(String::as_str).collect();
        for t in stmt.tables_read.iter().chain(&stmt.tables_written) {
            if patterns.iter().any(|p| p.matches(t, &search)) {
                return Some(format!("access to {} is not allowed", display_table(t)));
            }
        }
        for f in &stmt.functions {
            if rule.functions.iter().any(|p| function_matches(p, f)) {
                return Some(format!("function {f} is not allowed"));
            }
        }
        None
    }
}

impl Plugin for Block {
    const NAME: &'static str = "block";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn config_schema() -> String {
        include_str!("../schema.json").into()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        for r in &config.rules {
            if r.name.is_empty() {
                return Err("every rule needs a name".into());
            }
        }
        self.patterns = config
            .rules
            .iter()
            .map(|r| r.tables.iter().map(|t| TablePattern::parse(t)).collect())
            .collect();
        self.config = config;
        Ok(())
    }

    fn session_start(&mut self, session: &Session) -> Verdict {
        self.user = session.identity.user.clone();
        self.groups = session.identity.groups.clone();
        Verdict::Allow
    }

    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        // Rules look at the parsed statements and the session's groups only.
        reuse_verdict();
        if let Some(err) = &query.parse_error {
            if !self.config.allow_unparseable {
                return deny_by(
                    "unparseable",
                    format!("blocked by portcullis: the statement does not parse ({err}), so it cannot be checked"),
                );
            }
        }
        for stmt in &query.statements {
            for (rule, patterns) in self.config.rules.iter().zip(&self.patterns) {
                if !self.applies(rule) {
                    continue;
                }
                if let Some(why) = self.check(rule, patterns, stmt) {
                    return deny_by(
                        &rule.name,
                        format!("blocked by portcullis rule \"{}\": {why}", rule.name),
                    );
                }
            }
        }
        Verdict::Allow
    }
}

export_plugin!(Block);

#[cfg(test)]
mod tests {
    use portcullis_plugin_sdk::testing::{self, StatementExt};

    use super::*;

    fn plugin(config: &str, user: &str, groups: &[&str]) -> Block {
        let mut p = Block::default();
        p.configure(config).expect("configuration accepted");
        p.session_start(&testing::session(user, groups));
        p
    }

    fn denied(v: Verdict) -> String {
        match v {
            Verdict::Deny(r) => r,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn unbounded_delete_names_rule_and_table() {
        let mut p = plugin(
            r#"{"rules": [{"name": "no-unbounded-delete", "unbounded_writes": true}]}"#,
            "a",
            &[],
        );
        let q = testing::query(
            "DELETE FROM public.orders",
            [testing::statement("delete")
                .writes("public.orders")
                .unbounded()],
        );
        assert_eq!(
            denied(p.on_query(&q)),
            "blocked by portcullis rule \"no-unbounded-delete\": DELETE without WHERE on public.orders"
        );
        let ok = testing::query(
            "DELETE ... WHERE",
            [testing::statement("delete").writes("orders")],
        );
        assert_eq!(p.on_query(&ok), Verdict::Allow);
    }

    #[test]
    fn rules_scoped_to_groups_and_tables_through_search_path() {
        let cfg = r#"{"rules": [{"name": "hr-only", "groups": ["contractors"], "tables": ["public.salaries"]}]}"#;
        let q = testing::query("SELECT", [testing::statement("select").reads("salaries")]);
        let mut contractor = plugin(cfg, "c", &["contractors"]);
        assert!(denied(contractor.on_query(&q)).contains("access to salaries"));
        let mut employee = plugin(cfg, "e", &["staff"]);
        assert_eq!(employee.on_query(&q), Verdict::Allow);
    }

    #[test]
    fn unparseable_is_refused_unless_allowed_and_bad_config_is_refused() {
        let mut p = plugin(r#"{}"#, "a", &[]);
        assert!(denied(p.on_query(&testing::unparseable("SELEC"))).contains("does not parse"));
        let mut lenient = plugin(r#"{"allow_unparseable": true}"#, "a", &[]);
        assert_eq!(
            lenient.on_query(&testing::unparseable("SELEC")),
            Verdict::Allow
        );
        let mut p = Block::default();
        assert!(p
            .configure(r#"{"rules": [{"name": "x", "kind": ["drop"]}]}"#)
            .unwrap_err()
            .contains("kind"));
        let q = testing::query(
            "SELECT",
            [testing::statement("select").calls("pg_catalog.pg_read_file")],
        );
        let mut f = plugin(
            r#"{"rules": [{"name": "files", "functions": ["pg_read_file"]}]}"#,
            "a",
            &[],
        );
        assert!(denied(f.on_query(&q)).contains("pg_catalog.pg_read_file"));
    }

    #[test]
    fn verdicts_are_declared_reusable_for_the_shape() {
        let mut p = plugin(r#"{}"#, "a", &[]);
        testing::take_notes();
        let q = testing::query("SELECT 1", [testing::statement("select")]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        assert!(testing::take_notes().reuse_verdict);
    }
}
