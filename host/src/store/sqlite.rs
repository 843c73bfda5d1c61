//! The embedded store: one SQLite file in WAL mode. Writes go through one
//! connection (`synchronous = FULL`, so a committed batch survives a crash
//! of the process or the machine); reads use a second connection and never
//! wait for a write in progress.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::migrations::MIGRATIONS;
use super::shapes::Shapes;
use super::{
    Action, ApprovalRecord, ApprovalStatus, EventRecord, EventStatus, GrantQuery, IdentityRecord,
    IssuedCertificate, Record, SessionQuery, SessionRecord, Store, StoreError,
};

/// How long a statement waits for a lock held by another connection (or
/// another gateway process sharing the file).
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How long after its end a minted SSH certificate is kept.
const CERTIFICATES_KEPT_SECS: i64 = 86_400;

/// A store in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
}

/// The writing connection and the statement shapes it has stored.
struct Writer {
    conn: Connection,
    shapes: Shapes,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        let writer = Connection::open(path).map_err(|e| open_err(&e))?;
        writer
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(|e| open_err(&e))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_err(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(&format!(
                "the file system does not support WAL mode (journal mode is {mode})"
            )));
        }
        writer
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(|e| open_err(&e))?;
        migrate(&writer, &shown)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(&e))?;
        reader
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(|e| open_err(&e))?;
        Ok(Self {
            writer: Mutex::new(Writer {
                conn: writer,
                shapes: Shapes::default(),
            }),
            reader: Mutex::new(reader),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies the migrations the file lacks, in one transaction.
fn migrate(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found: version,
            known,
        });
    }
    if version == known {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| -> Result<(), rusqlite::Error> {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
    }
    tracing::info!(
        path,
        from = version,
        to = known,
        "audit store schema migrated"
    );
    Ok(())
}

/// A list of strings as a JSON array (an empty one without allocating:
/// most statements write no table).
pub(super) fn json_list(v: &[String]) -> std::borrow::Cow<'static, str> {
    if v.is_empty() {
        return std::borrow::Cow::Borrowed("[]");
    }
    std::borrow::Cow::Owned(serde_json::to_string(v).unwrap_or_else(|_| "[]".into()))
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Inserts a statement event, or completes it when strict durability stored
/// its start already. An event with a shape leaves the shape's columns
/// empty (see migration 7).
const INSERT_EVENT: &str = "INSERT INTO events (session_id, seq, at, protocol, sql, fingerprint, kinds_json, tables_read_json, tables_written_json,
                                     verdict, decided_by, rule, reason, status, duration_us, rows, sqlstate, error, sample_json, approval_id, action, shape_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
                 ON CONFLICT (session_id, seq) DO UPDATE SET
                     verdict = excluded.verdict, decided_by = excluded.decided_by, rule = excluded.rule,
                     reason = excluded.reason, status = excluded.status, duration_us = excluded.duration_us,
                     rows = excluded.rows, sqlstate = excluded.sqlstate, error = excluded.error,
                     sample_json = excluded.sample_json, approval_id = excluded.approval_id";

/// Writes one record. `events` is the event insert, prepared once per
/// transaction: a group holds thousands of events, and looking the
/// statement up in the connection's cache hashes its whole text each time.
fn write_one(
    tx: &rusqlite::Transaction<'_>,
    events: &mut rusqlite::Statement<'_>,
    shapes: &mut Shapes,
    record: &Record,
) -> Result<(), rusqlite::Error> {
    match record {
        Record::SessionStart(s) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO sessions (id, started_at, subject, user_name, groups_json, issuer, actor_chain_json, target, client_addr, application_name, protocol)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                s.id as i64,
                s.started_at,
                s.identity.subject,
                s.identity.user,
                json_list(&s.identity.groups),
                s.identity.issuer,
                json_list(&s.identity.actor_chain),
                s.target,
                s.client_addr,
                s.application_name,
                s.protocol,
            ])?;
        }
        Record::SessionEnd(e) => {
            tx.prepare_cached(
                "UPDATE sessions SET ended_at = ?2, end_reason = ?3, bytes_from_client = ?4, bytes_to_client = ?5 WHERE id = ?1",
            )?
            .execute(params![
                e.id as i64,
                e.ended_at,
                e.reason,
                e.bytes_from_client as i64,
                e.bytes_to_client as i64,
            ])?;
        }
        Record::Event(e) => {
            let placed = shapes.place(tx, e)?;
            let empty = std::borrow::Cow::Borrowed("");
            let (protocol, sql, fingerprint, kinds, read, written) = match placed {
                Some(p) => (
                    "",
                    if p.own_sql { &*e.sql } else { "" },
                    "",
                    empty.clone(),
                    empty.clone(),
                    empty,
                ),
                None => (
                    &*e.protocol,
                    &*e.sql,
                    &*e.fingerprint,
                    json_list(&e.kinds),
                    json_list(&e.tables_read),
                    json_list(&e.tables_written),
                ),
            };
            events.execute(params![
                e.session_id as i64,
                e.seq as i64,
                e.at,
                protocol,
                sql,
                fingerprint,
                kinds,
                read,
                written,
                e.verdict,
                e.decided_by,
                e.rule,
                e.reason,
                e.status.as_str(),
                e.duration_us.map(|d| d as i64),
                e.rows.map(|r| r as i64),
                e.sqlstate,
                e.error,
                e.sample,
                e.approval_id,
                e.action.as_str(),
                placed.map(|p| p.id),
            ])?;
        }
        Record::CastChunk(c) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO recording_chunks (session_id, event_seq, idx, data) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![c.session_id as i64, c.event_seq as i64, c.index, c.data])?;
        }
        Record::PluginLoad(p) => {
            tx.prepare_cached(
                "INSERT INTO plugin_loads (at, name, version, sha256) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![p.at, p.name, p.version, p.sha256])?;
        }
    }
    Ok(())
}

const SESSION_COLUMNS: &str = "id, started_at, subject, user_name, groups_json, issuer, actor_chain_json, target, client_addr, application_name, ended_at, end_reason, bytes_from_client, bytes_to_client, protocol";

/// The identity stored in five columns from `first` on: subject, user
/// name, groups (JSON), issuer, actor chain (JSON) — as sessions and
/// approval requests both keep it.
fn identity_at(r: &rusqlite::Row<'_>, first: usize) -> Result<IdentityRecord, rusqlite::Error> {
    Ok(IdentityRecord {
        subject: r.get(first)?,
        user: r.get(first + 1)?,
        groups: parse_list(&r.get::<_, String>(first + 2)?),
        issuer: r.get(first + 3)?,
        actor_chain: parse_list(&r.get::<_, String>(first + 4)?),
    })
}

fn session_row(r: &rusqlite::Row<'_>) -> Result<SessionRecord, rusqlite::Error> {
    Ok(SessionRecord {
        id: r.get::<_, i64>(0)? as u64,
        started_at: r.get(1)?,
        identity: identity_at(r, 2)?,
        target: r.get(7)?,
        client_addr: r.get(8)?,
        application_name: r.get(9)?,
        ended_at: r.get(10)?,
        end_reason: r.get(11)?,
        bytes_from_client: r.get::<_, i64>(12)? as u64,
        bytes_to_client: r.get::<_, i64>(13)? as u64,
        protocol: r.get(14)?,
    })
}

/// An event whole: its own columns, and its shape's where it has one.
const EVENT_SELECT: &str = "SELECT e.session_id, e.seq, e.at, COALESCE(s.protocol, e.protocol),
        CASE WHEN s.id IS NOT NULL AND e.sql = '' THEN s.sql ELSE e.sql END,
        COALESCE(s.fingerprint, e.fingerprint), COALESCE(s.kinds_json, e.kinds_json),
        COALESCE(s.tables_read_json, e.tables_read_json), COALESCE(s.tables_written_json, e.tables_written_json),
        e.verdict, e.decided_by, e.rule, e.reason, e.status, e.duration_us, e.rows, e.sqlstate, e.error,
        e.sample_json, e.approval_id, e.action
    FROM events e LEFT JOIN event_shapes s ON s.id = e.shape_id";

fn event_row(r: &rusqlite::Row<'_>) -> Result<EventRecord, rusqlite::Error> {
    Ok(EventRecord {
        session_id: r.get::<_, i64>(0)? as u64,
        seq: r.get::<_, i64>(1)? as u64,
        at: r.get(2)?,
        protocol: r.get(3)?,
        sql: r.get(4)?,
        fingerprint: r.get(5)?,
        kinds: parse_list(&r.get::<_, String>(6)?).into(),
        tables_read: parse_list(&r.get::<_, String>(7)?).into(),
        tables_written: parse_list(&r.get::<_, String>(8)?).into(),
        verdict: r.get(9)?,
        decided_by: r.get(10)?,
        rule: r.get(11)?,
        reason: r.get(12)?,
        status: EventStatus::parse(&r.get::<_, String>(13)?).unwrap_or(EventStatus::Unknown),
        duration_us: r.get::<_, Option<i64>>(14)?.map(|d| d as u64),
        rows: r.get::<_, Option<i64>>(15)?.map(|d| d as u64),
        sqlstate: r.get(16)?,
        error: r.get(17)?,
        sample: r.get(18)?,
        approval_id: r.get(19)?,
        action: Action::parse(&r.get::<_, String>(20)?).unwrap_or_default(),
    })
}

const APPROVAL_COLUMNS: &str = "id, created_at, expires_at, session_id, subject, user_name, groups_json, issuer, actor_chain_json, target, sql, fingerprint, plugin, rule, reason, mode, min_approvals, status, decided_at, votes_json, grant_uses_left, grant_minutes, grant_until, protocol";

fn approval_row(r: &rusqlite::Row<'_>) -> Result<ApprovalRecord, rusqlite::Error> {
    Ok(ApprovalRecord {
        id: r.get(0)?,
        created_at: r.get(1)?,
        expires_at: r.get(2)?,
        session_id: r.get::<_, i64>(3)? as u64,
        requester: identity_at(r, 4)?,
        target: r.get(9)?,
        sql: r.get(10)?,
        fingerprint: r.get(11)?,
        plugin: r.get(12)?,
        rule: r.get(13)?,
        reason: r.get(14)?,
        mode: r.get(15)?,
        min_approvals: r.get::<_, i64>(16)? as u32,
        status: ApprovalStatus::parse(&r.get::<_, String>(17)?).unwrap_or(ApprovalStatus::Expired),
        decided_at: r.get(18)?,
        votes: serde_json::from_str(&r.get::<_, String>(19)?).unwrap_or_default(),
        grant_uses_left: r.get::<_, i64>(20)? as u32,
        grant_minutes: r.get::<_, i64>(21)? as u32,
        grant_until: r.get(22)?,
        protocol: r.get(23)?,
    })
}

/// Writes `records` in one transaction.
fn write_all(
    conn: &mut Connection,
    shapes: &mut Shapes,
    records: &[Record],
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut events = tx.prepare_cached(INSERT_EVENT)?;
        for r in records {
            write_one(&tx, &mut events, shapes, r)?;
        }
    }
    tx.commit()
}

impl Store for SqliteStore {
    fn write(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut writer = self.writer();
        let Writer { conn, shapes } = &mut *writer;
        let result = write_all(conn, shapes, records);
        match result {
            Ok(()) => shapes.committed(),
            Err(_) => shapes.rolled_back(),
        }
        Ok(result?)
    }

    fn reserve_session_ids(&self, count: u64) -> Result<u64, StoreError> {
        let conn = &mut self.writer().conn;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let first: i64 = tx.query_row(
            "SELECT value FROM counters WHERE name = 'next_session_id'",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE counters SET value = ?1 WHERE name = 'next_session_id'",
            params![first + count as i64],
        )?;
        tx.commit()?;
        Ok(first as u64)
    }

    fn sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE (?1 IS NULL OR user_name = ?1) AND (?2 IS NULL OR target = ?2) AND (?3 = 0 OR ended_at IS NULL)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let limit = if q.limit == 0 { 100 } else { q.limit } as i64;
        let rows = stmt.query_map(
            params![q.user, q.target, q.active_only as i64, limit],
            session_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn session(&self, id: u64) -> Result<Option<SessionRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
        ))?;
        Ok(stmt.query_row(params![id as i64], session_row).optional()?)
    }

    fn events(&self, session_id: u64) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "{EVENT_SELECT} WHERE e.session_id = ?1 ORDER BY e.seq"
        ))?;
        let rows = stmt.query_map(params![session_id as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn recording(&self, session_id: u64, event_seq: u64) -> Result<Option<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT data FROM recording_chunks WHERE session_id = ?1 AND event_seq = ?2 ORDER BY idx",
        )?;
        let mut rows = stmt.query(params![session_id as i64, event_seq as i64])?;
        let mut cast: Option<String> = None;
        while let Some(row) = rows.next()? {
            let data: String = row.get(0)?;
            cast.get_or_insert_with(String::new).push_str(&data);
        }
        Ok(cast)
    }

    fn save_ssh_certificate(&self, cert: &IssuedCertificate) -> Result<(), StoreError> {
        let conn = &mut self.writer().conn;
        // Certificates a day past their end are forgotten (they can no
        // longer log in; the day keeps "expired" as the answer for them).
        let forgotten = super::now_micros() / 1_000_000 - CERTIFICATES_KEPT_SECS;
        conn.execute(
            "DELETE FROM ssh_certificates WHERE valid_before < ?1",
            params![forgotten],
        )?;
        conn.execute(
            "INSERT INTO ssh_certificates (serial, key_id, identity_json, issued_at, valid_before) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                cert.serial as i64,
                cert.key_id,
                cert.identity_json,
                cert.issued_at,
                cert.valid_before as i64
            ],
        )?;
        Ok(())
    }

    fn ssh_certificate(&self, serial: u64) -> Result<Option<IssuedCertificate>, StoreError> {
        let conn = self.reader();
        let found = conn
            .prepare_cached(
                "SELECT key_id, identity_json, issued_at, valid_before FROM ssh_certificates WHERE serial = ?1",
            )?
            .query_row(params![serial as i64], |r| {
                Ok(IssuedCertificate {
                    serial,
                    key_id: r.get(0)?,
                    identity_json: r.get(1)?,
                    issued_at: r.get(2)?,
                    valid_before: r.get::<_, i64>(3)? as u64,
                })
            })
            .optional()?;
        Ok(found)
    }

    fn export_events(
        &self,
        since: i64,
        until: i64,
        sink: &mut dyn FnMut(EventRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "{EVENT_SELECT} WHERE e.at >= ?1 AND e.at < ?2 ORDER BY e.at, e.session_id, e.seq"
        ))?;
        let rows = stmt.query_map(params![since, until], event_row)?;
        for row in rows {
            sink(row?)?;
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        let conn = &self.writer().conn;
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
        Ok(())
    }

    fn save_approval(&self, a: &ApprovalRecord) -> Result<(), StoreError> {
        let conn = &self.writer().conn;
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO approvals ({APPROVAL_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
        ))?
        .execute(params![
            a.id,
            a.created_at,
            a.expires_at,
            a.session_id as i64,
            a.requester.subject,
            a.requester.user,
            json_list(&a.requester.groups),
            a.requester.issuer,
            json_list(&a.requester.actor_chain),
            a.target,
            a.sql,
            a.fingerprint,
            a.plugin,
            a.rule,
            a.reason,
            a.mode,
            a.min_approvals as i64,
            a.status.as_str(),
            a.decided_at,
            serde_json::to_string(&a.votes).unwrap_or_else(|_| "[]".into()),
            a.grant_uses_left as i64,
            a.grant_minutes as i64,
            a.grant_until,
            a.protocol,
        ])?;
        Ok(())
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"
        ))?;
        Ok(stmt.query_row(params![id], approval_row).optional()?)
    }

    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1)
             ORDER BY created_at DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![status.map(ApprovalStatus::as_str), limit.max(1) as i64],
            approval_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn pending_approvals_of(
        &self,
        subject: &str,
        issuer: &str,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE subject = ?1 AND issuer = ?2 AND status = 'pending'
             ORDER BY created_at DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![subject, issuer, limit.max(1) as i64], approval_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_token(&self, jti: &str, at: i64, by: &str) -> Result<(), StoreError> {
        self.writer().conn.execute(
            "INSERT OR IGNORE INTO revocations (jti, revoked_at, revoked_by) VALUES (?1, ?2, ?3)",
            params![jti, at, by],
        )?;
        Ok(())
    }

    fn revoked_tokens(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT jti FROM revocations")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn use_grant(&self, g: &GrantQuery<'_>, now: i64) -> Result<Option<String>, StoreError> {
        let conn = &mut self.writer().conn;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM approvals
                 WHERE status = 'approved' AND mode = 'retry' AND grant_uses_left > 0 AND grant_until > ?1
                   AND target = ?2 AND fingerprint = ?3 AND subject = ?4 AND user_name = ?5
                   AND actor_chain_json = ?6 AND sql = ?7
                 ORDER BY created_at LIMIT 1",
                params![
                    now,
                    g.target,
                    g.fingerprint,
                    g.subject,
                    g.user,
                    json_list(g.actor_chain),
                    g.sql
                ],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = &id {
            tx.execute(
                "UPDATE approvals SET grant_uses_left = grant_uses_left - 1 WHERE id = ?1",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SessionEnd, SessionQuery};

    fn event(session_id: u64, seq: u64, status: EventStatus) -> EventRecord {
        EventRecord {
            session_id,
            seq,
            at: 1_000 + seq as i64,
            protocol: "simple".into(),
            sql: "select 1".into(),
            fingerprint: "".into(),
            kinds: vec!["select".into()].into(),
            tables_read: vec![].into(),
            tables_written: vec![].into(),
            verdict: "allow".into(),
            decided_by: None,
            rule: None,
            reason: None,
            status,
            duration_us: None,
            rows: None,
            sqlstate: None,
            error: None,
            sample: None,
            approval_id: None,
            action: Action::Statement,
        }
    }

    fn session(id: u64) -> SessionRecord {
        SessionRecord {
            id,
            started_at: 5,
            identity: IdentityRecord {
                subject: "sub".into(),
                user: "alice@example.com".into(),
                groups: vec!["testers".into()],
                issuer: "https://issuer".into(),
                actor_chain: vec![],
            },
            target: "orders".into(),
            protocol: "postgres".into(),
            client_addr: "127.0.0.1:5000".into(),
            application_name: Some("psql".into()),
            ended_at: None,
            end_reason: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
        }
    }

    #[test]
    fn certificates_a_day_past_their_end_are_forgotten() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let store = SqliteStore::open(&dir.join("audit.db"))?;
        let now = (crate::store::now_micros() / 1_000_000) as u64;
        let cert = |serial: u64, valid_before: u64| IssuedCertificate {
            serial,
            key_id: format!("jti-{serial}"),
            identity_json: "{}".into(),
            issued_at: 0,
            valid_before,
        };
        store.save_ssh_certificate(&cert(1, now - 2 * 86_400))?;
        store.save_ssh_certificate(&cert(2, now - 3_600))?;
        store.save_ssh_certificate(&cert(3, now + 3_600))?;
        assert!(store.ssh_certificate(1)?.is_none());
        assert!(store.ssh_certificate(2)?.is_some());
        assert!(store.ssh_certificate(3)?.is_some());
        Ok(())
    }

    #[test]
    fn writes_read_back_and_a_second_write_completes_an_event() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let path = dir.join("audit.db");
        let store = SqliteStore::open(&path)?;
        let first = store.reserve_session_ids(10)?;
        assert_eq!(store.reserve_session_ids(10)?, first + 10);
        store.write(&[
            Record::SessionStart(session(first)),
            Record::Event(event(first, 1, EventStatus::Started)),
        ])?;
        let mut done = event(first, 1, EventStatus::Ok);
        done.rows = Some(3);
        store.write(&[
            Record::Event(done.clone()),
            Record::SessionEnd(SessionEnd {
                id: first,
                ended_at: 9,
                reason: "client closed".into(),
                bytes_from_client: 10,
                bytes_to_client: 20,
            }),
        ])?;
        assert_eq!(store.events(first)?, vec![done]);
        let s = store
            .session(first)?
            .ok_or(StoreError::Database("missing".into()))?;
        assert_eq!(s.ended_at, Some(9));
        assert_eq!(s.bytes_to_client, 20);
        assert_eq!(s.identity.groups, vec!["testers".to_string()]);
        let listed = store.sessions(&SessionQuery {
            active_only: true,
            ..Default::default()
        })?;
        assert!(listed.is_empty());
        // Reopening keeps data and the id counter.
        drop(store);
        let store = SqliteStore::open(&path)?;
        assert_eq!(store.reserve_session_ids(1)?, first + 20);
        let mut n = 0;
        store.export_events(0, i64::MAX, &mut |_| {
            n += 1;
            Ok(())
        })?;
        assert_eq!(n, 1);
        Ok(())
    }

    /// The raw columns an event row keeps: (protocol, sql, fingerprint,
    /// kinds_json, shape_id).
    fn raw_event(
        store: &SqliteStore,
        session_id: u64,
        seq: u64,
    ) -> Result<(String, String, String, String, Option<i64>), StoreError> {
        Ok(store.reader().query_row(
            "SELECT protocol, sql, fingerprint, kinds_json, shape_id FROM events WHERE session_id = ?1 AND seq = ?2",
            params![session_id as i64, seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?)
    }

    #[test]
    fn runs_of_one_statement_share_a_shape_and_read_back_whole() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let path = dir.join("audit.db");
        let store = SqliteStore::open(&path)?;
        let shaped = |seq: u64, sql: &str| {
            let mut e = event(1, seq, EventStatus::Ok);
            e.protocol = "extended".into();
            e.fingerprint = "5e6b1f0a9c2d4e11".into();
            e.kinds = vec!["select".into()].into();
            e.tables_read = vec!["public.orders".into(), "public.items".into()].into();
            e.sql = sql.into();
            e
        };
        let written = vec![
            shaped(1, "SELECT * FROM orders WHERE id = $1"),
            shaped(2, "SELECT * FROM orders WHERE id = $1"),
            // Same shape, other text (another literal).
            shaped(3, "SELECT * FROM orders WHERE id = 7"),
            // Same shape, no text: cannot be told from "the shape's text".
            shaped(4, ""),
            // Another shape.
            event(1, 5, EventStatus::Ok),
        ];
        store.write(
            &written
                .iter()
                .cloned()
                .map(Record::Event)
                .collect::<Vec<_>>(),
        )?;
        // The same shape in a later group (and after reopening) is found.
        store.write(&[Record::Event(shaped(
            6,
            "SELECT * FROM orders WHERE id = $1",
        ))])?;
        drop(store);
        let store = SqliteStore::open(&path)?;
        store.write(&[Record::Event(shaped(
            7,
            "SELECT * FROM orders WHERE id = $1",
        ))])?;
        let mut expected = written;
        expected.push(shaped(6, "SELECT * FROM orders WHERE id = $1"));
        expected.push(shaped(7, "SELECT * FROM orders WHERE id = $1"));
        assert_eq!(store.events(1)?, expected);
        let mut exported = Vec::new();
        store.export_events(0, i64::MAX, &mut |e| {
            exported.push(e);
            Ok(())
        })?;
        assert_eq!(exported, expected);
        let shapes: i64 =
            store
                .reader()
                .query_row("SELECT count(*) FROM event_shapes", [], |r| r.get(0))?;
        assert_eq!(shapes, 2, "one row per shape");
        let (protocol, sql, fingerprint, kinds, shape) = raw_event(&store, 1, 2)?;
        assert!(shape.is_some());
        assert_eq!(
            (
                protocol.as_str(),
                sql.as_str(),
                fingerprint.as_str(),
                kinds.as_str()
            ),
            ("", "", "", ""),
            "a run of a shape keeps only its own columns"
        );
        assert_eq!(
            raw_event(&store, 1, 3)?.1,
            "SELECT * FROM orders WHERE id = 7"
        );
        assert_eq!(raw_event(&store, 1, 4)?.4, None, "stored whole");
        Ok(())
    }

    #[test]
    fn a_shape_stored_by_a_rolled_back_group_is_stored_again() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let store = SqliteStore::open(&dir.join("audit.db"))?;
        // A group that stored a shape and then failed (rolled back by hand
        // here: no record makes a group fail halfway on purpose).
        {
            let mut writer = store.writer();
            let Writer { conn, shapes } = &mut *writer;
            let tx = conn.transaction()?;
            let placed = shapes.place(&tx, &event(1, 1, EventStatus::Ok))?;
            assert!(placed.is_some());
            drop(tx);
            shapes.rolled_back();
        }
        store.write(&[Record::Event(event(1, 1, EventStatus::Ok))])?;
        assert_eq!(store.events(1)?, vec![event(1, 1, EventStatus::Ok)]);
        assert!(
            raw_event(&store, 1, 1)?.4.is_some(),
            "the shape was stored again"
        );
        Ok(())
    }

    #[test]
    fn a_store_from_before_protocols_reads_as_postgres_statements() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let path = dir.join("audit.db");
        // A file as version 4 wrote it: no protocol columns.
        let old = Connection::open(&path)?;
        old.execute_batch("PRAGMA journal_mode = WAL")?;
        for (i, sql) in MIGRATIONS.iter().take(4).enumerate() {
            old.execute_batch(sql)?;
            old.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        old.execute_batch(
            "INSERT INTO sessions (id, started_at, subject, user_name, groups_json, issuer, actor_chain_json, target, client_addr)
             VALUES (7, 5, 'sub', 'alice@example.com', '[\"testers\"]', 'https://issuer', '[]', 'orders', '127.0.0.1:5000');
             INSERT INTO approvals (id, created_at, expires_at, session_id, subject, user_name, groups_json, issuer, actor_chain_json,
                                    target, sql, fingerprint, reason, mode, min_approvals, status, votes_json, grant_uses_left, grant_minutes)
             VALUES ('apr_old', 1, 2, 7, 'sub', 'alice@example.com', '[]', 'https://issuer', '[]',
                     'orders', 'delete from t', 'f', 'needs approval', 'wait', 1, 'pending', '[]', 0, 10);
             INSERT INTO events (session_id, seq, at, protocol, sql, fingerprint, kinds_json, tables_read_json,
                                 tables_written_json, verdict, status)
             VALUES (7, 1, 6, 'simple', 'delete from t', 'f', '[\"delete\"]', '[]', '[\"t\"]', 'allow', 'ok');",
        )?;
        drop(old);
        let store = SqliteStore::open(&path)?;
        let s = store
            .session(7)?
            .ok_or(StoreError::Database("the old session is gone".into()))?;
        assert_eq!(
            (s.identity.user.as_str(), s.protocol.as_str()),
            ("alice@example.com", "postgres")
        );
        let a = store
            .approval("apr_old")?
            .ok_or(StoreError::Database("the old approval is gone".into()))?;
        assert_eq!(
            (a.sql.as_str(), a.protocol.as_str()),
            ("delete from t", "postgres")
        );
        // An event from before actions reads as a statement.
        let old_event = store.events(7)?;
        assert_eq!(
            (&*old_event[0].sql, old_event[0].action),
            ("delete from t", Action::Statement)
        );
        // New records keep the protocol and action they are written with.
        let mut e = event(8, 1, EventStatus::Ok);
        e.action = Action::Command;
        store.write(&[Record::Event(e)])?;
        assert_eq!(store.events(8)?[0].action, Action::Command);
        let mut next = session(8);
        next.protocol = "ssh".into();
        store.write(&[Record::SessionStart(next)])?;
        let s = store
            .session(8)?
            .ok_or(StoreError::Database("missing".into()))?;
        assert_eq!(s.protocol, "ssh");
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<(), StoreError> {
        let dir = crate::test_dir::TestDir::new("portcullis-store");
        let path = dir.join("audit.db");
        drop(SqliteStore::open(&path)?);
        Connection::open(&path)?.execute_batch("PRAGMA user_version = 99")?;
        let err = SqliteStore::open(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("schema version 99"), "{err}");
        Ok(())
    }
}
