//! `mask`: masks values in results before they reach the client.
//!
//! **Column rules** name a source column — `schema.table.column`,
//! `table.column` (any schema) or `column` (any table) — as the host resolved
//! it from the result's table OID and attribute number, so an alias, `SELECT
//! *`, a table alias, a subquery, a CTE, a UNION branch or a JOIN cannot
//! rename a column past its rule. Actions:
//!
//! - `redact`: the value becomes `[redacted]`;
//! - `partial`: every letter and digit but the last `keep` (default 4)
//!   becomes `*`; separators stay (`**** **** **** 4242`);
//! - `hash`: `h:` and 16 hex digits of HMAC-SHA256 under `hash_key`: equal
//!   values give equal masks, so joins still work;
//! - `null`: the value becomes NULL.
//!
//! Values of types that are not text (`varchar`, `char`, `name`, `text`) are
//! made NULL whatever the action: a mask is text, and a client must never get
//! a value that is not valid for its column's type.
//!
//! **Derived values** — expressions such as `upper(ssn)`, `ssn || ''`,
//! `row_to_json(c)`, `array_agg(ssn)`, casts, and columns read through a view
//! — have no source column in the result. `derived = "lineage"` (default)
//! asks the gateway where each value comes from (column lineage through
//! expressions, aggregates, subqueries, CTEs, set operations, views and SQL
//! functions) and masks a value computed from a masked column as a whole,
//! whatever its type: it becomes `[redacted]` when it is text, NULL
//! otherwise or when the rule's action is `null`. (`partial` and `hash`
//! are not applied to computed values: `substr(card, 1, 4)` would keep its
//! four digits, and the hash of one digit is found by trying ten; and a
//! NULL is masked too, or which values are NULL would tell.) Rows whose
//! statement the gateway cannot tell (a cursor a function opened, `CALL`'s
//! output) have every computed value masked whole. Values whose lineage
//! the gateway cannot read are scanned with the content detectors
//! (`detect.rs`) and masked in place.
//! `derived = "detect"` only scans; `derived = "refuse"` withholds any
//! result with a derived column of a type that can carry text (numbers,
//! booleans, dates and times still pass).
//!
//! **Statistics**: the planner's statistics views (`pg_stats`,
//! `pg_stats_ext`, ...) hold sample values of every analysed column; they
//! are refused for anyone a rule applies to.
//!
//! **Writes carry lineage too**, in every mode: a statement that would move
//! values of a masked column into another place — `CREATE TABLE ... AS`,
//! `SELECT ... INTO`, `INSERT ... SELECT`, `UPDATE ... SET x = masked`,
//! `MERGE`, `set_config`, `pg_notify`, large objects — is refused for anyone
//! the column's rule applies to, unless the place is itself a column masked
//! for them. When the gateway cannot tell where a writing statement's
//! values come from and it reads a table with masked columns, it is refused
//! too.
//!
//! **COPY TO** streams rows the gateway does not parse, so for anyone a rule
//! applies to it is refused (`copy_to = "refuse"`, default), or refused only
//! when it reads a table named in a rule (`copy_to = "masked-tables"`; a view
//! over such a table then escapes — prefer the default).
//!
//! **SSH output** (`ssh_output = { detectors = [...], groups = [...] }`):
//! on SSH targets, what exec and shell commands print is scanned with the
//! named content detectors, whole line by whole line, and masked in place
//! before the client — and the session's recording — gets it. Best effort
//! against someone who means to get a secret out: a command that prints a
//! secret in pieces (a character at a time, encoded, split across lines)
//! defeats any scanner; it catches secrets printed the ordinary way
//! (`cat .env`, `env`, a log line). SFTP is not scanned.
//!
//! **Kubernetes Secrets** (`kubernetes_secrets = { except_groups = [...] }`;
//! everyone when absent): on Kubernetes targets, every answer about
//! Secrets — a `get`, each item of a list, each watch event, what a
//! create or update returns — has the values of `data` and `stringData`
//! masked (`data` as base64 of `********`), and the same inside the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation. Keys
//! stay. The gateway asks the API server for plain JSON for these and
//! withholds what it cannot read.
//!
//! Rules apply to everyone, or to `users` and `groups`; `except_groups`
//! exempts (the SDK's `Audience`, as in `block` and `approve`).

mod detect;
mod hash;
mod secrets;

use detect::Detector;
use portcullis_plugin_sdk::{
    deny_by, export_plugin, no_effects, parse_config, result_lineage, reuse_verdict,
    statement_effects, statement_lineage, Audience, Batch, Column, ColumnLineage, Edits, Effects,
    HttpRequest, Lineage, OutputStream, PgQuery, Plugin, ResultPlan, Session, SshRequest,
    Statement, Verdict,
};
use serde::Deserialize;

/// Plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<Rule>,
    /// Key of the `hash` action; required when a rule hashes.
    #[serde(default)]
    hash_key: Option<String>,
    #[serde(default)]
    derived: DerivedMode,
    /// Detectors for derived values (default: all).
    #[serde(default)]
    detectors: Option<Vec<String>>,
    #[serde(default)]
    copy_to: CopyMode,
    /// SSH targets: detectors applied to what commands print.
    #[serde(default)]
    ssh_output: Option<SshOutput>,
    /// Kubernetes targets: whose Secrets' values are masked (everyone's
    /// when absent).
    #[serde(default)]
    kubernetes_secrets: Option<KubernetesSecrets>,
}

/// `kubernetes_secrets`: the audience whose Secrets are masked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesSecrets {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    except_groups: Vec<String>,
}

/// `ssh_output`: the content detectors run over what SSH commands (exec
/// and shell) print, for its audience.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshOutput {
    detectors: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    except_groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum DerivedMode {
    #[default]
    Lineage,
    Detect,
    Refuse,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CopyMode {
    #[default]
    Refuse,
    MaskedTables,
}

/// One column rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    column: String,
    action: Action,
    #[serde(default = "default_keep")]
    keep: usize,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    except_groups: Vec<String>,
}

fn default_keep() -> usize {
    4
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Action {
    #[default]
    Redact,
    Partial,
    Hash,
    Null,
}

/// What happens to one column of the current result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Keep,
    /// Index of the rule that masks it.
    Rule(usize),
    /// A value computed from a column masked by this rule, or (`None`) a
    /// computed value of a result whose lineage the gateway does not know:
    /// masked whole.
    Whole(Option<usize>),
    Detect,
}

/// The plugin; one instance per session.
#[derive(Default)]
pub struct Mask {
    config: Config,
    detectors: Vec<Detector>,
    /// Detectors for SSH output, when `ssh_output` applies to this session.
    ssh_detectors: Vec<Detector>,
    /// Per output stream (stdout, stderr): inside a private key block
    /// whose END line has not been seen yet.
    in_key_block: [bool; 2],
    /// Rules that apply to this session's identity.
    active: Vec<usize>,
    /// Treatment of each column of the current result, and whether it is text.
    current: Vec<(Treatment, bool)>,
    /// Scratch buffer for masks.
    scratch: Vec<u8>,
    /// Kubernetes Secrets are masked for this session.
    masks_secrets: bool,
}

/// A masked value: replaced by these bytes, or NULL.
enum Masked<'a> {
    Replace(&'a [u8]),
    Null,
}

/// Types whose values are plain text (text, varchar, bpchar, name, unknown).
fn is_text(type_oid: u32) -> bool {
    matches!(type_oid, 25 | 1043 | 1042 | 19 | 705)
}

/// Types that cannot carry text: numbers, booleans, dates and times, uuid.
fn cannot_carry_text(type_oid: u32) -> bool {
    matches!(
        type_oid,
        16 | 20
            | 21
            | 23
            | 26
            | 700
            | 701
            | 790
            | 1700
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
    )
}

/// Whether rule column pattern `pattern` names source `source`
/// (`schema.table.column`).
fn column_matches(pattern: &str, source: &str) -> bool {
    // Case-insensitively: lineage folds names, and matching more is the
    // safe side. No allocation: this runs for every column of every plan.
    match pattern.matches('.').count() {
        2 => pattern.eq_ignore_ascii_case(source),
        _ => {
            let Some(cut) = source.len().checked_sub(pattern.len()) else {
                return false;
            };
            source.is_char_boundary(cut)
                && source[cut..].eq_ignore_ascii_case(pattern)
                && source[..cut].ends_with('.')
        }
    }
}

impl Mask {
    fn subject_to_rules(&self) -> bool {
        !self.active.is_empty()
    }

    /// The active rule that masks source column `source`, if any.
    fn rule_for(&self, source: &str) -> Option<usize> {
        self.active
            .iter()
            .copied()
            .find(|&i| column_matches(&self.config.rules[i].column, source))
    }

    /// Whether `stmt` reads a table that may have a column masked for this
    /// session (any table, when a rule names a column of every table), or
    /// runs code the gateway could not read (`fx`: it may read anything).
    fn reads_masked_table(&self, stmt: &Statement, fx: &Effects) -> bool {
        if !fx.unknown_effects.is_empty() {
            return true;
        }
        let any_table = self
            .active
            .iter()
            .any(|&i| !self.config.rules[i].column.contains('.'));
        if any_table && !stmt.tables_read.is_empty() {
            return true;
        }
        stmt.tables_read.iter().any(|t| {
            self.masked_tables().any(|(schema, table)| {
                table.eq_ignore_ascii_case(&t.name)
                    && (schema.is_none()
                        || t.schema.is_none()
                        || schema
                            .zip(t.schema.as_deref())
                            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)))
            })
        })
    }

    /// Refuses `stmt` (whose effects are `fx`) when its lineage shows
    /// masked values leaving the mask — written somewhere not masked for
    /// this session — or when the gateway cannot tell where its values come
    /// from and the statement reads what is masked.
    fn judge_lineage(
        &self,
        stmt: &Statement,
        fx: &Effects,
        lineage: Option<&Lineage>,
    ) -> Option<Verdict> {
        let reads_masked = self.reads_masked_table(stmt, fx);
        let Some(l) = lineage else {
            // Unknown lineage: fail closed where masked values could be
            // involved.
            let returns_rows = matches!(stmt.kind.as_str(), "select" | "declare" | "prepare");
            let writes = !stmt.tables_written.is_empty();
            let lineage_mode = self.config.derived == DerivedMode::Lineage;
            if reads_masked && (writes || (lineage_mode && returns_rows)) {
                return Some(refuse(
                    "unknown-lineage",
                    "the gateway cannot tell where this statement's values come from, and it reads data masked for you; select the table's columns directly",
                ));
            }
            return None;
        };
        for w in &l.writes {
            if w.target == "client" {
                continue; // COPY ... TO: judged by the copy_to rules below.
            }
            let masked_source = w
                .derived_from
                .iter()
                .find(|src| self.rule_for(src).is_some());
            let lands_masked = |w: &portcullis_plugin_sdk::WriteFlow| {
                w.column
                    .as_ref()
                    .is_some_and(|c| self.rule_for(&format!("{}.{c}", w.target)).is_some())
            };
            if let Some(src) = masked_source {
                if !lands_masked(w) {
                    return Some(refuse(
                        "masked-copy",
                        format!("the statement would copy values of {src}, which is masked for you, into {}{} where they would not be masked; copy the columns that are not masked", w.target, w.column.as_deref().map(|c| format!(".{c}")).unwrap_or_default()),
                    ));
                }
            } else if w.unknown && reads_masked {
                return Some(refuse(
                    "masked-copy",
                    format!("the gateway cannot tell where the values written to {} come from, and the statement reads data masked for you; copy the columns that are not masked", w.target),
                ));
            }
        }
        if self.config.derived != DerivedMode::Lineage {
            return None;
        }
        let Some(columns) = l.output.as_ref() else {
            if reads_masked && matches!(stmt.kind.as_str(), "select" | "declare" | "prepare") {
                return Some(refuse(
                    "unknown-lineage",
                    "the gateway cannot tell which columns this statement returns, and it reads data masked for you; select the table's columns directly",
                ));
            }
            return None;
        };
        for (n, c) in columns.iter().enumerate() {
            if c.origin.is_some() {
                continue; // masked in the result by the column PostgreSQL names
            }
            if c.unknown && reads_masked {
                return Some(refuse(
                    "unknown-lineage",
                    format!("the gateway cannot tell where result column {} comes from (a function or relation it cannot read), and the statement reads data masked for you; select the table's columns directly", n + 1),
                ));
            }
        }
        None
    }

    /// The active rule of the first masked column `value` is computed from
    /// (called for a result column the server names no source for, so an
    /// `origin` the analysis expected does not count).
    fn masked_source(&self, value: &ColumnLineage) -> Option<usize> {
        value.derived_from.iter().find_map(|src| self.rule_for(src))
    }

    fn masked_tables(&self) -> impl Iterator<Item = (Option<&str>, &str)> {
        self.active.iter().filter_map(|&i| {
            let parts: Vec<&str> = self.config.rules[i].column.split('.').collect();
            match parts.as_slice() {
                [s, t, _] => Some((Some(*s), *t)),
                [t, _] => Some((None, *t)),
                _ => None,
            }
        })
    }

    /// Masks `value` by `rule`, using `out` for the new bytes.
    fn mask_value<'o>(
        &self,
        rule: &Rule,
        value: &[u8],
        text: bool,
        out: &'o mut Vec<u8>,
    ) -> Masked<'o> {
        if !text {
            return Masked::Null;
        }
        out.clear();
        match rule.action {
            Action::Null => return Masked::Null,
            Action::Redact => out.extend_from_slice(REDACTED),
            Action::Partial => partial(value, rule.keep, out),
            Action::Hash => {
                let key = self.config.hash_key.as_deref().unwrap_or_default();
                out.extend_from_slice(&hash::masked(key.as_bytes(), value));
            }
        }
        Masked::Replace(out)
    }
}

/// What a redacted value becomes.
const REDACTED: &[u8] = b"[redacted]";

/// The planner's statistics: sample values of every analysed column
/// (`most_common_vals`, `histogram_bounds`), masked ones included.
const STATISTICS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
];

/// A refusal that names its rule, as `block`'s do.
fn refuse(rule: &str, why: impl std::fmt::Display) -> Verdict {
    deny_by(
        rule,
        format!("blocked by portcullis rule \"{rule}\": {why}"),
    )
}

/// Every letter and digit of `value` but the last `keep` becomes `*`.
fn partial(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    if value.is_ascii() {
        let alnum = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
        let hide = alnum.saturating_sub(keep);
        let mut seen = 0;
        out.extend(value.iter().map(|&b| {
            if b.is_ascii_alphanumeric() {
                seen += 1;
                if seen <= hide {
                    return b'*';
                }
            }
            b
        }));
        return;
    }
    let text = String::from_utf8_lossy(value);
    let alnum = text.chars().filter(|c| c.is_alphanumeric()).count();
    let hide = alnum.saturating_sub(keep);
    let mut seen = 0;
    let masked: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen <= hide {
                    return '*';
                }
            }
            c
        })
        .collect();
    out.extend_from_slice(masked.as_bytes());
}

impl Plugin for Mask {
    const NAME: &'static str = "mask";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn config_schema() -> String {
        include_str!("../schema.json").into()
    }

    fn wants_rows() -> bool {
        true
    }

    /// Every query: lineage decides what a statement may compute or copy.
    fn query_kinds() -> Vec<String> {
        Vec::new()
    }

    /// A plan depends on the columns and the identity only.
    fn stable_result_plans() -> bool {
        true
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        for (i, r) in config.rules.iter().enumerate() {
            let parts = r.column.split('.').count();
            if r.column.is_empty() || parts > 3 || r.column.split('.').any(str::is_empty) {
                return Err(format!(
                    "rules[{i}].column \"{}\" must be column, table.column or schema.table.column",
                    r.column
                ));
            }
            if r.action == Action::Hash && config.hash_key.as_deref().unwrap_or("").len() < 16 {
                return Err(format!(
                    "rules[{i}] hashes \"{}\" but hash_key is missing or shorter than 16 characters",
                    r.column
                ));
            }
        }
        let detectors = |names: &[String]| {
            names
                .iter()
                .map(|n| {
                    Detector::from_name(n).ok_or_else(|| {
                        format!("unknown detector \"{n}\" (known: email, card, iban, national-id, secret)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        self.detectors = match &config.detectors {
            None => Detector::ALL.to_vec(),
            Some(names) => detectors(names)?,
        };
        if let Some(o) = &config.ssh_output {
            if o.detectors.is_empty() {
                return Err("ssh_output.detectors is empty: name at least one (email, card, iban, national-id, secret)".into());
            }
            detectors(&o.detectors)?;
        }
        self.config = config;
        Ok(())
    }

    fn session_start(&mut self, session: &Session) -> Verdict {
        let (user, groups) = (&session.identity.user, &session.identity.groups);
        self.active = self
            .config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                Audience {
                    users: &r.users,
                    groups: &r.groups,
                    except_groups: &r.except_groups,
                }
                .includes(user, groups)
            })
            .map(|(i, _)| i)
            .collect();
        self.masks_secrets = match &self.config.kubernetes_secrets {
            None => true,
            Some(k) => Audience {
                users: &k.users,
                groups: &k.groups,
                except_groups: &k.except_groups,
            }
            .includes(user, groups),
        };
        self.ssh_detectors = match &self.config.ssh_output {
            Some(o)
                if Audience {
                    users: &o.users,
                    groups: &o.groups,
                    except_groups: &o.except_groups,
                }
                .includes(user, groups) =>
            {
                o.detectors
                    .iter()
                    .filter_map(|n| Detector::from_name(n))
                    .collect()
            }
            _ => Vec::new(),
        };
        Verdict::Allow
    }

    fn on_http_request(&mut self, request: &HttpRequest) -> Verdict {
        match secrets::refusal(request) {
            Some(why) if self.masks_secrets => deny_by("kubernetes-secrets", why),
            _ => Verdict::Allow,
        }
    }

    fn watch_response(&mut self, request: &HttpRequest) -> bool {
        self.masks_secrets && secrets::about_secrets(request)
    }

    fn on_kube_object(&mut self, _request_id: u64, object: &str) -> Option<String> {
        // Only answers about Secrets are watched (see `watch_response`).
        secrets::mask(object)
    }

    fn watch_ssh_output(&mut self, _request: &SshRequest) -> bool {
        !self.ssh_detectors.is_empty()
    }

    fn on_ssh_output(&mut self, stream: OutputStream, text: &str) -> Option<String> {
        let masked = detect::mask(text.as_bytes(), &self.ssh_detectors)
            .map(|masked| String::from_utf8_lossy(&masked).into_owned());
        if !self.ssh_detectors.contains(&Detector::Secret) {
            return masked;
        }
        // A private key's lines can arrive over several calls: every line
        // after its BEGIN line is masked until its END line.
        let inside = match stream {
            OutputStream::Stdout => &mut self.in_key_block[0],
            OutputStream::Stderr => &mut self.in_key_block[1],
        };
        let shown = masked.as_deref().unwrap_or(text);
        let mut out = String::with_capacity(shown.len());
        let mut changed = masked.is_some();
        for (original, line) in text.split_inclusive('\n').zip(shown.split_inclusive('\n')) {
            if *inside {
                out.extend(
                    line.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { '*' } else { c }),
                );
                changed = true;
                if original.contains("-----END") {
                    *inside = false;
                }
                continue;
            }
            out.push_str(line);
            if let Some(begin) = original.find("-----BEGIN ") {
                let rest = &original[begin..];
                *inside = rest.contains("PRIVATE KEY-----") && !rest.contains("-----END");
            }
        }
        changed.then_some(out)
    }

    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        // The verdict depends on the summary, its lineage and the identity.
        reuse_verdict();
        if !self.subject_to_rules() {
            return Verdict::Allow;
        }
        if let Some(view) = query
            .statements
            .iter()
            .flat_map(|s| &s.tables_read)
            .find(|t| {
                t.schema.as_deref().is_none_or(|s| s == "pg_catalog")
                    && STATISTICS.contains(&t.name.as_str())
            })
        {
            return refuse(
                "statistics",
                format!("{} holds sample values of columns, including columns masked for you; it is not readable for you on this target", view.name),
            );
        }
        let lineage = statement_lineage();
        let effects = statement_effects();
        let none = no_effects();
        for (i, s) in query.statements.iter().enumerate() {
            let fx = effects.get(i).unwrap_or(&none);
            if let Some(refusal) = self.judge_lineage(s, fx, lineage.get(i)) {
                return refusal;
            }
        }
        for s in &query.statements {
            // COPY ... TO reads; COPY ... FROM only writes its table. A
            // COPY (INSERT ... RETURNING (SELECT ... FROM t)) TO both writes
            // and reads: it is a COPY TO.
            let copy_to = s.is_copy && (s.tables_written.is_empty() || !s.tables_read.is_empty());
            let explain_copy = s.kind == "explain" && s.is_copy;
            if !copy_to || explain_copy {
                continue;
            }
            match self.config.copy_to {
                CopyMode::Refuse => {
                    return deny_by(
                        "copy-to",
                        "COPY ... TO is not allowed for you on this target because results are masked for you; use SELECT, whose results are masked",
                    )
                }
                CopyMode::MaskedTables => {
                    let hit = s.tables_read.iter().find(|t| {
                        self.masked_tables().any(|(schema, table)| {
                            table == t.name
                                && (schema.is_none()
                                    || t.schema.is_none()
                                    || schema == t.schema.as_deref())
                        })
                    });
                    if let Some(t) = hit {
                        return deny_by(
                            "copy-to",
                            format!("COPY ... TO of {} is not allowed for you because it has masked columns; use SELECT, whose results are masked", t.name),
                        );
                    }
                }
            }
        }
        Verdict::Allow
    }

    fn result_columns(&mut self, columns: &[Column]) -> ResultPlan {
        self.current.clear();
        if !self.subject_to_rules() {
            return ResultPlan::Pass;
        }
        let lineage = match self.config.derived {
            DerivedMode::Lineage => result_lineage(),
            DerivedMode::Detect | DerivedMode::Refuse => None,
        };
        // Rows whose statement the gateway could not tell (a cursor a
        // function opened, CALL's output): any computed value may be one.
        let unknown_result = self.config.derived == DerivedMode::Lineage && lineage.is_none();
        let mut watch = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let computed_from = lineage
                .as_ref()
                .and_then(|l| l.get(i))
                .and_then(|l| self.masked_source(l));
            let treatment = match &c.source {
                Some(source) => self
                    .active
                    .iter()
                    .copied()
                    .find(|&i| column_matches(&self.config.rules[i].column, source))
                    .map_or(Treatment::Keep, Treatment::Rule),
                None if computed_from.is_some() || unknown_result => Treatment::Whole(computed_from),
                None if cannot_carry_text(c.type_oid) => Treatment::Keep,
                None => match self.config.derived {
                    DerivedMode::Refuse => {
                        return ResultPlan::Deny(format!(
                            "column \"{}\" is computed (or read through a view), and computed values are refused for you on this target because they could reveal masked data; select the table's columns directly",
                            c.name
                        ))
                    }
                    DerivedMode::Detect | DerivedMode::Lineage if self.detectors.is_empty() => {
                        Treatment::Keep
                    }
                    DerivedMode::Detect | DerivedMode::Lineage => Treatment::Detect,
                },
            };
            if treatment != Treatment::Keep {
                watch.push(i as u32);
            }
            self.current.push((treatment, is_text(c.type_oid)));
        }
        if watch.is_empty() {
            ResultPlan::Pass
        } else {
            ResultPlan::Watch(watch)
        }
    }

    fn result_rows(&mut self, batch: &Batch, edits: &mut Edits) {
        let mut out = std::mem::take(&mut self.scratch);
        for column in batch.columns() {
            let c = column.index();
            let Some(&(treatment, text)) = self.current.get(c as usize) else {
                continue;
            };
            if treatment == Treatment::Keep {
                continue;
            }
            for (row, value) in column.values().enumerate() {
                if let Treatment::Whole(rule) = treatment {
                    // NULLs too: which values are NULL would tell about
                    // the masked column (`nullif(substr(card, 1, 1), '4')`).
                    let null = rule.is_some_and(|i| self.config.rules[i].action == Action::Null);
                    if text && !null {
                        edits.replace(row, c, REDACTED);
                    } else if value.is_some() {
                        edits.null(row, c);
                    }
                    continue;
                }
                let Some(value) = value else { continue };
                match treatment {
                    Treatment::Keep => {}
                    Treatment::Rule(i) => {
                        match self.mask_value(&self.config.rules[i], value, text, &mut out) {
                            Masked::Replace(v) => edits.replace(row, c, v),
                            Masked::Null => edits.null(row, c),
                        }
                    }
                    Treatment::Whole(_) => {}
                    Treatment::Detect => {
                        if let Some(masked) = detect::mask(value, &self.detectors) {
                            edits.replace(row, c, &masked);
                        }
                    }
                }
            }
        }
        self.scratch = out;
    }
}

export_plugin!(Mask);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin_sdk::testing::{self, StatementExt};

    const CONFIG: &str = r#"{
        "hash_key": "0123456789abcdef-test",
        "rules": [
            {"column": "public.customers.card_number", "action": "partial"},
            {"column": "customers.email", "action": "hash"},
            {"column": "ssn", "action": "redact", "except_groups": ["auditors"]},
            {"column": "public.customers.notes", "action": "null"}
        ]
    }"#;

    fn col(name: &str, source: Option<&str>, type_oid: u32) -> Column {
        Column {
            name: name.into(),
            source: source.map(str::to_string),
            type_oid,
            binary: false,
        }
    }

    #[test]
    fn ssh_output_is_masked_for_its_audience_only() {
        let config = r#"{"ssh_output": {"detectors": ["secret"], "except_groups": ["auditors"]}}"#;
        let shell = SshRequest::Shell(None);
        let mut p = Mask::default();
        p.configure(config).unwrap();
        p.session_start(&testing::session("u@example.com", &["ops"]));
        assert!(p.watch_ssh_output(&shell));
        assert_eq!(
            p.on_ssh_output(OutputStream::Stdout, "key AKIAIOSFODNN7EXAMPLE\n")
                .as_deref(),
            Some("key AKIA****************\n")
        );
        assert_eq!(
            p.on_ssh_output(OutputStream::Stderr, "nothing here\n"),
            None
        );
        // A key whose lines arrive over several calls is masked to its end.
        let begin = p.on_ssh_output(
            OutputStream::Stdout,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n",
        );
        assert!(!begin.unwrap_or_default().contains("b3BlbnNzaC1rZXk"));
        let body = p
            .on_ssh_output(
                OutputStream::Stdout,
                "AAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\nafter\n",
            )
            .expect("masked");
        assert!(!body.contains("AAAABG5vbmUAAAAEbm9uZQ"), "{body}");
        assert!(body.ends_with("after\n"), "{body}");
        assert_eq!(p.on_ssh_output(OutputStream::Stdout, "plain\n"), None);
        let mut exempt = Mask::default();
        exempt.configure(config).unwrap();
        exempt.session_start(&testing::session("a@example.com", &["auditors"]));
        assert!(!exempt.watch_ssh_output(&shell));
        // Without `ssh_output`, nothing is watched.
        assert!(!plugin(&["ops"]).watch_ssh_output(&shell));
        for bad in [
            r#"{"ssh_output": {"detectors": []}}"#,
            r#"{"ssh_output": {"detectors": ["dna"]}}"#,
            r#"{"ssh_output": {}}"#,
        ] {
            assert!(Mask::default().configure(bad).is_err(), "{bad}");
        }
    }

    fn plugin(groups: &[&str]) -> Mask {
        let mut p = Mask::default();
        p.configure(CONFIG).unwrap();
        p.session_start(&testing::session("u@example.com", groups));
        p
    }

    fn run(p: &mut Mask, cols: &[Column], row: &[&str]) -> Vec<Option<String>> {
        let plan = p.result_columns(cols);
        let mut values: Vec<Option<Vec<u8>>> =
            row.iter().map(|v| Some(v.as_bytes().to_vec())).collect();
        if let ResultPlan::Watch(watched) = plan {
            let shown: Vec<Option<&[u8]>> = watched
                .iter()
                .map(|&c| values[c as usize].as_deref())
                .collect();
            let batch = portcullis_plugin_sdk::rows::batch_of(&watched, &[shown]);
            let mut edits = Edits::default();
            p.result_rows(&batch, &mut edits);
            for (_, column, value) in edits.to_vec() {
                values[column as usize] = value;
            }
        }
        values
            .into_iter()
            .map(|v| v.map(|b| String::from_utf8(b).unwrap()))
            .collect()
    }

    #[test]
    fn rules_follow_the_source_not_the_label() {
        let mut p = plugin(&[]);
        let cols = [
            col("harmless", Some("public.customers.card_number"), 25),
            col("e", Some("public.customers.email"), 1043),
            col("x", Some("other.people.ssn"), 25),
            col("name", Some("public.customers.name"), 25),
        ];
        let out = run(
            &mut p,
            &cols,
            &[
                "4111 1111 1111 1111",
                "ada@example.com",
                "123-45-6789",
                "Ada",
            ],
        );
        assert_eq!(out[0].as_deref(), Some("**** **** **** 1111"));
        assert!(out[1].as_deref().unwrap().starts_with("h:"));
        assert_eq!(out[2].as_deref(), Some("[redacted]"));
        assert_eq!(out[3].as_deref(), Some("Ada"));
    }

    #[test]
    fn hashes_are_stable_and_non_text_types_become_null() {
        let mut p = plugin(&[]);
        let cols = [col("e", Some("public.customers.email"), 25)];
        let a = run(&mut p, &cols, &["ada@example.com"]);
        let b = run(&mut p, &cols, &["ada@example.com"]);
        assert_eq!(a, b);
        let cols = [col("card", Some("public.customers.card_number"), 20)];
        assert_eq!(run(&mut p, &cols, &["4111111111111111"]), vec![None]);
    }

    #[test]
    fn derived_values_are_scanned_or_refused() {
        let mut p = plugin(&[]);
        let cols = [col("upper", None, 25), col("count", None, 20)];
        // Computed from columns no rule masks: scanned by the detectors.
        testing::set_result_lineage(Some(vec![
            testing::column_lineage(&["public.customers.name"], None),
            testing::column_lineage(&[], None),
        ]));
        let out = run(&mut p, &cols, &["ADA@EXAMPLE.COM", "42"]);
        testing::set_result_lineage(None);
        assert_eq!(out[0].as_deref(), Some("***@*******.***"));
        assert_eq!(out[1].as_deref(), Some("42"));
        let mut strict = Mask::default();
        strict
            .configure(r#"{"derived": "refuse", "rules": [{"column": "ssn", "action": "null"}]}"#)
            .unwrap();
        strict.session_start(&testing::session("u", &[]));
        assert!(matches!(strict.result_columns(&cols), ResultPlan::Deny(_)));
        assert_eq!(
            strict.result_columns(&[col("count", None, 20)]),
            ResultPlan::Pass
        );
        // Only the columns to mask are watched.
        assert_eq!(
            p.result_columns(&[
                col("n", Some("public.customers.name"), 25),
                col("c", Some("public.customers.card_number"), 25),
            ]),
            ResultPlan::Watch(vec![1])
        );
    }

    #[test]
    fn exempt_identities_see_everything_and_may_copy() {
        let mut p = Mask::default();
        p.configure(
            r#"{"rules": [{"column": "ssn", "action": "null", "except_groups": ["auditors"]}]}"#,
        )
        .unwrap();
        p.session_start(&testing::session("a", &["auditors"]));
        assert_eq!(
            p.result_columns(&[col("ssn", Some("public.c.ssn"), 25)]),
            ResultPlan::Pass
        );
        let copy = testing::query(
            "COPY customers TO STDOUT",
            [testing::statement("copy").reads("customers")],
        );
        assert_eq!(p.on_query(&copy), Verdict::Allow);
        p.session_start(&testing::session("b", &[]));
        assert!(matches!(p.on_query(&copy), Verdict::Deny(_)));
        // A rule for named users only.
        p.configure(r#"{"rules": [{"column": "ssn", "action": "null", "users": ["b"]}]}"#)
            .unwrap();
        p.session_start(&testing::session("a", &[]));
        assert_eq!(
            p.result_columns(&[col("ssn", Some("public.c.ssn"), 25)]),
            ResultPlan::Pass
        );
        p.session_start(&testing::session("b", &[]));
        assert!(matches!(p.on_query(&copy), Verdict::Deny(_)));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let mut p = Mask::default();
        let e = p
            .configure(r#"{"rules": [{"column": "a.b.c.d", "action": "null"}]}"#)
            .unwrap_err();
        assert!(e.contains("rules[0].column"), "{e}");
        let e = p
            .configure(r#"{"rules": [{"column": "email", "action": "hash"}]}"#)
            .unwrap_err();
        assert!(e.contains("hash_key"), "{e}");
        let e = p.configure(r#"{"detectors": ["dna"]}"#).unwrap_err();
        assert!(e.contains("unknown detector"), "{e}");
    }

    fn lineage(
        output: Option<Vec<portcullis_plugin_sdk::ColumnLineage>>,
        writes: Vec<portcullis_plugin_sdk::WriteFlow>,
    ) -> Lineage {
        Lineage { output, writes }
    }

    fn refusal(v: Verdict) -> String {
        match v {
            Verdict::Deny(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn values_computed_from_a_masked_column_are_masked_whole_in_the_result() {
        let mut p = plugin(&["analysts"]);
        let q = testing::query(
            "SELECT reverse(card_number), substr(card_number, 1, 4), length(card_number), upper(name), ssn FROM customers",
            [testing::statement("select").reads("customers")],
        );
        let from = |c: &str| testing::column_lineage(&[c], None);
        let output = vec![
            from("public.customers.card_number"),
            from("public.customers.card_number"),
            from("public.customers.card_number"),
            from("public.customers.name"),
            from("public.customers.notes"),
        ];
        testing::set_lineage([lineage(Some(output.clone()), vec![])]);
        // The query runs: its result is masked.
        assert_eq!(p.on_query(&q), Verdict::Allow);
        testing::set_result_lineage(Some(output));
        let cols = [
            col("reverse", None, 25),
            col("substr", None, 25),
            col("length", None, 23),
            col("upper", None, 25),
            col("notes_copy", None, 25),
        ];
        let out = run(
            &mut p,
            &cols,
            &["1111 1111 1111 1114", "4111", "19", "ADA", "call after 5"],
        );
        testing::set_result_lineage(None);
        assert_eq!(
            out,
            vec![
                Some("[redacted]".to_string()),
                Some("[redacted]".to_string()),
                None,
                Some("ADA".to_string()),
                // The rule for notes nulls.
                None,
            ]
        );
        // Without lineage for the result (a cursor a function opened):
        // every computed value is masked whole, numbers too; a plain
        // column keeps its own rule.
        let out = run(
            &mut p,
            &[
                col("r", None, 25),
                col("n", None, 1700),
                col("name", Some("public.customers.name"), 25),
            ],
            &["1111 1111 1111 1114", "4111111111111111", "Ada"],
        );
        assert_eq!(
            out,
            vec![
                Some("[redacted]".to_string()),
                None,
                Some("Ada".to_string())
            ]
        );
        // NULLs computed from a masked column are masked too.
        testing::set_result_lineage(Some(vec![from("public.customers.card_number")]));
        let plan = p.result_columns(&[col("maybe", None, 25)]);
        let ResultPlan::Watch(watched) = plan else {
            panic!("the column is watched");
        };
        let batch = portcullis_plugin_sdk::rows::batch_of(&watched, &[vec![None]]);
        let mut edits = Edits::default();
        p.result_rows(&batch, &mut edits);
        testing::set_result_lineage(None);
        assert_eq!(edits.to_vec(), vec![(0, 0, Some(b"[redacted]".to_vec()))]);
        // A cursor or SQL-prepared statement of such a query is declared:
        // its rows are masked when they come.
        for kind in ["declare", "prepare"] {
            let kept = testing::query(
                "DECLARE c CURSOR FOR SELECT reverse(card_number) FROM customers",
                [testing::statement(kind).reads("customers")],
            );
            testing::set_lineage([lineage(
                Some(vec![from("public.customers.card_number")]),
                vec![],
            )]);
            assert_eq!(p.on_query(&kept), Verdict::Allow);
        }
        // The plain column: PostgreSQL names it, the result masks it.
        testing::set_lineage([lineage(
            Some(vec![testing::column_lineage(
                &["public.customers.card_number"],
                Some("public.customers.card_number"),
            )]),
            vec![],
        )]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        // Computed from columns no rule masks.
        testing::set_lineage([lineage(
            Some(vec![testing::column_lineage(
                &["public.customers.name"],
                None,
            )]),
            vec![],
        )]);
        assert_eq!(p.on_query(&q), Verdict::Allow);
        // Exempt from the ssn rule: an auditor may compute from ssn.
        let mut auditor = plugin(&["auditors"]);
        testing::set_lineage([lineage(
            Some(vec![testing::column_lineage(&["hr.people.ssn"], None)]),
            vec![],
        )]);
        assert_eq!(auditor.on_query(&q), Verdict::Allow);
        testing::set_lineage([]);
    }

    #[test]
    fn copies_of_masked_values_are_refused_unless_they_land_masked() {
        let mut p = plugin(&["analysts"]);
        let ctas = testing::query(
            "CREATE TABLE x AS SELECT card_number FROM customers",
            [testing::statement("create").reads("customers").writes("x")],
        );
        testing::set_lineage([lineage(
            None,
            vec![testing::write_flow(
                "public.x",
                &["public.customers.card_number"],
            )],
        )]);
        let why = refusal(p.on_query(&ctas));
        assert!(why.contains("into public.x"), "{why}");
        // Into a column masked for this session: still masked.
        let mut into_masked =
            testing::write_flow("public.customers", &["public.customers.card_number"]);
        into_masked.column = Some("card_number".into());
        testing::set_lineage([lineage(None, vec![into_masked])]);
        assert_eq!(p.on_query(&ctas), Verdict::Allow);
        // A setting keeps the value for current_setting() to read back.
        testing::set_lineage([lineage(
            None,
            vec![testing::write_flow("setting", &["public.customers.email"])],
        )]);
        assert!(refusal(p.on_query(&ctas)).contains("setting"));
        // No lineage at all, and the statement writes after reading a
        // masked table: refused.
        testing::set_lineage([]);
        assert!(refusal(p.on_query(&ctas)).contains("cannot tell"));
    }
}
