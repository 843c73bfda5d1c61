//! Read-only sessions, enforced by the host for read-only delegated tokens
//! (not left to a plugin's configuration): the upstream session starts with
//! `default_transaction_read_only = on`, and every statement that could
//! write or undo that is refused before it is forwarded, with the reason.

use crate::protocols::postgres::sql::{QuerySummary, StatementSummary};

/// Statement kinds that cannot write (given no written tables, no writing
/// functions and no change of read-only-ness).
const READ_KINDS: &[&str] = &[
    "select",
    "show",
    "explain",
    "set",
    "reset",
    "transaction",
    "listen",
    "unlisten",
    "fetch",
    "close",
    "declare",
    "deallocate",
    "discard",
];

/// Functions that write, change server state or reach outside the database:
/// lower-case names, or prefixes ending in `*`.
const WRITING_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "set_config",
    "lo_*",
    "dblink*",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_logical_emit_message",
    "pg_notify",
    "pg_file_write",
    "pg_file_unlink",
    "pg_file_rename",
    "pg_replication_origin",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
    "pg_drop_replication_slot",
    "pg_advisory_xact_lock",
    "pg_import_system_collations",
    "txid_current",
    "pg_current_xact_id",
];

/// Why a read-only session may not run `summary`, if it may not.
pub fn violation(summary: &QuerySummary) -> Option<String> {
    if let Some(e) = &summary.parse_error {
        return Some(format!(
            "the statement does not parse ({e}), so the gateway cannot tell that it does not write"
        ));
    }
    summary
        .statements
        .iter()
        .find_map(writes)
        .map(|w| w.read_only_refusal())
}

/// How a statement may change data, schema or server state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// It may make the session writable.
    MakesWritable,
    /// It writes this table (itself or through the code it runs).
    Table(String),
    /// `EXPLAIN ANALYZE` of a write: it runs it.
    ExplainAnalyze,
    /// `COPY ... FROM`.
    CopyFrom,
    /// It calls this function, which writes or changes server state.
    Function(String),
    /// A statement of this kind (DDL, `CALL`, `DO`, `EXECUTE`, ...).
    Kind(String),
}

impl Write {
    /// Why it may write, for plugins (`statement-writes`) and people.
    pub fn why(&self) -> String {
        match self {
            Write::MakesWritable => "it may make the session writable (SET/RESET of transaction_read_only or default_transaction_read_only, RESET ALL, BEGIN/SET ... READ WRITE)".into(),
            Write::Table(t) => format!("the statement writes {t}"),
            Write::ExplainAnalyze => "EXPLAIN ANALYZE runs the statement it explains".into(),
            Write::CopyFrom => "COPY ... FROM writes".into(),
            Write::Function(f) => format!("function {f} writes or changes server state"),
            Write::Kind(k) => format!("{} statements may change data, schema or server state", k.to_uppercase()),
        }
    }

    /// The refusal a read-only session gets for it: [`Write::why`] after
    /// "this session is read-only", worded as a refusal where it differs.
    fn read_only_refusal(&self) -> String {
        match self {
            Write::MakesWritable => "this session is read-only and may not be made writable (no SET/RESET of transaction_read_only or default_transaction_read_only, RESET ALL, BEGIN/SET ... READ WRITE)".into(),
            Write::ExplainAnalyze => "this session is read-only: EXPLAIN ANALYZE would run a write".into(),
            Write::Kind(k) => format!("this session is read-only: {} statements are not allowed", k.to_uppercase()),
            Write::Table(_) | Write::CopyFrom | Write::Function(_) => {
                format!("this session is read-only: {}", self.why())
            }
        }
    }
}

/// How statement `s` may change data, schema or server state, if it may:
/// the one definition of "may write" for read-only sessions and for
/// plugins (`statement-writes`).
pub fn writes(s: &StatementSummary) -> Option<Write> {
    if s.undoes_read_only {
        return Some(Write::MakesWritable);
    }
    if let Some(t) = s.tables_written.first() {
        let name = match &t.schema {
            Some(schema) => format!("{schema}.{}", t.name),
            None => t.name.clone(),
        };
        return Some(Write::Table(name));
    }
    if s.explain_analyze {
        // EXPLAIN ANALYZE runs the statement; only reads may be analysed.
        if s.kind != "explain" || !s.tables_written.is_empty() {
            return Some(Write::ExplainAnalyze);
        }
    }
    if s.is_copy && !s.tables_written.is_empty() {
        return Some(Write::CopyFrom);
    }
    if let Some(f) = s.functions.iter().find(|f| {
        let bare = f.rsplit('.').next().unwrap_or(f);
        WRITING_FUNCTIONS.iter().any(|w| match w.strip_suffix('*') {
            Some(prefix) => bare.starts_with(prefix),
            None => bare == *w,
        })
    }) {
        return Some(Write::Function(f.clone()));
    }
    if !READ_KINDS.contains(&s.kind.as_str()) {
        return Some(Write::Kind(s.kind.clone()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::postgres::sql::summarize;

    fn refused(sql: &str) -> String {
        violation(&summarize(sql)).unwrap_or_else(|| panic!("{sql} must be refused"))
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT * FROM orders WHERE id = 1",
            "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id",
            "SHOW search_path",
            "SET search_path = public",
            "SET statement_timeout = '5s'",
            "BEGIN",
            "BEGIN READ ONLY",
            "COMMIT",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert_eq!(violation(&summarize(sql)), None, "{sql}");
        }
    }

    #[test]
    fn every_way_around_read_only_is_refused_with_a_reason() {
        let cases = [
            (
                "SET default_transaction_read_only = off",
                "may not be made writable",
            ),
            (
                "SET SESSION default_transaction_read_only TO false",
                "may not be made writable",
            ),
            (
                "SET transaction_read_only = off",
                "may not be made writable",
            ),
            (
                "RESET default_transaction_read_only",
                "may not be made writable",
            ),
            ("RESET ALL", "may not be made writable"),
            ("BEGIN READ WRITE", "may not be made writable"),
            ("START TRANSACTION READ WRITE", "may not be made writable"),
            (
                "BEGIN /* x */ READ /* y */ WRITE",
                "may not be made writable",
            ),
            ("SET TRANSACTION READ WRITE", "may not be made writable"),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "may not be made writable",
            ),
            (
                "SELECT set_config('default_transaction_read_only', 'off', false)",
                "set_config",
            ),
            ("INSERT INTO orders VALUES (1)", "writes orders"),
            ("UPDATE orders SET x = 1 WHERE id = 1", "writes orders"),
            ("DELETE FROM orders WHERE id = 1", "writes orders"),
            (
                "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
                "writes orders",
            ),
            ("SELECT nextval('orders_id_seq')", "nextval"),
            ("SELECT setval('orders_id_seq', 1)", "setval"),
            ("SELECT lo_create(0)", "lo_create"),
            ("SELECT lo_import('/etc/passwd')", "lo_import"),
            (
                "SELECT dblink_exec('host=x', 'DELETE FROM t')",
                "dblink_exec",
            ),
            ("SELECT pg_terminate_backend(123)", "pg_terminate_backend"),
            ("COPY orders FROM STDIN", "writes orders"),
            ("CALL do_things()", "CALL"),
            ("DO $$ BEGIN DELETE FROM orders; END $$", "DO"),
            ("EXPLAIN ANALYZE DELETE FROM orders", "orders"),
            ("PREPARE w AS DELETE FROM orders", "orders"),
            ("EXECUTE w", "EXECUTE"),
            ("CREATE TABLE t (id int)", "writes t"),
            ("TRUNCATE orders", "orders"),
            ("NOTIFY chan", "NOTIFY"),
            ("VACUUM orders", "orders"),
            ("LOCK TABLE orders", "orders"),
            ("SELECT 1; DELETE FROM orders WHERE id = 1", "writes orders"),
            ("SELEC 1", "does not parse"),
        ];
        for (sql, needle) in cases {
            let why = refused(sql);
            assert!(why.contains(needle), "{sql}: {why}");
        }
    }
}
