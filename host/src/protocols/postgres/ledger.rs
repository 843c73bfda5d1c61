//! The statement ledger: the audit side of one session. It turns what the
//! client sent and what the policy decided into [`EventRecord`]s, and pairs
//! recorded statements with the server's answers (row counts, errors,
//! duration) in the order the server gives them.
//!
//! Refused statements are recorded at once (they never reach the server).
//! Statements the policy asked to record ([`QueryNote::record`]) are
//! tracked until their answer; so that answers are matched to the right
//! statement, every statement sent while tracking is on (see
//! [`Ledger::tracking`]) takes a place in the queue, recorded or not.
//!
//! The ledger never does I/O: its methods return the records to write, and
//! the relay writes them (durably first, for `strict` targets).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::policy::{QueryNote, Verdict};
use crate::store::{now_micros, Action, EventRecord, EventStatus, Record};

/// Prepared statements and portals remembered per session; beyond this the
/// oldest are forgotten (their executions are then recorded without SQL).
const MAX_NAMED: usize = 10_000;

/// One statement in the queue awaiting the server's answer.
struct Open {
    /// `None`: not recorded, only holds the place of its answer.
    record: Option<EventRecord>,
    started: Instant,
    /// Number of the `ReadyForQuery` that ends its batch.
    batch: u64,
    /// A simple Query: every `CommandComplete` until `ReadyForQuery` is its.
    simple: bool,
    /// Whether the server has answered it (its answer is complete).
    answered: bool,
    /// The first rows of its result, when recording asked for them.
    sample: Option<Sample>,
}

/// The first rows of a result as the client received them.
struct Sample {
    limit: usize,
    columns: Vec<String>,
    /// Per column: whether values are in binary format.
    binary: Vec<bool>,
    rows: Vec<Vec<Option<String>>>,
}

impl Sample {
    fn wants_more(&self) -> bool {
        self.rows.len() < self.limit
    }

    /// `{"columns": [...], "rows": [[...], ...]}`; binary values as `\x` hex.
    fn to_json(&self) -> String {
        serde_json::json!({ "columns": self.columns, "rows": self.rows }).to_string()
    }
}

/// A value as text: UTF-8 text as it is, anything else (or a binary-format
/// value) as `\x` and hex, like PostgreSQL's bytea output.
fn value_text(v: &[u8], binary: bool) -> String {
    if binary {
        crate::store::hex_text(v)
    } else {
        crate::store::bytes_text(v)
    }
}

/// A recorded prepared statement, shared by its portals: the record every
/// execution starts from, and how many result rows to sample.
type Recorded = Arc<(EventRecord, u32)>;

/// What the relay must do with a statement before forwarding it.
pub enum Before {
    /// Nothing: forward it.
    Forward,
    /// Write this record (batched) — a refusal.
    Write(Record),
    /// Commit this record durably, then forward; if the commit fails, refuse
    /// the statement and write [`Ledger::abandon_last`]'s record instead.
    Durable(Record),
}

/// The audit ledger of one session.
pub struct Ledger {
    session_id: u64,
    strict: bool,
    tracking: bool,
    seq: u64,
    open: VecDeque<Open>,
    statements: HashMap<String, Recorded>,
    portals: HashMap<String, Recorded>,
}

impl Ledger {
    /// A ledger for session `session_id`; `tracking` says whether recorded
    /// statements are possible at all (a policy that may record), `strict`
    /// whether their records are committed before they are forwarded.
    pub fn new(session_id: u64, tracking: bool, strict: bool) -> Self {
        Self {
            session_id,
            strict,
            tracking,
            seq: 0,
            open: VecDeque::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    fn event(
        &mut self,
        protocol: &str,
        sql: &str,
        note: &QueryNote,
        verdict: &Verdict,
    ) -> EventRecord {
        self.seq += 1;
        let (kinds, read, written) = match &note.summary {
            Some(s) => {
                let name = |t: &crate::protocols::postgres::sql::TableName| match &t.schema {
                    Some(schema) => format!("{schema}.{}", t.name),
                    None => t.name.clone(),
                };
                let mut read: Vec<String> = Vec::new();
                let mut written: Vec<String> = Vec::new();
                for st in &s.statements {
                    read.extend(st.tables_read.iter().map(name));
                    written.extend(st.tables_written.iter().map(name));
                }
                read.dedup();
                written.dedup();
                (
                    s.statements.iter().map(|st| st.kind.clone()).collect(),
                    read,
                    written,
                )
            }
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        let verdict_text = match verdict {
            Verdict::Allow if note.approval_id.is_some() => "approved",
            v => v.label(),
        };
        let reason = verdict.reason().map(str::to_string);
        let status = if *verdict == Verdict::Allow {
            EventStatus::Started
        } else {
            EventStatus::Refused
        };
        EventRecord {
            session_id: self.session_id,
            seq: self.seq,
            at: now_micros(),
            protocol: protocol.into(),
            sql: sql.into(),
            fingerprint: note
                .summary
                .as_ref()
                .map(|s| s.fingerprint.as_str().into())
                .unwrap_or_default(),
            kinds: kinds.into(),
            tables_read: read.into(),
            tables_written: written.into(),
            verdict: verdict_text.to_string(),
            decided_by: note.decided_by.clone(),
            rule: note.rule.clone(),
            reason,
            status,
            duration_us: None,
            rows: None,
            sqlstate: None,
            error: None,
            sample: None,
            approval_id: note.approval_id.clone(),
            action: Action::Statement,
        }
    }

    fn begin(
        &mut self,
        record: Option<EventRecord>,
        sample_rows: u32,
        batch: u64,
        simple: bool,
    ) -> Before {
        let durable = match (&record, self.strict) {
            (Some(r), true) => Some(Record::Event(r.clone())),
            _ => None,
        };
        let sample = (record.is_some() && sample_rows > 0).then(|| Sample {
            limit: sample_rows as usize,
            columns: Vec::new(),
            binary: Vec::new(),
            rows: Vec::new(),
        });
        self.open.push_back(Open {
            record,
            started: Instant::now(),
            batch,
            simple,
            answered: false,
            sample,
        });
        durable.map_or(Before::Forward, Before::Durable)
    }

    /// A simple `Query` (which ends batch `batch`) and the policy's decision.
    pub fn query(&mut self, sql: &str, note: &QueryNote, verdict: &Verdict, batch: u64) -> Before {
        if *verdict != Verdict::Allow {
            return Before::Write(Record::Event(self.event("simple", sql, note, verdict)));
        }
        if !self.tracking {
            return Before::Forward;
        }
        let record = note
            .record
            .is_some()
            .then(|| self.event("simple", sql, note, verdict));
        let sample_rows = note.record.map_or(0, |r| r.sample_rows);
        self.begin(record, sample_rows, batch, true)
    }

    /// A `Parse` and the policy's decision.
    pub fn parse(&mut self, name: &str, sql: &str, note: &QueryNote, verdict: &Verdict) -> Before {
        if *verdict != Verdict::Allow {
            self.statements.remove(name);
            return Before::Write(Record::Event(self.event("parse", sql, note, verdict)));
        }
        if !self.tracking {
            return Before::Forward;
        }
        if note.record.is_some() {
            // A template: each execution gets its own sequence number.
            let mut template = self.event("extended", sql, note, verdict);
            self.seq -= 1;
            template.seq = 0;
            if self.statements.len() >= MAX_NAMED {
                self.statements.clear();
            }
            let sample_rows = note.record.map_or(0, |r| r.sample_rows);
            self.statements
                .insert(name.to_string(), Arc::new((template, sample_rows)));
        } else {
            self.statements.remove(name);
        }
        Before::Forward
    }

    /// A `Bind` of `statement` into `portal`.
    pub fn bind(&mut self, portal: &str, statement: &str) {
        match self.statements.get(statement) {
            Some(t) => {
                if self.portals.len() >= MAX_NAMED {
                    self.portals.clear();
                }
                self.portals.insert(portal.to_string(), t.clone());
            }
            None => {
                self.portals.remove(portal);
            }
        }
    }

    /// A `Close` of a statement or portal.
    pub fn close(&mut self, statement: Option<&str>, portal: Option<&str>) {
        if let Some(s) = statement {
            self.statements.remove(s);
        }
        if let Some(p) = portal {
            self.portals.remove(p);
        }
    }

    /// An `Execute` of `portal`, whose batch ends at `ReadyForQuery` `batch`;
    /// `approved`: the approval request it runs under, and the statement
    /// with its parameter values as the approver saw it.
    pub fn execute(&mut self, portal: &str, batch: u64, approved: Option<(&str, &str)>) -> Before {
        let mut sample_rows = 0;
        let record = self.portals.get(portal).map(|t| {
            self.seq += 1;
            let mut r = t.0.clone();
            sample_rows = t.1;
            r.seq = self.seq;
            r.at = now_micros();
            if let Some((id, shown)) = approved {
                r.approval_id = Some(id.to_string());
                r.verdict = "approved".into();
                r.sql = shown.into();
            }
            r
        });
        self.begin(record, sample_rows, batch, false)
    }

    /// An `Execute` the relay refused (its approval was denied, timed out
    /// or is pending); `shown` is the statement with its parameter values.
    pub fn execute_refused(&mut self, shown: &str, note: &QueryNote, verdict: &Verdict) -> Record {
        Record::Event(self.event("extended", shown, note, verdict))
    }

    /// Whether the statement being answered wants rows of its result.
    pub fn sampling(&mut self) -> bool {
        self.current()
            .and_then(|o| o.sample.as_ref())
            .is_some_and(Sample::wants_more)
    }

    /// A result's columns (name, binary format), for the sample of the
    /// statement being answered.
    pub fn describe(&mut self, columns: impl FnOnce() -> Vec<(String, bool)>) {
        if let Some(s) = self.current().and_then(|o| o.sample.as_mut()) {
            if s.columns.is_empty() && s.rows.is_empty() {
                let (names, binary) = columns().into_iter().unzip();
                s.columns = names;
                s.binary = binary;
            }
        }
    }

    /// One row as the client receives it, for the sample; returns whether
    /// more rows are wanted.
    pub fn sample_row(&mut self, values: &[Option<&[u8]>]) -> bool {
        let Some(s) = self.current().and_then(|o| o.sample.as_mut()) else {
            return false;
        };
        if s.wants_more() {
            let row = values
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|v| value_text(v, s.binary.get(i).copied().unwrap_or(false))))
                .collect();
            s.rows.push(row);
        }
        s.wants_more()
    }

    /// A `FunctionCall` the policy refused.
    pub fn function_call_refused(&mut self, note: &QueryNote, verdict: &Verdict) -> Record {
        Record::Event(self.event("function-call", "", note, verdict))
    }

    /// The statement just begun could not be recorded durably and is
    /// refused instead: its record, as refused by the audit store.
    pub fn abandon_last(&mut self, why: &str) -> Option<Record> {
        let open = self.open.pop_back()?;
        let mut r = open.record?;
        r.status = EventStatus::Refused;
        r.reason = Some(why.to_string());
        r.decided_by = Some("audit-store".into());
        Some(Record::Event(r))
    }

    /// The first statement not yet answered (the one the server is answering).
    fn current(&mut self) -> Option<&mut Open> {
        self.open.iter_mut().find(|o| !o.answered)
    }

    /// `CommandComplete` with `tag`.
    pub fn command_complete(&mut self, tag: &str) {
        let rows = crate::protocols::postgres::codec::command_complete::rows(tag);
        if let Some(o) = self.current() {
            if let (Some(r), Some(n)) = (o.record.as_mut(), rows) {
                r.rows = Some(r.rows.unwrap_or(0) + n);
            }
            if !o.simple {
                o.answered = true;
                finish(o, EventStatus::Ok);
            }
        }
    }

    /// `EmptyQueryResponse` or `PortalSuspended`.
    pub fn empty_or_suspended(&mut self) {
        if let Some(o) = self.current().filter(|o| !o.simple) {
            o.answered = true;
            finish(o, EventStatus::Ok);
        }
    }

    /// An `ErrorResponse` from the server.
    pub fn server_error(&mut self, code: &str, message: &str) {
        if let Some(o) = self.current() {
            o.answered = true;
            if let Some(r) = o.record.as_mut() {
                r.sqlstate = Some(code.to_string());
                r.error = Some(message.to_string());
            }
            finish(o, EventStatus::Error);
        }
    }

    /// The gateway withheld the current result (its `CommandComplete` was
    /// replaced by an error with `reason`).
    pub fn withheld(&mut self, reason: &str) {
        if let Some(o) = self.current() {
            if let Some(r) = o.record.as_mut() {
                r.sqlstate = Some(
                    crate::protocols::postgres::codec::sqlstate::INSUFFICIENT_PRIVILEGE.to_string(),
                );
                r.error = Some(reason.to_string());
            }
            if !o.simple {
                o.answered = true;
            }
            finish(o, EventStatus::Withheld);
        }
    }

    /// `ReadyForQuery` number `seq`: every statement of batches up to it is
    /// settled. Returns their records.
    pub fn ready(&mut self, seq: u64) -> Vec<Record> {
        let mut out = Vec::new();
        while self.open.front().is_some_and(|o| o.batch <= seq) {
            let Some(mut o) = self.open.pop_front() else {
                break;
            };
            if !o.answered {
                // A Query whose statements all completed, or an Execute the
                // server skipped after an earlier error in its batch.
                let status = if o.simple {
                    EventStatus::Ok
                } else {
                    EventStatus::NotRun
                };
                finish(&mut o, status);
            }
            out.extend(o.record.map(Record::Event));
        }
        out
    }

    /// The session ended: statements still awaiting an answer are recorded
    /// as unknown.
    pub fn end(&mut self) -> Vec<Record> {
        self.open
            .drain(..)
            .filter_map(|mut o| {
                if !o.answered {
                    finish(&mut o, EventStatus::Unknown);
                }
                o.record.map(Record::Event)
            })
            .collect()
    }
}

/// Sets the outcome of `o` (kept if already worse than ok).
fn finish(o: &mut Open, status: EventStatus) {
    if let (Some(r), Some(s)) = (o.record.as_mut(), o.sample.as_ref()) {
        if !s.rows.is_empty() || !s.columns.is_empty() {
            r.sample = Some(s.to_json());
        }
    }
    if let Some(r) = o.record.as_mut() {
        if matches!(r.status, EventStatus::Started | EventStatus::Ok) {
            r.status = status;
        }
        r.duration_us = Some(o.started.elapsed().as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Recording;

    fn recorded() -> QueryNote {
        QueryNote {
            record: Some(Recording::default()),
            ..Default::default()
        }
    }

    fn events(records: Vec<Record>) -> Vec<EventRecord> {
        records
            .into_iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_simple_batch_with_two_statements_is_one_event_with_both_counts() {
        let mut l = Ledger::new(1, true, false);
        assert!(matches!(
            l.query("insert ...; insert ...", &recorded(), &Verdict::Allow, 1),
            Before::Forward
        ));
        l.command_complete("INSERT 0 2");
        l.command_complete("INSERT 0 3");
        let e = events(l.ready(1));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].rows, Some(5));
        assert_eq!(e[0].status, EventStatus::Ok);
    }

    #[test]
    fn extended_executions_are_matched_in_order_and_skipped_ones_are_not_run() {
        let mut l = Ledger::new(1, true, true);
        l.parse("s1", "select 1", &recorded(), &Verdict::Allow);
        l.parse("s2", "select 2", &QueryNote::default(), &Verdict::Allow);
        l.bind("p1", "s1");
        l.bind("p2", "s2");
        assert!(matches!(l.execute("p2", 1, None), Before::Forward));
        assert!(matches!(l.execute("p1", 1, None), Before::Durable(_)));
        assert!(matches!(l.execute("p1", 1, None), Before::Durable(_)));
        l.command_complete("SELECT 7"); // p2's, not recorded
        l.server_error("22012", "division by zero"); // first p1
        let e = events(l.ready(1));
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].seq, e[0].status), (1, EventStatus::Error));
        assert_eq!(e[0].sqlstate.as_deref(), Some("22012"));
        assert_eq!(e[0].rows, None);
        assert_eq!((e[1].seq, e[1].status), (2, EventStatus::NotRun));
    }

    #[test]
    fn refusals_are_recorded_even_when_not_tracking() {
        let mut l = Ledger::new(1, false, false);
        let v = Verdict::Deny {
            reason: "no".into(),
        };
        match l.query("delete from t", &QueryNote::default(), &v, 1) {
            Before::Write(Record::Event(e)) => {
                assert_eq!(e.status, EventStatus::Refused);
                assert_eq!(e.reason.as_deref(), Some("no"));
            }
            _ => panic!("a refusal must be written"),
        }
        assert!(l.open.is_empty());
    }
}
