//! Announces approval requests and decisions with a JSON POST — the request
//! as JSON, or a Slack-compatible `{"text": ...}` — without holding up the
//! session: notifications go through a bounded queue to one delivery task,
//! so a slow or dead endpoint costs at most [`QUEUE_CAPACITY`] queued
//! notifications (later ones are dropped and logged, never awaited), and
//! failures are logged.
//!
//! Chat text is built from what requesters control (the statement, their
//! name) and what rules say (the reason): every such piece is escaped for
//! Slack's markup, so a statement cannot close its code block, mention a
//! channel or plant a link.

use std::sync::OnceLock;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::WebhookFormat;
use crate::http_client::HttpClient;
use crate::store::{ApprovalRecord, Vote};

/// Notifications waiting for delivery before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;

/// Longest statement shown in a chat message, in characters.
const MAX_SQL_IN_TEXT: usize = 2000;

/// One notification to deliver.
struct Notification {
    approval: String,
    body: Bytes,
}

/// A configured webhook.
pub struct Webhook {
    url: String,
    format: WebhookFormat,
    http: HttpClient,
    /// The delivery queue, started on first use (inside the runtime).
    queue: OnceLock<mpsc::Sender<Notification>>,
}

/// Escapes `text` for Slack's markup: `&`, `<` and `>` as entities (no
/// mentions, no links) and the backtick as a look-alike (no code span or
/// block can be closed or opened).
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{02CB}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` characters, marked when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!(
            "{}… (cut; the full statement is in the request)",
            &text[..at]
        ),
        None => text.to_string(),
    }
}

impl Webhook {
    /// A webhook posting to `url`.
    pub fn new(url: String, format: WebhookFormat, http: HttpClient) -> Self {
        Self {
            url,
            format,
            http,
            queue: OnceLock::new(),
        }
    }

    /// The chat text of a new request.
    pub fn requested_text(r: &ApprovalRecord) -> String {
        let who = r.requester.chain_text();
        format!(
            "Approval {id} requested by {who} on {target}: {reason}\n```{sql}```\nApprove: portcullis approvals approve {id}\nDeny: portcullis approvals deny {id}",
            id = slack_escape(&r.id),
            who = slack_escape(&who),
            target = slack_escape(&r.target),
            reason = slack_escape(&r.reason),
            sql = slack_escape(&shorten(&r.sql, MAX_SQL_IN_TEXT)),
        )
    }

    /// A new request.
    pub fn requested(&self, r: &ApprovalRecord) {
        self.post("approval.requested", r, Self::requested_text(r));
    }

    /// A decided request.
    pub fn decided(&self, r: &ApprovalRecord) {
        let by: Vec<String> = r.votes.iter().map(Vote::chain_text).collect();
        let text = format!(
            "Approval {} is {} ({})",
            slack_escape(&r.id),
            r.status.as_str(),
            slack_escape(&by.join(", "))
        );
        self.post("approval.decided", r, text);
    }

    fn post(&self, event: &str, r: &ApprovalRecord, text: String) {
        let body = match self.format {
            WebhookFormat::Json => serde_json::json!({
                "event": event,
                "approval": r,
                "approve_command": format!("portcullis approvals approve {}", r.id),
                "deny_command": format!("portcullis approvals deny {}", r.id),
            }),
            WebhookFormat::Slack => serde_json::json!({ "text": text }),
        };
        let note = Notification {
            approval: r.id.clone(),
            body: Bytes::from(body.to_string()),
        };
        if let Err(e) = self.queue().try_send(note) {
            crate::metrics::global().webhook_dropped();
            tracing::warn!(approval = %r.id, event, reason = %e, "approval webhook queue is full or closed; notification dropped");
        }
    }

    /// The queue, with its delivery task started on first use.
    fn queue(&self) -> &mpsc::Sender<Notification> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(deliver(self.http.clone(), self.url.clone(), rx));
            tx
        })
    }
}

/// Delivers queued notifications one at a time, in order.
async fn deliver(http: HttpClient, url: String, mut rx: mpsc::Receiver<Notification>) {
    while let Some(n) = rx.recv().await {
        let sent = http
            .send(
                hyper::Method::POST,
                &url,
                &[],
                Some(("application/json", n.body)),
            )
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => {
                tracing::warn!(approval = %n.approval, status = resp.status().as_u16(), "approval webhook refused the notification")
            }
            Err(e) => {
                tracing::warn!(approval = %n.approval, error = %e, "approval webhook could not be reached")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_cannot_leave_its_code_block_or_mention_anyone() {
        let nasty = "SELECT 1```\n<!channel> <https://evil.example|click> & `x`";
        let escaped = slack_escape(nasty);
        assert!(!escaped.contains('`'), "{escaped}");
        assert!(
            !escaped.contains('<') && !escaped.contains('>'),
            "{escaped}"
        );
        assert!(escaped.contains("&lt;!channel&gt;"), "{escaped}");
        assert!(escaped.contains("&amp;"), "{escaped}");
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        let sql = "é".repeat(MAX_SQL_IN_TEXT + 10);
        let cut = shorten(&sql, MAX_SQL_IN_TEXT);
        assert!(cut.starts_with(&"é".repeat(MAX_SQL_IN_TEXT)));
        assert!(cut.contains("cut"));
        assert_eq!(shorten("short", MAX_SQL_IN_TEXT), "short");
    }
}
