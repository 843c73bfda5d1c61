//! Holding a statement for approval, as a PostgreSQL client sees it: the
//! gateway's hold ([`crate::gateway::hold`]) settles it; in wait mode the
//! client is told at once (a `NoticeResponse`), and a statement that does
//! not run gets an `ErrorResponse` that says why and what to do.

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use crate::approvals::{Approvals, Requester};
use crate::gateway::{self, hold::HoldRefusal, hold::Settled};
use crate::identity::Identity;
use crate::policy::QueryNote;
use crate::protocols::postgres::codec::error_response::{ErrorFields, Severity};
use crate::protocols::postgres::codec::sqlstate;

/// What the relay does with a held statement.
pub enum Held {
    /// Run it; it was approved (or a grant covers it).
    Run,
    /// Refuse it with this error.
    Refuse(Bytes),
}

/// Who the session is, for approval requests.
pub struct Holder<'a> {
    /// The gateway's approval requests.
    pub approvals: &'a Approvals,
    /// The session.
    pub session_id: u64,
    /// Its identity.
    pub identity: &'a Identity,
    /// Its target.
    pub target: &'a str,
    /// Where notices for the client go (written between messages).
    pub notices: &'a mpsc::UnboundedSender<Bytes>,
    /// Changes when the client sends a cancel request.
    pub cancel: &'a mut watch::Receiver<u64>,
}

fn encode(fields: ErrorFields) -> Bytes {
    let mut b = BytesMut::new();
    fields.encode(&mut b);
    b.freeze()
}

/// Settles a statement a policy holds for approval (`reason`) through the
/// gateway's hold, and words the outcome for a PostgreSQL client; sets
/// `note.approval_id` to the request it waited for or ran under.
pub async fn hold(h: Holder<'_>, sql: &str, note: &mut QueryNote, reason: &str) -> Held {
    let who = Requester {
        session_id: h.session_id,
        identity: h.identity,
        target: h.target,
        protocol: "postgres",
    };
    let notices = h.notices;
    let waiting = |id: &str| {
        let notice = ErrorFields {
            severity: Severity::Notice,
            code: "00000".into(),
            message: format!("waiting for approval {id}: {reason}"),
            detail: None,
            hint: Some(format!(
                "approvers can run: portcullis approvals approve {id} (or deny); cancel the statement to stop waiting"
            )),
        };
        let _ = notices.send(encode(notice));
    };
    match gateway::hold::hold(h.approvals, who, sql, note, reason, waiting, h.cancel).await {
        Settled::Run => Held::Run,
        Settled::Refused(why) => Held::Refuse(encode(refusal(why, reason))),
    }
}

/// The `ErrorResponse` for a held statement that does not run.
fn refusal(why: HoldRefusal, reason: &str) -> ErrorFields {
    match why {
        HoldRefusal::NotRequested(e) => ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("statement needs approval ({reason}), but no request was made: {e}"),
        )
        .with_hint("ask an approver to decide your pending requests (portcullis approvals list), then run it again"),
        HoldRefusal::NotStored => ErrorFields::error(
            sqlstate::SYSTEM_ERROR,
            format!("statement needs approval ({reason}), but the gateway could not record the request"),
        )
        .with_hint("try again; tell the gateway operator if it persists"),
        HoldRefusal::Requested { id, grant_minutes } => ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("statement needs approval: {reason}; approval request {id} was created"),
        )
        .with_hint(format!(
            "ask an approver to run: portcullis approvals approve {id}; once approved, run the same statement again within {grant_minutes} minutes"
        )),
        HoldRefusal::Denied { id, by } => ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("approval {id} was denied by {by}; the statement was not run"),
        )
        .with_hint("talk to the approver, or change the statement"),
        HoldRefusal::Expired { id, timeout_secs } => ErrorFields::error(
            sqlstate::QUERY_CANCELED,
            format!(
                "approval {id} timed out after {timeout_secs} seconds without a decision; the statement was not run"
            ),
        )
        .with_hint("run it again to ask again, or reach an approver first"),
        HoldRefusal::Cancelled { id } => ErrorFields::error(
            sqlstate::QUERY_CANCELED,
            format!("canceling statement due to user request (approval {id} withdrawn)"),
        ),
    }
}
