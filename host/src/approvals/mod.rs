//! Just-in-time approvals: a statement a plugin holds (`require-approval`)
//! becomes a request that named approvers decide.
//!
//! - A request names the requester (with the actor chain), the target, the
//!   statement and its fingerprint, the plugin, rule and reason; it is
//!   stored at once and announced by webhook.
//! - Approvers are members of `[approvals] approver_groups`. Nobody decides
//!   their own request, or one made by an agent acting for them (they appear
//!   in its actor chain); each approver counts once; `min_approvals`
//!   distinct approvals approve it, one denial denies it.
//! - `wait` mode: the session waits ([`Approvals::wait`]) until the request
//!   is decided, expires, or the client cancels. `retry` mode: the client is
//!   refused at once, and after approval the same statement from the same
//!   identity on the same target runs within the grant ([`Approvals::use_grant`]).
//!
//! Decisions are serialized in this process, so two approvers deciding at
//! once cannot both complete a quorum of one; a store shared by several
//! gateways would need the same guarantee from the database.

mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ApprovalSettings;
use crate::http_client::HttpClient;
use crate::identity::Identity;
use crate::policy::ApprovalPolicy;
use crate::store::{
    now_micros, ApprovalRecord, ApprovalStatus, GrantQuery, Store, StoreError, Vote,
};

/// Who asks, from which session, on which target.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The session.
    pub session_id: u64,
    /// Its identity.
    pub identity: &'a Identity,
    /// Its target.
    pub target: &'a str,
    /// The target's protocol (`postgres`).
    pub protocol: &'a str,
}

/// A statement to hold, and why.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The statement.
    pub sql: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The plugin(s) that asked.
    pub plugin: Option<String>,
    /// The rule.
    pub rule: Option<String>,
    /// Why.
    pub reason: String,
    /// How it is handled.
    pub policy: ApprovalPolicy,
}

/// How a wait ended.
#[derive(Debug, Clone)]
pub enum Waited {
    /// Approved: run the statement.
    Approved(ApprovalRecord),
    /// Denied by an approver.
    Denied(ApprovalRecord),
    /// Nobody decided in time.
    Expired,
    /// The client cancelled.
    Cancelled,
}

/// Why a decision was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecideError {
    /// No such request.
    #[error("no approval request {0}")]
    NotFound(String),
    /// The caller is not an approver.
    #[error("user \"{user}\" is not an approver: approvers are members of {groups}")]
    NotApprover {
        /// Caller.
        user: String,
        /// The approver groups.
        groups: String,
    },
    /// The caller made the request.
    #[error("nobody approves or denies their own request")]
    OwnRequest,
    /// The caller is an agent acting for the requester, or the requester acts for them.
    #[error("user \"{0}\" is in the requester's actor chain and may not decide this request")]
    InChain(String),
    /// The caller acts through an agent (its token has an actor chain) and
    /// the request's rule does not let agents decide.
    #[error("user \"{user}\" presented a token an agent acts with (actor chain: {chain}); approval decisions need the approver's own token (rules whose requests agents may decide are listed in [approvals] agents_may_decide)")]
    AgentApprover {
        /// Caller.
        user: String,
        /// Its actor chain.
        chain: String,
    },
    /// The caller already decided.
    #[error("user \"{0}\" has already decided this request")]
    AlreadyVoted(String),
    /// The request is no longer pending.
    #[error("the request is {0}, not pending")]
    NotPending(&'static str),
    /// The store failed.
    #[error("the audit store failed: {0}")]
    Store(String),
}

impl DecideError {
    /// The HTTP status for the admin API.
    pub fn http_status(&self) -> u16 {
        match self {
            DecideError::NotFound(_) => 404,
            DecideError::NotApprover { .. }
            | DecideError::OwnRequest
            | DecideError::InChain(_)
            | DecideError::AgentApprover { .. } => 403,
            DecideError::AlreadyVoted(_) | DecideError::NotPending(_) => 409,
            DecideError::Store(_) => 500,
        }
    }
}

/// Why a statement could not be held for approval.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The requester already has as many pending requests as allowed.
    #[error("user \"{user}\" already has {pending} approval requests waiting for a decision (at most {limit}); wait for them to be decided or to expire")]
    TooMany {
        /// The requester.
        user: String,
        /// Requests pending now.
        pending: usize,
        /// `[approvals] max_pending_per_user`.
        limit: usize,
    },
    /// The requester asked for too many approvals in the last minute.
    #[error("user \"{user}\" asked for {limit} approvals in the last minute already (at most {limit}); wait a minute before asking again")]
    TooFrequent {
        /// The requester.
        user: String,
        /// `[approvals] max_requests_per_minute`.
        limit: u32,
    },
    /// The store failed.
    #[error("the audit store failed: {0}")]
    Store(#[from] StoreError),
}

/// New requests per requester in the current minute: a person who asks and
/// withdraws in a loop cannot flood approvers and the webhook queue.
#[derive(Default)]
struct RequestRate {
    /// (subject, issuer) → (start of its minute, requests in it).
    windows: HashMap<(String, String), (std::time::Instant, u32)>,
}

/// Requesters remembered before stale windows are dropped.
const RATE_ENTRIES: usize = 10_000;

impl RequestRate {
    /// Counts one request of `who`; `false` when it is over `limit` a minute.
    fn admit(&mut self, who: (&str, &str), limit: u32) -> bool {
        let now = std::time::Instant::now();
        let minute = Duration::from_secs(60);
        if self.windows.len() >= RATE_ENTRIES {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < minute);
        }
        let key = (who.0.to_string(), who.1.to_string());
        let (start, count) = self.windows.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= minute {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }
}

impl From<StoreError> for DecideError {
    fn from(e: StoreError) -> Self {
        DecideError::Store(e.to_string())
    }
}

/// The gateway's approval requests.
pub struct Approvals {
    store: Arc<dyn Store>,
    settings: ApprovalSettings,
    waiters: Mutex<HashMap<String, watch::Sender<ApprovalStatus>>>,
    decide_lock: tokio::sync::Mutex<()>,
    /// Serializes the cap check and the new request's save.
    request_lock: tokio::sync::Mutex<()>,
    /// New requests per requester and minute.
    rate: Mutex<RequestRate>,
    webhook: Option<webhook::Webhook>,
}

/// A fresh request id: `apr_` and 12 lower-case letters and digits.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut id = String::from("apr_");
    for _ in 0..12 {
        id.push(ALPHABET[rand::random_range(0..ALPHABET.len())] as char);
    }
    id
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
}

impl Approvals {
    /// The service over `store`; `http` posts webhooks.
    pub fn new(store: Arc<dyn Store>, settings: ApprovalSettings, http: HttpClient) -> Self {
        let webhook = settings
            .webhook_url
            .clone()
            .map(|url| webhook::Webhook::new(url, settings.webhook_format, http));
        Self {
            store,
            settings,
            waiters: Mutex::new(HashMap::new()),
            decide_lock: tokio::sync::Mutex::new(()),
            request_lock: tokio::sync::Mutex::new(()),
            rate: Mutex::new(RequestRate::default()),
            webhook,
        }
    }

    /// Groups whose members decide requests.
    pub fn approver_groups(&self) -> &[String] {
        &self.settings.approver_groups
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<ApprovalStatus>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates, stores and announces a request; in wait mode also returns
    /// the channel [`Self::wait`] listens on. A retry-mode request that
    /// repeats one still pending (same identity, actor chain, target and
    /// statement) is that request again: nothing new is stored or announced.
    /// A requester with `max_pending_per_user` pending requests gets
    /// [`RequestError::TooMany`]; one who made `max_requests_per_minute`
    /// new requests in the last minute, [`RequestError::TooFrequent`].
    pub async fn request(
        &self,
        who: Requester<'_>,
        new: NewRequest,
    ) -> Result<(ApprovalRecord, Option<watch::Receiver<ApprovalStatus>>), RequestError> {
        let _guard = self.request_lock.lock().await;
        let limit = self.settings.max_pending_per_user;
        let store = self.store.clone();
        let (subject, issuer) = (who.identity.subject.clone(), who.identity.issuer.clone());
        // Expired ones still marked pending do not count; read a few more.
        let mut theirs =
            blocking(move || store.pending_approvals_of(&subject, &issuer, limit * 2 + 16)).await?;
        theirs.retain_mut(|r| !expire_if_due(r));
        if !new.policy.wait {
            if let Some(same) = theirs.iter().find(|r| {
                r.mode == "retry"
                    && r.requester.actor_chain == who.identity.actor_chain
                    && r.target == who.target
                    && r.sql == new.sql
            }) {
                return Ok((same.clone(), None));
            }
        }
        if theirs.len() >= limit {
            return Err(RequestError::TooMany {
                user: who.identity.user.clone(),
                pending: theirs.len(),
                limit,
            });
        }
        let per_minute = self.settings.max_requests_per_minute;
        let admitted = self
            .rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit((&who.identity.subject, &who.identity.issuer), per_minute);
        if !admitted {
            return Err(RequestError::TooFrequent {
                user: who.identity.user.clone(),
                limit: per_minute,
            });
        }
        let now = now_micros();
        let p = new.policy;
        let record = ApprovalRecord {
            id: new_id(),
            created_at: now,
            expires_at: now + i64::from(p.timeout_secs) * 1_000_000,
            session_id: who.session_id,
            requester: who.identity.into(),
            target: who.target.to_string(),
            protocol: who.protocol.to_string(),
            sql: new.sql,
            fingerprint: new.fingerprint,
            plugin: new.plugin,
            rule: new.rule,
            reason: new.reason,
            mode: if p.wait { "wait" } else { "retry" }.into(),
            min_approvals: p.min_approvals.max(1),
            status: ApprovalStatus::Pending,
            decided_at: None,
            votes: Vec::new(),
            grant_uses_left: p.grant_uses,
            grant_minutes: p.grant_minutes,
            grant_until: None,
        };
        let rx = p.wait.then(|| {
            let (tx, rx) = watch::channel(ApprovalStatus::Pending);
            self.waiters().insert(record.id.clone(), tx);
            rx
        });
        let store = self.store.clone();
        let saved = record.clone();
        if let Err(e) = blocking(move || store.save_approval(&saved)).await {
            self.waiters().remove(&record.id);
            return Err(e.into());
        }
        tracing::info!(approval = %record.id, user = %record.requester.user, target = %record.target, rule = ?record.rule, mode = %record.mode, "approval requested");
        if let Some(w) = &self.webhook {
            w.requested(&record);
        }
        Ok((record, rx))
    }

    /// Waits for `record` (a wait-mode request) to be decided, to expire,
    /// or for `cancel` to change (the client's cancel request).
    pub async fn wait(
        &self,
        record: &ApprovalRecord,
        mut rx: watch::Receiver<ApprovalStatus>,
        cancel: &mut watch::Receiver<u64>,
    ) -> Waited {
        let left = (record.expires_at - now_micros()).max(0) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_micros(left);
        cancel.borrow_and_update();
        let outcome = loop {
            let status = *rx.borrow_and_update();
            match status {
                ApprovalStatus::Approved | ApprovalStatus::Denied => {
                    break self.settled(&record.id, status).await;
                }
                ApprovalStatus::Expired => break Waited::Expired,
                ApprovalStatus::Cancelled => break Waited::Cancelled,
                ApprovalStatus::Pending => {}
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break Waited::Expired },
                _ = tokio::time::sleep_until(deadline) => {
                    break match self.close(&record.id, ApprovalStatus::Expired).await {
                        Some(decided) => self.settled(&record.id, decided).await,
                        None => Waited::Expired,
                    };
                }
                _ = cancel.changed() => {
                    break match self.close(&record.id, ApprovalStatus::Cancelled).await {
                        Some(decided) => self.settled(&record.id, decided).await,
                        None => Waited::Cancelled,
                    };
                }
            }
        };
        self.waiters().remove(&record.id);
        outcome
    }

    /// The outcome of a request decided as `status`.
    async fn settled(&self, id: &str, status: ApprovalStatus) -> Waited {
        let store = self.store.clone();
        let id = id.to_string();
        let record = blocking(move || store.approval(&id)).await.ok().flatten();
        match (status, record) {
            (ApprovalStatus::Approved, Some(r)) => Waited::Approved(r),
            (ApprovalStatus::Denied, Some(r)) => Waited::Denied(r),
            (ApprovalStatus::Cancelled, _) => Waited::Cancelled,
            _ => Waited::Expired,
        }
    }

    /// Ends a pending request as `status` (expired, cancelled). Returns the
    /// decision instead if an approver got there first.
    async fn close(&self, id: &str, status: ApprovalStatus) -> Option<ApprovalStatus> {
        let _guard = self.decide_lock.lock().await;
        let store = self.store.clone();
        let key = id.to_string();
        let mut record = match blocking(move || store.approval(&key)).await {
            Ok(Some(r)) => r,
            _ => return None,
        };
        if record.status != ApprovalStatus::Pending {
            return Some(record.status);
        }
        record.status = status;
        record.decided_at = Some(now_micros());
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.save_approval(&record)).await {
            tracing::error!(approval = id, error = %e, "could not record the end of an approval request");
        }
        tracing::info!(
            approval = id,
            status = status.as_str(),
            "approval request closed"
        );
        None
    }

    /// Takes one use of a grant for this statement, if an approved
    /// retry-mode request covers it; returns the request's id.
    pub async fn use_grant(
        &self,
        who: Requester<'_>,
        sql: &str,
        fingerprint: &str,
    ) -> Option<String> {
        let (subject, user, chain, target) = (
            who.identity.subject.clone(),
            who.identity.user.clone(),
            who.identity.actor_chain.clone(),
            who.target.to_string(),
        );
        let (sql, fingerprint) = (sql.to_string(), fingerprint.to_string());
        let store = self.store.clone();
        let found = blocking(move || {
            store.use_grant(
                &GrantQuery {
                    subject: &subject,
                    user: &user,
                    actor_chain: &chain,
                    target: &target,
                    sql: &sql,
                    fingerprint: &fingerprint,
                },
                now_micros(),
            )
        })
        .await;
        match found {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "could not look up approval grants; the statement is held again");
                None
            }
        }
    }

    /// One request; a pending one past its expiry is reported expired.
    pub async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let store = self.store.clone();
        let key = id.to_string();
        let mut found = blocking(move || store.approval(&key)).await?;
        if let Some(r) = &mut found {
            expire_if_due(r);
        }
        Ok(found)
    }

    /// Requests, newest first (only `status`, if given).
    pub async fn list(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let store = self.store.clone();
        // Pending ones past expiry are shown as expired.
        let wanted = status;
        let query = if wanted == Some(ApprovalStatus::Expired) {
            None
        } else {
            status
        };
        let mut all = blocking(move || store.approvals(query, limit)).await?;
        for r in &mut all {
            expire_if_due(r);
        }
        all.retain(|r| wanted.is_none_or(|s| r.status == s));
        Ok(all)
    }

    /// Requests waiting for a decision now.
    pub async fn pending_count(&self) -> usize {
        self.list(Some(ApprovalStatus::Pending), 100_000)
            .await
            .map(|l| l.len())
            .unwrap_or(0)
    }

    /// Records `approver`'s decision on request `id`.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        comment: Option<String>,
    ) -> Result<ApprovalRecord, DecideError> {
        let _guard = self.decide_lock.lock().await;
        let store = self.store.clone();
        let key = id.to_string();
        let mut r = blocking(move || store.approval(&key))
            .await?
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        if expire_if_due(&mut r) {
            let store = self.store.clone();
            let expired = r.clone();
            blocking(move || store.save_approval(&expired)).await?;
        }
        if r.status != ApprovalStatus::Pending {
            return Err(DecideError::NotPending(r.status.as_str()));
        }
        if !approver
            .groups
            .iter()
            .any(|g| self.settings.approver_groups.contains(g))
        {
            return Err(DecideError::NotApprover {
                user: approver.user.clone(),
                groups: self.settings.approver_groups.join(", "),
            });
        }
        if !approver.actor_chain.is_empty() && !self.settings.agents_may_decide(r.rule.as_deref()) {
            return Err(DecideError::AgentApprover {
                user: approver.user.clone(),
                chain: approver.actor_chain.join(" > "),
            });
        }
        let requester = &r.requester;
        if approver.user == requester.user || approver.subject == requester.subject {
            return Err(DecideError::OwnRequest);
        }
        if requester
            .actor_chain
            .iter()
            .any(|a| *a == approver.user || *a == approver.subject)
            || approver.actor_chain.contains(&requester.user)
        {
            return Err(DecideError::InChain(approver.user.clone()));
        }
        if r.votes.iter().any(|v| v.approver == approver.user) {
            return Err(DecideError::AlreadyVoted(approver.user.clone()));
        }
        let now = now_micros();
        r.votes.push(Vote {
            approver: approver.user.clone(),
            actor_chain: approver.actor_chain.clone(),
            approve,
            at: now,
            comment,
        });
        let approvals = r.votes.iter().filter(|v| v.approve).count() as u32;
        if !approve {
            r.status = ApprovalStatus::Denied;
            r.decided_at = Some(now);
        } else if approvals >= r.min_approvals {
            r.status = ApprovalStatus::Approved;
            r.decided_at = Some(now);
            r.grant_until = Some(now + i64::from(r.grant_minutes) * 60_000_000);
        }
        let store = self.store.clone();
        let saved = r.clone();
        blocking(move || store.save_approval(&saved)).await?;
        tracing::info!(approval = %r.id, approver = %approver.user, approve, status = r.status.as_str(), "approval decision recorded");
        if r.status != ApprovalStatus::Pending {
            if let Some(tx) = self.waiters().get(&r.id) {
                let _ = tx.send(r.status);
            }
            if let Some(w) = &self.webhook {
                w.decided(&r);
            }
        }
        Ok(r)
    }
}

/// Marks a pending request past its expiry as expired; returns whether it did.
fn expire_if_due(r: &mut ApprovalRecord) -> bool {
    if r.status == ApprovalStatus::Pending && r.expires_at <= now_micros() {
        r.status = ApprovalStatus::Expired;
        r.decided_at = Some(r.expires_at);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn identity(user: &str, groups: &[&str], chain: &[&str]) -> Identity {
        Identity {
            subject: user.into(),
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: "https://issuer.test".into(),
            actor_chain: chain.iter().map(|a| a.to_string()).collect(),
            expires_at: 0,
            delegation: None,
        }
    }

    fn service(dir: &std::path::Path) -> Approvals {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("a.db")).expect("store"));
        Approvals::new(
            store,
            ApprovalSettings::default(),
            HttpClient::new(Duration::from_secs(1)).expect("http"),
        )
    }

    async fn request(s: &Approvals, who: &Identity, policy: ApprovalPolicy) -> ApprovalRecord {
        s.request(
            Requester {
                session_id: 1,
                identity: who,
                target: "orders",
                protocol: "postgres",
            },
            NewRequest {
                sql: "update orders set x = 1".into(),
                fingerprint: "f".into(),
                plugin: Some("approve".into()),
                rule: Some("r".into()),
                reason: "because".into(),
                policy,
            },
        )
        .await
        .expect("request")
        .0
    }

    #[tokio::test]
    async fn agents_acting_for_an_approver_and_their_principal_may_not_decide() {
        let dir = crate::test_dir::TestDir::new("portcullis-appr");
        let s = service(&dir);
        // An agent acting for bob asks; bob (in its chain) may not approve.
        let agent = identity("alice@example.com", &["agents"], &["bob@example.com"]);
        let r = request(&s, &agent, ApprovalPolicy::default()).await;
        let bob = identity("bob@example.com", &["approvers"], &[]);
        assert!(matches!(
            s.decide(&r.id, &bob, true, None).await,
            Err(DecideError::InChain(_))
        ));
        // Nor may an agent acting for alice approve alice's request.
        let alice = identity("alice@example.com", &["testers"], &[]);
        let r2 = request(&s, &alice, ApprovalPolicy::default()).await;
        let alices_agent = identity("agent:helper", &["approvers"], &["alice@example.com"]);
        assert!(matches!(
            s.decide(&r2.id, &alices_agent, true, None).await,
            Err(DecideError::AgentApprover { .. } | DecideError::InChain(_))
        ));
        // Carol, unrelated, may.
        let carol = identity("carol@example.com", &["approvers"], &[]);
        let decided = s
            .decide(&r.id, &carol, true, None)
            .await
            .expect("carol decides");
        assert_eq!(decided.status, ApprovalStatus::Approved);
    }

    #[tokio::test]
    async fn an_agent_decides_only_where_its_rule_lets_agents_decide() {
        let dir = crate::test_dir::TestDir::new("portcullis-appr");
        let alice = identity("alice@example.com", &["testers"], &[]);
        // Carol's agent: carol is an approver, the token has an actor chain.
        let carols_agent = identity("carol@example.com", &["approvers"], &["agent:triage"]);

        let s = service(&dir);
        let r = request(&s, &alice, ApprovalPolicy::default()).await;
        assert!(matches!(
            s.decide(&r.id, &carols_agent, true, None).await,
            Err(DecideError::AgentApprover { .. })
        ));
        let after = s.get(&r.id).await.expect("store").expect("request");
        assert_eq!(after.status, ApprovalStatus::Pending, "no vote was counted");
        assert!(after.votes.is_empty());

        // Rule "r" (the test requests' rule) allows agents.
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("b.db")).expect("store"));
        let settings = ApprovalSettings {
            agents_may_decide: vec!["r".into()],
            ..Default::default()
        };
        let s = Approvals::new(
            store,
            settings,
            HttpClient::new(Duration::from_secs(1)).expect("http"),
        );
        let r = request(&s, &alice, ApprovalPolicy::default()).await;
        let decided = s
            .decide(&r.id, &carols_agent, true, None)
            .await
            .expect("allowed");
        assert_eq!(decided.status, ApprovalStatus::Approved);
    }

    #[tokio::test]
    async fn repeated_requests_are_one_request_and_each_person_has_a_cap() {
        let dir = crate::test_dir::TestDir::new("portcullis-appr");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("c.db")).expect("store"));
        let settings = ApprovalSettings {
            max_pending_per_user: 3,
            ..Default::default()
        };
        let s = Approvals::new(
            store.clone(),
            settings,
            HttpClient::new(Duration::from_secs(1)).expect("http"),
        );
        let alice = identity("alice@example.com", &["testers"], &[]);
        let retry = ApprovalPolicy {
            wait: false,
            ..Default::default()
        };
        // The same statement asked a hundred times: one request.
        let first = request(&s, &alice, retry).await;
        for _ in 0..100 {
            assert_eq!(request(&s, &alice, retry).await.id, first.id);
        }
        let stored = store
            .approvals(Some(ApprovalStatus::Pending), 1000)
            .expect("list");
        assert_eq!(stored.len(), 1, "one stored request");

        // Different statements count against the cap.
        let ask = |sql: &str| NewRequest {
            sql: sql.into(),
            fingerprint: "f".into(),
            plugin: None,
            rule: None,
            reason: "because".into(),
            policy: retry,
        };
        let who = Requester {
            session_id: 1,
            identity: &alice,
            target: "orders",
            protocol: "postgres",
        };
        s.request(who, ask("update orders set x = 2"))
            .await
            .expect("second");
        s.request(who, ask("update orders set x = 3"))
            .await
            .expect("third");
        assert!(matches!(
            s.request(who, ask("update orders set x = 4")).await,
            Err(RequestError::TooMany {
                pending: 3,
                limit: 3,
                ..
            })
        ));
        let stored = store
            .approvals(Some(ApprovalStatus::Pending), 1000)
            .expect("list");
        assert_eq!(stored.len(), 3, "nothing stored past the cap");
        // Someone else is not held up by alice's requests.
        let bob = identity("bob@example.com", &["testers"], &[]);
        request(&s, &bob, retry).await;

        // Asking and withdrawing in a loop: new requests per minute are capped.
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("d.db")).expect("store"));
        let settings = ApprovalSettings {
            max_requests_per_minute: 5,
            ..Default::default()
        };
        let s = Approvals::new(
            store.clone(),
            settings,
            HttpClient::new(Duration::from_secs(1)).expect("http"),
        );
        let mut made = 0;
        for i in 0..20 {
            match s
                .request(who, ask(&format!("update orders set x = {i}")))
                .await
            {
                Ok((r, _)) => {
                    made += 1;
                    // Withdrawn at once: it no longer counts as pending.
                    let mut r = store.approval(&r.id).expect("read").expect("stored");
                    r.status = ApprovalStatus::Cancelled;
                    store.save_approval(&r).expect("save");
                }
                Err(RequestError::TooFrequent { limit: 5, .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(made, 5, "five a minute, then refused");
    }

    #[tokio::test]
    async fn a_retry_grant_is_used_up_and_a_late_decision_finds_it_expired() {
        let dir = crate::test_dir::TestDir::new("portcullis-appr");
        let s = service(&dir);
        let alice = identity("alice@example.com", &["testers"], &[]);
        let retry = ApprovalPolicy {
            wait: false,
            grant_uses: 2,
            ..Default::default()
        };
        let r = request(&s, &alice, retry).await;
        let carol = identity("carol@example.com", &["approvers"], &[]);
        s.decide(&r.id, &carol, true, None).await.expect("approved");
        let who = Requester {
            session_id: 2,
            identity: &alice,
            target: "orders",
            protocol: "postgres",
        };
        let sql = "update orders set x = 1";
        assert_eq!(
            s.use_grant(who, sql, "f").await.as_deref(),
            Some(r.id.as_str())
        );
        assert_eq!(s.use_grant(who, "update orders set x = 2", "f").await, None);
        assert_eq!(
            s.use_grant(who, sql, "f").await.as_deref(),
            Some(r.id.as_str())
        );
        assert_eq!(s.use_grant(who, sql, "f").await, None);

        let short = ApprovalPolicy {
            timeout_secs: 1,
            ..Default::default()
        };
        let late = request(&s, &alice, short).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            s.decide(&late.id, &carol, true, None).await,
            Err(DecideError::NotPending("expired"))
        ));
    }
}
