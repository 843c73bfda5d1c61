//! Statement shapes: the parts every run of one statement shares (its
//! message protocol, text, fingerprint, kinds and tables), stored once in
//! `event_shapes` so that an event row keeps only what is its own.
//!
//! The writer remembers the shapes it has stored: placing an event costs a
//! hash and a lookup instead of a row of repeated text. A shape stored in a
//! transaction that did not commit is forgotten with it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Transaction};

use super::sqlite::json_list;
use super::EventRecord;

/// Shapes remembered at most; beyond this the memory starts over (a shape
/// met again is then found in the table, not stored twice).
const MAX_KNOWN: usize = 10_000;

/// A stored shape as the writer remembers it.
struct Known {
    id: i64,
    protocol: Arc<str>,
    sql: Arc<str>,
    fingerprint: Arc<str>,
    kinds: Arc<[String]>,
    tables_read: Arc<[String]>,
    tables_written: Arc<[String]>,
}

impl Known {
    fn of(id: i64, sql: String, e: &EventRecord) -> Self {
        Self {
            id,
            protocol: e.protocol.clone(),
            sql: sql.into(),
            fingerprint: e.fingerprint.clone(),
            kinds: e.kinds.clone(),
            tables_read: e.tables_read.clone(),
            tables_written: e.tables_written.clone(),
        }
    }

    /// Whether `e` has this shape (its text may differ: literals).
    fn fits(&self, e: &EventRecord) -> bool {
        self.protocol == e.protocol
            && self.fingerprint == e.fingerprint
            && self.kinds == e.kinds
            && self.tables_read == e.tables_read
            && self.tables_written == e.tables_written
    }

    /// Where `e` goes: its text is left out when it is the shape's. An
    /// empty text that is not the shape's cannot be told from "the shape's"
    /// in the row: such an event is stored whole.
    fn place(&self, e: &EventRecord) -> Option<Placed> {
        if self.sql == e.sql {
            Some(Placed {
                id: self.id,
                own_sql: false,
            })
        } else if e.sql.is_empty() {
            None
        } else {
            Some(Placed {
                id: self.id,
                own_sql: true,
            })
        }
    }
}

/// Where an event's shared parts are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The shape's row id.
    pub id: i64,
    /// Whether the event keeps its own text (it differs from the shape's).
    pub own_sql: bool,
}

/// The shapes one writer connection has stored.
#[derive(Default)]
pub struct Shapes {
    known: HashMap<u64, Known>,
    /// Stored in the open transaction, not yet committed.
    fresh: HashMap<u64, Known>,
}

fn key(e: &EventRecord) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.protocol.hash(&mut h);
    e.fingerprint.hash(&mut h);
    e.kinds.hash(&mut h);
    e.tables_read.hash(&mut h);
    e.tables_written.hash(&mut h);
    h.finish()
}

impl Shapes {
    /// Where `e`'s shape is stored, storing it in `tx` when it is new;
    /// `None` when the event is to be stored whole.
    pub fn place(
        &mut self,
        tx: &Transaction<'_>,
        e: &EventRecord,
    ) -> Result<Option<Placed>, rusqlite::Error> {
        let k = key(e);
        if let Some(known) = self.known.get(&k).or_else(|| self.fresh.get(&k)) {
            // A different shape with the same hash is stored whole.
            return Ok(known.fits(e).then(|| known.place(e)).flatten());
        }
        let (kinds, read, written) = (
            json_list(&e.kinds),
            json_list(&e.tables_read),
            json_list(&e.tables_written),
        );
        tx.prepare_cached(
            "INSERT INTO event_shapes (protocol, sql, fingerprint, kinds_json, tables_read_json, tables_written_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (protocol, fingerprint, kinds_json, tables_read_json, tables_written_json) DO NOTHING",
        )?
        .execute(params![e.protocol, e.sql, e.fingerprint, kinds, read, written])?;
        let stored: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, sql FROM event_shapes WHERE protocol = ?1 AND fingerprint = ?2
                 AND kinds_json = ?3 AND tables_read_json = ?4 AND tables_written_json = ?5",
            )?
            .query_row(
                params![e.protocol, e.fingerprint, kinds, read, written],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, sql)) = stored else {
            return Ok(None);
        };
        let known = Known::of(id, sql, e);
        let placed = known.place(e);
        self.fresh.insert(k, known);
        Ok(placed)
    }

    /// The open transaction committed: its shapes are known from now on.
    pub fn committed(&mut self) {
        if self.known.len() + self.fresh.len() > MAX_KNOWN {
            self.known.clear();
        }
        self.known.extend(self.fresh.drain());
    }

    /// The open transaction was rolled back: its shapes were never stored.
    pub fn rolled_back(&mut self) {
        self.fresh.clear();
    }
}
