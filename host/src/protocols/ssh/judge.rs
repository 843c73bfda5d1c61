//! What the target's plugins say about an SSH request, and holding one for
//! approval: the session's policy judges exec, shell, subsystem and env
//! requests; a request held for approval goes through the gateway's hold
//! ([`crate::gateway::hold`]), worded for an SSH client (stderr lines).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::sftp::FileOp;
use super::typed::TypedLine;
use crate::approvals::{Approvals, Requester};
use crate::gateway::hold::{self, HoldRefusal, Settled};
use crate::identity::Identity;
use crate::policy::{
    OutputWatch, QueryNote, SessionInfo, SessionPolicy, SshRequest, SshStream, Verdict,
};

/// A session's policy, shared by its channels; `None` once the session
/// has ended.
pub type SharedPolicy = Arc<Mutex<Option<Box<dyn SessionPolicy>>>>;

/// Judges one session's requests.
pub struct Judge {
    policy: SharedPolicy,
    approvals: Arc<Approvals>,
    session_id: u64,
    identity: Identity,
    target: String,
}

/// How a request held for approval ended, for the client.
pub enum HoldOutcome {
    /// Run it (approved, or a grant covers it); the request it ran under.
    Run,
    /// Do not run it: why, in words for the client's stderr.
    Refused(String),
}

impl Judge {
    /// The judge of the session `info` describes.
    pub fn new(policy: SharedPolicy, approvals: Arc<Approvals>, info: &SessionInfo) -> Self {
        Self {
            policy,
            approvals,
            session_id: info.session_id,
            identity: info.identity.clone(),
            target: info.target.clone(),
        }
    }

    /// What `ask` gets from the session's policy; a refusal once the
    /// session has ended.
    fn verdict(&self, ask: impl FnOnce(&mut dyn SessionPolicy) -> Verdict) -> Verdict {
        let mut policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        match policy.as_mut() {
            Some(p) => ask(p.as_mut()),
            None => Verdict::Deny {
                reason: "the session has ended".into(),
            },
        }
    }

    /// The plugins' verdict on `request`; `note` says who decided.
    pub fn decide(&self, request: &SshRequest, note: &mut QueryNote) -> Verdict {
        self.verdict(|p| p.on_ssh_request(request, note))
    }

    /// The plugins' verdict on an SFTP operation.
    pub fn decide_file(&self, operation: &FileOp, note: &mut QueryNote) -> Verdict {
        self.verdict(|p| p.on_file_operation(operation, note))
    }

    /// The plugins' verdict on a line typed in a shell.
    pub fn decide_line(&self, line: &TypedLine, note: &mut QueryNote) -> Verdict {
        self.verdict(|p| p.on_command_line(line, note))
    }

    /// Which plugins watch the output of `request` (none once the session
    /// has ended).
    pub fn watch_output(&self, request: &SshRequest) -> OutputWatch {
        let mut policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        match policy.as_mut() {
            Some(p) => p.watch_ssh_output(request),
            None => OutputWatch::default(),
        }
    }

    /// Output `watch` covers, shown to its plugins: what to send instead,
    /// if anything (a marker once the session's plugins are gone).
    pub fn output(&self, watch: &OutputWatch, stream: SshStream, text: &str) -> Option<String> {
        let mut policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        match policy.as_mut() {
            Some(p) => p.on_ssh_output(watch, stream, text),
            None => Some("[Portcullis: output withheld: the session has ended]\r\n".into()),
        }
    }

    /// Holds `request` for approval (`reason`): `waiting` is called with
    /// the request's id before a wait begins; `cancel` changes when the
    /// client gives up (closes the channel).
    pub async fn hold(
        &self,
        request: &SshRequest,
        note: &mut QueryNote,
        reason: &str,
        waiting: impl FnOnce(&str),
        cancel: &mut watch::Receiver<u64>,
    ) -> HoldOutcome {
        let who = Requester {
            session_id: self.session_id,
            identity: &self.identity,
            target: &self.target,
            protocol: "ssh",
        };
        let text = request.text();
        match hold::hold(&self.approvals, who, &text, note, reason, waiting, cancel).await {
            Settled::Run => HoldOutcome::Run,
            Settled::Refused(why) => HoldOutcome::Refused(refusal(why, reason)),
        }
    }
}

/// Why a request that cannot wait for an approver is refused, if it is:
/// a deny's reason, or an approval's followed by `(cannot_wait)`.
pub fn refusal_now(verdict: &Verdict, cannot_wait: &str) -> Option<String> {
    match verdict {
        Verdict::Allow => None,
        Verdict::Deny { reason } => Some(reason.clone()),
        Verdict::RequireApproval { reason } => Some(format!("{reason} ({cannot_wait})")),
    }
}

/// Takes the session's policy out when the session ends (its channels'
/// requests are refused from then on).
pub fn take(policy: &SharedPolicy) -> Option<Box<dyn SessionPolicy>> {
    policy.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// The line a client waiting for approval `id` sees on stderr.
pub fn waiting_line(id: &str, reason: &str) -> String {
    format!(
        "waiting for approval {id}: {reason} (approvers can run: portcullis approvals approve {id}; close the session to stop waiting)"
    )
}

/// Why a held request does not run, in words for the client.
fn refusal(why: HoldRefusal, reason: &str) -> String {
    hold::refusal_words(
        why,
        reason,
        "the command was not run",
        "the channel closed while it waited",
    )
}
