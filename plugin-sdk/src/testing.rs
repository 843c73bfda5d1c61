//! Building events by hand for a plugin's own unit tests (`cargo test` on
//! the host, no database and no gateway): sessions, statements and queries
//! with the fields the host would fill in.
//!
//! ```ignore
//! let mut p = MyPlugin::default();
//! p.configure(r#"{"rules": []}"#).unwrap();
//! p.session_start(&testing::session("alice@example.com", &["dba"]));
//! let q = testing::query("DELETE FROM orders", [testing::statement("delete").writes("orders")]);
//! assert!(matches!(p.on_query(&q), Verdict::Deny(_)));
//! ```

use crate::{Identity, PgQuery, Session, Statement, TableRef};

/// A session of `user` in `groups`.
pub fn session(user: &str, groups: &[&str]) -> Session {
    Session {
        id: 1,
        identity: Identity {
            subject: user.into(),
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: "https://issuer.test".into(),
            actor_chain: Vec::new(),
        },
        target: "test".into(),
        client_addr: "127.0.0.1:5000".into(),
        application_name: None,
    }
}

/// A statement of `kind` (bounded, no tables, no functions); refine it with
/// the builder methods of [`StatementExt`].
pub fn statement(kind: &str) -> Statement {
    Statement {
        kind: kind.into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        functions: Vec::new(),
        has_where: true,
        is_copy: kind == "copy",
        copy_program: false,
        explain_analyze: false,
    }
}

fn table(name: &str) -> TableRef {
    match name.split_once('.') {
        Some((s, n)) => TableRef {
            schema: Some(s.into()),
            name: n.into(),
        },
        None => TableRef {
            schema: None,
            name: name.into(),
        },
    }
}

/// Builder methods for test statements.
pub trait StatementExt {
    /// Adds a table read (`schema.table` or `table`).
    fn reads(self, table: &str) -> Self;
    /// Adds a table written.
    fn writes(self, table: &str) -> Self;
    /// Adds a function call.
    fn calls(self, function: &str) -> Self;
    /// Marks an UPDATE/DELETE without WHERE.
    fn unbounded(self) -> Self;
}

impl StatementExt for Statement {
    fn reads(mut self, t: &str) -> Self {
        self.tables_read.push(table(t));
        self
    }
    fn writes(mut self, t: &str) -> Self {
        self.tables_written.push(table(t));
        self
    }
    fn calls(mut self, f: &str) -> Self {
        self.functions.push(f.into());
        self
    }
    fn unbounded(mut self) -> Self {
        self.has_where = false;
        self
    }
}

/// A query with the given text and statements.
pub fn query(text: &str, statements: impl IntoIterator<Item = Statement>) -> PgQuery {
    PgQuery {
        text: text.into(),
        fingerprint: String::new(),
        statements: statements.into_iter().collect(),
        parse_error: None,
        prepared_name: None,
    }
}

/// A query the host could not parse.
pub fn unparseable(text: &str) -> PgQuery {
    PgQuery {
        text: text.into(),
        fingerprint: String::new(),
        statements: Vec::new(),
        parse_error: Some("syntax error".into()),
        prepared_name: None,
    }
}

/// What a plugin noted through [`crate::record_statement`],
/// [`crate::note_rule`], [`crate::set_approval_policy`] and
/// [`crate::reuse_verdict`] (native tests only).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notes {
    /// The rule named last.
    pub rule: Option<String>,
    /// Sample rows asked for, if the statement is to be recorded.
    pub record: Option<u32>,
    /// The approval policy set last.
    pub approval: Option<crate::ApprovalPolicy>,
    /// Whether the plugin declared its verdict reusable for the statement's
    /// shape ([`crate::reuse_verdict`]).
    pub reuse_verdict: bool,
}

/// Takes what the plugin noted since the last call (native tests only).
#[cfg(not(target_arch = "wasm32"))]
pub fn take_notes() -> Notes {
    crate::NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

/// Statement effects with nothing in them; add to them with [`EffectsExt`].
pub fn effects() -> crate::Effects {
    crate::no_effects()
}

/// Builder methods for [`crate::Effects`] in tests.
pub trait EffectsExt {
    /// Adds `action` (`insert`, `update`, `delete`, `truncate`) on `table`
    /// (`name` or `schema.name`), bounded or not.
    fn acts(self, action: &str, table: &str, bounded: bool) -> Self;
    /// Marks a role switch.
    fn switching_role(self) -> Self;
    /// Marks server files.
    fn touching_server_files(self) -> Self;
    /// Marks code creation.
    fn creating_code(self) -> Self;
    /// Adds an unknown effect (`why`, in words).
    fn with_unknown(self, why: &str) -> Self;
}

impl EffectsExt for crate::Effects {
    fn acts(mut self, action: &str, name: &str, bounded: bool) -> Self {
        let table = table(name);
        self.actions.push(crate::TableAction {
            table,
            action: action.into(),
            bounded,
            via: None,
        });
        self
    }
    fn switching_role(mut self) -> Self {
        self.switches_role = true;
        self
    }
    fn touching_server_files(mut self) -> Self {
        self.server_files = true;
        self
    }
    fn creating_code(mut self) -> Self {
        self.creates_code = true;
        self
    }
    fn with_unknown(mut self, why: &str) -> Self {
        self.unknown_effects.push(why.into());
        self
    }
}

/// Sets what [`crate::statement_effects`] returns from now on in this
/// thread, one entry per statement of the next query (native tests only).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_effects(effects: impl IntoIterator<Item = crate::Effects>) {
    crate::EFFECTS.with(|e| *e.borrow_mut() = effects.into_iter().collect());
}

/// Sets what [`crate::statement_writes`] returns from now on in this
/// thread, one entry per statement of the next query (native tests only).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_writes(writes: impl IntoIterator<Item = Option<String>>) {
    crate::WRITES.with(|w| *w.borrow_mut() = writes.into_iter().collect());
}

/// Sets what [`crate::statement_lineage`] returns from now on in this
/// thread, one entry per statement of the next query (native tests only).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_lineage(lineage: impl IntoIterator<Item = crate::Lineage>) {
    crate::LINEAGE.with(|l| *l.borrow_mut() = lineage.into_iter().collect());
}

/// Sets what [`crate::result_lineage`] returns from now on in this thread
/// (native tests only).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_result_lineage(lineage: Option<Vec<crate::ColumnLineage>>) {
    crate::RESULT_LINEAGE.with(|l| *l.borrow_mut() = lineage);
}

/// A result column computed from `sources` (`schema.table.column`); with
/// `origin`, PostgreSQL reports it as that plain column.
pub fn column_lineage(sources: &[&str], origin: Option<&str>) -> crate::ColumnLineage {
    crate::ColumnLineage {
        derived_from: sources.iter().map(|s| s.to_string()).collect(),
        unknown: false,
        origin: origin.map(str::to_string),
    }
}

/// Values written to `target` (`schema.table`, `file`, `client`, ...) from
/// `sources`.
pub fn write_flow(target: &str, sources: &[&str]) -> crate::WriteFlow {
    crate::WriteFlow {
        target: target.into(),
        column: None,
        derived_from: sources.iter().map(|s| s.to_string()).collect(),
        unknown: false,
    }
}
