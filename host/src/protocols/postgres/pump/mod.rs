//! The relay after start-up: two directions, each a loop that reads into one
//! buffer, finds message boundaries ([`scan`]), raises policy events only for
//! the messages a policy looks at, and writes everything else out of the same
//! buffer it was read into (bytes in, same bytes out). The client→server
//! side ([`client`]) judges statements and holds them for approval; the
//! server→client side ([`server`]) plans, edits and samples results and
//! settles the audit records; they share the session's state ([`Shared`]).
//!
//! Memory is bounded: a message that no policy needs is forwarded in pieces as
//! it arrives, never gathered whole; only `Query`/`Parse` (and rows, when a
//! policy wants them) are held whole, up to the listener's message limit.
//! A buffer grows only as bytes arrive (a read chunk, or doubling what is
//! there), never to a length announced on the wire; and a client message
//! held in pieces counts against the gateway-wide [`MessageBudget`].
//! Backpressure is natural: a direction reads again only after its last write
//! completed, so a slow client slows the upstream read.
//!
//! A refused statement never reaches the upstream. Its `ErrorResponse` must
//! still arrive in order, after the responses to anything pipelined before
//! it, and the upstream must end up where PostgreSQL's own error would have
//! left it (a transaction block aborted, the rest of an extended batch
//! skipped). So the client→server side sends, in its place, a statement
//! that fails in the server's parse analysis with a marker only this
//! session knows (a `Query`, or a `Parse` inside an extended batch), and
//! queues an *injection* keyed by the sequence number of the
//! `ReadyForQuery` that ends the batch; the server→client side drops the
//! marked error and writes the refusal just before that `ReadyForQuery`
//! (unless an earlier error of the batch made the server skip the failing
//! statement: then, as in PostgreSQL, that earlier error is the batch's
//! one). Every `Query`, `Sync` and `FunctionCall` yields exactly one
//! `ReadyForQuery`, which is what makes the count reliable — and why a
//! `Query` or `FunctionCall` inside an unfinished extended batch (which the
//! server skips without one after an error there) ends the session.
//!
//! When a policy watches rows, each result's columns are resolved to their
//! source (`catalog`) and matched with the right description even across
//! extended-protocol pipelines (`responses`). A result the policy withholds
//! never reaches the client: its rows are dropped and an error takes the
//! place of its `CommandComplete`, after which the server's answers up to the
//! next `ReadyForQuery` are dropped too, as if the server had failed there.
//!
//! The relay is generic over the streams it joins, so it runs over TLS and
//! TCP alike, and over in-memory pipes in its tests.

mod client;
mod hold;
mod injection;
mod judge;
mod names;
mod results;
mod rows;
mod scan;
mod scrub;
mod server;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::budget::{BudgetError, BudgetShare, MessageBudget};
use super::catalog::TargetCatalog;
use super::copy_in::CopyStart;
use super::ledger::Ledger;
use super::responses::{Expect, Expected};
use super::RelayError;
use crate::audit::AuditLog;
use crate::gateway::lifecycle::{Stop, Traffic};
use crate::policy::{EndReason, SessionPolicy};
use crate::protocols::postgres::codec::encoding::ClientEncoding;
use crate::protocols::postgres::codec::error_response::ErrorFields;
use crate::protocols::postgres::codec::sqlstate;
use crate::protocols::postgres::codec::tags::frontend as fe;
use crate::store::Record;

/// `Terminate` message.
const TERMINATE: &[u8] = &[fe::TERMINATE, 0, 0, 0, 4];

/// What both directions of a session share.
struct Shared {
    /// Errors to write before the `ReadyForQuery` that ends their batch.
    injections: Mutex<VecDeque<injection::Injection>>,
    /// The session's policy (its plugin chain).
    policy: Mutex<Box<dyn SessionPolicy>>,
    /// Whether the policy watches result rows.
    wants_rows: bool,
    /// Answers owed by the server (kept only when `wants_rows`).
    expected: Mutex<Expected>,
    /// The session's audit ledger.
    ledger: Mutex<Ledger>,
    /// Whether the ledger tracks statements until their answers.
    tracking: bool,
    /// Where audit records go.
    audit: Arc<AuditLog>,
    /// Read-only session: statements that could write are refused.
    read_only: bool,
    /// The upstream role the session is pinned to: what could leave it is
    /// refused.
    upstream_role: Option<String>,
    /// The target's catalog (column sources, code).
    catalog: TargetCatalog,
    /// Identity, target and approvals.
    session: SessionInfoForHold,
    /// Notices for the client, written by the server→client side between
    /// messages.
    notices: tokio::sync::mpsc::UnboundedSender<Bytes>,
    /// Bytes read from the client.
    from_client: std::sync::atomic::AtomicU64,
    /// Bytes read from the server (relayed to the client, give or take
    /// what the policy changed).
    to_client: std::sync::atomic::AtomicU64,
    /// This session's refusal marker (see `new_refusal_marker`).
    marker: String,
    /// Whether an `Execute` started COPY FROM STDIN (for a held `Sync`),
    /// and the `ReadyForQuery`s passed to the client.
    copy_start: CopyStart,
    /// How `application_name` reads upstream and to the client.
    app_name: super::app_name::AppName,
    /// The session's client encoding (`ClientEncoding::index`), as the
    /// server last reported it: what it reads the next message in once
    /// every message before has been answered (text that is not ASCII is
    /// read only then, see the Query/Parse branch of `client_to_server`).
    encoding: std::sync::atomic::AtomicU8,
    /// Whether the server converts client text (a UTF-8 database); on a
    /// `SQL_ASCII` one only encodings read as UTF-8 are followed.
    server_converts: bool,
    /// Whether statements are judged by what they say (a summary is made:
    /// policy, read-only, upstream role); else their text is only relayed
    /// (and recorded), in whatever encoding the client uses.
    judges_sql: bool,
}

impl Shared {
    /// The encoding the server reads the client's next message in.
    fn client_encoding(&self) -> ClientEncoding {
        ClientEncoding::at(self.encoding.load(std::sync::atomic::Ordering::Acquire))
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, Box<dyn SessionPolicy>> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, e: Expect) {
        if self.wants_rows {
            self.expected().push(e);
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write_audit(&self, records: Vec<Record>) {
        for r in records {
            self.audit.record(r).await;
        }
    }
}

/// Who the session is and the gateway services it reports to.
pub struct SessionContext {
    /// Where audit records go.
    pub log: Arc<AuditLog>,
    /// The session's id.
    pub session_id: u64,
    /// Whether recorded statements are committed before they are forwarded.
    pub strict: bool,
    /// The session's identity.
    pub identity: crate::identity::Identity,
    /// Its target.
    pub target: String,
    /// Approval requests.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// Changes when the client sends a cancel request for this session.
    pub cancel: tokio::sync::watch::Receiver<u64>,
    /// The sending side of `cancel`, to withdraw a held statement when the
    /// client goes away.
    pub cancel_signal: Arc<tokio::sync::watch::Sender<u64>>,
    /// Only statements that cannot write may run (a read-only token).
    pub read_only: bool,
    /// The upstream role the session is pinned to (`[[targets.roles]]`).
    pub upstream_role: Option<String>,
    /// How `application_name` reads upstream and to the client.
    pub app_name: super::app_name::AppName,
    /// The client encoding the session starts in.
    pub client_encoding: ClientEncoding,
    /// Whether the server converts client text (not a `SQL_ASCII` database).
    pub server_converts: bool,
}

/// The session's identity and approvals, for statements held for approval.
struct SessionInfoForHold {
    session_id: u64,
    identity: crate::identity::Identity,
    target: String,
    approvals: Arc<crate::approvals::Approvals>,
    cancel_signal: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Session-wide limits of the relay.
pub struct Limits {
    /// Largest message accepted in either direction.
    pub max_message: usize,
    /// What all sessions may hold for incomplete client messages.
    pub budget: Arc<MessageBudget>,
}

/// Runs the session until either side ends it or `stop` resolves; returns
/// why it ended.
#[allow(clippy::too_many_arguments)]
pub async fn run<C, U>(
    client: C,
    upstream: U,
    policy: Box<dyn SessionPolicy>,
    pending: BytesMut,
    limits: Limits,
    catalog: TargetCatalog,
    ctx: SessionContext,
    stop: impl Future<Output = Stop>,
) -> (EndReason, Box<dyn SessionPolicy>, Traffic)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Limits {
        max_message,
        budget,
    } = limits;
    let wants_rows = policy.wants_rows();
    let tracking = policy.may_record();
    let reads_summary = policy.reads_summary();
    let (notices_tx, notices) = tokio::sync::mpsc::unbounded_channel();
    let cancel = ctx.cancel.clone();
    let judges_sql = reads_summary || ctx.read_only || ctx.upstream_role.is_some();
    let shared = Arc::new(Shared {
        injections: Mutex::new(VecDeque::new()),
        policy: Mutex::new(policy),
        wants_rows,
        expected: Mutex::new(Expected::default()),
        ledger: Mutex::new(Ledger::new(ctx.session_id, tracking, ctx.strict)),
        tracking,
        audit: ctx.log,
        read_only: ctx.read_only,
        upstream_role: ctx.upstream_role,
        catalog,
        session: SessionInfoForHold {
            session_id: ctx.session_id,
            identity: ctx.identity,
            target: ctx.target,
            approvals: ctx.approvals,
            cancel_signal: ctx.cancel_signal,
        },
        notices: notices_tx,
        from_client: Default::default(),
        to_client: Default::default(),
        marker: injection::new_refusal_marker(),
        copy_start: CopyStart::default(),
        app_name: ctx.app_name,
        encoding: std::sync::atomic::AtomicU8::new(ctx.client_encoding.index()),
        server_converts: ctx.server_converts,
        judges_sql,
    });
    let (client_rd, mut client_wr) = tokio::io::split(client);
    let (up_rd, mut up_wr) = tokio::io::split(upstream);
    let c2s = client::ClientSide::new(
        &shared,
        client_rd,
        &mut up_wr,
        pending,
        max_message,
        BudgetShare::new(budget),
        cancel,
    )
    .run();
    let s2c = server::ServerSide::new(&shared, up_rd, &mut client_wr, max_message, notices).run();
    let outcome = tokio::select! {
        r = c2s => r.map(|()| EndReason::ClientClosed),
        r = s2c => r.map(|()| EndReason::UpstreamClosed),
        stop = stop => Err(match stop {
            Stop::ShuttingDown => RelayError::ShuttingDown,
            Stop::Revoked(why) => RelayError::Revoked(why),
        }),
    };
    let reason = match outcome {
        Ok(reason) => reason,
        Err(e) => {
            if let Some(fatal) = fatal_for(&e) {
                // Tell the client why, as PostgreSQL does, then close both sides.
                let mut b = BytesMut::new();
                fatal.encode(&mut b);
                let _ = client_wr.write_all(&b).await;
                let _ = client_wr.flush().await;
                let _ = up_wr.write_all(TERMINATE).await;
                let _ = up_wr.flush().await;
            }
            match e {
                RelayError::Revoked(why) => EndReason::Revoked(why),
                e => EndReason::Error(e.to_string()),
            }
        }
    };
    let _ = client_wr.shutdown().await;
    let unanswered = shared.ledger().end();
    shared.write_audit(unanswered).await;
    let traffic = Traffic {
        from_client: shared
            .from_client
            .load(std::sync::atomic::Ordering::Relaxed),
        to_client: shared.to_client.load(std::sync::atomic::Ordering::Relaxed),
    };
    let policy = match Arc::try_unwrap(shared) {
        Ok(s) => s.policy.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(_) => Box::new(crate::policy::PassThrough),
    };
    (reason, policy, traffic)
}

/// The `FATAL` a client gets when the relay ends with `e`, if it gets one
/// (not when a side simply went away).
fn fatal_for(e: &RelayError) -> Option<ErrorFields> {
    match e {
        RelayError::Codec(codec) => Some(ErrorFields::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid message: {codec}"),
        )),
        RelayError::Revoked(why) => Some(
            ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                format!("terminating connection: {why}"),
            )
            .with_hint("ask whoever delegated to you for a new token"),
        ),
        RelayError::Budget(e) => Some(budget_refusal(e)),
        RelayError::EncodingChanged(_) => Some(
            ErrorFields::fatal(sqlstate::FEATURE_NOT_SUPPORTED, format!("terminating connection: {e}"))
                .with_hint("use client_encoding UTF8, SQL_ASCII or a single-byte encoding such as LATIN1 (on a SQL_ASCII database, UTF8); convert multibyte text such as SJIS to UTF-8 in the client"),
        ),
        RelayError::StandardStringsOff => Some(
            ErrorFields::fatal(sqlstate::FEATURE_NOT_SUPPORTED, format!("terminating connection: {e}"))
                .with_hint("keep standard_conforming_strings on (PostgreSQL's default); use E'...' strings for backslash escapes"),
        ),
        RelayError::TooManyNames(e) => Some(ErrorFields::fatal(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!("terminating connection: {e}"),
        )),
        RelayError::RoleLeft(why) => Some(
            ErrorFields::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("terminating connection: {why}"),
            )
            .with_hint("tell the gateway operator: a statement escaped the role this session is pinned to"),
        ),
        RelayError::ShuttingDown => Some(
            ErrorFields::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the gateway is shutting down",
            )
            .with_hint(
                "reconnect; another gateway instance or the restarted one will serve you",
            ),
        ),
        _ => None,
    }
}

/// The `FATAL` a client gets when its message does not fit the budget.
/// `53200 out_of_memory`: the gateway ran short of a resource (class 53,
/// insufficient resources), not of a fixed per-statement limit (`54000`
/// would tell the client the statement itself can never run, which is
/// false once other sessions' messages are through).
fn budget_refusal(e: &BudgetError) -> ErrorFields {
    let hint = match e {
        BudgetError::TooLarge { .. } => "send the data in smaller statements (or with COPY, which is streamed), or ask the gateway operator to raise gateway.buffered_message_budget_bytes",
        BudgetError::Exhausted { .. } => "reconnect and try again later, send the data in smaller statements (or with COPY, which is streamed), or ask the gateway operator to raise gateway.buffered_message_budget_bytes",
    };
    ErrorFields::fatal(
        sqlstate::OUT_OF_MEMORY,
        format!("terminating connection: {e}"),
    )
    .with_hint(hint)
}

/// Adds `n` bytes to a traffic counter.
fn count(counter: &std::sync::atomic::AtomicU64, n: usize) {
    counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a reported setting keeps strings read as the gateway reads them
/// (`standard_conforming_strings` on; any other setting).
pub(super) fn standard_strings(name: &str, value: &str) -> bool {
    !name.eq_ignore_ascii_case("standard_conforming_strings") || value.eq_ignore_ascii_case("on")
}
