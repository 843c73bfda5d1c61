//! Column identity: turns a result column's (table OID, attribute number)
//! into `schema.table.column` through a per-target cache of the upstream's
//! catalog, so an alias cannot rename a column past a masking rule.
//!
//! Lookups run on a separate upstream connection that the gateway opens with
//! the target's own credential — never on the client's session, whose
//! protocol stream must not see extra queries. Entries live for [`TTL`].
//!
//! What counts as a source:
//! - a column of a table, partitioned table or foreign table resolves to its
//!   schema, table and column name; a column of a *partition* resolves to the
//!   partition tree's root, so a rule on `orders` also covers `orders_2026`;
//! - a column of a view or materialized view resolves to no source: it is
//!   treated like an expression (a derived value), because its values may
//!   come from any table the view reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::framed::{read_message, send};
use super::session::TargetContext;
use super::stream::Stream;
use super::upstream;
use crate::policy::ResultColumn;
use crate::protocols::postgres::codec::{data_row, error_response, query};

/// How long a table's column names are trusted before they are looked up again.
pub const TTL: Duration = Duration::from_secs(30);
/// Largest catalog answer message accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// Why column sources could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog connection could not be opened.
    #[error("cannot open the catalog connection: {0}")]
    Connect(String),
    /// The lookup query failed.
    #[error("catalog lookup failed: {0}")]
    Query(String),
}

/// A relation as results name it.
#[derive(Debug)]
struct Relation {
    /// `schema.table`, or `None` for views (their columns are derived).
    qualified: Option<String>,
    /// Column names by attribute number.
    columns: HashMap<i16, String>,
}

struct Entry {
    fetched: Instant,
    relation: Option<Arc<Relation>>,
}

/// The catalog cache of one target.
#[derive(Default)]
pub struct Catalog {
    tables: Mutex<HashMap<u32, Entry>>,
    conn: tokio::sync::Mutex<Option<Stream>>,
}

impl Catalog {
    /// Fills in `source` for every column with a table OID; columns of
    /// views, of relations that no longer exist, and expressions keep `None`.
    pub async fn resolve(
        &self,
        target: &TargetContext,
        cols: &mut [ResultColumn],
    ) -> Result<(), CatalogError> {
        let missing: Vec<u32> = {
            let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<u32> = cols
                .iter()
                .filter(|c| c.table_oid != 0)
                .map(|c| c.table_oid)
                .filter(|oid| tables.get(oid).is_none_or(|e| e.fetched.elapsed() > TTL))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            let found = self.fetch(target, &missing).await?;
            let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for oid in missing {
                tables.insert(
                    oid,
                    Entry {
                        fetched: now,
                        relation: found.get(&oid).cloned(),
                    },
                );
            }
        }
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        for c in cols.iter_mut() {
            c.source = tables
                .get(&c.table_oid)
                .and_then(|e| e.relation.as_ref())
                .and_then(|r| {
                    let table = r.qualified.as_ref()?;
                    let column = r.columns.get(&c.attribute_number)?;
                    Some(format!("{table}.{column}"))
                });
        }
        Ok(())
    }

    /// Looks the relations up, retrying once on a fresh connection.
    async fn fetch(
        &self,
        target: &TargetContext,
        oids: &[u32],
    ) -> Result<HashMap<u32, Arc<Relation>>, CatalogError> {
        let rows = self.rows(target, &lookup_sql(oids)).await?;
        Ok(relations(&rows))
    }

    /// The rows of a catalog query (text values), on the catalog
    /// connection, retrying once on a fresh connection. `sql` must not
    /// carry anything a client chose except through [`literal`].
    pub async fn rows(
        &self,
        target: &TargetContext,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
        let mut conn = self.conn.lock().await;
        for attempt in 0..2 {
            if conn.is_none() {
                *conn = Some(open(target).await?);
            }
            let Some(stream) = conn.as_mut() else {
                continue;
            };
            match run_lookup(stream, sql).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    *conn = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                    tracing::debug!(target = %target.cfg.name, error = %e, "catalog lookup failed; reconnecting");
                }
            }
        }
        Err(CatalogError::Query("no connection".into()))
    }
}

/// `text` as a SQL string literal (standard-conforming: quotes doubled;
/// text with a backslash or NUL is refused, so no setting changes its
/// meaning).
pub fn literal(text: &str) -> Option<String> {
    if text.contains('\\') || text.contains('\0') {
        return None;
    }
    Some(format!("'{}'", text.replace('\'', "''")))
}

/// Relations from rows of [`lookup_sql`].
fn relations(rows: &[Vec<Option<String>>]) -> HashMap<u32, Arc<Relation>> {
    let mut building: HashMap<u32, Relation> = HashMap::new();
    for row in rows {
        let field = |i: usize| row.get(i).and_then(|v| v.as_deref());
        let (Some(oid), Some(schema), Some(name), Some(kind)) =
            (field(0), field(1), field(2), field(3))
        else {
            continue;
        };
        let Ok(oid) = oid.parse::<u32>() else {
            continue;
        };
        let is_table = matches!(kind, "r" | "p" | "f");
        let rel = building.entry(oid).or_insert_with(|| Relation {
            qualified: is_table.then(|| format!("{schema}.{name}")),
            columns: HashMap::new(),
        });
        if let (Some(num), Some(col)) = (field(4), field(5)) {
            if let Ok(num) = num.parse::<i16>() {
                rel.columns.insert(num, col.to_string());
            }
        }
    }
    building
        .into_iter()
        .map(|(oid, r)| (oid, Arc::new(r)))
        .collect()
}

/// The lookup for `oids` (numbers only, so nothing from a client reaches the text).
fn lookup_sql(oids: &[u32]) -> String {
    let list: Vec<String> = oids.iter().map(u32::to_string).collect();
    format!(
        "SELECT c.oid, n.nspname, r.relname, c.relkind, a.attnum, a.attname \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_class r ON r.oid = CASE WHEN c.relispartition \
              THEN pg_catalog.pg_partition_root(c.oid) ELSE c.oid END \
         JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
              AND NOT a.attisdropped \
         WHERE c.oid IN ({})",
        list.join(",")
    )
}

async fn open(target: &TargetContext) -> Result<Stream, CatalogError> {
    let password = target
        .credential
        .password()
        .await
        .map_err(|e| CatalogError::Connect(e.to_string()))?;
    let login = target.login(
        password,
        vec![(
            "application_name".to_string(),
            "portcullis catalog".to_string(),
        )],
    );
    let up = upstream::connect(login)
        .await
        .map_err(|e| CatalogError::Connect(e.to_string()))?;
    Ok(up.stream)
}

fn text(v: Option<&[u8]>) -> Option<&str> {
    v.and_then(|b| std::str::from_utf8(b).ok())
}

async fn run_lookup(
    stream: &mut Stream,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
    let io = |e: super::RelayError| CatalogError::Query(e.to_string());
    let mut out = BytesMut::new();
    query::encode(&mut out, sql);
    send(stream, &mut out)
        .await
        .map_err(|e| CatalogError::Query(e.to_string()))?;
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut rows = Vec::new();
    let mut failure = None;
    loop {
        let msg = read_message(stream, &mut inbuf, MAX_MESSAGE)
            .await
            .map_err(io)?
            .ok_or_else(|| CatalogError::Query("the catalog connection closed".into()))?;
        match msg.first() {
            Some(b'D') => {
                let row = data_row::decode(&msg).map_err(|e| CatalogError::Query(e.to_string()))?;
                rows.push(
                    row.iter()
                        .map(|v| text(*v).map(str::to_string))
                        .collect::<Vec<_>>(),
                );
            }
            Some(b'E') => {
                failure = Some(match error_response::decode(&msg) {
                    Ok(e) => format!("{} (SQLSTATE {})", e.message, e.code),
                    Err(e) => e.to_string(),
                });
            }
            Some(b'Z') => break,
            _ => {}
        }
    }
    if let Some(f) = failure {
        return Err(CatalogError::Query(f));
    }
    Ok(rows)
}

/// A session's way to its target's catalog.
pub struct TargetCatalog {
    /// The gateway and the target's name (`None`: no catalog, in tests).
    gw: Option<(Arc<super::GatewayContext>, String)>,
}

impl TargetCatalog {
    /// The catalog of target `target` of gateway `gw`.
    pub fn new(gw: Arc<super::GatewayContext>, target: String) -> Self {
        Self {
            gw: Some((gw, target)),
        }
    }

    /// No catalog: code is not read, and only computed columns (no table)
    /// resolve — for the relay's in-memory tests.
    #[cfg(test)]
    pub fn detached() -> Self {
        Self { gw: None }
    }

    /// The target's context, if it still exists.
    fn target(&self) -> Option<&TargetContext> {
        let (gw, target) = self.gw.as_ref()?;
        gw.targets.get(target)
    }

    /// `summary` with the effects of the code it runs (see
    /// [`super::code_catalog::CodeCache::with_code_effects`]); `summary`
    /// itself if the target is gone.
    pub async fn with_code_effects(
        &self,
        sql: &str,
        summary: Arc<crate::protocols::postgres::sql::QuerySummary>,
        lineage: bool,
    ) -> Arc<crate::protocols::postgres::sql::QuerySummary> {
        match self.target() {
            Some(t) => t.code.with_code_effects(t, sql, summary, lineage).await,
            None => summary,
        }
    }

    /// Forgets the target's code read so far (a statement creates code).
    pub fn invalidate_code(&self) {
        if let Some(t) = self.target() {
            t.code.invalidate();
        }
    }

    /// Resolves the sources of `cols` (see [`Catalog::resolve`]).
    pub async fn resolve(&self, cols: &mut [ResultColumn]) -> Result<(), CatalogError> {
        let Some((gw, target)) = self.gw.as_ref() else {
            return match cols.iter().any(|c| c.table_oid != 0) {
                true => Err(CatalogError::Connect("no catalog".into())),
                false => Ok(()),
            };
        };
        let t = gw
            .targets
            .get(target)
            .ok_or_else(|| CatalogError::Connect(format!("unknown target {target}")))?;
        t.catalog.resolve(t, cols).await
    }
}
