//! The audit store: where sessions, statement events, approvals and plugin
//! loads are kept, so an operator can see and replay what every identity did
//! and prove it later.
//!
//! Callers see only the [`Store`] trait and the record types below; the
//! embedded default is [`sqlite::SqliteStore`] (one file in WAL mode, schema
//! migrations applied at open). A PostgreSQL store for several gateway
//! replicas can implement the same trait without touching callers.
//!
//! Writes come in batches, each committed as one transaction (the audit
//! writer in [`crate::audit`] groups them); reads serve the admin API and the
//! CLI.

mod migrations;
mod records;
mod shapes;
pub mod sqlite;

pub use records::{
    Action, ApprovalRecord, ApprovalStatus, EventRecord, EventStatus, IdentityRecord,
    PluginLoadRecord, SessionEnd, SessionRecord, Vote,
};

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the audit store at {path}: {message}")]
    Open {
        /// File path.
        path: String,
        /// Cause.
        message: String,
    },
    /// The file holds a schema newer than this gateway knows.
    #[error("the audit store at {path} has schema version {found}, newer than this gateway's {known}; run a newer gateway or restore a backup")]
    TooNew {
        /// File path.
        path: String,
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("audit store: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// One record to write.
#[derive(Debug, Clone)]
pub enum Record {
    /// A session began.
    SessionStart(SessionRecord),
    /// A session ended.
    SessionEnd(SessionEnd),
    /// A statement event: inserted, or completed if its `(session, seq)` is
    /// already stored (strict durability writes it twice).
    Event(EventRecord),
    /// A plugin was loaded.
    PluginLoad(PluginLoadRecord),
    /// A piece of a command's terminal recording.
    CastChunk(CastChunk),
}

/// An SSH user certificate the gateway minted, as it keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate's serial.
    pub serial: u64,
    /// Its key id.
    pub key_id: String,
    /// The identity it was minted for, as JSON.
    pub identity_json: String,
    /// Unix microseconds it was minted at.
    pub issued_at: i64,
    /// Unix seconds it is valid until.
    pub valid_before: u64,
}

/// A piece of the asciicast v2 recording of one command (an SSH exec or
/// shell): chunk 0 is the header line, later chunks whole event lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastChunk {
    /// The session.
    pub session_id: u64,
    /// The command's event in the session.
    pub event_seq: u64,
    /// Its place in the recording.
    pub index: u32,
    /// Newline-terminated lines of the recording.
    pub data: String,
}

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only sessions of this user.
    pub user: Option<String>,
    /// Only sessions on this target.
    pub target: Option<String>,
    /// Only sessions still open (no end recorded).
    pub active_only: bool,
    /// Newest first, at most this many.
    pub limit: usize,
}

/// Persistent storage for the audit trail.
pub trait Store: Send + Sync + 'static {
    /// Writes `records` in one durable transaction: all or nothing.
    fn write(&self, records: &[Record]) -> Result<(), StoreError>;

    /// Reserves `count` consecutive session ids no other gateway using this
    /// store will hand out; returns the first.
    fn reserve_session_ids(&self, count: u64) -> Result<u64, StoreError>;

    /// Sessions, newest first.
    fn sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError>;

    /// One session.
    fn session(&self, id: u64) -> Result<Option<SessionRecord>, StoreError>;

    /// A session's statement events in order.
    fn events(&self, session_id: u64) -> Result<Vec<EventRecord>, StoreError>;

    /// The asciicast v2 recording of command event `event_seq` of a
    /// session, if one was kept.
    fn recording(&self, session_id: u64, event_seq: u64) -> Result<Option<String>, StoreError>;

    /// Keeps what is behind an SSH certificate the gateway minted.
    fn save_ssh_certificate(&self, cert: &IssuedCertificate) -> Result<(), StoreError>;

    /// What is behind the minted SSH certificate `serial`, if it is one.
    fn ssh_certificate(&self, serial: u64) -> Result<Option<IssuedCertificate>, StoreError>;

    /// Events with `since <= at < until` (unix microseconds) in time order,
    /// handed to `sink` one at a time so an export never holds them all.
    fn export_events(
        &self,
        since: i64,
        until: i64,
        sink: &mut dyn FnMut(EventRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Whether a write would succeed now (for readiness checks).
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Inserts or replaces an approval request, durably.
    fn save_approval(&self, approval: &ApprovalRecord) -> Result<(), StoreError>;

    /// One approval request.
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;

    /// Approval requests (only those with `status`, if given), newest first.
    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Pending approval requests of one person (token `subject` at
    /// `issuer`), newest first, at most `limit`.
    fn pending_approvals_of(
        &self,
        subject: &str,
        issuer: &str,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Takes one use of an approved retry-mode grant for exactly this
    /// statement (same text and fingerprint) from exactly this identity on
    /// this target, valid at `now`; returns the approval's id. Atomic: two
    /// sessions never take the same last use.
    fn use_grant(&self, grant: &GrantQuery<'_>, now: i64) -> Result<Option<String>, StoreError>;

    /// Records that token `jti` (and so every token minted from it) is revoked.
    fn revoke_token(&self, jti: &str, at: i64, by: &str) -> Result<(), StoreError>;

    /// Every revoked token id.
    fn revoked_tokens(&self) -> Result<Vec<String>, StoreError>;
}

/// What a grant must match (see [`Store::use_grant`]).
#[derive(Debug, Clone, Copy)]
pub struct GrantQuery<'a> {
    /// Token `sub`.
    pub subject: &'a str,
    /// User.
    pub user: &'a str,
    /// Actor chain.
    pub actor_chain: &'a [String],
    /// Target.
    pub target: &'a str,
    /// Statement text.
    pub sql: &'a str,
    /// Its fingerprint.
    pub fingerprint: &'a str,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Bytes as a record's text: UTF-8 as it is, anything else as
/// [`hex_text`] — what was sent is never recorded as something else.
pub fn bytes_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(t) => t.to_string(),
        Err(_) => hex_text(v),
    }
}

/// Bytes as `\x` and their hex, like PostgreSQL's bytea output.
pub fn hex_text(v: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2 + v.len() * 2);
    out.push_str("\\x");
    for b in v {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `2026-11-30T05:24:31.123Z` for unix microseconds (UTC).
pub fn format_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `2026-11-30T05:24:31Z` (fraction optional) or a plain date
/// `2026-11-30` (midnight UTC) into unix microseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, t.trim_end_matches('Z')),
        None => (text, "00:00:00"),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let micros_frac = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(6).collect();
        digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32)
    };
    // days-from-civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1_000_000 + micros_frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-11-30T05:24:31.123Z").unwrap_or_default();
        assert_eq!(format_time(t), "2026-11-30T05:24:31.123Z");
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_time("2024-02-29T23:59:59Z")
                .map(format_time)
                .as_deref(),
            Some("2024-02-29T23:59:59.000Z")
        );
        assert_eq!(parse_time("2024-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
