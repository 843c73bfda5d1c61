//! What the target's plugins say about a Kubernetes request, and approvals:
//! a request held for approval is never held open (clients and load
//! balancers give up on a request that waits minutes); it is refused with
//! the approval request's id, and once approved the same request from the
//! same identity runs within the grant's window (retry mode, whatever the
//! plugin asked).

use crate::approvals::{Approvals, Requester};
use crate::gateway::hold::{self, HoldRefusal, Settled};
use crate::identity::Identity;
use crate::policy::{HttpRequest, QueryNote, SessionPolicy, Verdict};

/// The outcome of judging one request.
pub enum Judged {
    /// Forward it (the note says who decided and under which approval).
    Forward,
    /// Refuse it with this message (the verdict's label for the record).
    Refused {
        /// `deny` or `require-approval`.
        verdict: &'static str,
        /// What the client is told.
        message: String,
    },
}

/// The plugins' verdict on `request`; a refusal once the session has
/// ended (`policy` is `None`).
pub fn verdict(
    policy: Option<&mut Box<dyn SessionPolicy>>,
    request: &HttpRequest,
    note: &mut QueryNote,
) -> Verdict {
    match policy {
        Some(p) => p.on_http_request(request, note),
        None => Verdict::Deny {
            reason: "the session has ended".into(),
        },
    }
}

/// Settles a verdict: a deny refuses; an approval is looked up or
/// requested (retry mode). `text` is what an approver sees and what a
/// later identical request must match.
pub async fn settle(
    approvals: &Approvals,
    who: Requester<'_>,
    verdict: Verdict,
    text: &str,
    note: &mut QueryNote,
) -> Judged {
    match verdict {
        Verdict::Allow => Judged::Forward,
        Verdict::Deny { reason } => Judged::Refused {
            verdict: "deny",
            message: reason,
        },
        Verdict::RequireApproval { reason } => {
            let mut policy = note.approval.unwrap_or_default();
            policy.wait = false;
            note.approval = Some(policy);
            let mut never = tokio::sync::watch::channel(0u64).1;
            match hold::hold(approvals, who, text, note, &reason, |_| {}, &mut never).await {
                Settled::Run => Judged::Forward,
                Settled::Refused(why) => Judged::Refused {
                    verdict: "require-approval",
                    message: refusal(why, &reason),
                },
            }
        }
    }
}

/// Who asks, for approvals.
pub fn requester<'a>(session_id: u64, identity: &'a Identity, target: &'a str) -> Requester<'a> {
    Requester {
        session_id,
        identity,
        target,
        protocol: "kubernetes",
    }
}

/// Why a held request does not run, in words for the client.
fn refusal(why: HoldRefusal, reason: &str) -> String {
    hold::refusal_words(
        why,
        reason,
        "the request was not sent",
        "the request was not sent",
    )
}
