//! `approve`: holds risky statements for a human approver.
//!
//! Each rule names what needs approval — `actions` on tables (`insert`,
//! `update`, `delete`, `truncate`: what the statement does to the rows of a
//! table in `tables`, however it is spelled — MERGE, `ON CONFLICT DO
//! UPDATE`, a data-modifying CTE, `EXPLAIN ANALYZE`, `PREPARE`), statement
//! `kinds` (how it is spelled), `tables` read or written (`orders`,
//! `public.orders`, `audit.*`), `unbounded_writes` (an UPDATE/DELETE no
//! condition naming a column bounds) — for whom (`groups`, `users`; everyone
//! when both are empty; never `except_groups`), and when (`hours_utc`, e.g.
//! `"18:00-08:00"`: only in those UTC hours). A statement matching every
//! condition a rule sets gets `require-approval`, and the rule says how the
//! gateway handles it:
//!
//! - `mode = "wait"` (default): the client is told the request id and the
//!   statement runs as soon as `min_approvals` approvers agree, or fails
//!   when one denies or `timeout_secs` (default 300) pass;
//! - `mode = "retry"`: the client gets an error with the request id at once;
//!   once approved, the same statement from the same identity may run
//!   `grant_uses` times (default 1) within `grant_minutes` (default 10).
//!
//! The first matching rule decides. Approvers and quorum rules (nobody
//! approves their own request) are enforced by the gateway.
//!
//! A rule with SSH conditions (the SDK's `ssh_rules`: `commands` anywhere
//! on an exec line such as `sudo *` or `systemctl restart *`,
//! `only_commands`, `opaque_commands`, `shell`, `subsystems`, `env`,
//! `forwards`, `only_forwards` — a forward cannot wait, so a match refuses
//! it) holds
//! the SSH requests it matches and never applies to SQL statements; a rule
//! without them applies only to statements. A line typed in a shell that
//! `commands` or `opaque_commands` match is refused, not held (it cannot
//! wait): run it as an exec to ask for approval.
//!
//! A rule with Kubernetes conditions (the SDK's `kube_rules`: `verbs`,
//! `resources`, `namespaces`, `object_names`, `scale_to_zero`) asks for
//! approval of the requests it matches; the gateway never holds an HTTP
//! request open, so the request is refused with the approval's id and runs
//! when sent again once approved (retry mode, whatever `mode` says).

use portcullis_plugin_sdk::kube_rules::{KubeRule, KubeRuleConfig};
use portcullis_plugin_sdk::names::{display_table, in_scope, route, TablePattern};
use portcullis_plugin_sdk::ssh_rules::{SshRule, SshRuleConfig};
use portcullis_plugin_sdk::{
    approval_by, export_plugin, no_effects, parse_config, reuse_verdict, set_approval_policy,
    statement_effects, ApprovalPolicy, Effects, PgQuery, Plugin, Session, Statement, Verdict,
};
use portcullis_plugin_sdk::{
    Audience, CommandLine, FileOperation, HttpRequest, SshRequest, TableRef,
};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Schemas an unqualified table name resolves through (default
    /// `public`, as in the `block` plugin).
    #[serde(default = "default_search_path")]
    search_path: Vec<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Wait,
    Retry,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    unbounded_writes: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    except_groups: Vec<String>,
    hours_utc: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default = "one")]
    min_approvals: u32,
    #[serde(default = "five_minutes")]
    timeout_secs: u32,
    #[serde(default = "one")]
    grant_uses: u32,
    #[serde(default = "ten")]
    grant_minutes: u32,
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

    /// How the gateway handles the approval this rule asks for.
    fn policy(&self) -> ApprovalPolicy {
        ApprovalPolicy {
            wait: self.mode == Mode::Wait,
            min_approvals: self.min_approvals,
            timeout_secs: self.timeout_secs,
            grant_uses: self.grant_uses,
            grant_minutes: self.grant_minutes,
        }
    }
}

fn default_search_path() -> Vec<String> {
    vec!["public".into()]
}

fn one() -> u32 {
    1
}
fn five_minutes() -> u32 {
    300
}
fn ten() -> u32 {
    10
}

/// A `HH:MM-HH:MM` window in minutes of the day; it may wrap midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hours {
    from: u32,
    to: u32,
}

impl Hours {
    fn parse(text: &str) -> Result<Self, String> {
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("hours_utc {text:?} must look like \"18:00-08:00\""))?;
        match (minutes(a), minutes(b)) {
            (Some(from), Some(to)) if from != to => Ok(Hours { from, to }),
            _ => Err(format!(
                "hours_utc {text:?} must be two different times HH:MM-HH:MM"
            )),
        }
    }

    fn contains(&self, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// The plugin; one instance per session.
#[derive(Default)]
pub struct Approve {
    config: Config,
    patterns: Vec<Vec<TablePattern>>,
    hours: Vec<Option<Hours>>,
    ssh: Vec<SshRule>,
    kube: Vec<KubeRule>,
    user: String,
    groups: Vec<String>,
    /// Minute of the day (UTC) to judge by; `None`: the clock's.
    fixed_minute: Option<u32>,
}

impl Approve {
    fn applies_to_session(&self, rule: &Rule) -> bool {
        Audience {
            users: &rule.users,
            groups: &rule.groups,
            except_groups: &rule.except_groups,
        }
        .includes(&self.user, &self.groups)
    }

    /// Whether rule `i` applies now to this session.
    fn applies_now(&self, i: usize, minute: u32) -> bool {
        let rule = &self.config.rules[i];
        self.applies_to_session(rule)
            && match self.hours.get(i) {
                Some(Some(h)) => h.contains(minute),
                _ => true,
            }
    }

    fn minute_now(&self) -> u32 {
        self.fixed_minute.unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            ((secs % 86_400) / 60) as u32
        })
    }

    /// What in `stmt` (whose effects are `fx`) makes `rule` apply, if it
    /// does.
    fn matches(
        &self,
        rule: &Rule,
        patterns: &[TablePattern],
        stmt: &Statement,
        fx: &Effects,
    ) -> Option<String> {
        let kind = stmt.kind.as_str();
        if !rule.kinds.is_empty() && !rule.kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
            return None;
        }
        let search: Vec<&str> = self.config.search_path.iter().map(String::as_str).collect();
        let on_rule_tables = |t: &TableRef| in_scope(patterns, t, &search);
        if !rule.actions.is_empty() {
            // The rule is about what happens to rows: the action must be on
            // one of its tables, and unbounded if it asks for that.
            let hit = fx.actions.iter().find(|a| {
                rule.actions
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&a.action))
                    && on_rule_tables(&a.table)
                    && (!rule.unbounded_writes || !a.bounded)
            })?;
            return Some(format!(
                "{} on {}{}",
                hit.action.to_uppercase(),
                display_table(&hit.table),
                route(hit)
            ));
        }
        if rule.unbounded_writes && stmt.has_where {
            return None;
        }
        let mut what = kind.to_uppercase();
        if !patterns.is_empty() {
            let hit = stmt
                .tables_read
                .iter()
                .chain(&stmt.tables_written)
                .find(|t| on_rule_tables(t))?;
            what = format!("{what} on {}", display_table(hit));
        }
        Some(what)
    }
}

impl Plugin for Approve {
    const NAME: &'static str = "approve";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn config_schema() -> String {
        include_str!("../schema.json").into()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        let mut hours = Vec::new();
        for r in &config.rules {
            if r.name.is_empty() {
                return Err("every rule needs a name".into());
            }
            portcullis_plugin_sdk::names::check_actions(&r.name, &r.actions)?;
            hours.push(r.hours_utc.as_deref().map(Hours::parse).transpose()?);
        }
        self.patterns = config
            .rules
            .iter()
            .map(|r| r.tables.iter().map(|t| TablePattern::parse(t)).collect())
            .collect();
        self.hours = hours;
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
        // Without hours the verdict depends only on the summary, its
        // effects and the session: the gateway may reuse it for the shape.
        let timed = self
            .config
            .rules
            .iter()
            .any(|r| r.hours_utc.is_some() && self.applies_to_session(r));
        if !timed {
            reuse_verdict();
        }
        let minute = self.minute_now();
        let effects = statement_effects();
        let none = no_effects();
        for (i, rule) in self.config.rules.iter().enumerate() {
            if !self.ssh[i].is_empty() || !self.kube[i].is_empty() || !self.applies_now(i, minute) {
                continue;
            }
            let patterns = &self.patterns[i];
            let Some(what) = query.statements.iter().enumerate().find_map(|(i, s)| {
                self.matches(rule, patterns, s, effects.get(i).unwrap_or(&none))
            }) else {
                continue;
            };
            return ask(rule, &what);
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

impl Approve {
    /// Asks for approval by the first rule that applies now and whose SSH
    /// conditions `matches` (what it says it matched).
    fn judge_ssh(&self, matches: impl Fn(&SshRule) -> Option<String>) -> Verdict {
        self.first_match(|i| {
            let ssh = &self.ssh[i];
            if ssh.is_empty() {
                None
            } else {
                matches(ssh)
            }
        })
    }

    /// Asks for approval of a Kubernetes request by the first rule that
    /// applies now and whose Kubernetes conditions match it (the gateway
    /// refuses it with the request's id; it runs once approved).
    fn judge_kube(&self, request: &HttpRequest) -> Verdict {
        self.first_match(|i| self.kube[i].check(request))
    }

    /// Asks for approval by the first rule that applies now and that
    /// `matches` (by index; what it says it matched).
    fn first_match(&self, matches: impl Fn(usize) -> Option<String>) -> Verdict {
        let minute = self.minute_now();
        for (i, rule) in self.config.rules.iter().enumerate() {
            if !self.applies_now(i, minute) {
                continue;
            }
            if let Some(what) = matches(i) {
                return ask(rule, &what);
            }
        }
        Verdict::Allow
    }
}

/// Asks for approval on `rule`'s terms for `what` it matched.
fn ask(rule: &Rule, what: &str) -> Verdict {
    set_approval_policy(rule.policy());
    let reason = rule
        .reason
        .clone()
        .unwrap_or_else(|| format!("{what} needs approval (rule \"{}\")", rule.name));
    approval_by(&rule.name, reason)
}

export_plugin!(Approve);

#[cfg(test)]
mod tests {
    use portcullis_plugin_sdk::testing::{self, take_notes, StatementExt};

    use super::*;

    fn plugin(config: &str, user: &str, groups: &[&str]) -> Approve {
        let mut p = Approve::default();
        p.configure(config).expect("configuration accepted");
        p.session_start(&testing::session(user, groups));
        p
    }

    const ORDERS: &str = r#"{"rules": [{"name": "orders-writes", "kinds": ["update", "delete"], "tables": ["orders"], "except_groups": ["dba"], "mode": "retry", "min_approvals": 2, "grant_uses": 3}]}"#;

    #[test]
    fn an_action_rule_holds_every_spelling_of_the_action() {
        use testing::EffectsExt;
        let cfg = r#"{"search_path": ["public"], "rules": [{"name": "orders-changes", "actions": ["update"], "tables": ["public.orders"]}]}"#;
        let mut p = plugin(cfg, "alice@example.com", &["analysts"]);
        let spellings = [
            ("merge", "MERGE INTO orders ... WHEN MATCHED THEN UPDATE"),
            ("insert", "INSERT INTO orders ... ON CONFLICT DO UPDATE"),
            ("select", "WITH u AS (UPDATE orders ...) SELECT 1"),
            ("explain", "EXPLAIN ANALYZE UPDATE orders ..."),
        ];
        for (kind, sql) in spellings {
            testing::set_effects([testing::effects().acts("update", "orders", true)]);
            let q = testing::query(sql, [testing::statement(kind).writes("orders")]);
            match p.on_query(&q) {
                Verdict::RequireApproval(reason) => {
                    assert!(reason.contains("UPDATE on orders"), "{sql}: {reason}")
                }
                other => panic!("{sql}: expected an approval, got {other:?}"),
            }
        }
        // Inserting into orders, or updating another table, is not held.
        testing::set_effects([testing::effects().acts("insert", "orders", true)]);
        let q = testing::query("INSERT", [testing::statement("insert").writes("orders")]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        testing::set_effects([testing::effects().acts("update", "customers", true).acts(
            "update",
            "audit.orders",
            true,
        )]);
        let q = testing::query("UPDATE", [testing::statement("update").writes("customers")]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        testing::set_effects([]);
    }

    #[test]
    fn a_matching_statement_needs_approval_on_the_rule_s_terms() {
        let mut p = plugin(ORDERS, "alice@example.com", &["analysts"]);
        let update = testing::query(
            "update orders set total = 0 where id = 1",
            [testing::statement("update").writes("orders")],
        );
        take_notes();
        match p.on_query(&update) {
            Verdict::RequireApproval(reason) => {
                assert!(reason.contains("UPDATE on orders"), "{reason}");
                assert!(reason.contains("orders-writes"), "{reason}");
            }
            other => panic!("expected an approval, got {other:?}"),
        }
        let notes = take_notes();
        assert_eq!(notes.rule.as_deref(), Some("orders-writes"));
        let policy = notes.approval.expect("a policy");
        assert!(!policy.wait);
        assert_eq!((policy.min_approvals, policy.grant_uses), (2, 3));
    }

    #[test]
    fn ssh_rules_hold_matching_requests_and_never_statements() {
        let cfg = r#"{"rules": [{"name": "sudo", "commands": ["sudo *", "systemctl restart *"], "mode": "retry", "except_groups": ["oncall"]}]}"#;
        let mut p = plugin(cfg, "alice@example.com", &["staff"]);
        take_notes();
        let exec = |l: &str| SshRequest::Exec(l.into());
        match p.on_ssh_request(&exec("sudo systemctl restart nginx")) {
            Verdict::RequireApproval(reason) => {
                assert!(reason.contains("sudo systemctl restart nginx"), "{reason}");
                assert!(reason.contains("rule \"sudo\""), "{reason}");
            }
            other => panic!("expected an approval, got {other:?}"),
        }
        let notes = take_notes();
        assert_eq!(notes.rule.as_deref(), Some("sudo"));
        assert!(!notes.approval.expect("a policy").wait);
        assert_eq!(p.on_ssh_request(&exec("uptime")), Verdict::Allow);
        // An SSH rule says nothing about statements (it has no SQL
        // conditions, which would otherwise mean "every statement").
        let q = testing::query("SELECT 1", [testing::statement("select")]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        // A statement rule says nothing about SSH requests.
        let mut sql = plugin(ORDERS, "alice@example.com", &["analysts"]);
        assert_eq!(sql.on_ssh_request(&exec("sudo rm -rf /")), Verdict::Allow);
        let mut oncall = plugin(cfg, "bob@example.com", &["oncall"]);
        assert_eq!(oncall.on_ssh_request(&exec("sudo reboot")), Verdict::Allow);
    }

    #[test]
    fn other_statements_tables_and_exempt_groups_pass() {
        let mut p = plugin(ORDERS, "alice@example.com", &["analysts"]);
        let select = testing::query(
            "select * from orders",
            [testing::statement("select").reads("orders")],
        );
        assert_eq!(p.on_query(&select), Verdict::Allow);
        let other = testing::query(
            "update items set x = 1",
            [testing::statement("update").writes("items")],
        );
        assert_eq!(p.on_query(&other), Verdict::Allow);
        let mut dba = plugin(ORDERS, "bob@example.com", &["dba"]);
        let update = testing::query(
            "update orders set x = 1",
            [testing::statement("update").writes("orders")],
        );
        assert_eq!(dba.on_query(&update), Verdict::Allow);
    }

    #[test]
    fn hours_limit_when_a_rule_applies_and_may_wrap_midnight() {
        let config =
            r#"{"rules": [{"name": "night", "kinds": ["delete"], "hours_utc": "22:00-06:00"}]}"#;
        let mut p = plugin(config, "alice@example.com", &[]);
        let delete = testing::query(
            "delete from t where id = 1",
            [testing::statement("delete").writes("t")],
        );
        p.fixed_minute = Some(23 * 60);
        assert!(matches!(p.on_query(&delete), Verdict::RequireApproval(_)));
        p.fixed_minute = Some(5 * 60 + 59);
        assert!(matches!(p.on_query(&delete), Verdict::RequireApproval(_)));
        p.fixed_minute = Some(12 * 60);
        assert_eq!(p.on_query(&delete), Verdict::Allow);
        assert!(Approve::default()
            .configure(r#"{"rules": [{"name": "x", "hours_utc": "25:00-01:00"}]}"#)
            .is_err());
    }

    #[test]
    fn unbounded_writes_only_matches_statements_without_where() {
        let config = r#"{"rules": [{"name": "unbounded", "kinds": ["update", "delete"], "unbounded_writes": true}]}"#;
        let mut p = plugin(config, "alice@example.com", &[]);
        let bounded = testing::query(
            "delete from t where id = 1",
            [testing::statement("delete").writes("t")],
        );
        assert_eq!(p.on_query(&bounded), Verdict::Allow);
        let unbounded = testing::query(
            "delete from t",
            [testing::statement("delete").writes("t").unbounded()],
        );
        assert!(matches!(
            p.on_query(&unbounded),
            Verdict::RequireApproval(_)
        ));
    }

    #[test]
    fn verdicts_are_reusable_for_the_shape_unless_a_rule_has_hours() {
        let plain = r#"{"rules": [{"name": "r", "actions": ["update"], "tables": ["orders"]}]}"#;
        let mut p = plugin(plain, "a", &[]);
        let q = testing::query("SELECT 1", [testing::statement("select")]);
        take_notes();
        p.on_query(&q);
        assert!(take_notes().reuse_verdict);
        let timed =
            r#"{"rules": [{"name": "r", "kinds": ["update"], "hours_utc": "18:00-08:00"}]}"#;
        let mut p = plugin(timed, "a", &[]);
        p.on_query(&q);
        assert!(!take_notes().reuse_verdict, "the clock decides");
    }
}
