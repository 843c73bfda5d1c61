//! The audit side of an SSH session: each exec, shell and subsystem is one
//! event of action `command` — its kind as the event's protocol detail
//! (`exec`, `shell`, `subsystem`), the command line or subsystem name as
//! its text — finished with the exit status or signal the host reported.
//!
//! The started event is queued before the request reaches the host (so a
//! shell open for hours is in the audit store while it runs); on a
//! `strict` target it is committed first, and if it cannot be, the request
//! is refused and recorded as refused. The finished event completes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::audit::AuditLog;
use crate::store::{now_micros, Action, EventRecord, EventStatus, Record};

/// What every channel of one session shares for recording.
pub struct SessionEvents {
    audit: Arc<AuditLog>,
    session_id: u64,
    seq: AtomicU64,
    strict: bool,
}

impl SessionEvents {
    /// Events of session `session_id`; `strict`: commit each before it runs.
    pub fn new(audit: Arc<AuditLog>, session_id: u64, strict: bool) -> Arc<Self> {
        Arc::new(Self {
            audit,
            session_id,
            seq: AtomicU64::new(0),
            strict,
        })
    }
}

/// The command running on one channel (a channel runs at most one).
pub struct Commands {
    events: Arc<SessionEvents>,
    open: Option<(EventRecord, Instant)>,
    ran: bool,
}

/// A command that may start once [`Started::commit`] says so.
pub struct Started {
    events: Arc<SessionEvents>,
    record: EventRecord,
}

impl Started {
    /// Queues the started event — on a strict target, commits it; why not,
    /// when it could not be (the command must not run).
    pub async fn commit(self) -> Result<(), String> {
        let record = Record::Event(self.record);
        if !self.events.strict {
            self.events.audit.record(record).await;
            return Ok(());
        }
        self.events
            .audit
            .record_durably(record)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "SSH command refused: it could not be recorded");
                format!("the command could not be recorded ({e}), and this target records every command before it runs")
            })
    }
}

/// A finished command's event, to be written.
pub struct Finished {
    events: Arc<SessionEvents>,
    record: EventRecord,
}

/// Queues finished commands' events for the audit store (an `Option` of
/// one, as [`Commands`] returns them).
pub async fn write(finished: impl IntoIterator<Item = Finished>) {
    for f in finished {
        f.events.audit.record(Record::Event(f.record)).await;
    }
}

impl Commands {
    /// A channel's recorder.
    pub fn new(events: Arc<SessionEvents>) -> Self {
        Self {
            events,
            open: None,
            ran: false,
        }
    }

    /// Starts recording a command of `kind` (`exec`, `shell`, `subsystem`)
    /// with `text`; `None` when the channel already ran one (SSH allows one
    /// per channel, so the request is refused).
    pub fn start(&mut self, kind: &str, text: &str) -> Option<Started> {
        if self.ran {
            return None;
        }
        self.ran = true;
        let seq = self.events.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let record = EventRecord {
            session_id: self.events.session_id,
            seq,
            at: now_micros(),
            action: Action::Command,
            protocol: kind.into(),
            sql: text.into(),
            fingerprint: "".into(),
            kinds: Vec::new().into(),
            tables_read: Vec::new().into(),
            tables_written: Vec::new().into(),
            verdict: "allow".into(),
            decided_by: None,
            rule: None,
            reason: None,
            status: EventStatus::Started,
            duration_us: None,
            rows: None,
            sqlstate: None,
            error: None,
            sample: None,
            approval_id: None,
        };
        self.open = Some((record.clone(), Instant::now()));
        Some(Started {
            events: self.events.clone(),
            record,
        })
    }

    fn finish(
        &mut self,
        status: EventStatus,
        error: Option<String>,
        at: Instant,
    ) -> Option<Finished> {
        let (mut record, started) = self.open.take()?;
        record.status = status;
        record.error = error;
        record.duration_us = Some(at.saturating_duration_since(started).as_micros() as u64);
        Some(Finished {
            events: self.events.clone(),
            record,
        })
    }

    /// The command was refused before it reached the host: `why`.
    pub fn refused(&mut self, why: &str) -> Option<Finished> {
        let (mut record, _) = self.open.take()?;
        record.status = EventStatus::Refused;
        record.reason = Some(why.to_string());
        record.decided_by = Some("audit-store".into());
        Some(Finished {
            events: self.events.clone(),
            record,
        })
    }

    /// The host refused the request (it answered with a failure).
    pub fn host_refused(&mut self) -> Option<Finished> {
        self.finish(
            EventStatus::Error,
            Some("the host refused the request".into()),
            Instant::now(),
        )
    }

    /// The host reported the command's exit status.
    pub fn exited(&mut self, status: u32, at: Instant) -> Option<Finished> {
        if status == 0 {
            self.finish(EventStatus::Ok, None, at)
        } else {
            self.finish(
                EventStatus::Error,
                Some(format!("exit status {status}")),
                at,
            )
        }
    }

    /// The host reported the command was killed by a signal.
    pub fn signalled(&mut self, signal: &str, at: Instant) -> Option<Finished> {
        self.finish(
            EventStatus::Error,
            Some(format!("killed by signal {signal}")),
            at,
        )
    }

    /// The channel closed: a command still open ends without a status.
    pub fn closed(&mut self) -> Option<Finished> {
        self.finish(EventStatus::Unknown, None, Instant::now())
    }
}
