//! What code inside the database does when a statement runs it: the bodies
//! of the functions and procedures it calls, the triggers and rules its
//! writes fire, and the tables a write through a view lands in — SQL and
//! PL/pgSQL bodies read with PostgreSQL's own parsers and summarized like
//! the statement itself, recursively.
//!
//! [`effects_of_code`] attributes those effects to the statement (each
//! action names the code it came through in `via`). What cannot be read —
//! dynamic SQL (`EXECUTE` of a string), a routine in another language
//! outside `pg_catalog`, a function the catalog does not know, nesting
//! deeper than [`MAX_DEPTH`] — is reported as an unknown effect, never
//! ignored. The catalog behind it is a trait ([`CodeCatalog`]) so the
//! analysis stays pure; the relay fills it from the target's catalog.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{summarize, Action, StatementSummary, TableAction, TableName};

/// How deep routines calling routines (and triggers firing triggers) are
/// followed before the rest counts as unknown.
pub const MAX_DEPTH: usize = 6;

/// A routine as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routine {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Language (`sql`, `plpgsql`, `internal`, `c`, ...).
    pub language: String,
    /// `prosrc`: the body of a SQL function written as a string.
    pub source: String,
    /// `pg_get_functiondef`: the whole `CREATE FUNCTION` (what PL/pgSQL and
    /// SQL-standard bodies are read from).
    pub definition: String,
}

impl Routine {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Code a write to a table fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// A trigger (its name, qualified table) and its function.
    Trigger {
        /// `trigger t on s.tab`.
        via: String,
        /// The trigger function.
        routine: Routine,
    },
    /// A rule (`CREATE RULE ...` as `pg_get_ruledef` prints it).
    Rule {
        /// `rule r on s.tab`.
        via: String,
        /// Its definition.
        definition: String,
    },
}

/// What the analysis needs to know about the database's code.
pub trait CodeCatalog {
    /// Routines named `name` (`f` or `schema.f`, as a statement spells it),
    /// or `None` when the catalog does not know the name.
    fn routines(&self, name: &str) -> Option<Vec<Routine>>;
    /// Triggers and rules on `table` (every schema, when unqualified).
    fn fired(&self, table: &TableName) -> Vec<Fired>;
    /// The definitions of the views named `table` (a write through a view
    /// lands in the tables it reads).
    fn view_definitions(&self, table: &TableName) -> Vec<String>;
    /// The tables `table` is a partition or inheritance child of (its rows
    /// are theirs too: a rule on `orders` covers `orders_2026`).
    fn parents(&self, table: &TableName) -> Vec<TableName>;
    /// Foreign keys that reference `table` and change rows of their own
    /// table when `table`'s rows are deleted or updated.
    fn cascades(&self, table: &TableName) -> Vec<Cascade>;
}

/// A foreign key whose referencing rows change with the referenced ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade {
    /// The referencing table.
    pub table: TableName,
    /// The constraint's name.
    pub constraint: String,
    /// What a delete of a referenced row does to it (`ON DELETE CASCADE`:
    /// delete; `SET NULL` / `SET DEFAULT`: update), if anything.
    pub on_delete: Option<Action>,
    /// What an update of a referenced key does to it, if anything.
    pub on_update: Option<Action>,
}

/// Effects a statement gains from the code it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeEffects {
    /// Actions of that code, each naming what it came through.
    pub actions: Vec<TableAction>,
    /// Whether that code switches roles.
    pub switches_role: bool,
    /// Whether that code may turn `standard_conforming_strings` off.
    pub changes_parsing: bool,
    /// Whether that code touches server files or programs.
    pub server_files: bool,
    /// What the gateway could not read, in words.
    pub unknown: Vec<String>,
}

impl CodeEffects {
    fn is_empty(&self) -> bool {
        self.actions.is_empty()
            && !self.switches_role
            && !self.changes_parsing
            && !self.server_files
            && self.unknown.is_empty()
    }
}

struct Walk<'a> {
    catalog: &'a dyn CodeCatalog,
    out: CodeEffects,
    /// Routines and tables already followed (no cycles, no repeats).
    seen: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

/// The effects of the code `stmt` runs: routines it calls, and triggers,
/// rules and view bases its writes reach.
pub fn effects_of_code(stmt: &StatementSummary, catalog: &dyn CodeCatalog) -> CodeEffects {
    let mut w = Walk {
        catalog,
        out: CodeEffects::default(),
        seen: BTreeSet::new(),
        unknown: BTreeSet::new(),
    };
    w.statement(stmt, None, 0);
    let mut out = w.out;
    out.unknown = w.unknown.into_iter().collect();
    out
}

impl Walk<'_> {
    /// Follows what `stmt` runs; `via` is the code it sits in, if any.
    fn statement(&mut self, stmt: &StatementSummary, via: Option<&str>, depth: usize) {
        if via.is_some() {
            for a in &stmt.actions {
                self.out.actions.push(TableAction {
                    via: via.map(str::to_string),
                    ..a.clone()
                });
            }
            self.out.switches_role |= stmt.switches_role;
            self.out.changes_parsing |= stmt.changes_parsing;
            self.out.server_files |= stmt.server_files;
            if stmt.kind == "do" {
                self.unknown
                    .insert(format!("{} runs a DO block", via.unwrap_or_default()));
            }
        }
        if depth >= MAX_DEPTH {
            if !stmt.functions.is_empty() || !stmt.actions.is_empty() {
                self.unknown.insert(format!(
                    "code nested deeper than {MAX_DEPTH} levels is not followed"
                ));
            }
            return;
        }
        for f in &stmt.functions {
            self.function(f, depth + 1);
        }
        for a in &stmt.actions {
            self.writes(&a.table, a.action, a.bounded, depth + 1);
        }
    }

    fn function(&mut self, name: &str, depth: usize) {
        if !self.seen.insert(format!("f:{name}")) {
            return;
        }
        let Some(routines) = self.catalog.routines(name) else {
            self.unknown.insert(format!(
                "function {name} is not in the catalog the gateway reads"
            ));
            return;
        };
        for r in routines {
            self.routine(&r, depth);
        }
    }

    fn routine(&mut self, r: &Routine, depth: usize) {
        let via = format!("function {}", r.qualified());
        if !self.seen.insert(format!("r:{}", r.qualified())) {
            return;
        }
        match r.language.as_str() {
            "sql" => {
                let body = summarize(&r.source);
                let body = if body.parse_error.is_none() && !body.statements.is_empty() {
                    body
                } else {
                    // A SQL-standard body (BEGIN ATOMIC) lives in the definition.
                    summarize(&r.definition)
                };
                if let Some(e) = &body.parse_error {
                    self.unknown
                        .insert(format!("the body of {via} cannot be read ({e})"));
                }
                for s in &body.statements {
                    self.statement(s, Some(&via), depth);
                }
            }
            "plpgsql" => self.plpgsql(r, &via, depth),
            _ if r.schema == "pg_catalog" => {}
            lang => {
                self.unknown.insert(format!(
                    "{via} is written in {lang}, which the gateway cannot read"
                ));
            }
        }
    }

    fn plpgsql(&mut self, r: &Routine, via: &str, depth: usize) {
        let tree = match pg_query::parse_plpgsql(&header_as_record(&r.definition)) {
            Ok(t) => t,
            Err(e) => {
                self.unknown
                    .insert(format!("the body of {via} cannot be read ({e})"));
                return;
            }
        };
        let mut queries = Vec::new();
        let mut dynamic = false;
        collect_plpgsql(&tree, &mut queries, &mut dynamic);
        if dynamic {
            self.unknown
                .insert(format!("{via} runs dynamic SQL (EXECUTE of a string)"));
        }
        for q in queries {
            match read_plpgsql_query(&q) {
                Some(summary) => {
                    for s in &summary.statements {
                        self.statement(s, Some(via), depth);
                    }
                }
                None => {
                    self.unknown
                        .insert(format!("{via} has an expression the gateway cannot read"));
                }
            }
        }
    }

    /// Follows a write of `action` to `table`: its triggers and rules, and
    /// the tables under a view.
    fn writes(&mut self, table: &TableName, action: Action, bounded: bool, depth: usize) {
        let key = format!(
            "t:{}.{}:{}",
            table.schema.as_deref().unwrap_or(""),
            table.name,
            action.as_str()
        );
        if !self.seen.insert(key) {
            return;
        }
        for def in self.catalog.view_definitions(table) {
            let via = format!(
                "view {}",
                table
                    .schema
                    .as_ref()
                    .map(|s| format!("{s}.{}", table.name))
                    .unwrap_or_else(|| table.name.clone())
            );
            let view = summarize(&def);
            for s in &view.statements {
                for base in &s.tables_read {
                    self.out.actions.push(TableAction {
                        table: base.clone(),
                        action,
                        bounded,
                        via: Some(via.clone()),
                    });
                    self.writes(base, action, bounded, depth + 1);
                }
            }
        }
        for c in self.catalog.cascades(table) {
            let follows = match action {
                Action::Delete => c.on_delete,
                Action::Update => c.on_update,
                Action::Insert | Action::Truncate => None,
            };
            if let Some(cascaded) = follows {
                self.out.actions.push(TableAction {
                    table: c.table.clone(),
                    action: cascaded,
                    bounded,
                    via: Some(format!(
                        "foreign key {} to {}",
                        c.constraint,
                        table_label(table)
                    )),
                });
                self.writes(&c.table, cascaded, bounded, depth + 1);
            }
        }
        for parent in self.catalog.parents(table) {
            self.out.actions.push(TableAction {
                table: parent.clone(),
                action,
                bounded,
                via: Some(format!("partition {}", table_label(table))),
            });
            self.writes(&parent, action, bounded, depth + 1);
        }
        if depth > MAX_DEPTH {
            return;
        }
        for fired in self.catalog.fired(table) {
            match fired {
                Fired::Trigger { via, routine } => {
                    let before = self.out.actions.len();
                    self.routine(&routine, depth);
                    for a in &mut self.out.actions[before..] {
                        a.via = Some(format!("{via}, {}", a.via.as_deref().unwrap_or("")));
                    }
                }
                Fired::Rule { via, definition } => {
                    let rule = summarize(&definition);
                    for s in &rule.statements {
                        // The rule's own table is its event, not an action.
                        let mut s = s.clone();
                        s.actions
                            .retain(|a| &a.table != table || a.action != action);
                        self.statement(&s, Some(&via), depth);
                    }
                }
            }
        }
    }
}

/// `definition` with a trigger function's return type read as `record`:
/// libpg_query cannot print the parse tree of trigger and event-trigger
/// functions (its JSON is malformed), and the queries are the same.
fn header_as_record(definition: &str) -> String {
    let body_start = definition.find('$').unwrap_or(definition.len());
    let (header, body) = definition.split_at(body_start);
    let lower = header.to_ascii_lowercase();
    for kind in ["returns event_trigger", "returns trigger"] {
        if let Some(at) = lower.find(kind) {
            return format!(
                "{}RETURNS record{}{body}",
                &header[..at],
                &header[at + kind.len()..]
            );
        }
    }
    definition.to_string()
}

fn table_label(t: &TableName) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

/// Every query a PL/pgSQL function runs (statements and expressions), and
/// whether it runs dynamic SQL.
fn collect_plpgsql(v: &Value, queries: &mut Vec<String>, dynamic: &mut bool) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match k.as_str() {
                    "PLpgSQL_stmt_dynexecute" | "PLpgSQL_stmt_dynfors" => *dynamic = true,
                    "dynquery" if !child.is_null() => *dynamic = true,
                    "PLpgSQL_expr" => {
                        if let Some(q) = child.get("query").and_then(Value::as_str) {
                            queries.push(q.to_string());
                        }
                    }
                    _ => {}
                }
                collect_plpgsql(child, queries, dynamic);
            }
        }
        Value::Array(a) => {
            for i in a {
                collect_plpgsql(i, queries, dynamic);
            }
        }
        _ => {}
    }
}

/// A PL/pgSQL query or expression as SQL: statements parse as they are,
/// expressions as `SELECT expr`, assignments (`x := expr`) by their value.
fn read_plpgsql_query(q: &str) -> Option<super::QuerySummary> {
    let direct = summarize(q);
    if direct.parse_error.is_none() {
        return Some(direct);
    }
    let expr = summarize(&format!("SELECT {q}"));
    if expr.parse_error.is_none() {
        return Some(expr);
    }
    let value = q.split_once(":=").or_else(|| q.split_once('='))?.1;
    let assigned = summarize(&format!("SELECT {value}"));
    assigned.parse_error.is_none().then_some(assigned)
}

/// Adds `code`'s effects to `stmt` (actions deduplicated by table, action
/// and route).
pub fn apply(stmt: &mut StatementSummary, code: CodeEffects) {
    if code.is_empty() {
        return;
    }
    for a in code.actions {
        if !stmt.actions.contains(&a) {
            stmt.actions.push(a);
        }
    }
    stmt.has_where &= stmt
        .actions
        .iter()
        .all(|a| a.bounded || !matches!(a.action, Action::Update | Action::Delete));
    stmt.switches_role |= code.switches_role;
    stmt.changes_parsing |= code.changes_parsing;
    stmt.server_files |= code.server_files;
    stmt.unknown_effects.extend(code.unknown);
}

#[cfg(test)]
mod tests;
