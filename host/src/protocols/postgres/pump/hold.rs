//! Statements held for approval while the client side keeps reading: what
//! the client sends meanwhile is kept for later, and a client that goes
//! away withdraws the request.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::super::approval;
use super::super::held;
use super::judge::denial_bytes;
use super::Shared;
use crate::policy::{QueryNote, Verdict};

/// Bytes a client may send while one of its statements is held before the
/// gateway stops reading (and the client waits).
const HELD_READ_LIMIT: usize = 1 << 20;

/// What became of an `Execute` of a held statement's portal.
pub(super) enum HeldRun {
    /// Approved: it runs under this request, as the approver saw it.
    Run { approval_id: String, shown: String },
    /// Refused with this error (already recorded in the audit trail).
    Refused(Bytes),
}

/// Judges one run of a held statement (`Ok`), or refuses an `Execute` of a
/// portal the tracker cannot vouch for (`Err` with why); records refusals.
pub(super) async fn judge_execution<R: AsyncRead + Unpin>(
    shared: &Shared,
    w: &mut ClientReader<R>,
    portal: &str,
    pending: Result<held::PendingRun, &'static str>,
) -> HeldRun {
    let (outcome, note, shown, reason) = match pending {
        Ok(run) => {
            let mut note = run.statement.note.clone();
            let reason = run.statement.reason.clone();
            let outcome = hold_reading(shared, w, &run.shown, &mut note, &reason).await;
            (outcome, note, run.shown, reason)
        }
        Err(why) => {
            let err = denial_bytes(&Verdict::Deny { reason: why.into() }).unwrap_or_default();
            (
                approval::Held::Refuse(err),
                QueryNote::default(),
                format!("EXECUTE portal {portal:?}"),
                why.to_string(),
            )
        }
    };
    match outcome {
        approval::Held::Run => HeldRun::Run {
            approval_id: note.approval_id.unwrap_or_default(),
            shown,
        },
        approval::Held::Refuse(err) => {
            let r = shared.ledger().execute_refused(
                &shown,
                &note,
                &Verdict::RequireApproval { reason },
            );
            shared.audit.record(r).await;
            HeldRun::Refused(err)
        }
    }
}

/// The client's side of the connection, as a statement held for approval
/// needs it: read on while it waits (what the client sends meanwhile is
/// kept), and whether it went away or cancelled (which withdraws the
/// request).
pub(super) struct ClientReader<R> {
    /// The client's side of the connection.
    pub rd: R,
    /// What the client sent while a statement was held, scanned next.
    pub early: BytesMut,
    /// Set when the client went away while a statement was held.
    pub client_gone: bool,
    /// Changes when the client sends a cancel request.
    pub cancel: tokio::sync::watch::Receiver<u64>,
}

/// Holds `sql` for approval (`reason`), still reading the client: bytes it
/// sends go to `early` (up to [`HELD_READ_LIMIT`]), and a client that goes
/// away cancels the wait.
pub(super) async fn hold_reading<R: AsyncRead + Unpin>(
    shared: &Shared,
    w: &mut ClientReader<R>,
    sql: &str,
    note: &mut QueryNote,
    reason: &str,
) -> approval::Held {
    let s = &shared.session;
    let holder = approval::Holder {
        approvals: &s.approvals,
        session_id: s.session_id,
        identity: &s.identity,
        target: &s.target,
        notices: &shared.notices,
        cancel: &mut w.cancel,
    };
    let hold = approval::hold(holder, sql, note, reason);
    tokio::pin!(hold);
    loop {
        tokio::select! {
            held = &mut hold => break held,
            n = w.rd.read_buf(&mut w.early), if !w.client_gone && w.early.len() < HELD_READ_LIMIT => {
                match n {
                    Ok(n) if n > 0 => super::count(&shared.from_client, n),
                    _ => {
                        w.client_gone = true;
                        s.cancel_signal.send_modify(|c| *c = c.wrapping_add(1));
                    }
                }
            }
        }
    }
}
