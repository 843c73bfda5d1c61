//! `block`: refuses statements by rule, before they reach the database.
//!
//! Each rule has a name (shown to the client), optional `groups`/`users` it
//! applies to (everyone when both are empty) and `except_groups` it never
//! applies to (the SDK's `Audience`), and what it matches:
//!
//! - `kinds`: statement kinds (`drop`, `truncate`, `alter-system`, `do`, ...),
//!   i.e. how the statement is spelled;
//! - `actions`: what a statement does to a table's rows (`insert`, `update`,
//!   `delete`, `truncate`), however it is spelled — plain, MERGE branches,
//!   `ON CONFLICT DO UPDATE`, data-modifying CTEs, `EXPLAIN ANALYZE`,
//!   `PREPARE`. With `tables`, only actions on those tables count;
//! - `unbounded_writes`: an UPDATE or DELETE (in any of those spellings) that
//!   no condition naming a column bounds (`WHERE true` does not);
//! - `tables`: tables read or written (`public.orders`, `orders`, `audit.*`),
//!   when the rule has no `actions`;
//! - `functions`: functions called anywhere (`pg_read_file`, `lo_*`, `dblink*`);
//! - `copy_program`: `COPY ... TO/FROM PROGRAM`;
//! - `server_files`: files or programs on the database server: `COPY` to or
//!   from a file or program, `pg_read_file`, `pg_ls_dir`, `lo_import`, ...;
//! - `role_switching`: `SET ROLE`, `RESET ROLE`, `SET SESSION
//!   AUTHORIZATION`, and `set_config('role', ...)`;
//! - `creates_code`: creating or changing functions, procedures, triggers,
//!   event triggers or rules (code that later runs inside the database
//!   where no statement the gateway sees names it);
//! - `unknown_effects`: a statement that runs code the gateway could not
//!   read (dynamic SQL, routines in other languages, unknown functions).
//!
//! Actions include what the code a statement runs does: functions and
//! procedures it calls, triggers and rules its writes fire, tables under a
//! view it writes to (the refusal names the route).
//!
//! A text with several statements is refused when any statement is.
//! Unparseable SQL is refused unless `allow_unparseable = true`.
//!
//! On SSH targets (the SDK's `ssh_rules`): `commands` (patterns matched
//! anywhere on an exec line: `rm *`, `systemctl stop *`), `only_commands`
//! (an allow-list every simple command must match; lines it cannot read
//! whole and interactive shells are refused with it), `opaque_commands`
//! (refuse lines with substitutions, expansions, shells or interpreters),
//! `shell` (interactive shells), `subsystems` (`sftp`), `env`
//! (environment variables by name), and `forwards` / `only_forwards`
//! (local port forwards by `host:port`, on targets that relay them). An
//! SSH request is refused by the first
//! rule that applies to the user and matches it. `commands` and
//! `opaque_commands` also judge lines typed in a shell (advisory: the
//! gateway reconstructs them; a refused line is dropped).
//!
//! On Kubernetes targets (the SDK's `kube_rules`): `verbs`, `resources`
//! (`pods/exec`, `deployments.apps`, `*`), `namespaces`, `object_names`
//! and `scale_to_zero`, matched on the request as the API server reads
//! it. A request is refused by the first rule that applies to the user and
//! whose Kubernetes keys all match.

use portcullis_plugin_sdk::kube_rules::{KubeRule, KubeRuleConfig};
use portcullis_plugin_sdk::names::{
    display_table, function_matches, in_scope, route, TablePattern,
};
use portcullis_plugin_sdk::ssh_rules::{SshRule, SshRuleConfig};
use portcullis_plugin_sdk::{
    deny_by, export_plugin, no_effects, parse_config, reuse_verdict, statement_effects, Effects,
    PgQuery, Plugin, Session, Statement, Verdict,
};
use portcullis_plugin_sdk::{
    Audience, CommandLine, FileOperation, HttpRequest, SshRequest, TableRef,
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
    except_groups: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    unbounded_writes: bool,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    copy_program: bool,
    #[serde(default)]
    server_files: bool,
    #[serde(default)]
    role_switching: bool,
    #[serde(default)]
    creates_code: bool,
    #[serde(default)]
    unknown_effects: bool,
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    only_commands: Option<Vec<String>>,
    #[serde(default)]
    opaque_commands: bool,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    subsystems: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    forwards: Vec<String>,
    #[serde(default)]
    only_forwards: Option<Vec<String>>,
    #[serde(default)]
    file_reads: Vec<String>,
    #[serde(default)]
    file_writes: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    object_names: Vec<String>,
    #[serde(default)]
    scale_to_zero: bool,
}

impl Rule {
    /// The rule's Kubernetes conditions.
    fn kube(&self) -> Result<KubeRule, String> {
        KubeRule::new(
            &self.name,
            &KubeRuleConfig {
                verbs: self.verbs.clone(),
                resources: self.resources.clone(),
                namespaces: self.namespaces.clone(),
                object_names: self.object_names.clone(),
                scale_to_zero: self.scale_to_zero,
            },
        )
    }

    /// The rule's SSH conditions.
    fn ssh(&self) -> Result<SshRule, String> {
        SshRule::new(
            &self.name,
            &SshRuleConfig {
                commands: self.commands.clone(),
                only_commands: self.only_commands.clone(),
                opaque_commands: self.opaque_commands,
                shell: self.shell,
                subsystems: self.subsystems.clone(),
                env: self.env.clone(),
                forwards: self.forwards.clone(),
                only_forwards: self.only_forwards.clone(),
                file_reads: self.file_reads.clone(),
                file_writes: self.file_writes.clone(),
            },
        )
    }
}

/// The plugin; one instance per session.
#[derive(Default)]
pub struct Block {
    config: Config,
    patterns: Vec<Vec<TablePattern>>,
    ssh: Vec<SshRule>,
    kube: Vec<KubeRule>,
    user: String,
    groups: Vec<String>,
}

impl Block {
    fn applies(&self, rule: &Rule) -> bool {
        Audience {
            users: &rule.users,
            groups: &rule.groups,
            except_groups: &rule.except_groups,
        }
        .includes(&self.user, &self.groups)
    }

    /// Why `rule` refuses `stmt` (whose effects are `fx`), if it does.
    fn check(
        &self,
        rule: &Rule,
        patterns: &[TablePattern],
        stmt: &Statement,
        fx: &Effects,
    ) -> Option<String> {
        let kind = stmt.kind.as_str();
        if rule.kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
            return Some(format!(
                "{} statements are not allowed",
                kind.to_uppercase()
            ));
        }
        let search: Vec<&str> = self.config.search_path.iter().map(String::as_str).collect();
        let on_rule_tables = |t: &TableRef| in_scope(patterns, t, &search);
        if rule.unbounded_writes {
            let unbounded = fx
                .actions
                .iter()
                .find(|a| !a.bounded && matches!(a.action.as_str(), "update" | "delete"));
            if let Some(a) = unbounded {
                return Some(format!(
                    "{} without a WHERE that names a column, on {}{}",
                    a.action.to_uppercase(),
                    display_table(&a.table),
                    route(a)
                ));
            }
            if !stmt.has_where {
                let table = stmt
                    .tables_written
                    .first()
                    .map(display_table)
                    .unwrap_or_default();
                let what = match kind {
                    "update" => "UPDATE",
                    "delete" => "DELETE",
                    _ => "UPDATE or DELETE",
                };
                return Some(format!("{what} without WHERE on {table}"));
            }
        }
        if !rule.actions.is_empty() {
            let hit = fx.actions.iter().find(|a| {
                rule.actions
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&a.action))
                    && on_rule_tables(&a.table)
            });
            if let Some(a) = hit {
                return Some(format!(
                    "{} on {}{} is not allowed",
                    a.action.to_uppercase(),
                    display_table(&a.table),
                    route(a)
                ));
            }
        }
        if rule.copy_program && stmt.copy_program {
            return Some("COPY ... PROGRAM runs commands on the database server".into());
        }
        if rule.server_files && (fx.server_files || stmt.copy_program) {
            return Some("files and programs on the database server are not reachable".into());
        }
        if rule.role_switching
            && (fx.switches_role || matches!(kind, "set-role" | "set-session-authorization"))
        {
            return Some("switching roles is not allowed".into());
        }
        if rule.unknown_effects {
            if let Some(why) = fx.unknown_effects.first() {
                return Some(format!("it runs code the gateway cannot check: {why}"));
            }
        }
        if rule.creates_code && fx.creates_code {
            return Some(
                "creating or changing functions, procedures, triggers or rules is not allowed"
                    .into(),
            );
        }
        if rule.actions.is_empty() {
            for t in stmt.tables_read.iter().chain(&stmt.tables_written) {
                if patterns.iter().any(|p| p.matches(t, &search)) {
                    return Some(format!("access to {} is not allowed", display_table(t)));
                }
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
            portcullis_plugin_sdk::names::check_actions(&r.name, &r.actions)?;
        }
        self.patterns = config
            .rules
            .iter()
            .map(|r| r.tables.iter().map(|t| TablePattern::parse(t)).collect())
            .collect();
        self.ssh = config
            .rules
            .iter()
            .map(Rule::ssh)
            .collect::<Result<_, _>>()?;
        self.kube = config
            .rules
            .iter()
            .map(Rule::kube)
            .collect::<Result<_, _>>()?;
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
        let effects = statement_effects();
        let none = no_effects();
        for (i, stmt) in query.statements.iter().enumerate() {
            let fx = effects.get(i).unwrap_or(&none);
            for (rule, patterns) in self.config.rules.iter().zip(&self.patterns) {
                if !self.applies(rule) {
                    continue;
                }
                if let Some(why) = self.check(rule, patterns, stmt, fx) {
                    return deny_by(
                        &rule.name,
                        format!("blocked by portcullis rule \"{}\": {why}", rule.name),
                    );
                }
            }
        }
        Verdict::Allow
    }

    fn on_ssh_request(&mut self, request: &SshRequest) -> Verdict {
        self.judge_ssh(|rule| rule.check(request))
    }

    fn on_file_operation(&mut self, operation: &FileOperation) -> Verdict {
        self.judge_ssh(|rule| rule.check_file(operation))
    }

    fn on_command_line(&mut self, line: &CommandLine) -> Verdict {
        self.judge_ssh(|rule| rule.check_typed(line))
    }

    fn on_http_request(&mut self, request: &HttpRequest) -> Verdict {
        self.judge_kube(request)
    }
}

impl Block {
    /// Refuses by the first rule that applies to the user and whose SSH
    /// conditions `matches` (what it says it matched).
    fn judge_ssh(&self, matches: impl Fn(&SshRule) -> Option<String>) -> Verdict {
        for (rule, ssh) in self.config.rules.iter().zip(&self.ssh) {
            if !self.applies(rule) {
                continue;
            }
            if let Some(what) = matches(ssh) {
                return deny_by(
                    &rule.name,
                    format!(
                        "blocked by portcullis rule \"{}\": {what} is not allowed",
                        rule.name
                    ),
                );
            }
        }
        Verdict::Allow
    }
}

impl Block {
    /// Refuses a Kubernetes request by the first rule that applies to the
    /// user and whose Kubernetes conditions match it.
    fn judge_kube(&self, request: &HttpRequest) -> Verdict {
        for (rule, kube) in self.config.rules.iter().zip(&self.kube) {
            if !self.applies(rule) {
                continue;
            }
            if let Some(what) = kube.check(request) {
                return deny_by(
                    &rule.name,
                    format!(
                        "blocked by portcullis rule \"{}\": {what} is not allowed",
                        rule.name
                    ),
                );
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
        // Everyone but an exempt group.
        let cfg = r#"{"rules": [{"name": "hr-only", "except_groups": ["hr"], "tables": ["public.salaries"]}]}"#;
        assert!(denied(plugin(cfg, "e", &["staff"]).on_query(&q)).contains("access to salaries"));
        assert_eq!(
            plugin(cfg, "h", &["staff", "hr"]).on_query(&q),
            Verdict::Allow
        );
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
    fn actions_are_judged_however_they_are_spelled() {
        use testing::EffectsExt;
        let cfg = r#"{"rules": [
            {"name": "no-unbounded-writes", "unbounded_writes": true},
            {"name": "orders-read-only", "actions": ["update", "delete", "truncate"], "tables": ["public.orders"]}
        ]}"#;
        let mut p = plugin(cfg, "a", &[]);
        // A MERGE whose DELETE branch has no condition of its own.
        let merge = testing::query(
            "MERGE ...",
            [testing::statement("merge").writes("customers")],
        );
        testing::set_effects([testing::effects().acts("delete", "customers", false)]);
        let why = denied(p.on_query(&merge));
        assert!(
            why.contains("no-unbounded-writes") && why.contains("DELETE"),
            "{why}"
        );
        // An upsert that updates orders, spelled as an INSERT.
        let upsert = testing::query(
            "INSERT ... ON CONFLICT",
            [testing::statement("insert").writes("orders")],
        );
        testing::set_effects([testing::effects()
            .acts("insert", "orders", true)
            .acts("update", "orders", true)]);
        let why = denied(p.on_query(&upsert));
        assert!(
            why.contains("orders-read-only") && why.contains("UPDATE on orders"),
            "{why}"
        );
        // Reading orders, or inserting into it, is not what the rule names.
        testing::set_effects([testing::effects().acts("insert", "orders", true)]);
        let insert = testing::query("INSERT", [testing::statement("insert").writes("orders")]);
        assert_eq!(p.on_query(&insert), Verdict::Allow);
        testing::set_effects([testing::effects().acts("update", "other.orders", true)]);
        let elsewhere = testing::query(
            "UPDATE",
            [testing::statement("update").writes("other.orders")],
        );
        assert_eq!(p.on_query(&elsewhere), Verdict::Allow);
        testing::set_effects([]);
    }

    #[test]
    fn role_switches_server_files_and_code_by_their_effects() {
        use testing::EffectsExt;
        let cfg = r#"{"rules": [
            {"name": "roles", "role_switching": true},
            {"name": "files", "server_files": true},
            {"name": "code", "creates_code": true}
        ]}"#;
        let mut p = plugin(cfg, "a", &[]);
        let select = testing::query(
            "SELECT set_config('role', 'x', false)",
            [testing::statement("select")],
        );
        testing::set_effects([testing::effects().switching_role()]);
        assert!(denied(p.on_query(&select)).contains("\"roles\""));
        testing::set_effects([testing::effects().touching_server_files()]);
        assert!(denied(p.on_query(&select)).contains("\"files\""));
        testing::set_effects([testing::effects().creating_code()]);
        assert!(denied(p.on_query(&select)).contains("\"code\""));
        testing::set_effects([testing::effects()]);
        assert_eq!(p.on_query(&select), Verdict::Allow);
        let mut bad = Block::default();
        assert!(bad
            .configure(r#"{"rules": [{"name": "x", "actions": ["upsert"]}]}"#)
            .unwrap_err()
            .contains("upsert"));
    }

    #[test]
    fn ssh_rules_refuse_commands_shells_and_subsystems_for_their_audience() {
        let cfg = r#"{"rules": [
            {"name": "no-rm", "commands": ["rm *"]},
            {"name": "contractors", "groups": ["contractors"], "only_commands": ["uptime"], "subsystems": ["sftp"]}
        ]}"#;
        let mut staff = plugin(cfg, "s", &["staff"]);
        let exec = |l: &str| SshRequest::Exec(l.into());
        let why = denied(staff.on_ssh_request(&exec("sudo rm -rf /srv")));
        assert!(
            why.contains("\"no-rm\"") && why.contains("sudo rm -rf /srv"),
            "{why}"
        );
        assert_eq!(staff.on_ssh_request(&exec("df -h")), Verdict::Allow);
        assert_eq!(
            staff.on_ssh_request(&SshRequest::Shell(None)),
            Verdict::Allow
        );
        let mut contractor = plugin(cfg, "c", &["contractors"]);
        assert_eq!(contractor.on_ssh_request(&exec("uptime")), Verdict::Allow);
        assert!(
            denied(contractor.on_ssh_request(&exec("df -h"))).contains("not on this rule's list")
        );
        assert!(denied(contractor.on_ssh_request(&SshRequest::Shell(None))).contains("shell"));
        assert!(
            denied(contractor.on_ssh_request(&SshRequest::Subsystem("sftp".into())))
                .contains("sftp")
        );
        // PostgreSQL rules say nothing about SSH, and SSH rules nothing
        // about statements.
        let mut pg = plugin(r#"{"rules": [{"name": "k", "kinds": ["drop"]}]}"#, "a", &[]);
        assert_eq!(pg.on_ssh_request(&exec("rm -rf /")), Verdict::Allow);
        let q = testing::query("DROP TABLE t", [testing::statement("drop")]);
        assert_eq!(staff.on_query(&q), Verdict::Allow);
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
