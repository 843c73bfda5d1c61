//! SQL understood once, in the host, with PostgreSQL's own grammar
//! (`pg_query`, i.e. libpg_query), so plugins never embed a parser.
//!
//! [`summarize`] turns SQL text into a [`QuerySummary`]: for each statement its
//! kind, the tables it reads and writes, the functions it calls, what it does
//! to each table's rows ([`TableAction`]: insert, update, delete, truncate,
//! bounded or not) wherever it is spelled (MERGE branches, `ON CONFLICT DO
//! UPDATE`, data-modifying CTEs, `EXPLAIN ANALYZE`, `PREPARE`), role
//! switches (including `set_config`), server files, code it creates, COPY and
//! EXPLAIN details, plus the fingerprint. Text that does not parse is *flagged* (`parse_error`), not
//! treated as harmless. [`SummaryCache`] keeps summaries by the text's
//! [`shape::shape`] (constants replaced), so a prepared statement is parsed at
//! Parse and a query repeated with other constants not at all.

pub mod code;
pub mod lineage;
pub mod shape;
mod walk;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A table as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// Schema, when the statement qualified the name.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

/// What a statement does to the rows of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Adds rows (INSERT, MERGE ... INSERT, COPY FROM).
    Insert,
    /// Changes rows (UPDATE, MERGE ... UPDATE, ON CONFLICT DO UPDATE).
    Update,
    /// Removes rows (DELETE, MERGE ... DELETE).
    Delete,
    /// Removes every row (TRUNCATE).
    Truncate,
}

impl Action {
    /// The action's name in rules and in the plugin contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Truncate => "truncate",
        }
    }
}

/// One action on one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableAction {
    /// The table acted on.
    pub table: TableName,
    /// What is done to its rows.
    pub action: Action,
    /// Whether a condition naming a column limits the rows (always true for
    /// inserts, never for truncates).
    pub bounded: bool,
    /// The code it happens through (`function public.f`, `trigger t on
    /// public.orders, function public.g`, `rule r on public.v`, `view
    /// public.v`), or `None` when the statement does it itself.
    pub via: Option<String>,
}

/// One statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementSummary {
    /// Kind in lower case (`select`, `delete`, `drop`, `set-role`, ...).
    pub kind: String,
    /// Tables read.
    pub tables_read: Vec<TableName>,
    /// Tables written.
    pub tables_written: Vec<TableName>,
    /// Functions called, lower case, as qualified as written.
    pub functions: Vec<String>,
    /// Whether every UPDATE and DELETE in it (CTEs, MERGE branches and
    /// `ON CONFLICT DO UPDATE` included, and under plain EXPLAIN too) is
    /// bounded by a condition that names a column.
    pub has_where: bool,
    /// What it does to the rows of each table, deduplicated (an action
    /// spelled twice on a table is bounded only if both are).
    pub actions: Vec<TableAction>,
    /// Whether it changes the role or session authorization (`SET ROLE`,
    /// `RESET ROLE`, `SET SESSION AUTHORIZATION`, `set_config` on `role` or
    /// `session_authorization` or on a name that is not a constant).
    pub switches_role: bool,
    /// Whether it may turn `standard_conforming_strings` off (`SET`,
    /// `RESET`, `set_config` on it or on a name that is not a constant, or
    /// `ALTER ROLE/DATABASE ... SET` of it) or switch `client_encoding` to
    /// an encoding the gateway does not read: PostgreSQL would then read
    /// later statements differently from the gateway.
    pub changes_parsing: bool,
    /// Whether it touches files or programs on the database server: COPY
    /// to or from a file or program, or a server-file function.
    pub server_files: bool,
    /// Whether it creates or changes code that runs inside the database
    /// (functions, procedures, triggers, event triggers, rules).
    pub creates_code: bool,
    /// What the gateway could not read of the code it runs (dynamic SQL,
    /// other languages, unknown functions), in words; filled by
    /// [`code::apply`] when the catalog is consulted.
    pub unknown_effects: Vec<String>,
    /// Whether it is a COPY.
    pub is_copy: bool,
    /// Whether a COPY runs a program.
    pub copy_program: bool,
    /// Whether it is EXPLAIN ANALYZE (which runs the statement).
    pub explain_analyze: bool,
    /// Whether it could make the session or transaction writable: sets or
    /// resets `default_transaction_read_only` / `transaction_read_only`,
    /// `RESET ALL`, or a transaction mode other than `READ ONLY`
    /// (`BEGIN READ WRITE`, `SET SESSION CHARACTERISTICS ... READ WRITE`).
    pub undoes_read_only: bool,
    /// The prepared statement a SQL `PREPARE` or `DEALLOCATE` names
    /// (`None` for other statements and `DEALLOCATE ALL`).
    pub prepared_name: Option<String>,
    /// For a SQL `PREPARE`, the statement it prepares, as SQL (deparsed
    /// from the parse tree), so it can be judged as if sent alone.
    pub prepared_query: Option<String>,
    /// Prepared statements it runs, wherever `EXECUTE` is spelled in it
    /// (`EXECUTE w`, `EXPLAIN ANALYZE EXECUTE w`, `CREATE TABLE t AS EXECUTE w`).
    pub executes: Vec<String>,
    /// Portals it reads from or moves (`FETCH`, `MOVE`): a protocol portal
    /// bound from a held statement runs it on the first `FETCH`.
    pub fetches: Vec<String>,
    /// The cursor a `DECLARE` declares.
    pub declares: Option<String>,
    /// The cursor a `CLOSE` closes (`None`: none, or `CLOSE ALL`).
    pub closes: Option<String>,
    /// The prepared statement a `DEALLOCATE` drops (`None`: none, or `ALL`).
    pub deallocates: Option<String>,
}

impl StatementSummary {
    /// Whether its values can come from anywhere but its own text: it
    /// names a table or calls a function (if not, its lineage is known
    /// without the catalog: every value is a constant).
    pub fn reads_anything(&self) -> bool {
        !self.tables_read.is_empty()
            || !self.tables_written.is_empty()
            || !self.functions.is_empty()
    }
}

/// What the host knows about a piece of SQL text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySummary {
    /// pg_query fingerprint (hex); empty when the text does not parse.
    pub fingerprint: String,
    /// The statements, in order.
    pub statements: Vec<StatementSummary>,
    /// Why the text does not parse, if it does not.
    pub parse_error: Option<String>,
    /// Where each statement's values come from and go to (in the order of
    /// `statements`), when the relay computed it with the target's catalog
    /// (for policies that watch rows); `None` otherwise or when it failed.
    pub lineage: Option<Vec<lineage::StatementLineage>>,
}

/// Stack for parsing: pg_query's tree decoder, its serialization and the
/// walk recurse once per nesting level, up to the decoder's limit of 100
/// levels (deeper text is a parse error), which can take more than a 2 MiB
/// thread stack in debug builds.
const PARSER_STACK: usize = 32 << 20;

/// Parses `sql` and summarizes it, on a thread with a stack deep enough for
/// any text the parser accepts. Never panics: a failure inside the parser
/// wrapper is reported as a parse error.
pub fn summarize(sql: &str) -> QuerySummary {
    let failed = |why: &str| QuerySummary {
        parse_error: Some(why.into()),
        ..Default::default()
    };
    match on_parser_stack(|| summarize_inner(sql)) {
        Ok(s) => s,
        Err(why) => failed(why),
    }
}

/// Runs `f` (which parses SQL) on a thread with a 32 MiB stack; `Err`
/// says why it did not return (it panicked, or no thread could start).
pub fn on_parser_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, &'static str> {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("sql-parser".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            });
        match parser.map(|t| t.join()) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(_) => Err("the SQL parser failed on this text"),
            Err(_) => Err("the gateway could not start its SQL parser"),
        }
    })
}

fn summarize_inner(sql: &str) -> QuerySummary {
    let parsed = match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
        Ok(p) => p,
        Err(e) => {
            return QuerySummary {
                parse_error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let fingerprint = pg_query::fingerprint(sql, pg_query::ParserOptions::DEFAULT, 0)
        .map(|f| f.hex)
        .unwrap_or_default();
    let tree = match serde_json::to_value(&parsed.protobuf) {
        Ok(v) => v,
        Err(e) => {
            return QuerySummary {
                fingerprint,
                parse_error: Some(format!("cannot read the parse tree: {e}")),
                ..Default::default()
            }
        }
    };
    let mut statements: Vec<StatementSummary> = tree
        .get("stmts")
        .and_then(|s| s.as_array())
        .map(|stmts| {
            stmts
                .iter()
                .filter_map(|raw| raw.get("stmt"))
                .map(walk::statement)
                .collect()
        })
        .unwrap_or_default();
    let prepared = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_ref());
    for (summary, node) in statements.iter_mut().zip(prepared) {
        summary.prepared_query = prepared_query(node);
    }
    QuerySummary {
        fingerprint,
        statements,
        parse_error: None,
        lineage: None,
    }
}

/// The statement a `PREPARE` node prepares, deparsed to SQL.
fn prepared_query(node: &pg_query::protobuf::Node) -> Option<String> {
    match node.node.as_ref()? {
        pg_query::NodeEnum::PrepareStmt(p) => p
            .query
            .as_ref()?
            .node
            .as_ref()?
            .deparse(pg_query::DeparseOptions::default())
            .ok(),
        _ => None,
    }
}

/// A process-wide summary cache, for host-side checks outside any plugin
/// chain (read-only sessions).
pub fn shared_cache() -> &'static SummaryCache {
    static CACHE: std::sync::OnceLock<SummaryCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(SummaryCache::default)
}

/// Summaries by the shape of the SQL text (or the exact text, when it has
/// no shape), bounded in size (cleared when full).
#[derive(Default)]
pub struct SummaryCache {
    map: Mutex<HashMap<String, Arc<QuerySummary>>>,
}

/// Entries kept before the cache starts over.
const CACHE_CAPACITY: usize = 10_000;
/// Texts longer than this are summarized but not cached.
const CACHE_MAX_TEXT: usize = 16 * 1024;

impl SummaryCache {
    /// The summary of `sql`, from the cache or freshly parsed.
    pub fn get(&self, sql: &str) -> Arc<QuerySummary> {
        if sql.len() > CACHE_MAX_TEXT {
            return Arc::new(summarize(sql));
        }
        let key = match shape::shape(sql) {
            Some(shape) => format!("s:{shape}"),
            None => format!("x:{sql}"),
        };
        if let Some(s) = self.map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return s;
        }
        let summary = Arc::new(summarize(sql));
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= CACHE_CAPACITY {
                m.clear();
            }
            m.insert(key, summary.clone());
        }
        summary
    }
}

#[cfg(test)]
mod tests;
