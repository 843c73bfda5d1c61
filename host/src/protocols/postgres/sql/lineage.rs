//! Column lineage: which table columns a value may come from.
//!
//! For each statement of a SQL text, [`analyze`] tells
//! - for a statement that returns rows, the [`Lineage`] of each output
//!   column, in the order and number PostgreSQL's RowDescription has them
//!   ([`output_lineage`]);
//! - the values it moves into a place — a table, a file, a program, the
//!   client of a `COPY` ([`write_flows`]).
//!
//! Each output column's [`Lineage`] also tells, in [`Lineage::origin`],
//! whether PostgreSQL will name a table column as its origin in
//! RowDescription (table OID and attribute number, `resorigtbl` /
//! `resorigcol`): a gateway that masks by reported origin can let such
//! columns through and refuse masked values that reach the client
//! transformed (see [Origins](#origins)).
//!
//! It parses with PostgreSQL's own grammar (`pg_query`, typed protobuf
//! tree) and asks a [`Catalog`] for what the text does not say: the columns
//! of relations, view definitions, function bodies.
//!
//! # Conservative by construction
//! When in doubt, a value gets more sources or is marked `unknown`, never
//! fewer sources. Every column referenced anywhere in an output expression
//! counts (function arguments, casts, operators, `CASE` conditions,
//! aggregate `ORDER BY`/`FILTER`, window `PARTITION BY`/`ORDER BY`);
//! whole-row references count every column of the row; views, CTEs
//! (recursive ones iterated to a fixed point), subqueries, set operations,
//! `VALUES`, joins (`USING`/`NATURAL` merged columns first) and SQL-language
//! functions are followed. A function that could read tables by itself and
//! whose body cannot be followed (PL/pgSQL, C, unreadable, not found) makes
//! its value `unknown`, except a built-in allow-list of pure functions.
//!
//! # Origins
//! [`Lineage::origin`] mirrors `markTargetListOrigin` (parser,
//! `parse_target.c`), erring towards `None` ("transformed"). It is set only
//! for an output column written as a bare column reference — `col`,
//! `t.col`, `s.t.col`, `(col)`, a column of `*`, `t.*` or `TABLE t` — that
//! resolves to exactly one column of a table (kind [`RelationKind::Table`]),
//! directly, through a join input (not a merged column), or through a
//! subquery in `FROM` or a CTE of a plain `WITH` whose own output column is
//! such a reference (`LATERAL` and up-level references included). When set,
//! `unknown` is false and `sources` is exactly `{origin}`.
//!
//! It is `None` for: any expression (casts, `COLLATE`, operators, functions,
//! `CASE`, subscripts, field selections such as `(c).col`, scalar and
//! `ARRAY` subqueries, aggregates, window functions); view and materialized
//! view columns (PostgreSQL reports the view itself); set operations;
//! `VALUES`; functions in `FROM`; merged `USING`/`NATURAL` columns (a
//! `COALESCE` for `FULL JOIN`, possibly a coercion otherwise); whole-row
//! references (PostgreSQL reports the table with attribute number 0) and
//! system columns; `(c).*` expansions; `RETURNING` lists (their values are
//! the written row's); every CTE of a `WITH RECURSIVE`; relations the
//! catalog does not know or knows several candidates for; ambiguous names.
//!
//! # Not covered (documented gaps)
//! - Inference through filters: columns used only in `WHERE`, `HAVING`,
//!   `GROUP BY`, the query's `ORDER BY`/`LIMIT`, `JOIN ... ON`, `EXISTS`,
//!   or a scalar subquery's own `WHERE` do not count as sources of the
//!   values returned (`SELECT id FROM customers WHERE card_number LIKE '4%'`
//!   has no `card_number` source).
//! - User-defined operators and casts are treated as pure (sources = their
//!   operands); the catalog interface has no way to look them up.
//! - Triggers, rules, column defaults and generated columns are not seen:
//!   values they copy are not reported (a generated column reads as itself).
//! - Writes done inside functions other than SQL-language ones (PL/pgSQL,
//!   `DO`, `CALL`) are not reported as flows; their output is `unknown`.
//! - Prepared statements and cursors: `PREPARE` and `DECLARE` have the
//!   lineage of the statement they prepare or the query they open (what a
//!   later `EXECUTE` or `FETCH` returns); `EXECUTE` and `FETCH` themselves
//!   return no lineage (`None`).
//! - `COPY ... FROM` (data from outside) yields no flow.
//! - Above [`MAX_NESTING`] levels of views, functions and subqueries, or
//!   past a work budget, values become `unknown`.

mod pure;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

use pg_query::protobuf::{self as pb, Node};
use pg_query::NodeEnum;

/// Levels of views, function bodies and subqueries followed; deeper values
/// are `unknown`.
pub const MAX_NESTING: usize = 32;
/// Nested expressions and queries followed, all levels together (bounds the
/// native stack used).
const MAX_FRAMES: usize = 200;
/// Expression and query nodes visited for one statement, views and
/// function bodies included; past it values are `unknown`.
const BUDGET: usize = 200_000;
/// Rounds of a recursive CTE's fixed-point iteration.
const MAX_ROUNDS: usize = 32;
/// System columns: row identity and visibility, no user data.
const SYSTEM_COLUMNS: &[&str] = &["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// A source column, lower case: `schema.table.column`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceColumn {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

impl SourceColumn {
    /// A source column; the names are lower-cased.
    pub fn new(schema: &str, table: &str, column: &str) -> Self {
        Self {
            schema: schema.to_lowercase(),
            table: table.to_lowercase(),
            column: column.to_lowercase(),
        }
    }
}

impl fmt::Display for SourceColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// Where one value comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Lineage {
    /// Columns the value may be derived from.
    pub sources: BTreeSet<SourceColumn>,
    /// Whether it may also come from somewhere not listed (treat it as
    /// derived from anything).
    pub unknown: bool,
    /// The column PostgreSQL reports as this value's origin in RowDescription
    /// (table OID and attribute number), when it reports one: the value is then
    /// exactly that column's, unchanged.
    ///
    /// Set only for an output column written as a bare column reference
    /// (`col`, `t.col`, `(col)`, a column of `*` or `TABLE t`) to a column of
    /// a table (relkind r/p/f), directly or through subqueries in `FROM` and
    /// non-recursive CTEs whose own output column is such a reference. When
    /// set, `unknown` is false and `sources` is exactly `{origin}`. `None`
    /// means "treat as transformed": expressions of any kind, view columns
    /// (PostgreSQL reports the view, not its base table), set operations,
    /// `VALUES`, functions in `FROM`, merged `USING`/`NATURAL` join columns,
    /// whole-row and system columns, `RETURNING` lists, recursive CTEs, and
    /// whatever the analysis cannot resolve to exactly one table column.
    pub origin: Option<SourceColumn>,
}

impl Lineage {
    /// A value of unknown origin.
    pub fn unknown() -> Self {
        Self {
            sources: BTreeSet::new(),
            unknown: true,
            origin: None,
        }
    }

    /// The value of a table column, unchanged: its own source and origin.
    fn table_column(column: SourceColumn) -> Self {
        Self {
            sources: BTreeSet::from([column.clone()]),
            unknown: false,
            origin: Some(column),
        }
    }

    /// This lineage as a value PostgreSQL does not attribute to a column
    /// (an expression over it).
    fn transformed(mut self) -> Self {
        self.origin = None;
        self
    }

    /// Drops an origin the rest of the lineage does not back: kept only when
    /// the value is known and comes from that column alone.
    fn settle(&mut self) {
        let backed = self
            .origin
            .as_ref()
            .is_some_and(|o| !self.unknown && self.sources.len() == 1 && self.sources.contains(o));
        if !backed {
            self.origin = None;
        }
    }

    /// Whether the value may come from `schema.table.column` (always true
    /// when the lineage is unknown). Names are compared in lower case.
    pub fn may_come_from(&self, schema: &str, table: &str, column: &str) -> bool {
        self.unknown
            || self
                .sources
                .contains(&SourceColumn::new(schema, table, column))
    }

    /// Adds `other`'s sources (and unknown flag) to these. The result is a
    /// combination of values, so it has no origin.
    fn absorb(&mut self, other: &Lineage) {
        self.sources.extend(other.sources.iter().cloned());
        self.unknown |= other.unknown;
        self.origin = None;
    }

    /// This lineage plus `other`'s.
    fn with(mut self, other: &Lineage) -> Self {
        self.absorb(other);
        self
    }
}

/// What the analysis needs from the database catalog. The gateway
/// implements it with catalog queries; tests with a map.
pub trait Catalog {
    /// Relations named `name`: in `schema` if given, else every candidate
    /// the session could mean (several are unioned, the safe choice).
    fn relations(&self, schema: Option<&str>, name: &str) -> Vec<Relation>;
    /// Functions named so (any overload), in `schema` if given, else every
    /// candidate on the search path, `pg_catalog` included.
    fn functions(&self, schema: Option<&str>, name: &str) -> Vec<Function>;
}

/// What kind of relation a [`Relation`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelationKind {
    /// A table (ordinary, partitioned, foreign): its columns are sources.
    #[default]
    Table,
    /// A view or materialized view: its columns come from its definition.
    View,
}

/// A relation as the catalog describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relation {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Column names in attnum order, dropped columns excluded.
    pub columns: Vec<String>,
    /// Table or view.
    pub kind: RelationKind,
    /// For a view or materialized view, its `SELECT` as `pg_get_viewdef`
    /// returns it (`None` when unreadable: its columns are then unknown).
    pub view_definition: Option<String>,
}

/// A function as the catalog describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Function {
    /// Schema (`pg_catalog` for built-ins).
    pub schema: String,
    /// Language: `sql`, `plpgsql`, `c`, `internal`, ...
    pub language: String,
    /// For `sql`, the body (`prosrc`, or the statements of a `BEGIN ATOMIC`
    /// body); `None` when unreadable.
    pub body: Option<String>,
}

/// Values moved into a place by a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteFlow {
    /// `schema.table` written (the name as spelled when the catalog does not
    /// know it, e.g. a table being created); `file`, `program` or `client`
    /// for `COPY ... TO`; `notify`, `large_object` or `setting` for the
    /// built-ins that send or keep a value (`pg_notify`, `lo_from_bytea`,
    /// `lo_put`, `set_config`).
    pub target: String,
    /// The column written, when known: `None` for a `COPY`, a built-in sink,
    /// or values whose column cannot be told (they may land in any column).
    pub column: Option<String>,
    /// Columns the written values may come from.
    pub sources: BTreeSet<SourceColumn>,
    /// Whether the values may also come from somewhere not listed.
    pub unknown: bool,
}

/// The lineage of one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementLineage {
    /// For a statement that returns rows, the lineage of each column in
    /// RowDescription order; `None` when it returns no rows, or when the
    /// number of columns cannot be known (treat every column as unknown).
    pub output: Option<Vec<Lineage>>,
    /// The values it writes, one flow per target.
    pub writes: Vec<WriteFlow>,
}

/// Why lineage could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    /// The text does not parse.
    #[error("cannot parse the SQL: {0}")]
    Parse(String),
    /// The text parses but its tree is nested too deeply to be handed over
    /// (`pg_query`'s decoder stops at about 100 levels): treat every value
    /// as unknown.
    #[error("the SQL is nested too deeply to analyze: {0}")]
    TooDeep(String),
    /// The analysis failed unexpectedly (a bug; treat everything as unknown).
    #[error("column lineage analysis failed")]
    Internal,
}

/// The lineage of every statement of `sql`, in order.
pub fn analyze(sql: &str, catalog: &dyn Catalog) -> Result<Vec<StatementLineage>, LineageError> {
    let run = std::panic::AssertUnwindSafe(|| analyze_inner(sql, catalog));
    std::panic::catch_unwind(run).unwrap_or(Err(LineageError::Internal))
}

/// For each statement of `sql`, the lineage of its output columns (see
/// [`StatementLineage::output`]).
pub fn output_lineage(
    sql: &str,
    catalog: &dyn Catalog,
) -> Result<Vec<Option<Vec<Lineage>>>, LineageError> {
    Ok(analyze(sql, catalog)?
        .into_iter()
        .map(|s| s.output)
        .collect())
}

/// The values the statements of `sql` move into tables, files, programs or
/// the client of a `COPY`, one flow per statement and target.
pub fn write_flows(sql: &str, catalog: &dyn Catalog) -> Result<Vec<WriteFlow>, LineageError> {
    Ok(analyze(sql, catalog)?
        .into_iter()
        .flat_map(|s| s.writes)
        .collect())
}

/// Parses `sql` and walks each statement, sharing catalog answers and followed views.
fn analyze_inner(sql: &str, catalog: &dyn Catalog) -> Result<Vec<StatementLineage>, LineageError> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(|e| match e {
        pg_query::Error::Decode(d) => LineageError::TooDeep(d.to_string()),
        other => LineageError::Parse(other.to_string()),
    })?;
    let catalog = MemoCatalog::new(catalog);
    let mut views = HashMap::new();
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let mut walker = Walker::new(&catalog, std::mem::take(&mut views));
        let rel = raw.stmt.as_deref().and_then(|n| walker.statement(n));
        out.push(StatementLineage {
            output: rel.and_then(|r| r.cols).map(|c| {
                c.into_iter()
                    .map(|c| {
                        let mut lin = c.lin;
                        lin.settle();
                        lin
                    })
                    .collect()
            }),
            writes: walker.finished_writes(),
        });
        views = walker.views;
    }
    Ok(out)
}

/// A possibly schema-qualified name.
type NameKey = (Option<String>, String);

/// Asks the real catalog once per name and analysis.
struct MemoCatalog<'c> {
    inner: &'c dyn Catalog,
    relations: RefCell<HashMap<NameKey, Vec<Relation>>>,
    functions: RefCell<HashMap<NameKey, Vec<Function>>>,
}

impl<'c> MemoCatalog<'c> {
    /// Wraps `inner`.
    fn new(inner: &'c dyn Catalog) -> Self {
        Self {
            inner,
            relations: RefCell::default(),
            functions: RefCell::default(),
        }
    }
}

impl Catalog for MemoCatalog<'_> {
    fn relations(&self, schema: Option<&str>, name: &str) -> Vec<Relation> {
        let key = (schema.map(str::to_string), name.to_string());
        if let Some(found) = self.relations.borrow().get(&key) {
            return found.clone();
        }
        let found = self.inner.relations(schema, name);
        self.relations.borrow_mut().insert(key, found.clone());
        found
    }

    fn functions(&self, schema: Option<&str>, name: &str) -> Vec<Function> {
        let key = (schema.map(str::to_string), name.to_string());
        if let Some(found) = self.functions.borrow().get(&key) {
            return found.clone();
        }
        let found = self.inner.functions(schema, name);
        self.functions.borrow_mut().insert(key, found.clone());
        found
    }
}

// ---------------------------------------------------------------------------
// Relations as the analysis sees them.

/// An output column: its name and lineage.
#[derive(Debug, Clone, Default, PartialEq)]
struct Col {
    name: String,
    lin: Lineage,
}

/// A row source (table, view, subquery, function, join) or a query's output.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rel {
    /// Columns in order; `None` when their number is unknown.
    cols: Option<Vec<Col>>,
    /// More names columns answer to (other candidates of an ambiguous
    /// relation, a function's alias): used for lookups, not for `*`.
    extra: Vec<Col>,
    /// Everything the relation's values may come from.
    whole: Lineage,
}

impl Rel {
    /// A relation with these columns.
    fn known(cols: Vec<Col>) -> Self {
        let mut whole = Lineage::default();
        for c in &cols {
            whole.absorb(&c.lin);
        }
        Self {
            cols: Some(cols),
            extra: Vec::new(),
            whole,
        }
    }

    /// A relation of unknown shape whose values come from `whole`.
    fn opaque(whole: Lineage) -> Self {
        Self {
            cols: None,
            extra: Vec::new(),
            whole: whole.transformed(),
        }
    }

    /// A relation nothing is known about.
    fn unknown() -> Self {
        Self::opaque(Lineage::unknown())
    }

    /// The lineage of column `name`: `None` if the relation is known to have
    /// no such column; the whole relation's if its shape is unknown.
    /// A single matching column keeps its origin; several are merged.
    fn column(&self, name: &str) -> Option<Lineage> {
        let Some(cols) = &self.cols else {
            return Some(self.whole.clone().transformed());
        };
        let mut matches = cols.iter().chain(&self.extra).filter(|c| c.name == name);
        let mut found = matches.next()?.lin.clone();
        for c in matches {
            found.absorb(&c.lin);
        }
        Some(found)
    }

    /// Whether a column called `name` exists (or may, shape unknown).
    fn has_column(&self, name: &str) -> bool {
        self.column(name).is_some()
    }

    /// The lineage of the `i`-th column (the whole relation's when the
    /// shape is unknown; unknown past the end).
    fn nth(&self, i: usize) -> Lineage {
        match &self.cols {
            Some(cols) => cols
                .get(i)
                .map(|c| c.lin.clone())
                .unwrap_or_else(Lineage::unknown),
            None => self.whole.clone().transformed(),
        }
    }

    /// The relation with no column origins (a view's, a function's, a
    /// `RETURNING` list's).
    fn transformed(mut self) -> Self {
        for c in self.cols.iter_mut().flatten().chain(self.extra.iter_mut()) {
            c.lin.origin = None;
        }
        self.whole.origin = None;
        self
    }

    /// Renames the first columns (an alias's column list).
    fn renamed(mut self, names: &[String]) -> Self {
        if names.is_empty() {
            return self;
        }
        if let Some(cols) = &mut self.cols {
            for (c, n) in cols.iter_mut().zip(names) {
                c.name.clone_from(n);
            }
            self.extra.clear();
        }
        self
    }

    /// Adds `lin` to every column.
    fn widen(&mut self, lin: &Lineage) {
        if let Some(cols) = &mut self.cols {
            for c in cols {
                c.lin.absorb(lin);
            }
        }
        for c in &mut self.extra {
            c.lin.absorb(lin);
        }
        self.whole.absorb(lin);
    }

    /// Adds `lin` to the columns called `name` (to every column when none
    /// is, as the write may land anywhere).
    fn assign(&mut self, name: &str, lin: &Lineage) {
        self.whole.absorb(lin);
        let Some(cols) = &mut self.cols else {
            return;
        };
        let mut hit = false;
        for c in cols.iter_mut().chain(self.extra.iter_mut()) {
            if c.name == name {
                c.lin.absorb(lin);
                hit = true;
            }
        }
        if !hit {
            for c in cols.iter_mut() {
                c.lin.absorb(lin);
            }
        }
    }

    /// Column names (empty when the shape is unknown).
    fn names(&self) -> Vec<String> {
        self.cols.iter().flatten().map(|c| c.name.clone()).collect()
    }
}

/// Position-wise union for set operations and recursive CTEs: the count and
/// names come from `left`; a right side of unknown shape adds its whole
/// lineage to every column.
fn union_positional(left: &Rel, right: &Rel) -> Rel {
    let Some(lcols) = &left.cols else {
        return Rel::opaque(left.whole.clone().with(&right.whole));
    };
    let cols = lcols
        .iter()
        .enumerate()
        .map(|(i, c)| Col {
            name: c.name.clone(),
            lin: c.lin.clone().with(&right.nth(i)),
        })
        .collect();
    Rel::known(cols)
}

/// Union of the candidates an ambiguous relation or function name may mean
/// (without origins when there are several: which one the session means is
/// not known).
fn union_candidates(rels: Vec<Rel>) -> Rel {
    let several = rels.len() > 1;
    let mut iter = rels.into_iter();
    let Some(mut acc) = iter.next() else {
        return Rel::unknown();
    };
    for r in iter {
        acc = match (&acc.cols, &r.cols) {
            (Some(a), Some(b)) if a.len() == b.len() => {
                let mut merged = union_positional(&acc, &r);
                merged.extra = acc.extra.clone();
                merged.extra.extend(b.iter().cloned());
                merged.extra.extend(r.extra.iter().cloned());
                merged
            }
            _ => Rel::opaque(acc.whole.clone().with(&r.whole)),
        };
    }
    if several {
        acc.transformed()
    } else {
        acc
    }
}

/// A relation in scope.
#[derive(Debug, Clone)]
struct Entry {
    /// The name that qualifies its columns (alias or relation name).
    refname: Option<String>,
    /// Schemas that may qualify `refname` (a real relation without alias).
    schemas: Vec<String>,
    rel: Rc<Rel>,
    /// Whether its columns can be named unqualified (and `*` expands it).
    cols_visible: bool,
}

impl Entry {
    /// A column-visible entry for `rel`.
    fn new(refname: Option<String>, rel: Rel) -> Self {
        Self {
            refname,
            schemas: Vec::new(),
            rel: Rc::new(rel),
            cols_visible: true,
        }
    }

    /// Whether `[schema.]name` qualifies this entry's columns.
    fn answers_to(&self, schema: Option<&str>, name: &str) -> bool {
        self.refname.as_deref() == Some(name)
            && schema.is_none_or(|s| self.schemas.iter().any(|x| x == s))
    }
}

/// A CTE binding: `None` while it is declared but not yet computed.
type CteBinding = Option<Rc<Rel>>;

/// One query level: its relations, CTEs and named windows.
#[derive(Debug, Default)]
struct Level {
    entries: Vec<Entry>,
    ctes: Vec<(String, CteBinding)>,
    windows: HashMap<String, Lineage>,
}

/// The parameters of the SQL function body being followed.
#[derive(Debug, Default)]
struct Params {
    /// `$n` is `by_position[n - 1]` (empty when positions are unknown).
    by_position: Vec<Lineage>,
    /// All arguments together (parameters named or out of range).
    all: Lineage,
}

/// How a `*` expands.
enum Expansion {
    Cols(Vec<Col>),
    Opaque(Lineage),
}

/// A relation named in a statement, resolved through the catalog.
struct Resolved {
    rel: Rel,
    schemas: Vec<String>,
    /// `schema.name` of each candidate (the spelled name when none).
    targets: Vec<String>,
}

// ---------------------------------------------------------------------------
// The walker.

/// Walks one statement (and what it reaches through the catalog).
struct Walker<'c> {
    catalog: &'c dyn Catalog,
    levels: Vec<Level>,
    params: Option<Rc<Params>>,
    nesting: usize,
    frames: usize,
    budget: usize,
    /// Views already followed, by (schema, name).
    views: HashMap<(String, String), Rc<Rel>>,
    writes: Vec<WriteFlow>,
}

impl<'c> Walker<'c> {
    /// A walker with no scope, reusing `views` already followed.
    fn new(catalog: &'c dyn Catalog, views: HashMap<(String, String), Rc<Rel>>) -> Self {
        Self {
            catalog,
            levels: Vec::new(),
            params: None,
            nesting: 0,
            frames: 0,
            budget: BUDGET,
            views,
            writes: Vec::new(),
        }
    }

    /// The flows recorded, merged by target and column.
    fn finished_writes(&mut self) -> Vec<WriteFlow> {
        let mut merged: BTreeMap<(String, Option<String>), WriteFlow> = BTreeMap::new();
        for w in self.writes.drain(..) {
            let entry = merged
                .entry((w.target.clone(), w.column.clone()))
                .or_insert_with(|| WriteFlow {
                    target: w.target.clone(),
                    column: w.column.clone(),
                    ..WriteFlow::default()
                });
            entry.sources.extend(w.sources);
            entry.unknown |= w.unknown;
        }
        merged.into_values().collect()
    }

    /// Records that `lin` is written into `column` (if known) of `targets`.
    fn record(&mut self, targets: &[String], column: Option<&str>, lin: &Lineage) {
        for t in targets {
            self.writes.push(WriteFlow {
                target: t.clone(),
                column: column.map(str::to_string),
                sources: lin.sources.clone(),
                unknown: lin.unknown,
            });
        }
    }

    /// Records the rows of `rel` written into `targets`: value `i` into
    /// column `names[i]` (any column past the end, or if the shape is
    /// unknown).
    fn record_rows(&mut self, targets: &[String], names: &[String], rel: &Rel) {
        match &rel.cols {
            Some(cols) => {
                for (i, c) in cols.iter().enumerate() {
                    self.record(targets, names.get(i).map(String::as_str), &c.lin);
                }
            }
            None => self.record(targets, None, &rel.whole),
        }
    }

    /// Records the rows of `rel` written into a relation they create
    /// (`CREATE TABLE AS`, `SELECT INTO`, a materialized view): its columns
    /// are named by `col_names`, then by the rows' own names.
    fn record_created(&mut self, targets: &[String], col_names: &[String], rel: &Rel) {
        let names = rel.clone().renamed(col_names).names();
        self.record_rows(targets, &names, rel);
    }

    // --- guards and scopes -------------------------------------------------

    /// Runs `f` one frame deeper, or returns `fallback()` past the limits.
    fn guarded<T>(&mut self, fallback: impl FnOnce() -> T, f: impl FnOnce(&mut Self) -> T) -> T {
        if self.frames >= MAX_FRAMES || self.budget == 0 {
            return fallback();
        }
        self.frames += 1;
        self.budget -= 1;
        let out = f(self);
        self.frames -= 1;
        out
    }

    /// Runs `f` one query level deeper (subquery, view, function body).
    fn nested<T>(&mut self, fallback: impl FnOnce() -> T, f: impl FnOnce(&mut Self) -> T) -> T {
        if self.nesting >= MAX_NESTING {
            return fallback();
        }
        self.nesting += 1;
        let out = self.guarded(fallback, f);
        self.nesting -= 1;
        out
    }

    /// Runs `f` in a fresh scope (a view or function body sees nothing of
    /// the query that uses it), with `params` as `$n`.
    fn isolated<T>(
        &mut self,
        params: Option<Rc<Params>>,
        fallback: impl FnOnce() -> T,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        self.nested(fallback, |w| {
            let levels = std::mem::take(&mut w.levels);
            let saved = std::mem::replace(&mut w.params, params);
            let out = f(w);
            w.levels = levels;
            w.params = saved;
            out
        })
    }

    /// Runs `f` inside a new query level.
    fn in_level<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.levels.push(Level::default());
        let out = f(self);
        self.levels.pop();
        out
    }

    /// Runs `f` with `visible` in scope (LATERAL references).
    fn with_visible<T>(&mut self, visible: &[Entry], f: impl FnOnce(&mut Self) -> T) -> T {
        self.levels.push(Level {
            entries: visible.to_vec(),
            ..Level::default()
        });
        let out = f(self);
        self.levels.pop();
        out
    }

    /// Sets the relations in scope at the current level.
    fn set_entries(&mut self, entries: Vec<Entry>) {
        if let Some(level) = self.levels.last_mut() {
            level.entries = entries;
        }
    }

    // --- statements --------------------------------------------------------

    /// The rows a statement returns (`None`: no rows), recording its writes.
    fn statement(&mut self, node: &Node) -> Option<Rel> {
        match node.node.as_ref()? {
            NodeEnum::SelectStmt(s) => self.select_statement(s),
            NodeEnum::InsertStmt(s) => self.in_level(|w| w.insert(s)),
            NodeEnum::UpdateStmt(s) => self.in_level(|w| w.update(s)),
            NodeEnum::DeleteStmt(s) => self.in_level(|w| w.delete(s)),
            NodeEnum::MergeStmt(s) => self.in_level(|w| w.merge(s)),
            NodeEnum::CreateTableAsStmt(s) => {
                self.create_table_as(s);
                None
            }
            NodeEnum::CopyStmt(s) => {
                self.copy(s);
                None
            }
            NodeEnum::ExplainStmt(s) => {
                if let Some(q) = s.query.as_deref().filter(|_| explain_runs(s)) {
                    self.statement(q);
                }
                None
            }
            NodeEnum::RefreshMatViewStmt(s) => {
                self.refresh(s);
                None
            }
            // A cursor returns (through FETCH) what its query returns; a
            // prepared statement returns (through EXECUTE) what it prepares.
            NodeEnum::DeclareCursorStmt(s) => s.query.as_deref().and_then(|q| self.statement(q)),
            NodeEnum::PrepareStmt(s) => s.query.as_deref().and_then(|q| self.statement(q)),
            NodeEnum::AlterTableStmt(s) => {
                self.alter_table(s);
                None
            }
            _ => None,
        }
    }

    /// A nested query's rows (subquery, CTE): an unknown relation past the
    /// nesting limit; no columns for a statement that returns none.
    fn query(&mut self, node: Option<&Node>) -> Rel {
        let Some(node) = node else {
            return Rel::unknown();
        };
        self.nested(Rel::unknown, |w| {
            w.statement(node).unwrap_or_else(|| Rel::known(Vec::new()))
        })
    }

    /// A top-level or nested `SELECT`; `SELECT ... INTO` writes and
    /// returns no rows.
    fn select_statement(&mut self, s: &pb::SelectStmt) -> Option<Rel> {
        let rel = self.select(s);
        match into_clause(s) {
            Some(into) => {
                let targets = self.write_targets(into.rel.as_ref());
                self.record_created(&targets, &string_list(&into.col_names), &rel);
                None
            }
            None => Some(rel),
        }
    }

    /// A `SELECT` (its `WITH` included) in a level of its own.
    fn select(&mut self, s: &pb::SelectStmt) -> Rel {
        self.guarded(Rel::unknown, |w| {
            w.in_level(|w| {
                if let Some(with) = &s.with_clause {
                    w.with_clause(with);
                }
                w.select_body(s)
            })
        })
    }

    /// A `SELECT`'s rows: a set operation, `VALUES` or a simple select.
    fn select_body(&mut self, s: &pb::SelectStmt) -> Rel {
        match s.op() {
            pb::SetOperation::SetopNone | pb::SetOperation::Undefined => {
                if s.values_lists.is_empty() {
                    self.simple_select(s)
                } else {
                    self.values(&s.values_lists)
                }
            }
            _ => {
                let left = s
                    .larg
                    .as_deref()
                    .map_or_else(Rel::unknown, |l| self.select(l));
                let right = s
                    .rarg
                    .as_deref()
                    .map_or_else(Rel::unknown, |r| self.select(r));
                union_positional(&left, &right)
            }
        }
    }

    /// `SELECT targets FROM ... WHERE ...`: the targets over the FROM items.
    fn simple_select(&mut self, s: &pb::SelectStmt) -> Rel {
        let entries = self.range_list(&s.from_clause);
        self.set_entries(entries);
        let windows = self.windows(&s.window_clause);
        if let Some(level) = self.levels.last_mut() {
            level.windows = windows;
        }
        let rel = self.targets(&s.target_list);
        self.filters(&[s.where_clause.as_deref(), s.having_clause.as_deref()]);
        self.filter_list(&s.group_clause);
        self.filter_list(&s.distinct_clause);
        self.filter_list(&s.sort_clause);
        self.filters(&[s.limit_count.as_deref(), s.limit_offset.as_deref()]);
        rel
    }

    /// Walks expressions whose values are not output (filters, ordering)
    /// for the writes of the SQL functions they call; their lineage is
    /// "inference", not counted.
    fn filters(&mut self, nodes: &[Option<&Node>]) {
        for n in nodes.iter().flatten() {
            self.expr(n);
        }
    }

    /// [`Self::filters`] over a list.
    fn filter_list(&mut self, nodes: &[Node]) {
        for n in nodes {
            self.expr(n);
        }
    }

    /// `VALUES (...), (...)`: column `i` is the union of every row's `i`-th
    /// expression.
    fn values(&mut self, rows: &[Node]) -> Rel {
        let mut cols: Vec<Col> = Vec::new();
        for row in rows {
            let items = list_items(row);
            for (i, item) in items.iter().enumerate() {
                let lin = self.expr(item);
                match cols.get_mut(i) {
                    Some(c) => c.lin.absorb(&lin),
                    None => cols.push(Col {
                        name: format!("column{}", i + 1),
                        lin,
                    }),
                }
            }
        }
        Rel::known(cols)
    }

    /// The lineage of each named window of a `WINDOW` clause.
    fn windows(&mut self, defs: &[Node]) -> HashMap<String, Lineage> {
        let mut out = HashMap::new();
        for d in defs {
            if let Some(NodeEnum::WindowDef(w)) = d.node.as_ref() {
                let lin = self.window_def(w);
                out.insert(w.name.clone(), lin);
            }
        }
        out
    }

    /// A target list: its columns in order, `*` expanded.
    fn targets(&mut self, list: &[Node]) -> Rel {
        let mut cols = Vec::new();
        let mut opaque: Option<Lineage> = None;
        for node in list {
            let Some(NodeEnum::ResTarget(rt)) = node.node.as_ref() else {
                opaque.get_or_insert_with(Lineage::default).unknown = true;
                continue;
            };
            let val = rt.val.as_deref();
            let expansion = match val.and_then(|v| v.node.as_ref()) {
                Some(NodeEnum::ColumnRef(c)) if ends_with_star(&c.fields) => {
                    Some(self.expand_star(&c.fields))
                }
                Some(NodeEnum::AIndirection(i)) if ends_with_star(&i.indirection) => {
                    Some(self.expand_composite(i))
                }
                _ => None,
            };
            match expansion {
                Some(Expansion::Cols(c)) => cols.extend(c),
                Some(Expansion::Opaque(lin)) => {
                    opaque.get_or_insert_with(Lineage::default).absorb(&lin);
                }
                None => {
                    let lin = self.target_value(val);
                    let name = if rt.name.is_empty() {
                        figure_colname(val)
                    } else {
                        rt.name.clone()
                    };
                    cols.push(Col { name, lin });
                }
            }
        }
        match opaque {
            None => Rel::known(cols),
            Some(extra) => Rel::opaque(Rel::known(cols).whole.with(&extra)),
        }
    }

    /// The value of an output expression: a bare column reference keeps the
    /// column's origin (PostgreSQL's `markTargetListOrigin` follows only a
    /// plain `Var`); anything else is an expression, with none.
    fn target_value(&mut self, val: Option<&Node>) -> Lineage {
        match val.and_then(|v| v.node.as_ref()) {
            Some(NodeEnum::ColumnRef(c)) if !ends_with_star(&c.fields) => {
                self.guarded(Lineage::unknown, |w| w.column_ref(&c.fields))
            }
            _ => self.expr_opt(val),
        }
    }

    // --- WITH --------------------------------------------------------------

    /// Binds the CTEs of a `WITH` at the current level, in order.
    fn with_clause(&mut self, with: &pb::WithClause) {
        let ctes: Vec<&pb::CommonTableExpr> = with
            .ctes
            .iter()
            .filter_map(|n| match n.node.as_ref() {
                Some(NodeEnum::CommonTableExpr(c)) => Some(c.as_ref()),
                _ => None,
            })
            .collect();
        if with.recursive {
            for c in &ctes {
                self.bind_cte(&c.ctename, None);
            }
        }
        for c in ctes {
            // PostgreSQL copies origins through a recursive CTE's non-recursive
            // term only when it is not a set operation; every CTE of a `WITH
            // RECURSIVE` is treated as transformed, the conservative choice.
            let rel = if with.recursive {
                self.recursive_cte(c).transformed()
            } else {
                self.cte(c)
            };
            self.bind_cte(&c.ctename, Some(Rc::new(rel)));
        }
    }

    /// Binds (or rebinds) the CTE `name` at the current level.
    fn bind_cte(&mut self, name: &str, rel: CteBinding) {
        let Some(level) = self.levels.last_mut() else {
            return;
        };
        match level.ctes.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = rel,
            None => level.ctes.push((name.to_string(), rel)),
        }
    }

    /// A CTE's rows, renamed by its column list.
    fn cte(&mut self, c: &pb::CommonTableExpr) -> Rel {
        let names = string_list(&c.aliascolnames);
        self.query(c.ctequery.as_deref()).renamed(&names)
    }

    /// A CTE of a `WITH RECURSIVE`: seeded with its non-recursive term, then
    /// iterated until its lineage stops growing.
    fn recursive_cte(&mut self, c: &pb::CommonTableExpr) -> Rel {
        let names = string_list(&c.aliascolnames);
        let seed_term = match c.ctequery.as_deref().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::SelectStmt(s)) if s.op() == pb::SetOperation::SetopUnion => {
                s.larg.as_deref()
            }
            _ => None,
        };
        let Some(seed_term) = seed_term else {
            return self.cte(c);
        };
        let mut current = self
            .nested(Rel::unknown, |w| w.select(seed_term))
            .renamed(&names);
        for _ in 0..MAX_ROUNDS {
            self.bind_cte(&c.ctename, Some(Rc::new(current.clone())));
            let next = self.cte(c);
            let merged = union_positional(&current, &next);
            if merged == current {
                return current;
            }
            current = merged;
        }
        let mut gave_up = current;
        gave_up.widen(&Lineage::unknown());
        gave_up
    }

    /// The CTE `name` in scope: `Some(None)` while declared but not known.
    fn find_cte(&self, name: &str) -> Option<CteBinding> {
        self.levels.iter().rev().find_map(|l| {
            l.ctes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, rel)| rel.clone())
        })
    }

    // --- FROM --------------------------------------------------------------

    /// The entries of a FROM list (or `USING` list), in order.
    fn range_list(&mut self, items: &[Node]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for item in items {
            self.range_item(item, &mut entries);
        }
        entries
    }

    /// Adds the entries of one FROM item to `entries`; returns its relation.
    fn range_item(&mut self, node: &Node, entries: &mut Vec<Entry>) -> Rc<Rel> {
        let done = self.guarded(|| None, |w| Some(w.range_item_inner(node, entries)));
        done.unwrap_or_else(|| {
            let rel = Rc::new(Rel::unknown());
            entries.push(Entry {
                rel: rel.clone(),
                ..Entry::new(None, Rel::default())
            });
            rel
        })
    }

    /// [`Self::range_item`] within the frame limit.
    fn range_item_inner(&mut self, node: &Node, entries: &mut Vec<Entry>) -> Rc<Rel> {
        let entry = match node.node.as_ref() {
            Some(NodeEnum::RangeVar(rv)) => self.range_var(rv),
            Some(NodeEnum::RangeSubselect(s)) => {
                let rel = if s.lateral {
                    let visible = entries.clone();
                    self.with_visible(&visible, |w| w.query(s.subquery.as_deref()))
                } else {
                    self.query(s.subquery.as_deref())
                };
                aliased(None, rel, s.alias.as_ref())
            }
            Some(NodeEnum::RangeFunction(f)) => {
                let visible = entries.clone();
                self.with_visible(&visible, |w| w.range_function(f))
            }
            Some(NodeEnum::JoinExpr(j)) => return self.join(j, entries),
            Some(NodeEnum::RangeTableSample(t)) => match t.relation.as_deref() {
                Some(rel) => return self.range_item(rel, entries),
                None => Entry::new(None, Rel::unknown()),
            },
            Some(NodeEnum::RangeTableFunc(t)) => {
                let visible = entries.clone();
                let rel = self.with_visible(&visible, |w| w.xml_table(t));
                aliased(None, rel, t.alias.as_ref())
            }
            Some(NodeEnum::JsonTable(t)) => {
                let visible = entries.clone();
                let rel = self.with_visible(&visible, |w| w.json_table(t));
                aliased(None, rel, t.alias.as_ref())
            }
            _ => Entry::new(None, Rel::unknown()),
        };
        let rel = entry.rel.clone();
        entries.push(entry);
        rel
    }

    /// A named relation: a CTE in scope, else the catalog's.
    fn range_var(&mut self, rv: &pb::RangeVar) -> Entry {
        let cte = rv
            .schemaname
            .is_empty()
            .then(|| self.find_cte(&rv.relname))
            .flatten();
        if let Some(binding) = cte {
            let rel = binding.map_or_else(Rel::unknown, |r| (*r).clone());
            return aliased(Some(rv.relname.clone()), rel, rv.alias.as_ref());
        }
        let resolved = self.resolve(rv);
        let mut entry = aliased(Some(rv.relname.clone()), resolved.rel, rv.alias.as_ref());
        if rv.alias.is_none() {
            entry.schemas = resolved.schemas;
        }
        entry
    }

    /// A relation through the catalog (candidates unioned).
    fn resolve(&mut self, rv: &pb::RangeVar) -> Resolved {
        let schema = Some(rv.schemaname.as_str()).filter(|s| !s.is_empty());
        let candidates = self.catalog.relations(schema, &rv.relname);
        if candidates.is_empty() {
            return Resolved {
                rel: Rel::unknown(),
                schemas: schema.map(str::to_string).into_iter().collect(),
                targets: vec![spelled(rv)],
            };
        }
        let schemas = candidates.iter().map(|c| c.schema.clone()).collect();
        let targets = candidates
            .iter()
            .map(|c| format!("{}.{}", c.schema, c.name).to_lowercase())
            .collect();
        let rels = candidates.iter().map(|c| self.relation(c)).collect();
        Resolved {
            rel: union_candidates(rels),
            schemas,
            targets,
        }
    }

    /// A catalog relation's rows: a table's columns are their own sources.
    fn relation(&mut self, r: &Relation) -> Rel {
        match r.kind {
            RelationKind::Table => Rel::known(
                r.columns
                    .iter()
                    .map(|c| Col {
                        name: c.clone(),
                        lin: Lineage::table_column(SourceColumn::new(&r.schema, &r.name, c)),
                    })
                    .collect(),
            ),
            RelationKind::View => self.view(r),
        }
    }

    /// A view: column `i` is output column `i` of its definition. Its
    /// columns have no origin: PostgreSQL reports the view's own, which is
    /// not a table's.
    fn view(&mut self, r: &Relation) -> Rel {
        let key = (r.schema.clone(), r.name.clone());
        if let Some(rel) = self.views.get(&key) {
            return (**rel).clone();
        }
        let unknown_cols = |r: &Relation| {
            Rel::known(
                r.columns
                    .iter()
                    .map(|c| Col {
                        name: c.clone(),
                        lin: Lineage::unknown(),
                    })
                    .collect(),
            )
        };
        // Placeholder: a view reached again while being followed is unknown.
        self.views.insert(key.clone(), Rc::new(unknown_cols(r)));
        let Some(def) = &r.view_definition else {
            return unknown_cols(r);
        };
        let out = self.isolated(None, Rel::unknown, |w| w.sql_text(def));
        let cols = r
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Col {
                name: c.clone(),
                lin: out.nth(i),
            })
            .collect();
        let rel = Rel::known(cols).transformed();
        self.views.insert(key, Rc::new(rel.clone()));
        rel
    }

    /// The rows the last statement of `text` returns (views, SQL function
    /// bodies); unknown if it does not parse.
    fn sql_text(&mut self, text: &str) -> Rel {
        let Ok(parsed) = pg_query::parse(text, pg_query::ParserOptions::DEFAULT) else {
            return Rel::unknown();
        };
        let mut last = Rel::known(Vec::new());
        for raw in &parsed.protobuf.stmts {
            if let Some(stmt) = raw.stmt.as_deref() {
                last = self
                    .statement(stmt)
                    .unwrap_or_else(|| Rel::known(Vec::new()));
            }
        }
        last
    }

    /// A `JOIN`: adds its inputs (hidden from unqualified names) and itself.
    fn join(&mut self, j: &pb::JoinExpr, entries: &mut Vec<Entry>) -> Rc<Rel> {
        let start = entries.len();
        let left = match j.larg.as_deref() {
            Some(l) => self.range_item(l, entries),
            None => Rc::new(Rel::unknown()),
        };
        let right = match j.rarg.as_deref() {
            Some(r) => self.range_item(r, entries),
            None => Rc::new(Rel::unknown()),
        };
        let using = if j.is_natural {
            natural_columns(&left, &right)
        } else {
            Some(string_list(&j.using_clause))
        };
        let (joined, merged) = match using {
            Some(using) => join_rel(&left, &right, &using),
            None => {
                let whole = left.whole.clone().with(&right.whole);
                (Rel::opaque(whole.clone()), Rel::opaque(whole))
            }
        };
        let visible = entries.clone();
        self.with_visible(&visible, |w| w.filters(&[j.quals.as_deref()]));
        let joined = Rc::new(joined);
        match &j.alias {
            Some(alias) => {
                entries.truncate(start);
                let names = string_list(&alias.colnames);
                entries.push(Entry::new(
                    Some(alias.aliasname.clone()),
                    (*joined).clone().renamed(&names),
                ));
            }
            None => {
                for e in entries.iter_mut().skip(start) {
                    e.cols_visible = false;
                }
                entries.push(Entry {
                    rel: joined.clone(),
                    ..Entry::new(None, Rel::default())
                });
            }
        }
        if let Some(alias) = &j.join_using_alias {
            let mut e = Entry::new(Some(alias.aliasname.clone()), merged);
            e.cols_visible = false;
            entries.push(e);
        }
        joined
    }

    /// A function in FROM (`f(...)`, `ROWS FROM (...)`), with its alias.
    fn range_function(&mut self, f: &pb::RangeFunction) -> Entry {
        let mut cols: Option<Vec<Col>> = Some(Vec::new());
        let mut whole = Lineage::default();
        let mut first_name = None;
        let single = f.functions.len() == 1;
        for item in &f.functions {
            let parts = list_items(item);
            let Some(call) = parts.first() else {
                continue;
            };
            let own_defs = parts.get(1).map(|d| list_items(d)).unwrap_or_default();
            let defs = if single && own_defs.is_empty() {
                f.coldeflist.iter().collect()
            } else {
                own_defs
            };
            let (name, rel) = self.range_call(call, &defs);
            first_name.get_or_insert(name);
            whole.absorb(&rel.whole);
            match (&mut cols, rel.cols) {
                (Some(acc), Some(c)) => acc.extend(c),
                _ => cols = None,
            }
        }
        if let Some(acc) = cols.as_mut().filter(|_| f.ordinality) {
            acc.push(Col {
                name: "ordinality".into(),
                lin: Lineage::default(),
            });
        }
        let mut rel = match cols {
            Some(c) => Rel::known(c),
            None => Rel::opaque(whole),
        };
        // A scalar function's single column is called after the alias (or
        // the function): answer to that name too.
        if let Some(c) = rel
            .cols
            .as_ref()
            .filter(|c| c.len() == 1)
            .and_then(|c| c.first())
        {
            let alias_name = f
                .alias
                .as_ref()
                .map(|a| a.aliasname.clone())
                .or_else(|| first_name.clone());
            if let Some(n) = alias_name {
                let extra = Col {
                    name: n,
                    lin: c.lin.clone(),
                };
                rel.extra.push(extra);
            }
        }
        aliased(first_name, rel, f.alias.as_ref())
    }

    /// One function of a FROM clause: its name and rows.
    fn range_call(&mut self, call: &Node, defs: &[&Node]) -> (String, Rel) {
        let def_names: Vec<String> = defs
            .iter()
            .filter_map(|d| match d.node.as_ref() {
                Some(NodeEnum::ColumnDef(c)) => Some(c.colname.clone()),
                _ => None,
            })
            .collect();
        let (name, rel) = match call.node.as_ref() {
            Some(NodeEnum::FuncCall(fc)) => {
                let (schema, name) = func_name(&fc.funcname);
                let args = self.call_args(fc);
                let rel = self.function_rows(schema.as_deref(), &name, &args);
                (name, rel)
            }
            _ => {
                let name = figure_colname(Some(call));
                let lin = self.expr(call);
                let rel = Rel::known(vec![Col {
                    name: name.clone(),
                    lin,
                }]);
                (name, rel)
            }
        };
        if def_names.is_empty() {
            return (name, rel);
        }
        // A column definition list fixes the shape.
        let cols = def_names
            .iter()
            .enumerate()
            .map(|(i, n)| Col {
                name: n.clone(),
                lin: rel.nth(i),
            })
            .collect();
        (name, Rel::known(cols))
    }

    /// The rows of a function called in FROM (no origins: PostgreSQL does
    /// not report any for an `RTE_FUNCTION`).
    fn function_rows(&mut self, schema: Option<&str>, name: &str, args: &CallArgs) -> Rel {
        let trusted = pure::is_pure(name) && schema.is_none_or(|s| s == "pg_catalog");
        let candidates = self.catalog.functions(schema, name);
        let pure_rows = || {
            let mut rel = match pure::from_shape(name) {
                Some(cols) => Rel::known(
                    cols.into_iter()
                        .map(|name| Col {
                            name,
                            lin: Lineage::default(),
                        })
                        .collect(),
                ),
                None => Rel::opaque(Lineage::default()),
            };
            rel.widen(&args.all);
            rel
        };
        if candidates.is_empty() {
            return if trusted {
                pure_rows().transformed()
            } else {
                Rel::unknown()
            };
        }
        let mut rels = Vec::new();
        for c in &candidates {
            let mut rel = if trusted && c.schema == "pg_catalog" {
                pure_rows()
            } else if c.language == "sql" {
                match &c.body {
                    Some(body) => self.function_body(body, args),
                    None => Rel::unknown(),
                }
            } else {
                Rel::unknown()
            };
            rel.widen(&args.all);
            rels.push(rel);
        }
        union_candidates(rels).transformed()
    }

    /// The rows a SQL function body returns, `$n` being the call's
    /// arguments.
    fn function_body(&mut self, body: &str, args: &CallArgs) -> Rel {
        let params = Rc::new(Params {
            by_position: if args.positional {
                args.each.clone()
            } else {
                Vec::new()
            },
            all: args.all.clone(),
        });
        self.isolated(Some(params), Rel::unknown, |w| w.sql_text(body))
    }

    /// `XMLTABLE(...)`: every column comes from the document, the row path
    /// and its own path and default.
    fn xml_table(&mut self, t: &pb::RangeTableFunc) -> Rel {
        let base = self
            .expr_opt(t.docexpr.as_deref())
            .with(&self.expr_opt(t.rowexpr.as_deref()))
            .with(&self.exprs(&t.namespaces));
        let mut cols = Vec::new();
        for c in &t.columns {
            if let Some(NodeEnum::RangeTableFuncCol(col)) = c.node.as_ref() {
                let lin = if col.for_ordinality {
                    Lineage::default()
                } else {
                    base.clone()
                        .with(&self.expr_opt(col.colexpr.as_deref()))
                        .with(&self.expr_opt(col.coldefexpr.as_deref()))
                };
                cols.push(Col {
                    name: col.colname.clone(),
                    lin,
                });
            }
        }
        Rel::known(cols)
    }

    /// `JSON_TABLE(...)`: every column comes from the context item and the
    /// `PASSING` values.
    fn json_table(&mut self, t: &pb::JsonTable) -> Rel {
        let mut base = self.json_value(t.context_item.as_deref());
        for p in &t.passing {
            base.absorb(&self.expr(p));
        }
        let mut cols = Vec::new();
        json_table_columns(&t.columns, &base, &mut cols, 0);
        Rel::known(cols)
    }

    // --- stars and column references ----------------------------------------

    /// `*`, `t.*`, `s.t.*` in a target list.
    fn expand_star(&self, fields: &[Node]) -> Expansion {
        let names = string_fields(fields);
        let entries: Vec<&Entry> = match names.as_slice() {
            [] => self
                .levels
                .last()
                .map(|l| l.entries.iter().filter(|e| e.cols_visible).collect())
                .unwrap_or_default(),
            [.., schema, table] => self.find_entries(Some(schema), table).unwrap_or_default(),
            [table] => self.find_entries(None, table).unwrap_or_default(),
        };
        if entries.is_empty() && !names.is_empty() {
            return Expansion::Opaque(Lineage::unknown());
        }
        let mut cols = Vec::new();
        let mut whole = Lineage::default();
        let mut known = true;
        for e in entries {
            whole.absorb(&e.rel.whole);
            match &e.rel.cols {
                Some(c) => cols.extend(c.iter().cloned()),
                None => known = false,
            }
        }
        if known {
            Expansion::Cols(cols)
        } else {
            Expansion::Opaque(whole)
        }
    }

    /// `(expr).*`: the columns of a whole-row reference, else opaque. No
    /// origins: written as an expression (PostgreSQL may well expand a
    /// whole-row `Var` into plain ones; not relied upon).
    fn expand_composite(&mut self, i: &pb::AIndirection) -> Expansion {
        match self.whole_row_entries(i.arg.as_deref()) {
            Some(entries) => {
                let mut cols = Vec::new();
                for e in entries {
                    match &e.rel.cols {
                        Some(c) => cols.extend(c.iter().map(|c| Col {
                            name: c.name.clone(),
                            lin: c.lin.clone().transformed(),
                        })),
                        None => return Expansion::Opaque(e.rel.whole.clone()),
                    }
                }
                Expansion::Cols(cols)
            }
            None => Expansion::Opaque(self.expr_opt(i.arg.as_deref())),
        }
    }

    /// The relations a bare name refers to as a whole row (`c` in `(c).*`),
    /// when it is not a column.
    fn whole_row_entries(&self, arg: Option<&Node>) -> Option<Vec<Entry>> {
        let Some(NodeEnum::ColumnRef(c)) = arg.and_then(|a| a.node.as_ref()) else {
            return None;
        };
        let [name] = string_fields(&c.fields)[..] else {
            return None;
        };
        if self.column_in_scope(name) {
            return None;
        }
        let entries = self.find_entries(None, name)?;
        Some(entries.into_iter().cloned().collect())
    }

    /// Entries answering to `[schema.]name`, innermost level first.
    fn find_entries(&self, schema: Option<&str>, name: &str) -> Option<Vec<&Entry>> {
        self.levels.iter().rev().find_map(|l| {
            let found: Vec<&Entry> = l
                .entries
                .iter()
                .filter(|e| e.answers_to(schema, name))
                .collect();
            (!found.is_empty()).then_some(found)
        })
    }

    /// Whether some visible relation has (or may have) a column `name`.
    fn column_in_scope(&self, name: &str) -> bool {
        self.levels
            .iter()
            .flat_map(|l| &l.entries)
            .any(|e| e.cols_visible && e.rel.has_column(name))
    }

    /// A column reference: `name`, `t.name`, `s.t.name`, or a whole row.
    fn column_ref(&mut self, fields: &[Node]) -> Lineage {
        let names = string_fields(fields);
        if ends_with_star(fields) {
            return match self.expand_star(fields) {
                Expansion::Cols(c) => Rel::known(c).whole,
                Expansion::Opaque(l) => l,
            };
        }
        match names.as_slice() {
            [name] => self.unqualified(name),
            [table, column] => self.qualified(None, table, column),
            [schema, table, column] => self.qualified(Some(schema), table, column),
            [_catalog, schema, table, column] => self.qualified(Some(schema), table, column),
            _ => Lineage::unknown(),
        }
    }

    /// An unqualified name: a column of the innermost level that has it
    /// (relations of unknown shape may have it too), else a whole-row
    /// reference, else a parameter of the SQL function being followed.
    fn unqualified(&self, name: &str) -> Lineage {
        let mut maybe = Lineage::default();
        let mut any_maybe = false;
        for level in self.levels.iter().rev() {
            let mut found: Option<Lineage> = None;
            for e in level.entries.iter().filter(|e| e.cols_visible) {
                if e.rel.cols.is_none() {
                    maybe.absorb(&e.rel.whole);
                    any_maybe = true;
                } else if let Some(lin) = e.rel.column(name) {
                    merge(&mut found, lin);
                }
            }
            if let Some(found) = found {
                // Exactly one relation has it (and none may): that column.
                return if any_maybe { found.with(&maybe) } else { found };
            }
        }
        if let Some(entries) = self.find_entries(None, name) {
            let mut lin = maybe;
            for e in entries {
                lin.absorb(&e.rel.whole);
            }
            return lin;
        }
        if let Some(p) = &self.params {
            return maybe.with(&p.all);
        }
        if SYSTEM_COLUMNS.contains(&name) {
            return maybe;
        }
        if any_maybe {
            maybe
        } else {
            Lineage::unknown()
        }
    }

    /// `table.column` or `schema.table.column`.
    fn qualified(&self, schema: Option<&str>, table: &str, column: &str) -> Lineage {
        if let Some(entries) = self.find_entries(schema, table) {
            let mut lin = None;
            for e in entries {
                let found = match e.rel.column(column) {
                    Some(l) => l,
                    None if SYSTEM_COLUMNS.contains(&column) => Lineage::default(),
                    // `t.f` may be `f(t)`: the whole row, through an unknown
                    // function.
                    None => e.rel.whole.clone().with(&Lineage::unknown()),
                };
                merge(&mut lin, found);
            }
            return lin.unwrap_or_default();
        }
        if let Some(p) = &self.params {
            // `function_name.parameter` in a SQL function body, or a field
            // of a composite column.
            if schema.is_none() && !self.column_in_scope(table) {
                return p.all.clone();
            }
        }
        match schema {
            // `composite_column.field`: the field comes from the column (a
            // `FieldSelect`, no origin).
            None => self.unqualified(table).transformed(),
            Some(_) => Lineage::unknown(),
        }
    }

    /// `$n`: the argument of the SQL function being followed, else nothing.
    fn param(&self, number: i32) -> Lineage {
        let Some(p) = &self.params else {
            return Lineage::default();
        };
        usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| p.by_position.get(i))
            .cloned()
            .unwrap_or_else(|| p.all.clone())
    }

    // --- expressions ---------------------------------------------------------

    /// [`Self::expr`] of an optional node (nothing for none).
    fn expr_opt(&mut self, node: Option<&Node>) -> Lineage {
        node.map(|n| self.expr(n)).unwrap_or_default()
    }

    /// The union of [`Self::expr`] over `nodes`.
    fn exprs(&mut self, nodes: &[Node]) -> Lineage {
        let mut lin = Lineage::default();
        for n in nodes {
            lin.absorb(&self.expr(n));
        }
        lin
    }

    /// Where the value of an expression comes from (never with an origin:
    /// only [`Self::target_value`] keeps one, for a bare column reference).
    fn expr(&mut self, node: &Node) -> Lineage {
        self.guarded(Lineage::unknown, |w| w.expr_inner(node))
            .transformed()
    }

    /// [`Self::expr`] within the frame limit.
    fn expr_inner(&mut self, node: &Node) -> Lineage {
        let Some(n) = node.node.as_ref() else {
            return Lineage::default();
        };
        match n {
            NodeEnum::ColumnRef(c) => self.column_ref(&c.fields),
            NodeEnum::ParamRef(p) => self.param(p.number),
            NodeEnum::AConst(_)
            | NodeEnum::String(_)
            | NodeEnum::Integer(_)
            | NodeEnum::Float(_)
            | NodeEnum::Boolean(_)
            | NodeEnum::BitString(_)
            | NodeEnum::TypeName(_)
            | NodeEnum::SqlvalueFunction(_)
            | NodeEnum::SetToDefault(_)
            | NodeEnum::CurrentOfExpr(_)
            | NodeEnum::MergeSupportFunc(_)
            | NodeEnum::AStar(_) => Lineage::default(),
            NodeEnum::TypeCast(t) => self.expr_opt(t.arg.as_deref()),
            NodeEnum::CollateClause(c) => self.expr_opt(c.arg.as_deref()),
            NodeEnum::AExpr(a) => self.operator(a),
            NodeEnum::BoolExpr(b) => self.exprs(&b.args),
            NodeEnum::FuncCall(f) => self.func_call(f),
            NodeEnum::AIndirection(i) => self
                .expr_opt(i.arg.as_deref())
                .with(&self.exprs(&i.indirection)),
            NodeEnum::AIndices(i) => self
                .expr_opt(i.lidx.as_deref())
                .with(&self.expr_opt(i.uidx.as_deref())),
            NodeEnum::AArrayExpr(a) => self.exprs(&a.elements),
            NodeEnum::SubLink(s) => self.sublink(s),
            NodeEnum::CaseExpr(c) => self
                .expr_opt(c.arg.as_deref())
                .with(&self.exprs(&c.args))
                .with(&self.expr_opt(c.defresult.as_deref())),
            NodeEnum::CaseWhen(c) => self
                .expr_opt(c.expr.as_deref())
                .with(&self.expr_opt(c.result.as_deref())),
            NodeEnum::CoalesceExpr(c) => self.exprs(&c.args),
            NodeEnum::MinMaxExpr(m) => self.exprs(&m.args),
            NodeEnum::XmlExpr(x) => self.exprs(&x.named_args).with(&self.exprs(&x.args)),
            NodeEnum::XmlSerialize(x) => self.expr_opt(x.expr.as_deref()),
            NodeEnum::NullTest(t) => self.expr_opt(t.arg.as_deref()),
            NodeEnum::BooleanTest(t) => self.expr_opt(t.arg.as_deref()),
            NodeEnum::RowExpr(r) => self.exprs(&r.args),
            NodeEnum::GroupingFunc(g) => self.exprs(&g.args),
            NodeEnum::NamedArgExpr(a) => self.expr_opt(a.arg.as_deref()),
            NodeEnum::ResTarget(r) => self.expr_opt(r.val.as_deref()),
            NodeEnum::MultiAssignRef(m) => self.expr_opt(m.source.as_deref()),
            NodeEnum::List(l) => self.exprs(&l.items),
            NodeEnum::SortBy(s) => self.expr_opt(s.node.as_deref()),
            NodeEnum::WindowDef(w) => self.window_def(w),
            _ => self.json_expr(n),
        }
    }

    /// SQL/JSON expressions (and anything not recognized: unknown).
    fn json_expr(&mut self, n: &NodeEnum) -> Lineage {
        match n {
            NodeEnum::JsonObjectConstructor(j) => self.exprs(&j.exprs),
            NodeEnum::JsonArrayConstructor(j) => self.exprs(&j.exprs),
            NodeEnum::JsonArrayQueryConstructor(j) => self.query(j.query.as_deref()).whole,
            NodeEnum::JsonKeyValue(kv) => self
                .expr_opt(kv.key.as_deref())
                .with(&self.json_value(kv.value.as_deref())),
            NodeEnum::JsonValueExpr(v) => self.json_value(Some(v)),
            NodeEnum::JsonObjectAgg(j) => {
                let arg = match j.arg.as_deref() {
                    Some(kv) => self
                        .expr_opt(kv.key.as_deref())
                        .with(&self.json_value(kv.value.as_deref())),
                    None => Lineage::default(),
                };
                arg.with(&self.json_agg(j.constructor.as_deref()))
            }
            NodeEnum::JsonArrayAgg(j) => self
                .json_value(j.arg.as_deref())
                .with(&self.json_agg(j.constructor.as_deref())),
            NodeEnum::JsonParseExpr(j) => self.json_value(j.expr.as_deref()),
            NodeEnum::JsonScalarExpr(j) => self.expr_opt(j.expr.as_deref()),
            NodeEnum::JsonSerializeExpr(j) => self.json_value(j.expr.as_deref()),
            NodeEnum::JsonIsPredicate(j) => self.expr_opt(j.expr.as_deref()),
            NodeEnum::JsonFuncExpr(j) => {
                let mut lin = self
                    .json_value(j.context_item.as_deref())
                    .with(&self.expr_opt(j.pathspec.as_deref()))
                    .with(&self.exprs(&j.passing));
                for b in [&j.on_empty, &j.on_error].into_iter().flatten() {
                    lin.absorb(&self.expr_opt(b.expr.as_deref()));
                }
                lin
            }
            NodeEnum::JsonArgument(a) => self.json_value(a.val.as_deref()),
            NodeEnum::JsonBehavior(b) => self.expr_opt(b.expr.as_deref()),
            _ => Lineage::unknown(),
        }
    }

    /// A SQL/JSON value expression (raw and formatted forms).
    fn json_value(&mut self, v: Option<&pb::JsonValueExpr>) -> Lineage {
        match v {
            Some(v) => self
                .expr_opt(v.raw_expr.as_deref())
                .with(&self.expr_opt(v.formatted_expr.as_deref())),
            None => Lineage::default(),
        }
    }

    /// The `FILTER`, `ORDER BY` and `OVER` of a SQL/JSON aggregate.
    fn json_agg(&mut self, c: Option<&pb::JsonAggConstructor>) -> Lineage {
        let Some(c) = c else {
            return Lineage::default();
        };
        let mut lin = self
            .expr_opt(c.agg_filter.as_deref())
            .with(&self.exprs(&c.agg_order));
        if let Some(w) = &c.over {
            lin.absorb(&self.window_def(w));
        }
        lin
    }

    /// An operator: its operands. An operator qualified with a schema other
    /// than `pg_catalog` is unknown (user-defined, may read tables).
    fn operator(&mut self, a: &pb::AExpr) -> Lineage {
        let mut lin = self
            .expr_opt(a.lexpr.as_deref())
            .with(&self.expr_opt(a.rexpr.as_deref()));
        let name = string_fields(&a.name);
        if name.len() > 1 && name.first().is_some_and(|s| *s != "pg_catalog") {
            lin.unknown = true;
        }
        lin
    }

    /// A window: its `PARTITION BY`, `ORDER BY`, frame offsets and the named window it refines.
    fn window_def(&mut self, w: &pb::WindowDef) -> Lineage {
        let mut lin = self
            .exprs(&w.partition_clause)
            .with(&self.exprs(&w.order_clause))
            .with(&self.expr_opt(w.start_offset.as_deref()))
            .with(&self.expr_opt(w.end_offset.as_deref()));
        for name in [&w.name, &w.refname] {
            if name.is_empty() {
                continue;
            }
            let named = self
                .levels
                .iter()
                .rev()
                .find_map(|l| l.windows.get(name.as_str()));
            if let Some(named) = named {
                lin.absorb(named);
            }
        }
        lin
    }

    /// A subquery in an expression: its output (scalar, `ARRAY(...)`, the
    /// compared values of `IN`/`ANY`/`ALL`). `EXISTS` has no sources.
    fn sublink(&mut self, s: &pb::SubLink) -> Lineage {
        match s.sub_link_type() {
            pb::SubLinkType::ExistsSublink => Lineage::default(),
            pb::SubLinkType::ExprSublink
            | pb::SubLinkType::ArraySublink
            | pb::SubLinkType::MultiexprSublink => self.query(s.subselect.as_deref()).whole,
            pb::SubLinkType::AnySublink
            | pb::SubLinkType::AllSublink
            | pb::SubLinkType::RowcompareSublink => self
                .expr_opt(s.testexpr.as_deref())
                .with(&self.query(s.subselect.as_deref()).whole),
            pb::SubLinkType::CteSublink | pb::SubLinkType::Undefined => Lineage::unknown(),
        }
    }

    /// A function call in an expression: its arguments (aggregate order and
    /// filter, window included), plus what the function itself reads.
    fn func_call(&mut self, f: &pb::FuncCall) -> Lineage {
        let args = self.call_args(f);
        let mut lin = args
            .all
            .clone()
            .with(&self.exprs(&f.agg_order))
            .with(&self.expr_opt(f.agg_filter.as_deref()));
        if let Some(w) = &f.over {
            lin.absorb(&self.window_def(w));
        }
        let (schema, name) = func_name(&f.funcname);
        let builtin = schema.as_deref().is_none_or(|s| s == "pg_catalog");
        if let Some(sink) = pure::sink(&name).filter(|_| builtin) {
            self.record(&[sink.to_string()], None, &args.all);
        }
        lin.with(&self.function_value(schema.as_deref(), &name, &args))
    }

    /// The lineage of a call's arguments, one by one and together.
    fn call_args(&mut self, f: &pb::FuncCall) -> CallArgs {
        let each: Vec<Lineage> = f.args.iter().map(|a| self.expr(a)).collect();
        let mut all = Lineage::default();
        for l in &each {
            all.absorb(l);
        }
        let named = f
            .args
            .iter()
            .any(|a| matches!(a.node, Some(NodeEnum::NamedArgExpr(_))));
        CallArgs {
            each,
            all,
            positional: !named && !f.func_variadic,
        }
    }

    /// What a scalar function adds to its arguments: nothing for a pure
    /// built-in, its body's output for a SQL function, unknown otherwise.
    fn function_value(&mut self, schema: Option<&str>, name: &str, args: &CallArgs) -> Lineage {
        let trusted = pure::is_pure(name) && schema.is_none_or(|s| s == "pg_catalog");
        let candidates = self.catalog.functions(schema, name);
        if candidates.is_empty() {
            return if trusted {
                Lineage::default()
            } else {
                Lineage::unknown()
            };
        }
        let mut lin = Lineage::default();
        for c in &candidates {
            if trusted && c.schema == "pg_catalog" {
                continue;
            }
            match (c.language.as_str(), &c.body) {
                ("sql", Some(body)) => lin.absorb(&self.function_body(body, args).whole),
                _ => lin.unknown = true,
            }
        }
        lin
    }

    // --- writes --------------------------------------------------------------

    /// `schema.table` names a write to `rv` lands in.
    fn write_targets(&mut self, rv: Option<&pb::RangeVar>) -> Vec<String> {
        let Some(rv) = rv else {
            return vec!["?".into()];
        };
        let schema = Some(rv.schemaname.as_str()).filter(|s| !s.is_empty());
        let found: Vec<String> = self
            .catalog
            .relations(schema, &rv.relname)
            .iter()
            .map(|c| format!("{}.{}", c.schema, c.name).to_lowercase())
            .collect();
        if found.is_empty() {
            vec![spelled(rv)]
        } else {
            found
        }
    }

    /// The target of INSERT/UPDATE/DELETE/MERGE: its entry and names.
    fn write_target(&mut self, rv: Option<&pb::RangeVar>) -> (Entry, Vec<String>) {
        let Some(rv) = rv else {
            return (Entry::new(None, Rel::unknown()), vec!["?".into()]);
        };
        let resolved = self.resolve(rv);
        let mut entry = aliased(Some(rv.relname.clone()), resolved.rel, rv.alias.as_ref());
        if rv.alias.is_none() {
            entry.schemas = resolved.schemas;
        }
        (entry, resolved.targets)
    }

    /// `INSERT`: records its flows; returns its `RETURNING` rows.
    fn insert(&mut self, s: &pb::InsertStmt) -> Option<Rel> {
        if let Some(with) = &s.with_clause {
            self.with_clause(with);
        }
        let (target, names) = self.write_target(s.relation.as_ref());
        let values = match s.select_stmt.as_deref() {
            Some(q) => self.query(Some(q)),
            None => Rel::known(Vec::new()),
        };
        let cols: Vec<String> = if s.cols.is_empty() {
            target.rel.names()
        } else {
            s.cols.iter().filter_map(res_target_name).collect()
        };
        if cols.is_empty() {
            self.record(&names, None, &values.whole);
        } else {
            self.record_rows(&names, &cols, &values);
        }
        let mut written = (*target.rel).clone();
        match &values.cols {
            _ if cols.is_empty() => written.widen(&values.whole),
            Some(vcols) => {
                for (i, v) in vcols.iter().enumerate() {
                    match cols.get(i) {
                        Some(c) => written.assign(c, &v.lin),
                        None => written.widen(&v.lin),
                    }
                }
            }
            None => {
                for c in &cols {
                    written.assign(c, &values.whole);
                }
            }
        }
        let mut target = Entry {
            rel: Rc::new(written),
            ..target
        };
        if let Some(oc) = &s.on_conflict_clause {
            let mut excluded = target.clone();
            excluded.refname = Some("excluded".into());
            excluded.schemas.clear();
            excluded.cols_visible = false;
            self.set_entries(vec![target.clone(), excluded]);
            let rel = self.assignments(&oc.target_list, &target.rel, &names);
            target.rel = Rc::new(rel);
        }
        self.returning(s.returning_clause.as_ref(), target, Vec::new())
    }

    /// `UPDATE`: records its flows; returns its `RETURNING` rows.
    fn update(&mut self, s: &pb::UpdateStmt) -> Option<Rel> {
        if let Some(with) = &s.with_clause {
            self.with_clause(with);
        }
        let (target, names) = self.write_target(s.relation.as_ref());
        let from = self.range_list(&s.from_clause);
        let mut scope = vec![target.clone()];
        scope.extend(from.iter().cloned());
        self.set_entries(scope);
        let rel = self.assignments(&s.target_list, &target.rel, &names);
        self.filters(&[s.where_clause.as_deref()]);
        let target = Entry {
            rel: Rc::new(rel),
            ..target
        };
        self.returning(s.returning_clause.as_ref(), target, from)
    }

    /// `DELETE`: writes no values; returns its `RETURNING` rows.
    fn delete(&mut self, s: &pb::DeleteStmt) -> Option<Rel> {
        if let Some(with) = &s.with_clause {
            self.with_clause(with);
        }
        let (target, _) = self.write_target(s.relation.as_ref());
        let using = self.range_list(&s.using_clause);
        let mut scope = vec![target.clone()];
        scope.extend(using.iter().cloned());
        self.set_entries(scope);
        self.filters(&[s.where_clause.as_deref()]);
        self.returning(s.returning_clause.as_ref(), target, using)
    }

    /// `MERGE`: records its flows; returns its `RETURNING` rows.
    fn merge(&mut self, s: &pb::MergeStmt) -> Option<Rel> {
        if let Some(with) = &s.with_clause {
            self.with_clause(with);
        }
        let (target, names) = self.write_target(s.relation.as_ref());
        let mut source = Vec::new();
        if let Some(src) = s.source_relation.as_deref() {
            self.range_item(src, &mut source);
        }
        let mut scope = vec![target.clone()];
        scope.extend(source.iter().cloned());
        self.set_entries(scope);
        self.filters(&[s.join_condition.as_deref()]);
        let mut written = (*target.rel).clone();
        for clause in &s.merge_when_clauses {
            let Some(NodeEnum::MergeWhenClause(m)) = clause.node.as_ref() else {
                continue;
            };
            self.filters(&[m.condition.as_deref()]);
            match m.command_type() {
                pb::CmdType::CmdUpdate => {
                    written = self.assignments(&m.target_list, &written, &names);
                }
                pb::CmdType::CmdInsert => {
                    let cols: Vec<String> = if m.target_list.is_empty() {
                        target.rel.names()
                    } else {
                        m.target_list.iter().filter_map(res_target_name).collect()
                    };
                    for (i, v) in m.values.iter().enumerate() {
                        let lin = self.expr(v);
                        let column = cols.get(i);
                        self.record(&names, column.map(String::as_str), &lin);
                        match column {
                            Some(c) => written.assign(c, &lin),
                            None => written.widen(&lin),
                        }
                    }
                }
                _ => {}
            }
        }
        let target = Entry {
            rel: Rc::new(written),
            ..target
        };
        self.returning(s.returning_clause.as_ref(), target, source)
    }

    /// `SET col = expr, (a, b) = (...)`: records each assignment as a
    /// flow into `targets`; returns the target with the assigned values
    /// added to their columns.
    fn assignments(&mut self, list: &[Node], target: &Rel, targets: &[String]) -> Rel {
        let mut rel = target.clone();
        for node in list {
            let Some(NodeEnum::ResTarget(rt)) = node.node.as_ref() else {
                continue;
            };
            let lin = self.expr_opt(rt.val.as_deref());
            self.record(targets, Some(&rt.name), &lin);
            rel.assign(&rt.name, &lin);
        }
        rel
    }

    /// `RETURNING ...`: over the written row (and FROM/USING/source items);
    /// its columns have no origin.
    fn returning(
        &mut self,
        clause: Option<&pb::ReturningClause>,
        target: Entry,
        others: Vec<Entry>,
    ) -> Option<Rel> {
        let clause = clause.filter(|c| !c.exprs.is_empty())?;
        let mut old_new = vec!["old".to_string(), "new".to_string()];
        for o in &clause.options {
            if let Some(NodeEnum::ReturningOption(opt)) = o.node.as_ref() {
                old_new.push(opt.value.clone());
            }
        }
        let mut scope = vec![target.clone()];
        scope.extend(others);
        for name in old_new {
            scope.push(Entry {
                refname: Some(name),
                schemas: Vec::new(),
                rel: target.rel.clone(),
                cols_visible: false,
            });
        }
        self.set_entries(scope);
        // No origins: the values are the written row's (or the old one's), so
        // a column may hold another column's value.
        Some(self.targets(&clause.exprs).transformed())
    }

    /// `CREATE TABLE / MATERIALIZED VIEW ... AS`: the query's rows flow into the new relation.
    fn create_table_as(&mut self, s: &pb::CreateTableAsStmt) {
        let rows = match s.query.as_deref() {
            Some(q) => self.statement(q).unwrap_or_else(Rel::unknown),
            None => Rel::unknown(),
        };
        let into = s.into.as_deref();
        let targets = self.write_targets(into.and_then(|i| i.rel.as_ref()));
        let names = into.map(|i| string_list(&i.col_names)).unwrap_or_default();
        self.record_created(&targets, &names, &rows);
    }

    /// `COPY ... TO`: the table's (listed) columns or the query's rows go
    /// to a file, a program or the client.
    fn copy(&mut self, s: &pb::CopyStmt) {
        if s.is_from {
            return;
        }
        let target = if s.is_program {
            "program"
        } else if s.filename.is_empty() {
            "client"
        } else {
            "file"
        };
        let lin = match (s.query.as_deref(), s.relation.as_ref()) {
            (Some(q), _) => self.query(Some(q)).whole,
            (None, Some(rv)) => {
                let rel = self.resolve(rv).rel;
                let cols = string_list(&s.attlist);
                if cols.is_empty() {
                    rel.whole
                } else {
                    let mut lin = Lineage::default();
                    for c in &cols {
                        lin.absorb(&rel.column(c).unwrap_or_else(Lineage::unknown));
                    }
                    lin
                }
            }
            (None, None) => Lineage::unknown(),
        };
        self.record(&[target.to_string()], None, &lin);
    }

    /// `REFRESH MATERIALIZED VIEW`: its definition's values move into it.
    fn refresh(&mut self, s: &pb::RefreshMatViewStmt) {
        let Some(rv) = s.relation.as_ref() else {
            return;
        };
        let resolved = self.resolve(rv);
        self.record_rows(&resolved.targets, &resolved.rel.names(), &resolved.rel);
    }

    /// `ALTER TABLE ... ALTER COLUMN ... TYPE ... USING expr` and added
    /// generated columns copy values between columns of the table.
    fn alter_table(&mut self, s: &pb::AlterTableStmt) {
        let (target, names) = self.write_target(s.relation.as_ref());
        self.in_level(|w| {
            w.set_entries(vec![target]);
            for cmd in &s.cmds {
                let Some(NodeEnum::AlterTableCmd(c)) = cmd.node.as_ref() else {
                    continue;
                };
                let Some(NodeEnum::ColumnDef(def)) = c.def.as_deref().and_then(|d| d.node.as_ref())
                else {
                    continue;
                };
                let mut lin = w.expr_opt(def.raw_default.as_deref());
                for con in &def.constraints {
                    if let Some(NodeEnum::Constraint(k)) = con.node.as_ref() {
                        lin.absorb(&w.expr_opt(k.raw_expr.as_deref()));
                    }
                }
                if !lin.sources.is_empty() || lin.unknown {
                    let column = if def.colname.is_empty() {
                        &c.name
                    } else {
                        &def.colname
                    };
                    w.record(&names, Some(column), &lin);
                }
            }
        });
    }
}

/// Adds `lin` to `acc`: the first value as is (origin kept), any further
/// one merged (origin dropped).
fn merge(acc: &mut Option<Lineage>, lin: Lineage) {
    match acc {
        Some(a) => a.absorb(&lin),
        None => *acc = Some(lin),
    }
}

/// A function call's arguments.
struct CallArgs {
    each: Vec<Lineage>,
    all: Lineage,
    /// Whether `$n` is the `n`-th argument (no named or VARIADIC args).
    positional: bool,
}

// ---------------------------------------------------------------------------
// Helpers on parse nodes.

/// An entry for `rel` under its alias (renaming columns) or `default_name`.
fn aliased(default_name: Option<String>, rel: Rel, alias: Option<&pb::Alias>) -> Entry {
    match alias {
        Some(a) => Entry::new(
            Some(a.aliasname.clone()),
            rel.renamed(&string_list(&a.colnames)),
        ),
        None => Entry::new(default_name, rel),
    }
}

/// A join's relation (merged `USING` columns first, then the left's and the
/// right's others) and the relation of its merged columns alone.
fn join_rel(left: &Rel, right: &Rel, using: &[String]) -> (Rel, Rel) {
    let merged: Vec<Col> = using
        .iter()
        .map(|n| Col {
            name: n.clone(),
            lin: left
                .column(n)
                .unwrap_or_else(Lineage::unknown)
                .with(&right.column(n).unwrap_or_else(Lineage::unknown)),
        })
        .collect();
    let merged_rel = Rel::known(merged.clone());
    let (Some(lcols), Some(rcols)) = (&left.cols, &right.cols) else {
        return (
            Rel::opaque(left.whole.clone().with(&right.whole)),
            merged_rel,
        );
    };
    let mut cols = merged;
    let rest = |c: &&Col| !using.contains(&c.name);
    cols.extend(lcols.iter().filter(rest).cloned());
    cols.extend(rcols.iter().filter(rest).cloned());
    (Rel::known(cols), merged_rel)
}

/// The common column names of a NATURAL join (`None` if a side's shape is
/// unknown), in the left side's order.
fn natural_columns(left: &Rel, right: &Rel) -> Option<Vec<String>> {
    let (Some(l), Some(r)) = (&left.cols, &right.cols) else {
        return None;
    };
    Some(
        l.iter()
            .filter(|c| r.iter().any(|x| x.name == c.name))
            .map(|c| c.name.clone())
            .collect(),
    )
}

/// The columns of a `JSON_TABLE`, nested paths flattened.
fn json_table_columns(nodes: &[Node], base: &Lineage, out: &mut Vec<Col>, depth: usize) {
    if depth > MAX_NESTING {
        return;
    }
    for n in nodes {
        let Some(NodeEnum::JsonTableColumn(c)) = n.node.as_ref() else {
            continue;
        };
        if c.coltype() == pb::JsonTableColumnType::JtcNested {
            json_table_columns(&c.columns, base, out, depth + 1);
        } else {
            out.push(Col {
                name: c.name.clone(),
                lin: base.clone(),
            });
        }
    }
}

/// The INTO clause of a `SELECT ... INTO` (on the leftmost set-op arm).
fn into_clause(s: &pb::SelectStmt) -> Option<&pb::IntoClause> {
    let mut cur = s;
    for _ in 0..MAX_FRAMES {
        if let Some(into) = cur.into_clause.as_deref() {
            return Some(into);
        }
        cur = cur.larg.as_deref()?;
    }
    None
}

/// Whether an EXPLAIN runs its statement (`ANALYZE` not turned off).
fn explain_runs(s: &pb::ExplainStmt) -> bool {
    s.options.iter().any(|o| match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => {
            let off = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                Some(NodeEnum::String(s)) => matches!(s.sval.as_str(), "false" | "off" | "0"),
                Some(NodeEnum::Boolean(b)) => !b.boolval,
                Some(NodeEnum::Integer(i)) => i.ival == 0,
                _ => false,
            };
            !off
        }
        _ => false,
    })
}

/// The name a write target is spelled with.
fn spelled(rv: &pb::RangeVar) -> String {
    if rv.schemaname.is_empty() {
        rv.relname.to_lowercase()
    } else {
        format!("{}.{}", rv.schemaname, rv.relname).to_lowercase()
    }
}

/// The name of a `ResTarget` (an INSERT column, a SET target).
fn res_target_name(n: &Node) -> Option<String> {
    match n.node.as_ref() {
        Some(NodeEnum::ResTarget(r)) => Some(r.name.clone()),
        _ => None,
    }
}

/// The items of a `List` node (empty for anything else).
fn list_items(n: &Node) -> Vec<&Node> {
    match n.node.as_ref() {
        Some(NodeEnum::List(l)) => l.items.iter().collect(),
        _ => Vec::new(),
    }
}

/// The strings of a list of `String` nodes.
fn string_list(nodes: &[Node]) -> Vec<String> {
    string_fields(nodes)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The `String` fields of a name (a `ColumnRef`'s, a function's), `*`s
/// left out.
fn string_fields(nodes: &[Node]) -> Vec<&str> {
    nodes
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether a name ends in `*`.
fn ends_with_star(nodes: &[Node]) -> bool {
    matches!(
        nodes.last().and_then(|n| n.node.as_ref()),
        Some(NodeEnum::AStar(_))
    )
}

/// A function's schema (if spelled) and name.
fn func_name(parts: &[Node]) -> (Option<String>, String) {
    let names = string_fields(parts);
    match names.as_slice() {
        [.., schema, name] => (Some(schema.to_string()), name.to_string()),
        [name] => (None, name.to_string()),
        [] => (None, String::new()),
    }
}

/// The name PostgreSQL gives an output column with no alias
/// (`FigureColname`), `?column?` when it has none.
fn figure_colname(node: Option<&Node>) -> String {
    figure(node, 0)
        .map(|(name, _)| name)
        .unwrap_or_else(|| "?column?".into())
}

/// A name and its strength (2: a real name, 1: a type name or `case`).
fn figure(node: Option<&Node>, depth: usize) -> Option<(String, u8)> {
    if depth > MAX_FRAMES {
        return None;
    }
    let strong = |s: &str| Some((s.to_string(), 2));
    match node?.node.as_ref()? {
        NodeEnum::ColumnRef(c) => string_fields(&c.fields).last().and_then(|s| strong(s)),
        NodeEnum::AIndirection(i) => match string_fields(&i.indirection).last() {
            Some(s) => strong(s),
            None => figure(i.arg.as_deref(), depth + 1),
        },
        NodeEnum::FuncCall(f) => string_fields(&f.funcname).last().and_then(|s| strong(s)),
        NodeEnum::AExpr(a) if a.kind() == pb::AExprKind::AexprNullif => strong("nullif"),
        NodeEnum::TypeCast(t) => match figure(t.arg.as_deref(), depth + 1) {
            Some(inner) if inner.1 > 1 => Some(inner),
            inner => t
                .type_name
                .as_ref()
                .and_then(|tn| string_fields(&tn.names).last().map(|s| (s.to_string(), 1)))
                .or(inner),
        },
        NodeEnum::CollateClause(c) => figure(c.arg.as_deref(), depth + 1),
        NodeEnum::GroupingFunc(_) => strong("grouping"),
        NodeEnum::MergeSupportFunc(_) => strong("merge_action"),
        NodeEnum::SubLink(s) => match s.sub_link_type() {
            pb::SubLinkType::ExistsSublink => strong("exists"),
            pb::SubLinkType::ArraySublink => strong("array"),
            pb::SubLinkType::ExprSublink => subquery_first_name(s.subselect.as_deref(), depth),
            _ => None,
        },
        NodeEnum::CaseExpr(c) => match figure(c.defresult.as_deref(), depth + 1) {
            Some(inner) if inner.1 > 1 => Some(inner),
            _ => Some(("case".into(), 1)),
        },
        NodeEnum::AArrayExpr(_) => strong("array"),
        NodeEnum::RowExpr(_) => strong("row"),
        NodeEnum::CoalesceExpr(_) => strong("coalesce"),
        NodeEnum::MinMaxExpr(m) => match m.op() {
            pb::MinMaxOp::IsGreatest => strong("greatest"),
            pb::MinMaxOp::IsLeast => strong("least"),
            pb::MinMaxOp::Undefined => None,
        },
        NodeEnum::SqlvalueFunction(f) => strong(sql_value_function_name(f.op())),
        NodeEnum::XmlExpr(x) => xml_expr_name(x.op()).and_then(strong),
        NodeEnum::XmlSerialize(_) => strong("xmlserialize"),
        other => json_name(other).and_then(strong),
    }
}

/// The name of a scalar subquery's column: its first output column's.
fn subquery_first_name(node: Option<&Node>, depth: usize) -> Option<(String, u8)> {
    let Some(NodeEnum::SelectStmt(s)) = node.and_then(|n| n.node.as_ref()) else {
        return None;
    };
    let mut s: &pb::SelectStmt = s;
    for _ in 0..MAX_FRAMES {
        match s.larg.as_deref() {
            Some(l) => s = l,
            None => break,
        }
    }
    let Some(NodeEnum::ResTarget(rt)) = s.target_list.first().and_then(|t| t.node.as_ref()) else {
        return None;
    };
    if rt.name.is_empty() {
        figure(rt.val.as_deref(), depth + 1).map(|(n, _)| (n, 2))
    } else {
        Some((rt.name.clone(), 2))
    }
}

/// The column name of `CURRENT_DATE`, `CURRENT_USER`, ...
fn sql_value_function_name(op: pb::SqlValueFunctionOp) -> &'static str {
    use pb::SqlValueFunctionOp as Op;
    match op {
        Op::SvfopCurrentDate => "current_date",
        Op::SvfopCurrentTime | Op::SvfopCurrentTimeN => "current_time",
        Op::SvfopCurrentTimestamp | Op::SvfopCurrentTimestampN => "current_timestamp",
        Op::SvfopLocaltime | Op::SvfopLocaltimeN => "localtime",
        Op::SvfopLocaltimestamp | Op::SvfopLocaltimestampN => "localtimestamp",
        Op::SvfopCurrentRole => "current_role",
        Op::SvfopCurrentUser => "current_user",
        Op::SvfopUser => "user",
        Op::SvfopSessionUser => "session_user",
        Op::SvfopCurrentCatalog => "current_catalog",
        Op::SvfopCurrentSchema => "current_schema",
        Op::SqlvalueFunctionOpUndefined => "?column?",
    }
}

/// The column name of an SQL/XML function.
fn xml_expr_name(op: pb::XmlExprOp) -> Option<&'static str> {
    use pb::XmlExprOp as Op;
    Some(match op {
        Op::IsXmlconcat => "xmlconcat",
        Op::IsXmlelement => "xmlelement",
        Op::IsXmlforest => "xmlforest",
        Op::IsXmlparse => "xmlparse",
        Op::IsXmlpi => "xmlpi",
        Op::IsXmlroot => "xmlroot",
        Op::IsXmlserialize => "xmlserialize",
        Op::IsDocument | Op::Undefined => return None,
    })
}

/// The column name of an SQL/JSON constructor or function.
fn json_name(n: &NodeEnum) -> Option<&'static str> {
    Some(match n {
        NodeEnum::JsonParseExpr(_) => "json",
        NodeEnum::JsonScalarExpr(_) => "json_scalar",
        NodeEnum::JsonSerializeExpr(_) => "json_serialize",
        NodeEnum::JsonObjectConstructor(_) => "json_object",
        NodeEnum::JsonArrayConstructor(_) | NodeEnum::JsonArrayQueryConstructor(_) => "json_array",
        NodeEnum::JsonObjectAgg(_) => "json_objectagg",
        NodeEnum::JsonArrayAgg(_) => "json_arrayagg",
        NodeEnum::JsonFuncExpr(f) => match f.op() {
            pb::JsonExprOp::JsonExistsOp => "json_exists",
            pb::JsonExprOp::JsonQueryOp => "json_query",
            pb::JsonExprOp::JsonValueOp => "json_value",
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
