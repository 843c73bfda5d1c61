//! The records the audit store keeps, as callers write and read them.
//! Times are unix microseconds (UTC).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The protocol of records written before records named theirs (and of
/// answers from gateways that did not send it): PostgreSQL, the only one
/// there was.
fn default_protocol() -> String {
    "postgres".to_string()
}

/// Who a record names, whatever the protocol: the person or service a
/// token was issued to and the agents acting for them. One definition,
/// embedded in every record that names a person; in JSON its fields sit
/// beside the record's own (`"user": ..., "groups": [...]`), as they always
/// have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityRecord {
    /// The token's `sub`.
    pub subject: String,
    /// The user the token names (what the client logs in as).
    pub user: String,
    /// Groups from the token.
    pub groups: Vec<String>,
    /// The token's issuer.
    pub issuer: String,
    /// Agents acting for the subject, outermost first.
    pub actor_chain: Vec<String>,
}

impl IdentityRecord {
    /// The user and the agents acting for them, as shown to people.
    pub fn chain_text(&self) -> String {
        crate::identity::chain_text(&self.user, &self.actor_chain)
    }
}

impl From<&crate::identity::Identity> for IdentityRecord {
    fn from(i: &crate::identity::Identity) -> Self {
        Self {
            subject: i.subject.clone(),
            user: i.user.clone(),
            groups: i.groups.clone(),
            issuer: i.issuer.clone(),
            actor_chain: i.actor_chain.clone(),
        }
    }
}

/// A session: who, where from, to which target, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRecord {
    /// Session id (unique within a store).
    pub id: u64,
    /// When it started.
    pub started_at: i64,
    /// Who: the token's subject, user, groups, issuer and actor chain.
    #[serde(flatten)]
    pub identity: IdentityRecord,
    /// Target name.
    pub target: String,
    /// The target's protocol (`postgres`).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Client address, `ip:port`.
    pub client_addr: String,
    /// The client's `application_name`.
    pub application_name: Option<String>,
    /// When it ended (`None` while open, or if the gateway died first).
    pub ended_at: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Bytes the client sent.
    pub bytes_from_client: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Session id.
    pub id: u64,
    /// When it ended.
    pub ended_at: i64,
    /// Why, in words.
    pub reason: String,
    /// Bytes the client sent.
    pub bytes_from_client: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
}

/// What became of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventStatus {
    /// Recorded before it was forwarded (strict durability); its outcome
    /// was not recorded (yet), e.g. because the gateway stopped.
    Started,
    /// The server completed it.
    Ok,
    /// The server answered with an error.
    Error,
    /// The gateway refused it; it never reached the server.
    Refused,
    /// The server ran it but the gateway withheld its result.
    Withheld,
    /// Not run: an earlier statement of the same batch failed.
    NotRun,
    /// The session ended before the server answered.
    Unknown,
}

impl EventStatus {
    /// The spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Started => "started",
            EventStatus::Ok => "ok",
            EventStatus::Error => "error",
            EventStatus::Refused => "refused",
            EventStatus::Withheld => "withheld",
            EventStatus::NotRun => "not-run",
            EventStatus::Unknown => "unknown",
        }
    }

    /// Parses [`Self::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "started" => EventStatus::Started,
            "ok" => EventStatus::Ok,
            "error" => EventStatus::Error,
            "refused" => EventStatus::Refused,
            "withheld" => EventStatus::Withheld,
            "not-run" => EventStatus::NotRun,
            "unknown" => EventStatus::Unknown,
            _ => return None,
        })
    }
}

/// What a client did, whatever the protocol: the neutral kind of an event,
/// whose fields after it are the protocol's own detail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// PostgreSQL: a SQL statement (simple or extended protocol) or a
    /// function call. Every event written before actions were kept is one.
    #[default]
    Statement,
    /// A command run on a host (SSH targets, to come).
    Command,
    /// An API request (HTTP and Kubernetes targets, to come).
    Request,
}

impl Action {
    /// The spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Statement => "statement",
            Action::Command => "command",
            Action::Request => "request",
        }
    }

    /// Parses [`Self::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "statement" => Action::Statement,
            "command" => Action::Command,
            "request" => Action::Request,
            _ => return None,
        })
    }
}

/// One statement a client sent, with the policy's decision and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// Session id.
    pub session_id: u64,
    /// Position in the session (1, 2, ...); unique with `session_id`.
    pub seq: u64,
    /// When the client sent it.
    pub at: i64,
    /// What kind of action it is (`statement` for PostgreSQL); the fields
    /// below are the protocol's detail.
    #[serde(default)]
    pub action: Action,
    // This and the next five fields are the same for every run of a
    // prepared statement: they are shared (`Arc`), not copied per run.
    /// `simple` (Query), `extended` (Execute of a prepared statement),
    /// `parse` (a refused Parse) or `function-call`.
    #[schema(value_type = String)]
    pub protocol: Arc<str>,
    /// The SQL text.
    #[schema(value_type = String)]
    pub sql: Arc<str>,
    /// pg_query fingerprint (empty when unknown or unparseable).
    #[schema(value_type = String)]
    pub fingerprint: Arc<str>,
    /// Statement kinds, in order.
    #[schema(value_type = Vec<String>)]
    pub kinds: Arc<[String]>,
    /// Tables read, `schema.table` or `table` as written.
    #[schema(value_type = Vec<String>)]
    pub tables_read: Arc<[String]>,
    /// Tables written.
    #[schema(value_type = Vec<String>)]
    pub tables_written: Arc<[String]>,
    /// `allow`, `deny` or `require-approval`.
    pub verdict: String,
    /// The plugin whose verdict decided (deny or approval).
    pub decided_by: Option<String>,
    /// The rule that plugin named.
    pub rule: Option<String>,
    /// The reason given to the client.
    pub reason: Option<String>,
    /// What became of it.
    pub status: EventStatus,
    /// Microseconds from sending to the server's answer.
    pub duration_us: Option<u64>,
    /// Rows returned or affected, as the server counted them.
    pub rows: Option<u64>,
    /// SQLSTATE of the error, if it failed.
    pub sqlstate: Option<String>,
    /// The error's message.
    pub error: Option<String>,
    /// The first rows of its result as the client saw them (after masking),
    /// when recording asked for a sample: JSON `{"columns": [...], "rows": [[...]]}`.
    pub sample: Option<String>,
    /// The approval request this statement waited for or ran under.
    pub approval_id: Option<String>,
}

/// A plugin version loaded by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginLoadRecord {
    /// When.
    pub at: i64,
    /// Configured name.
    pub name: String,
    /// Version the plugin declares.
    pub version: String,
    /// SHA-256 of the component file.
    pub sha256: String,
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalStatus {
    /// Waiting for approvers.
    Pending,
    /// Enough approvers agreed.
    Approved,
    /// An approver denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The client cancelled the waiting statement (or went away).
    Cancelled,
}

impl ApprovalStatus {
    /// The spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`Self::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            "cancelled" => ApprovalStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    /// Who (the approver's user).
    pub approver: String,
    /// Agents deciding for the approver, outermost first (empty when the
    /// approver decided directly; absent in votes cast before it was kept).
    #[serde(default)]
    pub actor_chain: Vec<String>,
    /// Approve (`true`) or deny.
    pub approve: bool,
    /// When.
    pub at: i64,
    /// Why, in their words.
    pub comment: Option<String>,
}

impl Vote {
    /// The approver and the agents deciding for them, as shown to people.
    pub fn chain_text(&self) -> String {
        crate::identity::chain_text(&self.approver, &self.actor_chain)
    }
}

/// A statement held for human approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalRecord {
    /// Request id (`apr_...`).
    pub id: String,
    /// When it was requested.
    pub created_at: i64,
    /// When it stops accepting decisions.
    pub expires_at: i64,
    /// The requesting session.
    pub session_id: u64,
    /// The requester: token subject, user, groups, issuer, actor chain.
    #[serde(flatten)]
    pub requester: IdentityRecord,
    /// Target.
    pub target: String,
    /// The target's protocol (`postgres`).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// The statement.
    pub sql: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The plugin that asked for approval.
    pub plugin: Option<String>,
    /// Its rule.
    pub rule: Option<String>,
    /// Why approval is needed.
    pub reason: String,
    /// `wait` or `retry`.
    pub mode: String,
    /// Distinct approvers needed.
    pub min_approvals: u32,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When it was approved, denied, expired or cancelled.
    pub decided_at: Option<i64>,
    /// Decisions so far.
    pub votes: Vec<Vote>,
    /// Runs the approval still allows (retry mode).
    pub grant_uses_left: u32,
    /// Minutes an approval allows them for, from its approval (retry mode).
    pub grant_minutes: u32,
    /// Until when it allows them (retry mode).
    pub grant_until: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded identity keeps the JSON every export and API client
    /// reads: its fields sit beside the record's own, as before.
    #[test]
    fn identity_fields_stay_flat_in_json() -> Result<(), serde_json::Error> {
        let json = r#"{"id":7,"started_at":5,"subject":"sub-1","user":"ada@example.com",
            "groups":["analysts"],"issuer":"https://idp","actor_chain":["agent:a"],
            "target":"orders","client_addr":"127.0.0.1:1","application_name":null,
            "ended_at":null,"end_reason":null,"bytes_from_client":0,"bytes_to_client":0}"#;
        let s: SessionRecord = serde_json::from_str(json)?;
        assert_eq!(s.identity.user, "ada@example.com");
        assert_eq!(s.identity.actor_chain, vec!["agent:a"]);
        assert_eq!(s.protocol, "postgres");
        let back = serde_json::to_value(&s)?;
        assert_eq!(back["groups"], serde_json::json!(["analysts"]));
        assert_eq!(back["subject"], "sub-1");
        assert!(back.get("identity").is_none(), "{back}");
        assert_eq!(s.identity.chain_text(), "ada@example.com > agent:a");
        Ok(())
    }

    /// Votes cast before the approver's chain was kept still read.
    #[test]
    fn a_vote_without_a_chain_reads_as_a_direct_decision() -> Result<(), serde_json::Error> {
        let v: Vote =
            serde_json::from_str(r#"{"approver":"bob","approve":true,"at":1,"comment":null}"#)?;
        assert!(v.actor_chain.is_empty());
        Ok(())
    }
}
