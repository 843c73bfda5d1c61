//! The audit side of an SSH session: each exec, shell and subsystem is one
//! event of action `command` — its kind as the event's protocol detail
//! (`exec`, `shell`, `subsystem`), the command line or subsystem name as
//! its text — finished with the exit status or signal the host reported.
//!
//! Each event carries the plugins' verdict (who decided, by which rule, the
//! approval it ran under). The started event is queued before the request
//! reaches the host (so a shell open for hours is in the audit store while
//! it runs); on a `strict` target it is committed first, and if it cannot
//! be, the request is refused and recorded as refused. The finished event
//! completes it. A request the plugins refuse is one event, refused. An
//! `env` request is one event of kind `env`, with its verdict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::audit::AuditLog;
use crate::policy::{QueryNote, Verdict};
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

    /// The session's id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Queues a piece of a recording for the audit store.
    pub async fn store(&self, record: Record) {
        self.audit.record(record).await;
    }

    /// A new event of `kind` with `text`, allowed and started.
    fn event(&self, kind: &str, text: &str) -> EventRecord {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        EventRecord {
            session_id: self.session_id,
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
        }
    }

    /// A setting (`env`) the plugins judged: one finished event, refused
    /// with `refused` when it was.
    pub fn setting(
        self: &Arc<Self>,
        kind: &str,
        text: &str,
        verdict: &Verdict,
        note: &QueryNote,
        refused: Option<&str>,
    ) -> Finished {
        let mut record = self.event(kind, text);
        judge(&mut record, verdict, note);
        record.status = match refused {
            Some(why) => {
                record.reason = Some(why.to_string());
                EventStatus::Refused
            }
            None => EventStatus::Ok,
        };
        Finished {
            events: self.clone(),
            record,
        }
    }
}

/// Notes the plugins' verdict on an event.
fn judge(record: &mut EventRecord, verdict: &Verdict, note: &QueryNote) {
    record.verdict = verdict.label().into();
    record.decided_by = note.decided_by.clone();
    record.rule = note.rule.clone();
    record.reason = verdict.reason().map(str::to_string);
    record.approval_id = note.approval_id.clone();
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
    /// Notes the plugins' verdict (and the approval it ran under).
    pub fn judged(&mut self, verdict: &Verdict, note: &QueryNote) {
        judge(&mut self.record, verdict, note);
    }

    /// The command is refused before it reaches the host (by `decided_by`,
    /// when not the plugins that judged it): `why`.
    pub fn refused(mut self, decided_by: Option<&str>, why: &str) -> Finished {
        self.record.status = EventStatus::Refused;
        self.record.reason = Some(why.to_string());
        if let Some(by) = decided_by {
            self.record.decided_by = Some(by.to_string());
        }
        Finished {
            events: self.events,
            record: self.record,
        }
    }

    /// Queues the started event — on a strict target, commits it — and
    /// returns it for [`Commands::running`]; the refused event (to write)
    /// when it could not be committed (the command must not run): the
    /// client is told `why` on stderr.
    pub async fn commit(self) -> Result<EventRecord, (Finished, String)> {
        let kept = self.record.clone();
        let record = Record::Event(self.record.clone());
        if !self.events.strict {
            self.events.audit.record(record).await;
            return Ok(kept);
        }
        match self.events.audit.record_durably(record).await {
            Ok(()) => Ok(kept),
            Err(e) => {
                tracing::error!(error = %e, "SSH command refused: it could not be recorded");
                let why = format!("the command could not be recorded ({e}), and this target records every command before it runs");
                Err((self.refused(Some("audit-store"), &why), why))
            }
        }
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
    /// with `text`; `None` when the channel already asked for one (SSH
    /// allows one per channel, so the request is refused).
    pub fn start(&mut self, kind: &str, text: &str) -> Option<Started> {
        if self.ran {
            return None;
        }
        self.ran = true;
        Some(Started {
            events: self.events.clone(),
            record: self.events.event(kind, text),
        })
    }

    /// Whether the channel asked for its command already.
    pub fn asked(&self) -> bool {
        self.ran
    }

    /// The command's started event was committed and the command is sent
    /// to the host: what the host reports finishes it.
    pub fn running(&mut self, record: EventRecord) {
        self.open = Some((record, Instant::now()));
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

    /// The host's connection ended with the command still open: the host
    /// died or the network between went away, or the gateway closed it
    /// (the session's end says why).
    pub fn host_lost(&mut self) -> Option<Finished> {
        self.finish(
            EventStatus::Error,
            Some("the connection to the host ended before the command finished".into()),
            Instant::now(),
        )
    }

    /// A forward's connection ended: both sides closed it, or it ended
    /// early for the reason given.
    pub fn forward_closed(&mut self, early: Option<String>) -> Option<Finished> {
        let status = match early {
            None => EventStatus::Ok,
            Some(_) => EventStatus::Error,
        };
        self.finish(status, early, Instant::now())
    }

    /// The channel closed: a command still open ends without a status.
    pub fn closed(&mut self) -> Option<Finished> {
        self.finish(EventStatus::Unknown, None, Instant::now())
    }
}
