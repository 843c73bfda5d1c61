//! The audit side of a Kubernetes session: each API request is one event
//! of action `request` — its verb as the event's protocol detail, the
//! method and path as its text, the resource as the table it reads or
//! writes — finished with the API server's status code.
//!
//! The started event is queued before the request is forwarded; on a
//! `strict` target it is committed first, and a request that cannot be
//! recorded is refused. A refused request is one event, refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::request::RequestInfo;
use crate::audit::AuditLog;
use crate::policy::{QueryNote, Verdict};
use crate::store::{now_micros, Action, EventRecord, EventStatus, Record};

/// The events of one session.
pub struct SessionEvents {
    audit: Arc<AuditLog>,
    session_id: u64,
    seq: AtomicU64,
    strict: bool,
}

/// Verbs that change what the cluster holds.
const WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

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

    /// Queues a piece of a recording for the audit store.
    pub async fn store(&self, record: Record) {
        self.audit.record(record).await;
    }

    /// A new event for `request` (`text`: method, path and query).
    pub fn start(self: &Arc<Self>, request: &RequestInfo, text: &str) -> Started {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let object = resource_name(request);
        let (read, written) = match (&object, WRITES.contains(&request.verb.as_str())) {
            (Some(o), true) => (Vec::new(), vec![o.clone()]),
            (Some(o), false) => (vec![o.clone()], Vec::new()),
            (None, _) => (Vec::new(), Vec::new()),
        };
        Started {
            events: self.clone(),
            at: Instant::now(),
            record: EventRecord {
                session_id: self.session_id,
                seq,
                at: now_micros(),
                action: Action::Request,
                protocol: request.verb.clone().into(),
                sql: text.into(),
                fingerprint: "".into(),
                kinds: vec![request.verb.clone()].into(),
                tables_read: read.into(),
                tables_written: written.into(),
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
            },
        }
    }
}

/// `namespace/resource/name` (`resource` with its group, `pods`,
/// `deployments.apps`, and `/subresource`), what the request is about.
pub fn resource_name(r: &RequestInfo) -> Option<String> {
    let resource = r.resource.as_deref()?;
    let mut s = String::new();
    if let Some(ns) = &r.namespace {
        s.push_str(ns);
        s.push('/');
    }
    s.push_str(resource);
    if !r.api_group.is_empty() {
        s.push('.');
        s.push_str(&r.api_group);
    }
    if let Some(sub) = &r.subresource {
        s.push('/');
        s.push_str(sub);
    }
    if let Some(n) = &r.name {
        s.push('/');
        s.push_str(n);
    }
    Some(s)
}

/// A request's event between its verdict and its answer.
pub struct Started {
    events: Arc<SessionEvents>,
    at: Instant,
    record: EventRecord,
}

impl Started {
    /// The event's number in its session.
    pub fn seq(&self) -> u64 {
        self.record.seq
    }

    /// Notes the plugins' verdict (who decided, by which rule, the
    /// approval it runs under).
    pub fn judged(&mut self, verdict: &Verdict, note: &QueryNote) {
        self.record.verdict = verdict.label().into();
        self.record.decided_by = note.decided_by.clone();
        self.record.rule = note.rule.clone();
        self.record.reason = verdict.reason().map(str::to_string);
        self.record.approval_id = note.approval_id.clone();
    }

    /// The request is refused before it reaches the API server, by the
    /// plugins that judged it or by `decided_by` (the gateway itself), for
    /// `why`.
    pub async fn refused(mut self, decided_by: Option<&str>, why: &str) {
        self.record.status = EventStatus::Refused;
        if let Some(by) = decided_by {
            self.record.decided_by = Some(by.to_string());
            self.record.verdict = "deny".into();
        }
        self.record.reason = Some(why.to_string());
        self.events.audit.record(Record::Event(self.record)).await;
    }

    /// Queues the started event — on a strict target, commits it — before
    /// the request is forwarded; `Err` says why it could not be committed
    /// (the request must not be sent; the refusal is recorded).
    pub async fn commit(self) -> Result<Self, String> {
        let record = Record::Event(self.record.clone());
        if !self.events.strict {
            self.events.audit.record(record).await;
            return Ok(self);
        }
        match self.events.audit.record_durably(record).await {
            Ok(()) => Ok(self),
            Err(e) => {
                tracing::error!(error = %e, "Kubernetes request refused: it could not be recorded");
                let why = format!("the request could not be recorded ({e}), and this target records every request before it is sent");
                self.refused(Some("audit-store"), &why).await;
                Err(why)
            }
        }
    }

    /// The API server answered with `status` (its head; a watch goes on
    /// streaming after this), or could not be reached, or a stream ended
    /// in failure (`error`: the event is an error).
    pub async fn answered(mut self, status: Option<u16>, error: Option<String>) {
        self.record.status = match (status, &error) {
            (Some(s), None) if s < 400 => EventStatus::Ok,
            _ => EventStatus::Error,
        };
        self.record.error = match (status, error) {
            (_, Some(e)) => Some(e),
            (Some(s), None) if s >= 400 => Some(format!("HTTP {s}")),
            _ => None,
        };
        self.record.duration_us = Some(self.at.elapsed().as_micros() as u64);
        self.events.audit.record(Record::Event(self.record)).await;
    }
}
