//! Holding an action for approval, whatever its protocol: use a grant if
//! one covers it (retry mode), otherwise open a request; in wait mode tell
//! the client (through the protocol's `waiting` callback) and wait for the
//! decision, the request's expiry, or the client's cancel. The protocol
//! words the outcome its own way (PostgreSQL: a notice, then an
//! `ErrorResponse` with the SQLSTATE for each refusal).

use tokio::sync::watch;

use crate::approvals::{Approvals, NewRequest, RequestError, Requester, Waited};
use crate::policy::QueryNote;

/// How a held action was settled.
#[derive(Debug)]
pub enum Settled {
    /// Run it: it was approved, or a grant covers it.
    Run,
    /// Do not run it.
    Refused(HoldRefusal),
}

/// Why a held action does not run.
#[derive(Debug)]
pub enum HoldRefusal {
    /// The requester may not open another request now.
    NotRequested(RequestError),
    /// The request could not be stored.
    NotStored,
    /// Retry mode: request `id` was opened; the same action may run once
    /// approved, within `grant_minutes`.
    Requested {
        /// The request.
        id: String,
        /// How long an approval lets the action run.
        grant_minutes: u32,
    },
    /// An approver denied request `id`; `by` names them (and their comment).
    Denied {
        /// The request.
        id: String,
        /// Who denied it, with their comment.
        by: String,
    },
    /// Nobody decided request `id` within `timeout_secs`.
    Expired {
        /// The request.
        id: String,
        /// How long it waited.
        timeout_secs: u32,
    },
    /// The client withdrew request `id` (it cancelled while waiting).
    Cancelled {
        /// The request.
        id: String,
    },
}

/// Settles an action (`text`, as the approver will see it) a policy holds
/// for approval (`reason`); sets `note.approval_id` to the request it
/// waited for or ran under. `waiting` is called with the request id before
/// the wait begins; `cancel` changes when the client cancels.
pub async fn hold(
    approvals: &Approvals,
    who: Requester<'_>,
    text: &str,
    note: &mut QueryNote,
    reason: &str,
    waiting: impl FnOnce(&str),
    cancel: &mut watch::Receiver<u64>,
) -> Settled {
    let policy = note.approval.unwrap_or_default();
    let fingerprint = note
        .summary
        .as_ref()
        .map(|s| s.fingerprint.clone())
        .unwrap_or_default();
    let session_id = who.session_id;
    if !policy.wait {
        if let Some(id) = approvals.use_grant(who, text, &fingerprint).await {
            tracing::info!(session = session_id, approval = %id, "action runs under an approval grant");
            note.approval_id = Some(id);
            return Settled::Run;
        }
    }
    let new = NewRequest {
        sql: text.to_string(),
        fingerprint,
        plugin: note.decided_by.clone(),
        rule: note.rule.clone(),
        reason: reason.to_string(),
        policy,
    };
    let (record, waiter) = match approvals.request(who, new).await {
        Ok(r) => r,
        Err(e @ (RequestError::TooMany { .. } | RequestError::TooFrequent { .. })) => {
            return Settled::Refused(HoldRefusal::NotRequested(e));
        }
        Err(e) => {
            tracing::error!(error = %e, "approval request could not be stored; action refused");
            return Settled::Refused(HoldRefusal::NotStored);
        }
    };
    let id = record.id.clone();
    note.approval_id = Some(id.clone());
    let Some(waiter) = waiter else {
        return Settled::Refused(HoldRefusal::Requested {
            id,
            grant_minutes: policy.grant_minutes,
        });
    };
    waiting(&id);
    match approvals.wait(&record, waiter, cancel).await {
        Waited::Approved(_) => Settled::Run,
        Waited::Denied(r) => {
            let by = r
                .votes
                .iter()
                .find(|v| !v.approve)
                .map(|v| match &v.comment {
                    Some(c) => format!("{}: {c}", v.approver),
                    None => v.approver.clone(),
                })
                .unwrap_or_else(|| "an approver".into());
            Settled::Refused(HoldRefusal::Denied { id, by })
        }
        Waited::Expired => Settled::Refused(HoldRefusal::Expired {
            id,
            timeout_secs: policy.timeout_secs,
        }),
        Waited::Cancelled => Settled::Refused(HoldRefusal::Cancelled { id }),
    }
}

/// Why a held action does not run, in words for the client: `reason` is
/// the policy's, `not_run` says what did not happen ("the command was not
/// run"), `withdrawn` why a withdrawn request was ("the channel closed
/// while it waited").
pub fn refusal_words(why: HoldRefusal, reason: &str, not_run: &str, withdrawn: &str) -> String {
    match why {
        HoldRefusal::NotRequested(e) => format!(
            "this needs approval ({reason}), but no request was made: {e}; ask an approver to decide your pending requests (portcullis approvals list), then try again"
        ),
        HoldRefusal::NotStored => format!(
            "this needs approval ({reason}), but the gateway could not record the request; try again, and tell the gateway operator if it persists"
        ),
        HoldRefusal::Requested { id, grant_minutes } => format!(
            "this needs approval: {reason}; approval request {id} was created. Ask an approver to run: portcullis approvals approve {id}; once approved, run the same command again within {grant_minutes} minutes"
        ),
        HoldRefusal::Denied { id, by } => {
            format!("approval {id} was denied by {by}; {not_run}")
        }
        HoldRefusal::Expired { id, timeout_secs } => format!(
            "approval {id} timed out after {timeout_secs} seconds without a decision; {not_run}. Run it again to ask again"
        ),
        HoldRefusal::Cancelled { id } => {
            format!("approval {id} was withdrawn: {withdrawn}")
        }
    }
}
