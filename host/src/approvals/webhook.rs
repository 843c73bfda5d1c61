//! Announces approval requests and decisions with a JSON POST — the request
//! as JSON, or a Slack-compatible `{"text": ...}` — without holding up the
//! session: delivery runs in the background, failures are logged.

use bytes::Bytes;

use crate::config::WebhookFormat;
use crate::http_client::HttpClient;
use crate::store::ApprovalRecord;

/// A configured webhook.
pub struct Webhook {
    url: String,
    format: WebhookFormat,
    http: HttpClient,
}

impl Webhook {
    /// A webhook posting to `url`.
    pub fn new(url: String, format: WebhookFormat, http: HttpClient) -> Self {
        Self { url, format, http }
    }

    /// A new request.
    pub fn requested(&self, r: &ApprovalRecord) {
        let who = crate::identity::chain_text(&r.user, &r.actor_chain);
        let text = format!(
            "Approval {id} requested by {who} on {target}: {reason}\n```{sql}```\nApprove: portcullis approvals approve {id}\nDeny: portcullis approvals deny {id}",
            id = r.id,
            target = r.target,
            reason = r.reason,
            sql = r.sql,
        );
        self.post("approval.requested", r, text);
    }

    /// A decided request.
    pub fn decided(&self, r: &ApprovalRecord) {
        let by: Vec<&str> = r.votes.iter().map(|v| v.approver.as_str()).collect();
        let text = format!(
            "Approval {} is {} ({})",
            r.id,
            r.status.as_str(),
            by.join(", ")
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
        let (http, url, id) = (self.http.clone(), self.url.clone(), r.id.clone());
        tokio::spawn(async move {
            let sent = http
                .send(
                    hyper::Method::POST,
                    &url,
                    &[],
                    Some(("application/json", Bytes::from(body.to_string()))),
                )
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(approval = %id, status = resp.status().as_u16(), "approval webhook refused the notification")
                }
                Err(e) => {
                    tracing::warn!(approval = %id, error = %e, "approval webhook could not be reached")
                }
            }
        });
    }
}
