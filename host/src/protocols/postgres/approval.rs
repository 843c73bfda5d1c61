//! Holding a statement for approval, as the relay sees it: use a grant if
//! one covers the statement (retry mode), otherwise open a request; in wait
//! mode tell the client at once (a `NoticeResponse`) and wait for the
//! decision, the request's expiry, or the client's cancel request.

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use crate::approvals::{Approvals, NewRequest, RequestError, Requester, Waited};
use crate::identity::Identity;
use crate::policy::QueryNote;
use crate::protocols::postgres::codec::error_response::{ErrorFields, Severity};
use crate::protocols::postgres::codec::sqlstate;

/// SQLSTATE of a statement cancelled (by the client, or a timeout).
const QUERY_CANCELED: &str = "57014";

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

/// Settles a statement a policy holds for approval (`reason`); sets
/// `note.approval_id` to the request it waited for or ran under.
pub async fn hold(h: Holder<'_>, sql: &str, note: &mut QueryNote, reason: &str) -> Held {
    let policy = note.approval.unwrap_or_default();
    let fingerprint = note
        .summary
        .as_ref()
        .map(|s| s.fingerprint.clone())
        .unwrap_or_default();
    let who = Requester {
        session_id: h.session_id,
        identity: h.identity,
        target: h.target,
    };
    if !policy.wait {
        if let Some(id) = h.approvals.use_grant(who, sql, &fingerprint).await {
            tracing::info!(session = h.session_id, approval = %id, "statement runs under an approval grant");
            note.approval_id = Some(id);
            return Held::Run;
        }
    }
    let new = NewRequest {
        sql: sql.to_string(),
        fingerprint,
        plugin: note.decided_by.clone(),
        rule: note.rule.clone(),
        reason: reason.to_string(),
        policy,
    };
    let (record, waiter) = match h.approvals.request(who, new).await {
        Ok(r) => r,
        Err(e @ (RequestError::TooMany { .. } | RequestError::TooFrequent { .. })) => {
            return Held::Refuse(encode(
                ErrorFields::error(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("statement needs approval ({reason}), but no request was made: {e}"),
                )
                .with_hint("ask an approver to decide your pending requests (portcullis approvals list), then run it again"),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "approval request could not be stored; statement refused");
            return Held::Refuse(encode(
                ErrorFields::error(
                    sqlstate::SYSTEM_ERROR,
                    format!("statement needs approval ({reason}), but the gateway could not record the request"),
                )
                .with_hint("try again; tell the gateway operator if it persists"),
            ));
        }
    };
    let id = record.id.clone();
    note.approval_id = Some(id.clone());
    let Some(waiter) = waiter else {
        return Held::Refuse(encode(
            ErrorFields::error(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("statement needs approval: {reason}; approval request {id} was created"),
            )
            .with_hint(format!(
                "ask an approver to run: portcullis approvals approve {id}; once approved, run the same statement again within {} minutes",
                policy.grant_minutes
            )),
        ));
    };
    let notice = ErrorFields {
        severity: Severity::Notice,
        code: "00000".into(),
        message: format!("waiting for approval {id}: {reason}"),
        detail: None,
        hint: Some(format!(
            "approvers can run: portcullis approvals approve {id} (or deny); cancel the statement to stop waiting"
        )),
    };
    let _ = h.notices.send(encode(notice));
    match h.approvals.wait(&record, waiter, h.cancel).await {
        Waited::Approved(_) => Held::Run,
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
            Held::Refuse(encode(
                ErrorFields::error(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("approval {id} was denied by {by}; the statement was not run"),
                )
                .with_hint("talk to the approver, or change the statement"),
            ))
        }
        Waited::Expired => Held::Refuse(encode(
            ErrorFields::error(
                QUERY_CANCELED,
                format!(
                    "approval {id} timed out after {} seconds without a decision; the statement was not run",
                    policy.timeout_secs
                ),
            )
            .with_hint("run it again to ask again, or reach an approver first"),
        )),
        Waited::Cancelled => Held::Refuse(encode(ErrorFields::error(
            QUERY_CANCELED,
            format!("canceling statement due to user request (approval {id} withdrawn)"),
        ))),
    }
}
