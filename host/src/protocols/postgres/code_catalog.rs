//! The target's code and shapes, for judging what a statement runs and
//! where its values come from: routines by name, triggers and rules by
//! table, view definitions, relations' columns — read from the upstream
//! catalog on the gateway's catalog connection, cached per target for
//! [`CODE_TTL`], and dropped whenever a session of this gateway creates or
//! changes code or tables ([`CodeCache::invalidate`]).
//!
//! [`CodeCache::with_code_effects`] turns a statement summary into one that
//! also carries the effects of the code it runs (see [`crate::protocols::postgres::sql::code`])
//! and, when asked, the lineage of its values ([`crate::protocols::postgres::sql::lineage`]).
//! Lookups run in rounds: what one round's analysis asked for and the cache
//! did not hold is fetched, then the analysis runs again, at most
//! [`ROUNDS`] times; what is still missing counts as unknown.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::catalog::{literal, CatalogError};
use super::session::TargetContext;
use crate::protocols::postgres::sql::code::{self, Cascade, CodeCatalog, Fired, Routine};
use crate::protocols::postgres::sql::lineage;
use crate::protocols::postgres::sql::Action;
use crate::protocols::postgres::sql::{QuerySummary, TableName};

/// How long code read from the catalog is trusted. Code changed by a
/// session of this gateway is re-read at once; code changed elsewhere (a
/// direct connection, another gateway) within this window is judged by its
/// previous version.
pub const CODE_TTL: Duration = Duration::from_secs(10);
/// Fetch rounds per statement.
pub const ROUNDS: usize = 4;
/// Summaries kept with their code effects.
const MEMO_CAPACITY: usize = 4096;
/// Names read in one lookup (of each kind); a statement naming more gets
/// the rest as unknown after its rounds.
const NAMES_PER_LOOKUP: usize = 256;
/// Names the cache holds before it starts over.
const KNOWN_CAPACITY: usize = 50_000;

struct Entry<T> {
    fetched: Instant,
    value: T,
}

impl<T> Entry<T> {
    fn fresh(&self) -> bool {
        self.fetched.elapsed() < CODE_TTL
    }
}

/// What the catalog said, by name.
#[derive(Default)]
struct Known {
    /// Routines by name as spelled (`f`, `s.f`); `None`: no such routine.
    routines: HashMap<String, Entry<Option<Vec<Routine>>>>,
    /// What writes to a table reach, by table (`s.t` or `t`).
    tables: HashMap<String, Entry<TableCode>>,
    /// Relations (columns, kind, view definition) by name (`s.t` or `t`).
    relations: HashMap<String, Entry<Vec<lineage::Relation>>>,
}

/// What a write to the relations of one name reaches.
#[derive(Debug, Clone, Default)]
struct TableCode {
    /// Triggers and rules.
    fired: Vec<Fired>,
    /// View definitions (a write lands in the tables they read).
    views: Vec<String>,
    /// Partition roots and inheritance parents.
    parents: Vec<TableName>,
    /// Foreign keys that change rows along with the table's.
    cascades: Vec<Cascade>,
}

/// A summary with its code effects, kept while the code it read is fresh.
struct Memo {
    base: Arc<QuerySummary>,
    with_code: Arc<QuerySummary>,
    fetched: Instant,
    generation: u64,
}

/// The code cache of one target.
#[derive(Default)]
pub struct CodeCache {
    known: Mutex<Known>,
    /// By the base summary's address and whether lineage was asked for.
    memo: Mutex<HashMap<(usize, bool), Memo>>,
    /// Bumped by [`CodeCache::invalidate`].
    generation: std::sync::atomic::AtomicU64,
}

fn table_key(t: &TableName) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

/// What one analysis round asked for and did not find.
#[derive(Default)]
struct Missing {
    routines: BTreeSet<String>,
    tables: BTreeSet<String>,
    relations: BTreeSet<String>,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.routines.is_empty() && self.tables.is_empty() && self.relations.is_empty()
    }
}

/// A read-only view of the cache for one analysis round.
struct Snapshot<'a> {
    known: &'a Known,
    missing: Mutex<Missing>,
    /// Last round: what is missing is unknown, not asked for.
    last: bool,
    /// Set when the last round met a table it could not look up.
    gave_up: std::sync::atomic::AtomicBool,
}

impl Snapshot<'_> {
    fn missing(&self) -> std::sync::MutexGuard<'_, Missing> {
        self.missing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the cache holds for `table`, or nothing (and the table is
    /// missed).
    fn table<T>(&self, table: &TableName, part: impl FnOnce(&TableCode) -> &Vec<T>) -> Vec<T>
    where
        T: Clone,
    {
        let key = table_key(table);
        match self.known.tables.get(&key).filter(|e| e.fresh()) {
            Some(e) => part(&e.value).clone(),
            None => {
                self.miss_table(key);
                Vec::new()
            }
        }
    }

    /// A table the cache does not hold: asked for, or (last round) given up.
    fn miss_table(&self, key: String) {
        if self.last {
            self.gave_up
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.missing().tables.insert(key);
        }
    }
}

fn spelled(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!("{s}.{name}"),
        None => name.to_string(),
    }
}

impl lineage::Catalog for Snapshot<'_> {
    fn relations(&self, schema: Option<&str>, name: &str) -> Vec<lineage::Relation> {
        let key = spelled(schema, name);
        match self.known.relations.get(&key).filter(|e| e.fresh()) {
            Some(e) => e.value.clone(),
            None => {
                if !self.last {
                    self.missing().relations.insert(key);
                }
                Vec::new()
            }
        }
    }

    fn functions(&self, schema: Option<&str>, name: &str) -> Vec<lineage::Function> {
        let key = spelled(schema, name);
        let routines = match self.known.routines.get(&key).filter(|e| e.fresh()) {
            Some(e) => e.value.clone().unwrap_or_default(),
            None => {
                if !self.last {
                    self.missing().routines.insert(key);
                }
                Vec::new()
            }
        };
        routines
            .into_iter()
            .map(|r| lineage::Function {
                body: (r.language == "sql").then(|| r.source.clone()),
                schema: r.schema,
                language: r.language,
            })
            .collect()
    }
}

impl CodeCatalog for Snapshot<'_> {
    fn routines(&self, name: &str) -> Option<Vec<Routine>> {
        match self.known.routines.get(name).filter(|e| e.fresh()) {
            Some(e) => e.value.clone(),
            None if name.starts_with("pg_catalog.") => Some(Vec::new()),
            None => {
                if !self.last {
                    self.missing().routines.insert(name.to_string());
                }
                None
            }
        }
    }

    fn fired(&self, table: &TableName) -> Vec<Fired> {
        self.table(table, |c| &c.fired)
    }

    fn view_definitions(&self, table: &TableName) -> Vec<String> {
        self.table(table, |c| &c.views)
    }

    fn parents(&self, table: &TableName) -> Vec<TableName> {
        self.table(table, |c| &c.parents)
    }

    fn cascades(&self, table: &TableName) -> Vec<Cascade> {
        self.table(table, |c| &c.cascades)
    }
}

/// Whether any statement of a summary could run code.
fn runs_code(summary: &QuerySummary) -> bool {
    summary.statements.iter().any(runs_code_statement)
}

impl CodeCache {
    /// Forgets everything read (a session is creating or changing code).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut k) = self.known.lock() {
            *k = Known::default();
        }
        if let Ok(mut m) = self.memo.lock() {
            m.clear();
        }
    }

    /// `summary` with the effects of the code its statements run and, when
    /// `lineage` is asked for, where their values come from (analysed from
    /// `sql`, a text of `summary`'s shape) — or `summary` itself when
    /// there is nothing to add. A statement after one that creates code in
    /// the same text gets an unknown effect (the code it may call does not
    /// exist yet).
    pub async fn with_code_effects(
        &self,
        target: &TargetContext,
        sql: &str,
        summary: Arc<QuerySummary>,
        lineage: bool,
    ) -> Arc<QuerySummary> {
        let lineage = lineage && reads_tables(&summary);
        if summary.parse_error.is_some() || !(lineage || runs_code(&summary)) {
            return summary;
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let key = (Arc::as_ptr(&summary) as usize, lineage);
        if let Some(m) = self.memo.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|m| {
                    Arc::ptr_eq(&m.base, &summary)
                        && m.generation == generation
                        && m.fetched.elapsed() < CODE_TTL
                })
                .map(|m| m.with_code.clone())
        }) {
            return m;
        }
        let fetched = Instant::now();
        let mut with_code = (*summary).clone();
        for round in 0..ROUNDS {
            let last = round + 1 == ROUNDS;
            let missing = {
                let known = match self.known.lock() {
                    Ok(k) => k,
                    Err(p) => p.into_inner(),
                };
                let snap = Snapshot {
                    known: &known,
                    missing: Mutex::new(Missing::default()),
                    last,
                    gave_up: Default::default(),
                };
                with_code = analyse(sql, &summary, &snap, lineage);
                snap.missing.into_inner().unwrap_or_else(|p| p.into_inner())
            };
            if missing.is_empty() || last {
                break;
            }
            if let Err(e) = self.fetch(target, &missing).await {
                tracing::warn!(target = %target.cfg.name, error = %e, "cannot read the target's catalog; calls count as unknown effects, values as of unknown origin");
                for st in &mut with_code.statements {
                    if runs_code_statement(st) {
                        st.unknown_effects.push(format!(
                            "the gateway could not read the database's code ({e})"
                        ));
                    }
                }
                with_code.lineage = None;
                return Arc::new(with_code);
            }
        }
        let with_code = Arc::new(with_code);
        if let Ok(mut m) = self.memo.lock() {
            if m.len() >= MEMO_CAPACITY {
                m.clear();
            }
            m.insert(
                key,
                Memo {
                    base: summary,
                    with_code: with_code.clone(),
                    fetched,
                    generation,
                },
            );
        }
        with_code
    }

    /// Reads what a round missed (at most [`NAMES_PER_LOOKUP`] names of
    /// each kind) and stores it.
    async fn fetch(&self, target: &TargetContext, missing: &Missing) -> Result<(), CatalogError> {
        let cap = |set: &BTreeSet<String>| -> BTreeSet<String> {
            set.iter().take(NAMES_PER_LOOKUP).cloned().collect()
        };
        let missing = &Missing {
            routines: cap(&missing.routines),
            tables: cap(&missing.tables),
            relations: cap(&missing.relations),
        };
        let now = Instant::now();
        let mut routines: HashMap<String, Option<Vec<Routine>>> = HashMap::new();
        let mut tables: HashMap<String, TableCode> = HashMap::new();
        let mut relations: HashMap<String, Vec<lineage::Relation>> = HashMap::new();
        if let Some(sql) = relations_sql(&missing.relations) {
            // Named as the statement names them; sources as the root of a
            // partition tree (a rule on `orders` covers `orders_2026`).
            let mut by_oid: Vec<(String, String, lineage::Relation)> = Vec::new();
            for row in target.catalog.rows(target, &sql).await? {
                let f = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let (oid, schema, name, kind, definition, column) =
                    (f(0), f(1), f(2), f(3), f(4), f(5));
                let own = (f(6), f(7));
                match by_oid.last_mut() {
                    Some((last, _, rel)) if *last == oid => {
                        if !column.is_empty() {
                            rel.columns.push(column);
                        }
                    }
                    _ => {
                        let view = matches!(kind.as_str(), "v" | "m");
                        by_oid.push((
                            oid,
                            format!("{}.{}", own.0, own.1),
                            lineage::Relation {
                                schema,
                                name,
                                columns: if column.is_empty() {
                                    Vec::new()
                                } else {
                                    vec![column]
                                },
                                kind: if view {
                                    lineage::RelationKind::View
                                } else {
                                    lineage::RelationKind::Table
                                },
                                view_definition: (view && !definition.is_empty())
                                    .then_some(definition),
                            },
                        ));
                    }
                }
            }
            for (_, own, rel) in by_oid {
                let bare = own
                    .split_once('.')
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default();
                for key in [bare, own.clone()] {
                    if missing.relations.contains(&key) {
                        relations.entry(key).or_default().push(rel.clone());
                    }
                }
            }
        }
        if let Some(sql) = routines_sql(&missing.routines) {
            for row in target.catalog.rows(target, &sql).await? {
                let f = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let r = Routine {
                    schema: f(0),
                    name: f(1),
                    language: f(2),
                    source: f(3),
                    definition: f(4),
                };
                for spelled in [r.name.clone(), format!("{}.{}", r.schema, r.name)] {
                    if missing.routines.contains(&spelled) {
                        routines
                            .entry(spelled)
                            .or_insert_with(|| Some(Vec::new()))
                            .get_or_insert_with(Vec::new)
                            .push(r.clone());
                    }
                }
            }
        }
        if let Some(sql) = tables_sql(&missing.tables) {
            for row in target.catalog.rows(target, &sql).await? {
                let f = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let (kind, schema, table) = (f(0), f(1), f(2));
                let keys = [table.clone(), format!("{schema}.{table}")];
                let item_via = format!("{schema}.{table}");
                for key in keys.iter().filter(|k| missing.tables.contains(*k)) {
                    let code = tables.entry(key.clone()).or_default();
                    match kind.as_str() {
                        "trigger" => code.fired.push(Fired::Trigger {
                            via: format!("trigger {} on {item_via}", f(3)),
                            routine: Routine {
                                schema: f(4),
                                name: f(5),
                                language: f(6),
                                source: f(7),
                                definition: f(8),
                            },
                        }),
                        "rule" => code.fired.push(Fired::Rule {
                            via: format!("rule {} on {item_via}", f(3)),
                            definition: f(8),
                        }),
                        "view" => code.views.push(f(8)),
                        "parent" => code.parents.push(TableName {
                            schema: Some(f(4)),
                            name: f(5),
                        }),
                        "cascade" => {
                            // confdeltype / confupdtype: c cascade, n set null, d set default.
                            let effect = |code: &str, on_delete: bool| match code {
                                "c" if on_delete => Some(Action::Delete),
                                "c" | "n" | "d" => Some(Action::Update),
                                _ => None,
                            };
                            let (del, upd) = f(6)
                                .split_once(',')
                                .map(|(a, b)| (a.to_string(), b.to_string()))
                                .unwrap_or_default();
                            code.cascades.push(Cascade {
                                table: TableName {
                                    schema: Some(f(4)),
                                    name: f(5),
                                },
                                constraint: f(3),
                                on_delete: effect(&del, true),
                                on_update: effect(&upd, false),
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut known = match self.known.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        let held = known.routines.len() + known.tables.len() + known.relations.len();
        if held > KNOWN_CAPACITY {
            *known = Known::default();
        }
        // Every name asked for is stored, found or not (not found is an
        // answer too, kept as long).
        fn store<T: Default>(
            into: &mut HashMap<String, Entry<T>>,
            found: &mut HashMap<String, T>,
            names: &BTreeSet<String>,
            fetched: Instant,
        ) {
            for name in names {
                let value = found.remove(name).unwrap_or_default();
                into.insert(name.clone(), Entry { fetched, value });
            }
        }
        store(&mut known.routines, &mut routines, &missing.routines, now);
        store(
            &mut known.relations,
            &mut relations,
            &missing.relations,
            now,
        );
        store(&mut known.tables, &mut tables, &missing.tables, now);
        Ok(())
    }
}

/// One analysis round over what the cache holds: code effects, and lineage
/// when asked (on the parser's stack; a failure leaves lineage `None`).
fn analyse(sql: &str, summary: &QuerySummary, snap: &Snapshot<'_>, lineage: bool) -> QuerySummary {
    let mut out = summary.clone();
    let mut created_code = false;
    for st in &mut out.statements {
        let effects = code::effects_of_code(st, snap);
        code::apply(st, effects);
        if created_code && !st.functions.is_empty() {
            st.unknown_effects.push(
                "it may call code created earlier in the same query, which the gateway cannot read yet".into(),
            );
        }
        created_code |= st.creates_code;
    }
    if snap.gave_up.load(std::sync::atomic::Ordering::Relaxed) {
        for st in &mut out.statements {
            if !st.actions.is_empty() {
                st.unknown_effects.push(format!(
                    "its writes reach tables, views, triggers or rules nested deeper than {ROUNDS} catalog lookups"
                ));
            }
        }
    }
    if lineage {
        out.lineage =
            crate::protocols::postgres::sql::on_parser_stack(|| lineage::analyze(sql, snap))
                .ok()
                .and_then(Result::ok)
                .filter(|l| l.len() == out.statements.len());
    }
    out
}

/// Whether any statement reads or writes a table or calls a function (its
/// values have a lineage worth knowing).
fn reads_tables(summary: &QuerySummary) -> bool {
    summary.statements.iter().any(|s| s.reads_anything())
}

/// Whether a statement could run code: it calls a function outside
/// `pg_catalog`, or writes (triggers, rules, views, cascades).
fn runs_code_statement(st: &crate::protocols::postgres::sql::StatementSummary) -> bool {
    !st.actions.is_empty() || st.functions.iter().any(|f| !f.starts_with("pg_catalog."))
}

/// `schema = '...' AND name = '...'` conditions for names spelled `n` or
/// `s.n`; names that cannot be written as literals are left out (they
/// stay missing, so they count as unknown).
fn name_conditions(names: &BTreeSet<String>, schema_col: &str, name_col: &str) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| match n.split_once('.') {
            // pg_temp is an alias of the session's own pg_temp_N.
            Some(("pg_temp", name)) => Some(format!(
                "(starts_with({schema_col}, 'pg_temp_') AND {name_col} = {})",
                literal(name)?
            )),
            Some((s, name)) => Some(format!(
                "({schema_col} = {} AND {name_col} = {})",
                literal(s)?,
                literal(name)?
            )),
            None => Some(format!("{name_col} = {}", literal(n)?)),
        })
        .collect()
}

/// The lookup of routines by name (aggregates have no definition to read).
fn routines_sql(names: &BTreeSet<String>) -> Option<String> {
    let conds = name_conditions(names, "n.nspname", "p.proname");
    if conds.is_empty() {
        return None;
    }
    Some(format!(
        "SELECT n.nspname, p.proname, l.lanname, coalesce(p.prosrc, ''), \
         CASE WHEN p.prokind <> 'a' AND l.lanname IN ('sql', 'plpgsql') \
              THEN pg_catalog.pg_get_functiondef(p.oid) ELSE '' END \
         FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
         WHERE {}",
        conds.join(" OR ")
    ))
}

/// The lookup of relations by name, one row per column in order (views
/// and materialized views with their definitions).
fn relations_sql(names: &BTreeSet<String>) -> Option<String> {
    let conds = name_conditions(names, "n.nspname", "c.relname");
    if conds.is_empty() {
        return None;
    }
    Some(format!(
        "SELECT c.oid, rn.nspname, r.relname, c.relkind, \
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) ELSE '' END, \
                coalesce(a.attname, ''), n.nspname, c.relname \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class r ON r.oid = CASE WHEN c.relispartition \
              THEN pg_catalog.pg_partition_root(c.oid) ELSE c.oid END \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND ({}) \
         ORDER BY c.oid, a.attnum",
        conds.join(" OR ")
    ))
}

/// The lookup of triggers, rules and view definitions by table.
fn tables_sql(tables: &BTreeSet<String>) -> Option<String> {
    let conds = name_conditions(tables, "n.nspname", "c.relname");
    if conds.is_empty() {
        return None;
    }
    let on = conds.join(" OR ");
    Some(format!(
        "SELECT 'trigger', n.nspname, c.relname, t.tgname, pn.nspname, p.proname, l.lanname, \
                coalesce(p.prosrc, ''), \
                CASE WHEN l.lanname IN ('sql', 'plpgsql') THEN pg_catalog.pg_get_functiondef(p.oid) ELSE '' END \
         FROM pg_catalog.pg_trigger t \
         JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
         JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
         WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND ({on}) \
         UNION ALL \
         SELECT 'rule', n.nspname, c.relname, r.rulename, '', '', '', '', pg_catalog.pg_get_ruledef(r.oid) \
         FROM pg_catalog.pg_rewrite r \
         JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE r.ev_type <> '1' AND ({on}) \
         UNION ALL \
         SELECT 'view', n.nspname, c.relname, '', '', '', '', '', pg_catalog.pg_get_viewdef(c.oid) \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'v' AND ({on}) \
         UNION ALL \
         SELECT 'parent', n.nspname, c.relname, '', pn.nspname, p.relname, '', '', '' \
         FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
         WHERE ({on}) \
         UNION ALL \
         SELECT 'cascade', n.nspname, c.relname, k.conname, rn.nspname, r.relname, \
                k.confdeltype::text || ',' || k.confupdtype::text, '', '' \
         FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = k.confrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class r ON r.oid = k.conrelid \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')) \
               AND ({on})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_literals_or_are_left_out() {
        let names: BTreeSet<String> = ["f", "s.g", "o'neil", "bad\\name"]
            .into_iter()
            .map(String::from)
            .collect();
        let conds = name_conditions(&names, "n.nspname", "p.proname");
        assert_eq!(
            conds,
            [
                "p.proname = 'f'",
                "p.proname = 'o''neil'",
                "(n.nspname = 's' AND p.proname = 'g')"
            ]
        );
    }
}
