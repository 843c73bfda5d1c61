//! The relay after start-up: two directions, each a loop that reads into one
//! buffer, finds message boundaries, raises policy events only for the
//! messages a policy looks at, and writes everything else out of the same
//! buffer it was read into (bytes in, same bytes out).
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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::approval;
use super::budget::{BudgetError, BudgetShare, MessageBudget};
use super::catalog::TargetCatalog;
use super::copy_in::{self, CopyStart, CopyWatch, SyncAction};
use super::held::{self, BindError, Execution, HeldStatements, Step};
use super::ledger::{Before, Ledger};
use super::responses::{Expect, Expected};
use super::result_lineage::{self, Closed, Judged, Names, Source};
use super::stream::Stream;
use super::RelayError;
use crate::audit::AuditLog;
use crate::policy::{
    EndReason, QueryEvent, QueryNote, ResultColumn, ResultPlan, RowEdit, SessionPolicy, ValueEdit,
    Verdict,
};
use crate::protocols::postgres::codec::encoding::ClientEncoding;
use crate::protocols::postgres::codec::error_response::ErrorFields;
use crate::protocols::postgres::codec::tags::{backend as be, frontend as fe};
use crate::protocols::postgres::codec::{
    bind, command_complete, data_row, describe, error_response, parameter_status, parse,
    peek_frame, query, row_description, sqlstate,
};
use crate::protocols::postgres::sql::lineage::Lineage;
use crate::store::Record;

/// Read buffer growth step.
const READ_CHUNK: usize = 32 * 1024;
/// `Terminate` message.
const TERMINATE: &[u8] = &[fe::TERMINATE, 0, 0, 0, 4];
/// `Flush` message.
const FLUSH: &[u8] = &[fe::FLUSH, 0, 0, 0, 4];

/// An error to write to the client just before `ReadyForQuery` number `seq`.
struct Injection {
    seq: u64,
    bytes: Bytes,
}

struct Shared {
    injections: Mutex<VecDeque<Injection>>,
    policy: Mutex<Box<dyn SessionPolicy>>,
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
    /// Gets a reason when the session's delegated token is revoked.
    pub revoked: Option<tokio::sync::watch::Receiver<Option<String>>>,
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

use crate::gateway::lifecycle::Traffic;

/// The session's identity and approvals, for statements held for approval.
struct SessionInfoForHold {
    session_id: u64,
    identity: crate::identity::Identity,
    target: String,
    approvals: Arc<crate::approvals::Approvals>,
    cancel_signal: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Bytes a client may send while one of its statements is held before the
/// gateway stops reading (and the client waits).
const HELD_READ_LIMIT: usize = 1 << 20;

/// The error a client gets when its statement could not be recorded.
fn audit_failure_bytes(e: &crate::audit::AuditError) -> Bytes {
    let mut b = BytesMut::new();
    ErrorFields::error(
        sqlstate::SYSTEM_ERROR,
        format!("the statement was not run because the gateway could not record it first ({e})"),
    )
    .with_hint("this target requires every statement to be recorded before it runs; try again, and tell the gateway operator if it persists")
    .encode(&mut b);
    b.freeze()
}

/// Session-wide limits of the relay.
pub struct Limits {
    /// Largest message accepted in either direction.
    pub max_message: usize,
    /// Becomes `true` when the session must close (gateway shutdown).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// What all sessions may hold for incomplete client messages.
    pub budget: Arc<MessageBudget>,
}

/// What happens to the rest of a message that did not fit in the buffer.
#[derive(Clone, Copy)]
enum Carry {
    None,
    Forward(usize),
    Skip(usize),
}

/// Goes on with a message begun in an earlier read: forwarded bytes join the
/// pending region `start..pos`, skipped ones are cut out of it (the region
/// before them is written first). Returns whether the message continues
/// past this buffer.
async fn continue_carry<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
    carry: &mut Carry,
    start: &mut usize,
    pos: &mut usize,
) -> std::io::Result<bool> {
    let (n, skip) = match *carry {
        Carry::None => return Ok(false),
        Carry::Forward(n) => (n, false),
        Carry::Skip(n) => (n, true),
    };
    let take = n.min(buf.len() - *pos);
    if skip {
        write_out(wr, &buf[*start..*pos]).await?;
        *start = *pos + take;
    }
    *pos += take;
    *carry = match (n > take, skip) {
        (false, _) => Carry::None,
        (true, false) => Carry::Forward(n - take),
        (true, true) => Carry::Skip(n - take),
    };
    Ok(!matches!(carry, Carry::None))
}

/// Runs the session until either side ends; returns why it ended.
pub async fn run(
    client: Stream,
    upstream: Stream,
    policy: Box<dyn SessionPolicy>,
    pending: BytesMut,
    limits: Limits,
    catalog: TargetCatalog,
    ctx: SessionContext,
) -> (EndReason, Box<dyn SessionPolicy>, Traffic) {
    let Limits {
        max_message,
        mut closing,
        budget,
    } = limits;
    let wants_rows = policy.wants_rows();
    let tracking = policy.may_record();
    let reads_summary = policy.reads_summary();
    let (notices_tx, notices) = tokio::sync::mpsc::unbounded_channel();
    let cancel = ctx.cancel.clone();
    let mut revoked = ctx.revoked.clone();
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
        marker: new_refusal_marker(),
        copy_start: CopyStart::default(),
        app_name: ctx.app_name,
        encoding: std::sync::atomic::AtomicU8::new(ctx.client_encoding.index()),
        server_converts: ctx.server_converts,
        judges_sql,
    });
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let c2s = client_to_server(
        &mut client_rd,
        &mut up_wr,
        &shared,
        pending,
        max_message,
        BudgetShare::new(budget),
        cancel,
    );
    let s2c = server_to_client(
        &mut up_rd,
        &mut client_wr,
        &shared,
        max_message,
        &shared.catalog,
        notices,
    );
    let outcome = tokio::select! {
        r = c2s => r.map(|()| EndReason::ClientClosed),
        r = s2c => r.map(|()| EndReason::UpstreamClosed),
        _ = closing.wait_for(|c| *c) => Err(RelayError::ShuttingDown),
        why = revocation(&mut revoked) => Err(RelayError::Revoked(why)),
    };
    let reason = match outcome {
        Ok(reason) => reason,
        Err(e) => {
            let fatal = match &e {
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
            };
            if let Some(fatal) = fatal {
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

fn denial_bytes(verdict: &Verdict) -> Option<Bytes> {
    let fields = match verdict {
        Verdict::Allow => return None,
        Verdict::Deny { reason } => {
            ErrorFields::error(sqlstate::INSUFFICIENT_PRIVILEGE, reason.clone()).with_hint(
                "the statement was not run; change it, or ask the gateway operator about the rule",
            )
        }
        Verdict::RequireApproval { reason } => ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("statement needs approval: {reason}"),
        )
        .with_hint("this message cannot be held for approval; ask the gateway operator"),
    };
    let mut b = BytesMut::new();
    fields.encode(&mut b);
    Some(b.freeze())
}

/// Resolves with the reason when the session's delegated token is revoked;
/// never for a session without one.
async fn revocation(revoked: &mut Option<tokio::sync::watch::Receiver<Option<String>>>) -> String {
    if let Some(rx) = revoked {
        if let Ok(v) = rx.wait_for(Option::is_some).await {
            return v.clone().unwrap_or_default();
        }
    }
    std::future::pending().await
}

fn count(counter: &std::sync::atomic::AtomicU64, n: usize) {
    counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    if !bytes.is_empty() {
        w.write_all(bytes).await?;
    }
    Ok(())
}

/// Gives back memory after a large message has gone through, so a session
/// holds only small read buffers between messages — also when the bytes of
/// the next message already arrived behind it (they are moved to a small
/// buffer; the budget no longer counts the large one, so it must not stay).
/// `large` says the buffer was grown past a few chunks since it was last
/// small (its allocation stays that large however far it was advanced).
fn shrink_if_idle(buf: &mut BytesMut, large: &mut bool) {
    if *large && buf.len() < 8 * READ_CHUNK {
        let mut small = BytesMut::with_capacity(buf.len().max(READ_CHUNK));
        small.extend_from_slice(buf);
        *buf = small;
        *large = false;
    }
}

/// Ensures room for the next read. `need` is the announced length of the
/// incomplete message at the front of `buf` (0 when none): the buffer grows
/// toward it by [`next_capacity`], never to it at once, so a length on the
/// wire costs memory only as its bytes arrive.
/// Sets `large` when the buffer grows past a few chunks.
fn make_room(buf: &mut BytesMut, need: usize, large: &mut bool) {
    let want = next_capacity(buf.len(), need);
    if buf.capacity() < want || buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(want.saturating_sub(buf.len()).max(READ_CHUNK));
    }
    *large |= buf.capacity() > 8 * READ_CHUNK;
}

/// Capacity wanted before the next read when `len` bytes are buffered and
/// the message at the front is `need` bytes long: room for one read chunk,
/// or for as many bytes again as have arrived (doubling, so a large message
/// is copied a bounded number of times), but no more than the message needs.
/// Messages up to a chunk get their whole length at once (the fast path).
fn next_capacity(len: usize, need: usize) -> usize {
    let step = len.max(READ_CHUNK);
    need.min(len.saturating_add(step)).max(len + READ_CHUNK / 4)
}

/// Covers the incomplete client message at the front of the buffer with
/// the session's budget share before the buffer grows for it; gives the
/// share back once no message larger than a chunk is pending.
fn cover_pending(share: &mut BudgetShare, len: usize, need: usize) -> Result<(), BudgetError> {
    if need > READ_CHUNK {
        share.hold(need, next_capacity(len, need))
    } else {
        share.release();
        Ok(())
    }
}

async fn client_to_server(
    rd: &mut ReadHalf<Stream>,
    wr: &mut WriteHalf<Stream>,
    shared: &Shared,
    pending: BytesMut,
    max: usize,
    mut share: BudgetShare,
    mut cancel: tokio::sync::watch::Receiver<u64>,
) -> Result<(), RelayError> {
    let mut buf = pending;
    let mut carry = Carry::None;
    let mut syncs: u64 = 0;
    // After a refused Parse: messages up to the next Sync are dropped, and the
    // error is injected before that Sync's ReadyForQuery.
    let mut pending_error: Option<Bytes> = None;
    let mut need = 0usize;
    // Whether the buffer grew past a few chunks since it was last small.
    let mut large = false;
    let mut first = true;
    // Bytes the client sent while a statement was held, processed next; and
    // whether it went away meanwhile.
    let mut early = BytesMut::new();
    let mut skip_read = false;
    let mut client_gone = false;
    // Portals described since their Bind (only tracked when rows are watched).
    let mut described: std::collections::HashSet<String> = Default::default();
    // Prepared statements held for approval, judged at each run.
    let mut held = HeldStatements::default();
    // Whether the next message starts a batch (the server skips nothing
    // before it): only such messages can give up a hold.
    let mut batch_start = true;
    // COPY FROM STDIN: statements and portals that may copy, ignorable Syncs.
    let mut copy = CopyWatch::default();
    // Code the gateway cannot read (DO, dynamic SQL) may change how the
    // server reads what follows (its client_encoding), which the gateway
    // learns only at ReadyForQuery: nothing more is judged before then.
    let mut unread_code = UnreadCode::default();
    // Bind, Describe, Execute and Close are decoded when anything reads
    // SQL or rows (a pass-through session never refuses or injects).
    let decode_extended = shared.wants_rows || shared.tracking || shared.judges_sql;
    loop {
        cover_pending(&mut share, buf.len(), need)?;
        make_room(&mut buf, need, &mut large);
        let replay = std::mem::take(&mut first) && !buf.is_empty();
        if replay {
            count(&shared.from_client, buf.len());
        } else if std::mem::take(&mut skip_read) {
            // Bytes read while a statement was held: process them first.
        } else {
            let n = rd.read_buf(&mut buf).await?;
            if n == 0 {
                // Client went away without Terminate: end the upstream session.
                let _ = wr.write_all(TERMINATE).await;
                let _ = wr.flush().await;
                return Ok(());
            }
            count(&shared.from_client, n);
        }
        need = 0;
        let mut start = 0usize; // first byte not yet written or skipped
        let mut pos = 0usize; // first byte not yet examined
        loop {
            if continue_carry(wr, &buf, &mut carry, &mut start, &mut pos).await? {
                break;
            }
            let Some(h) = peek_frame(&buf[pos..], max)? else {
                break;
            };
            let available = buf.len() - pos;
            copy.message(h.tag, shared.copy_start.ready_seen())
                .map_err(|_| {
                    RelayError::Codec(crate::protocols::postgres::codec::CodecError::Invalid(
                        copy_in::SENT_DURING_COPY,
                    ))
                })?;
            // A Sync or Flush with a body: PostgreSQL refuses it, and the
            // batch would not end (or go on) where the gateway thinks.
            if matches!(h.tag, fe::SYNC | fe::FLUSH) && h.total_len != 5 {
                return Err(RelayError::Codec(
                    crate::protocols::postgres::codec::CodecError::Invalid(
                        "Sync or Flush with a body",
                    ),
                ));
            }
            let statement_work = !matches!(
                h.tag,
                fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL | fe::TERMINATE
            );
            if statement_work && unread_code.barrier > shared.copy_start.ready_seen() {
                write_out(wr, &buf[start..pos]).await?;
                start = pos;
                wr.flush().await?;
                shared.copy_start.wait_ready(unread_code.barrier).await;
            }
            if statement_work
                && h.tag != fe::SYNC
                && unread_code.in_batch
                && pending_error.is_none()
            {
                // The rest of the batch would be read by the server in an
                // encoding the gateway cannot know yet: refused.
                let err = denial_bytes(&Verdict::Deny {
                    reason: UNREAD_CODE_REFUSAL.into(),
                })
                .unwrap_or_default();
                write_out(wr, &buf[start..pos]).await?;
                let take = h.total_len.min(available);
                pos += take;
                start = pos;
                if take < h.total_len {
                    carry = Carry::Skip(h.total_len - take);
                }
                pending_error = Some(refuse_batch(shared, syncs, err));
                write_out(wr, &failing_parse(&shared.marker)).await?;
                if take < h.total_len {
                    break;
                }
                continue;
            }
            match h.tag {
                fe::QUERY | fe::PARSE => {
                    if available < h.total_len {
                        need = h.total_len;
                        break;
                    }
                    let frame = &buf[pos..pos + h.total_len];
                    let first_in_batch = batch_start;
                    if h.tag == fe::PARSE {
                        batch_start = false;
                    }
                    if pending_error.is_some() {
                        // Still discarding after a refused Parse.
                        write_out(wr, &buf[start..pos]).await?;
                        pos += h.total_len;
                        start = pos;
                        continue;
                    }
                    if h.tag == fe::QUERY && !first_in_batch {
                        return Err(mid_batch());
                    }
                    let mut note = QueryNote::default();
                    if h.tag == fe::QUERY {
                        // The query may CLOSE or DECLARE a portal by name.
                        described.clear();
                    }
                    // A name is read before the rest (it may not be text).
                    if let Some(why) = message_name_problem(h.tag, frame, decode_extended) {
                        write_out(wr, &buf[start..pos]).await?;
                        pos += h.total_len;
                        start = pos;
                        pending_error = Some(refuse_named(wr, shared, syncs, why).await?);
                        continue;
                    }
                    let (raw_sql, statement, param_types) = if h.tag == fe::QUERY {
                        (query::decode(frame)?, None, &[][..])
                    } else {
                        let p = parse::decode(frame)?;
                        (p.query, Some(p.statement), p.param_types)
                    };
                    // Read as the server reads it: converted from the
                    // session's client encoding (see codec::encoding); text
                    // that does not convert is refused, as PostgreSQL
                    // refuses it. The client's bytes go upstream unchanged.
                    // Text that is not ASCII reads differently in different
                    // client encodings, and what runs before it may switch
                    // the encoding unseen (code the gateway does not follow
                    // may switch and switch back within a batch): it is read
                    // only where the encoding is known, first in its batch
                    // once every earlier batch is answered.
                    let mut mid_batch_text = None;
                    if shared.judges_sql && !raw_sql.is_ascii() {
                        if first_in_batch {
                            if shared.copy_start.ready_seen() < syncs {
                                write_out(wr, &buf[start..pos]).await?;
                                start = pos;
                                wr.flush().await?;
                                shared.copy_start.wait_ready(syncs).await;
                            }
                        } else {
                            mid_batch_text = Some(NON_ASCII_MID_BATCH.to_string());
                        }
                    }
                    let encoding = shared.client_encoding();
                    let (sql, unreadable) = match encoding.decode(raw_sql) {
                        Some(text) => (text, None),
                        // Nothing judges it: relayed (and recorded) as is.
                        None if !shared.judges_sql => (String::from_utf8_lossy(raw_sql), None),
                        None => (
                            String::from_utf8_lossy(raw_sql),
                            Some(format!(
                                "the statement is not valid in the session's client_encoding {}",
                                encoding.name
                            )),
                        ),
                    };
                    let sql: &str = &sql;
                    let event = match statement {
                        None => QueryEvent::Simple { sql },
                        Some(statement) => QueryEvent::Parse { statement, sql },
                    };
                    note.summary = judged_summary(shared, sql).await;
                    let refusal = unreadable
                        .or(mid_batch_text)
                        .or_else(|| host_refusal(shared, &mut note));
                    let mut verdict = match refusal {
                        Some(reason) => Verdict::Deny { reason },
                        None => shared.policy().on_query(event, &mut note),
                    };
                    if !matches!(verdict, Verdict::Deny { .. }) && changes_parsing(&note) {
                        // After the policy, which may name its own rule.
                        verdict = Verdict::Deny {
                            reason: PARSING_REFUSAL.into(),
                        };
                        note.decided_by = Some("gateway".into());
                        note.rule = Some("standard-strings".into());
                    }
                    if !matches!(verdict, Verdict::Deny { .. }) {
                        let (inner, inner_note) = judge_prepared(shared, &note).await;
                        if inner.strictness() > verdict.strictness() {
                            verdict = inner;
                            note.decided_by = inner_note.decided_by;
                            note.rule = inner_note.rule;
                            note.approval = inner_note.approval;
                        }
                    }
                    if !matches!(verdict, Verdict::Deny { .. }) {
                        let fetched = note
                            .summary
                            .as_ref()
                            .map(|s| {
                                s.statements
                                    .iter()
                                    .flat_map(|st| st.fetches.iter().map(String::as_str))
                                    .collect::<Vec<_>>()
                            })
                            .unwrap_or_default();
                        if let Some(p) = held.fetched_unapproved(fetched) {
                            verdict = Verdict::Deny {
                                reason: format!("portal \"{p}\" was bound from a statement held for approval, and FETCH or MOVE would run it without one; run it with the protocol's Execute, which waits for the approval"),
                            };
                            note.decided_by = Some("gateway".into());
                            note.rule = Some("held-portal".into());
                        }
                    }
                    if !matches!(verdict, Verdict::Deny { .. }) && changes_catalog(&note) {
                        // New code or new shapes: read the catalog afresh
                        // (not for a refused DDL, which changes nothing).
                        shared.catalog.invalidate_code();
                    }
                    crate::metrics::global().query(verdict.label(), note.decided_by.as_deref());
                    let mut denial = denial_bytes(&verdict);
                    let parse_info = statement.map(|name| held::ParseInfo {
                        name,
                        param_types,
                        first_in_batch,
                    });
                    match held::step(&mut held, &verdict, &note, sql, parse_info) {
                        Step::Pass => {}
                        Step::Deferred => {
                            verdict = Verdict::Allow;
                            denial = None;
                            // Every run of a held statement is recorded.
                            note.record.get_or_insert_with(Default::default);
                        }
                        Step::Refuse(reason) => {
                            verdict = Verdict::Deny { reason };
                            denial = denial_bytes(&verdict);
                        }
                        Step::Hold {
                            shown,
                            note: mut terms,
                            reason,
                        } => {
                            // Earlier statements of the batch go ahead while this one waits.
                            write_out(wr, &buf[start..pos]).await?;
                            wr.flush().await?;
                            start = pos;
                            let w = WhileHeld {
                                rd: &mut *rd,
                                early: &mut early,
                                client_gone: &mut client_gone,
                                cancel: &mut cancel,
                            };
                            match hold_reading(shared, w, &shown, &mut terms, &reason).await {
                                approval::Held::Run => {
                                    verdict = Verdict::Allow;
                                    denial = None;
                                    note.approval_id = terms.approval_id;
                                    // What ran under an approval is always recorded.
                                    note.record.get_or_insert_with(Default::default);
                                }
                                approval::Held::Refuse(err) => {
                                    note.approval_id = terms.approval_id;
                                    verdict = Verdict::RequireApproval { reason };
                                    denial = Some(err);
                                }
                            }
                        }
                    }
                    let before = match statement {
                        None => shared.ledger().query(sql, &note, &verdict, syncs + 1),
                        Some(name) => shared.ledger().parse(name, sql, &note, &verdict),
                    };
                    match before {
                        Before::Forward => {}
                        Before::Write(r) => shared.audit.record(r).await,
                        Before::Durable(r) => {
                            write_out(wr, &buf[start..pos]).await?;
                            start = pos;
                            if let Err(e) = shared.audit.record_durably(r).await {
                                tracing::warn!(error = %e, "statement refused: it could not be recorded first");
                                let abandoned = shared.ledger().abandon_last(&e.to_string());
                                shared.write_audit(abandoned.into_iter().collect()).await;
                                denial = Some(audit_failure_bytes(&e));
                            }
                        }
                    }
                    match denial {
                        None => {
                            let summary = Judged(note.summary.clone());
                            // What the server may run as COPY FROM STDIN.
                            let copies = note.summary.as_ref().map_or_else(
                                || copy_in::may_copy(sql),
                                |s| s.statements.iter().any(|st| st.is_copy),
                            );
                            match statement {
                                Some(name) if copies => copy.parsed(name),
                                None if copies => copy.queried(syncs + 1),
                                _ => {}
                            }
                            if runs_unread_code(&note) {
                                match statement {
                                    Some(name) => unread_code.names.mark_statement(name),
                                    None => unread_code.barrier = syncs + 1,
                                }
                            }
                            if h.tag == fe::QUERY {
                                syncs += 1;
                                shared.expect(Expect::Ready {
                                    query: true,
                                    summary,
                                });
                            } else {
                                shared.expect(Expect::ParseComplete {
                                    statement: statement.unwrap_or_default().to_string(),
                                    summary,
                                });
                            }
                            pos += h.total_len;
                        }
                        Some(err) => {
                            write_out(wr, &buf[start..pos]).await?;
                            pos += h.total_len;
                            start = pos;
                            if h.tag == fe::QUERY {
                                syncs += 1;
                                push_injection(shared, syncs, err);
                                shared.expect(Expect::sync());
                                write_out(wr, &failing_query(&shared.marker)).await?;
                            } else {
                                pending_error = Some(refuse_batch(shared, syncs, err));
                                write_out(wr, &failing_parse(&shared.marker)).await?;
                            }
                        }
                    }
                }
                fe::SYNC => {
                    let action = copy.sync(syncs + 1);
                    if action != SyncAction::Forward && available < h.total_len {
                        need = h.total_len;
                        break;
                    }
                    let started = match action {
                        SyncAction::Forward => false,
                        SyncAction::Drop => true,
                        SyncAction::Decide { batch, earlier } => {
                            // Flush instead, and learn from the server's
                            // answer whether it is copying in (then it
                            // would ignore this Sync).
                            write_out(wr, &buf[start..pos]).await?;
                            start = pos;
                            wr.write_all(FLUSH).await?;
                            wr.flush().await?;
                            let started = shared.copy_start.wait(batch, earlier).await;
                            copy.decided(started);
                            started
                        }
                    };
                    if started {
                        // Dropped, uncounted: PostgreSQL ignores it.
                        write_out(wr, &buf[start..pos]).await?;
                        pos += h.total_len;
                        start = pos;
                        continue;
                    }
                    batch_start = true;
                    syncs += 1;
                    held.batch_end();
                    if std::mem::take(&mut unread_code.in_batch) {
                        unread_code.barrier = syncs;
                    }
                    shared.expect(Expect::sync());
                    // The refusal was queued for this Sync's ReadyForQuery
                    // when it was decided (see `refuse_batch`).
                    pending_error = None;
                    pos += h.total_len.min(available);
                    if available < h.total_len {
                        carry = Carry::Forward(h.total_len - available);
                    }
                }
                fe::TERMINATE => {
                    write_out(wr, &buf[start..pos]).await?;
                    wr.write_all(TERMINATE).await?;
                    wr.flush().await?;
                    return Ok(());
                }
                fe::FUNCTION_CALL if pending_error.is_none() => {
                    // FunctionCall: one ReadyForQuery, like a Query.
                    if !batch_start {
                        return Err(mid_batch());
                    }
                    syncs += 1;
                    shared.expect(Expect::sync());
                    let take = h.total_len.min(available);
                    let verdict = if shared.read_only {
                        Verdict::Deny {
                            reason: "this session is read-only: the FunctionCall protocol message could call a function that writes; call functions in SQL instead".into(),
                        }
                    } else if let Some(role) = &shared.upstream_role {
                        Verdict::Deny {
                            reason: super::role_lock::function_call_violation(role),
                        }
                    } else {
                        shared.policy().on_function_call()
                    };
                    if verdict != Verdict::Allow {
                        let r = shared
                            .ledger()
                            .function_call_refused(&QueryNote::default(), &verdict);
                        shared.audit.record(r).await;
                    }
                    match denial_bytes(&verdict) {
                        None => {
                            pos += take;
                            if take < h.total_len {
                                carry = Carry::Forward(h.total_len - take);
                            }
                        }
                        Some(err) => {
                            write_out(wr, &buf[start..pos]).await?;
                            pos += take;
                            start = pos;
                            if take < h.total_len {
                                carry = Carry::Skip(h.total_len - take);
                            }
                            push_injection(shared, syncs, err);
                            write_out(wr, &failing_query(&shared.marker)).await?;
                        }
                    }
                }
                fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE
                    if (decode_extended || !held.is_empty()) && pending_error.is_none() =>
                {
                    if available < h.total_len {
                        need = h.total_len;
                        break;
                    }
                    let frame = &buf[pos..pos + h.total_len];
                    // Close cannot fail, so it leaves the batch as fresh as it was.
                    let first_in_batch = batch_start;
                    if h.tag != fe::CLOSE {
                        batch_start = false;
                    }
                    if let Some(why) = message_name_problem(h.tag, frame, true) {
                        // Refused like a Parse: the rest of the batch is dropped.
                        write_out(wr, &buf[start..pos]).await?;
                        pos += h.total_len;
                        start = pos;
                        pending_error = Some(refuse_named(wr, shared, syncs, why).await?);
                        continue;
                    }
                    match h.tag {
                        fe::BIND => {
                            // Malformed, PostgreSQL refuses it and keeps the
                            // portal it would have replaced: the gateway ends
                            // the session (`decode` checks the whole frame).
                            let b = bind::decode(frame)?;
                            let portal = b.portal;
                            match held.bound(portal, b.statement, frame, first_in_batch) {
                                Ok(()) => {}
                                Err(BindError::Codec(e)) => return Err(e.into()),
                                Err(BindError::Full(e)) => {
                                    // Refused like a Parse: the rest of the batch is dropped.
                                    write_out(wr, &buf[start..pos]).await?;
                                    pos += h.total_len;
                                    start = pos;
                                    let err = denial_bytes(&Verdict::Deny {
                                        reason: e.to_string(),
                                    })
                                    .unwrap_or_default();
                                    pending_error = Some(refuse_batch(shared, syncs, err));
                                    write_out(wr, &failing_parse(&shared.marker)).await?;
                                    continue;
                                }
                            }
                            copy.bound(portal, b.statement);
                            unread_code.names.bound(portal, b.statement);
                            if shared.tracking {
                                shared.ledger().bind(portal, b.statement);
                            }
                            described.remove(portal);
                            shared.expect(Expect::BindComplete {
                                portal: portal.to_string(),
                                statement: b.statement.to_string(),
                            });
                        }
                        fe::DESCRIBE => match describe::decode_describe(frame)? {
                            describe::Target::Statement(_) => {
                                shared.expect(Expect::StatementDescription)
                            }
                            describe::Target::Portal(p) => {
                                described.insert(p.to_string());
                                shared.expect(Expect::PortalDescription {
                                    portal: p.to_string(),
                                    forward: true,
                                });
                            }
                        },
                        fe::EXECUTE => {
                            let portal = describe::execute::decode(frame)?.to_string();
                            // A run of a held statement waits for its approval.
                            let mut approved: Option<(String, String)> = None;
                            let pending = match held.execution(&portal) {
                                Execution::Free => None,
                                Execution::Judge(run) => Some(Ok(run)),
                                Execution::Refuse(why) => Some(Err(why)),
                            };
                            if let Some(pending) = pending {
                                write_out(wr, &buf[start..pos]).await?;
                                wr.flush().await?;
                                start = pos;
                                let w = WhileHeld {
                                    rd: &mut *rd,
                                    early: &mut early,
                                    client_gone: &mut client_gone,
                                    cancel: &mut cancel,
                                };
                                match judge_execution(shared, w, &portal, pending).await {
                                    HeldRun::Run { approval_id, shown } => {
                                        held.started(&portal);
                                        approved = Some((approval_id, shown));
                                    }
                                    HeldRun::Refused(err) => {
                                        // The rest of the batch is dropped; the
                                        // error comes before its ReadyForQuery.
                                        pos += h.total_len;
                                        start = pos;
                                        pending_error = Some(refuse_batch(shared, syncs, err));
                                        write_out(wr, &failing_parse(&shared.marker)).await?;
                                        continue;
                                    }
                                }
                            }
                            if shared.tracking {
                                let approved = approved
                                    .as_ref()
                                    .map(|(id, shown)| (id.as_str(), shown.as_str()));
                                let before = shared.ledger().execute(&portal, syncs + 1, approved);
                                if let Before::Durable(r) = before {
                                    write_out(wr, &buf[start..pos]).await?;
                                    start = pos;
                                    if let Err(e) = shared.audit.record_durably(r).await {
                                        tracing::warn!(error = %e, "statement refused: it could not be recorded first");
                                        let abandoned =
                                            shared.ledger().abandon_last(&e.to_string());
                                        shared.write_audit(abandoned.into_iter().collect()).await;
                                        // Drop the rest of the batch; the
                                        // error comes before its ReadyForQuery.
                                        pos += h.total_len;
                                        start = pos;
                                        pending_error = Some(refuse_batch(
                                            shared,
                                            syncs,
                                            audit_failure_bytes(&e),
                                        ));
                                        write_out(wr, &failing_parse(&shared.marker)).await?;
                                        continue;
                                    }
                                }
                            }
                            if shared.wants_rows && !described.contains(&portal) {
                                // Learn the portal's real columns and formats
                                // first; the answer is kept from the client.
                                write_out(wr, &buf[start..pos]).await?;
                                start = pos;
                                let mut d = BytesMut::new();
                                describe::encode_describe_portal(&mut d, &portal);
                                shared.expect(Expect::PortalDescription {
                                    portal: portal.clone(),
                                    forward: false,
                                });
                                wr.write_all(&d).await?;
                                described.insert(portal.clone());
                            }
                            // What runs now may be SQL that closes or
                            // declares other portals by name: their columns
                            // are learnt again before they run.
                            described.retain(|p| *p == portal);
                            copy.executed(&portal);
                            unread_code.in_batch |= unread_code.names.portal(&portal);
                            shared.expect(Expect::Execute { portal });
                        }
                        _ => {
                            let target = describe::decode_close(frame)?;
                            match target {
                                describe::Target::Portal(p) => {
                                    described.remove(p);
                                    held.closed_portal(p, first_in_batch);
                                }
                                describe::Target::Statement(st) => {
                                    held.closed_statement(st, first_in_batch)
                                }
                            }
                            if shared.tracking {
                                match target {
                                    describe::Target::Portal(p) => {
                                        shared.ledger().close(None, Some(p))
                                    }
                                    describe::Target::Statement(st) => {
                                        shared.ledger().close(Some(st), None)
                                    }
                                }
                            }
                            shared.expect(Expect::CloseComplete {
                                closed: match target {
                                    describe::Target::Portal(p) => Closed::Portal(p.to_string()),
                                    describe::Target::Statement(st) => {
                                        Closed::Statement(st.to_string())
                                    }
                                },
                            });
                        }
                    }
                    pos += h.total_len;
                }
                _ => {
                    // Extended-protocol messages that can fail open a batch
                    // (Close and Flush cannot; COPY data after a Query does not).
                    if matches!(h.tag, fe::BIND | fe::EXECUTE | fe::DESCRIBE) {
                        batch_start = false;
                    }
                    let take = h.total_len.min(available);
                    if pending_error.is_some() {
                        write_out(wr, &buf[start..pos]).await?;
                        pos += take;
                        start = pos;
                        if take < h.total_len {
                            carry = Carry::Skip(h.total_len - take);
                        }
                    } else {
                        pos += take;
                        if take < h.total_len {
                            carry = Carry::Forward(h.total_len - take);
                        }
                    }
                }
            }
        }
        write_out(wr, &buf[start..pos]).await?;
        wr.flush().await?;
        buf.advance(pos);
        if client_gone {
            let _ = wr.write_all(TERMINATE).await;
            let _ = wr.flush().await;
            return Ok(());
        }
        if !early.is_empty() {
            buf.extend_from_slice(&early);
            early.clear();
            skip_read = true;
        }
        shrink_if_idle(&mut buf, &mut large);
    }
}

/// A `Query` or `FunctionCall` sent inside an extended-protocol
/// batch, before its `Sync`: PostgreSQL runs it, or skips it without a
/// `ReadyForQuery` if an earlier message of the batch failed — which the
/// gateway cannot know, and its count of `ReadyForQuery`s (where errors go,
/// which result is which) depends on. No driver does this; the session is
/// ended with a protocol error rather than relayed out of step.
fn mid_batch() -> RelayError {
    RelayError::Codec(crate::protocols::postgres::codec::CodecError::Invalid(
        "message order: a Query or FunctionCall inside an unfinished extended-protocol batch (send Sync first)",
    ))
}

/// Why the host itself refuses the statement summarized in `note` before
/// any plugin sees it: a read-only session's write, or what could leave a
/// pinned session's upstream role. Notes who decided.
fn host_refusal(shared: &Shared, note: &mut QueryNote) -> Option<String> {
    let summary = note.summary.as_ref()?;
    let refusal = shared
        .read_only
        .then(|| super::read_only::violation(summary))
        .flatten()
        .map(|why| ("read-only token", "read-only", why));
    let refusal = refusal.or_else(|| {
        let role = shared.upstream_role.as_deref()?;
        super::role_lock::violation(summary, role).map(|why| ("upstream role", "role-lock", why))
    });
    let (decider, rule, why) = refusal?;
    note.decided_by = Some(decider.into());
    note.rule = Some(rule.into());
    Some(why)
}

/// Whether a reported setting keeps strings read as the gateway reads them
/// (`standard_conforming_strings` on; any other setting).
pub(super) fn standard_strings(name: &str, value: &str) -> bool {
    !name.eq_ignore_ascii_case("standard_conforming_strings") || value.eq_ignore_ascii_case("on")
}

/// The longest prepared statement or portal name the gateway accepts:
/// PostgreSQL compares names by their first 63 bytes (NAMEDATALEN - 1), so
/// two longer names that differ only after them would be one to the
/// server and two to the gateway.
const MAX_NAME: usize = 63;

/// Why a statement whose text is not ASCII is refused in the middle of
/// a batch.
const NON_ASCII_MID_BATCH: &str = "a statement whose text is not ASCII must start its batch (send Sync before it): until the server has answered what runs before it, the gateway cannot know which client_encoding the server reads it in";

/// Why a message naming `name` is refused, if it is: too long, or (when
/// names are tracked) not ASCII, as PostgreSQL converts names from the
/// client encoding too, so such a name could be another to the server.
fn bad_name(name: &[u8], tracked: bool) -> Option<String> {
    if tracked && !name.is_ascii() {
        let shown = String::from_utf8_lossy(name);
        return Some(format!(
            "prepared statement and portal names must be ASCII through this gateway (\"{shown}\" is not): PostgreSQL reads a name in the session's client_encoding, so another name could mean the same statement to the server; use ASCII names"
        ));
    }
    if name.len() <= MAX_NAME {
        return None;
    }
    let shown: String = String::from_utf8_lossy(name).chars().take(20).collect();
    Some(format!(
        "prepared statement and portal names longer than {MAX_NAME} bytes are not accepted by this gateway (\"{shown}...\" has {} bytes): PostgreSQL compares only their first {MAX_NAME} bytes; use shorter names",
        name.len()
    ))
}

/// Why a Parse (statement), Bind (portal, statement), Describe or Close
/// (after its kind byte) or Execute is refused for a name that is too long
/// or (when `tracked`) not ASCII, read without decoding the rest of the
/// message. A Query names nothing.
fn message_name_problem(tag: u8, frame: &[u8], tracked: bool) -> Option<String> {
    let body = frame.get(5..).unwrap_or_default();
    let (body, count) = match tag {
        fe::QUERY => return None,
        fe::BIND => (body, 2),
        fe::EXECUTE | fe::PARSE => (body, 1),
        _ => (body.get(1..).unwrap_or_default(), 1),
    };
    body.split(|&b| b == 0)
        .take(count)
        .find_map(|name| bad_name(name, tracked))
}

/// Refuses a message for its name, as a refused Parse is: the client gets
/// the reason, the server a failing statement so that the rest of the
/// batch is skipped. Returns the error the batch's Sync is answered with.
async fn refuse_named<W: AsyncWrite + Unpin>(
    wr: &mut W,
    shared: &Shared,
    syncs: u64,
    why: String,
) -> std::io::Result<Bytes> {
    let err = denial_bytes(&Verdict::Deny { reason: why }).unwrap_or_default();
    let pending = refuse_batch(shared, syncs, err);
    write_out(wr, &failing_parse(&shared.marker)).await?;
    Ok(pending)
}

/// Why the rest of a batch is refused after code the gateway cannot read.
const UNREAD_CODE_REFUSAL: &str = "after a statement that runs code the gateway cannot read (DO, dynamic SQL), the batch must end (Sync) before the next statement: that code may change how the server reads what follows";

/// Statements and portals that run code the gateway cannot read, and the
/// `ReadyForQuery` the next statement waits for.
#[derive(Default)]
struct UnreadCode {
    names: super::marked_names::MarkedNames,
    /// Such a portal ran in the batch not yet ended by Sync.
    in_batch: bool,
    /// The `ReadyForQuery` to wait for before judging the next statement.
    barrier: u64,
}

/// Whether the statement judged in `note` runs code the gateway cannot
/// read: a `DO` block, dynamic SQL, a routine it could not read.
fn runs_unread_code(note: &QueryNote) -> bool {
    note.summary.as_ref().is_some_and(|s| {
        s.statements
            .iter()
            .any(|st| st.kind == "do" || !st.unknown_effects.is_empty())
    })
}

/// Whether the statement judged in `note` may turn
/// `standard_conforming_strings` off.
fn changes_parsing(note: &QueryNote) -> bool {
    note.summary
        .as_ref()
        .is_some_and(|s| s.statements.iter().any(|st| st.changes_parsing))
}

/// Why a statement that may turn `standard_conforming_strings` off is
/// refused.
const PARSING_REFUSAL: &str = "standard_conforming_strings must stay on, and client_encoding one the gateway reads (UTF8, SQL_ASCII or a single-byte encoding such as LATIN1 or WIN1252), through this gateway: otherwise PostgreSQL would read the statements that follow differently from the gateway's checks; use E'...' strings for escapes, and convert multibyte text such as SJIS or BIG5 to UTF-8 in the client";

/// Whether the statement judged in `note` creates or changes code or
/// relations (the target's code cache is then out of date).
fn changes_catalog(note: &QueryNote) -> bool {
    note.summary.as_ref().is_some_and(|s| {
        s.statements
            .iter()
            .any(|st| st.creates_code || matches!(st.kind.as_str(), "create" | "alter" | "drop"))
    })
}

/// The summary the host and the policy judge `sql` by — with the effects
/// of the code it runs — or `None` when neither reads SQL.
async fn judged_summary(
    shared: &Shared,
    sql: &str,
) -> Option<Arc<crate::protocols::postgres::sql::QuerySummary>> {
    let catalog = &shared.catalog;
    if !shared.judges_sql {
        return None;
    }
    let base = crate::protocols::postgres::sql::shared_cache().get(sql);
    Some(
        catalog
            .with_code_effects(sql, base, shared.wants_rows)
            .await,
    )
}

/// A SQL `PREPARE` is also judged by the statement it prepares, as if that
/// were sent alone: a rule about updates to a table then holds (or
/// refuses) `PREPARE w AS UPDATE ...` too, and the relay holds each
/// `EXECUTE w` as a run of it. Returns the strictest verdict over the
/// prepared statements with its note (deciding plugin, rule, approval
/// terms); the caller keeps the stricter of this and its own.
async fn judge_prepared(shared: &Shared, note: &QueryNote) -> (Verdict, QueryNote) {
    // A policy that made no summary did not read the SQL (pass-through):
    // nothing to judge, and no parse added to its hot path.
    let Some(summary) = note.summary.as_ref() else {
        return (Verdict::Allow, QueryNote::default());
    };
    let prepares = summary.statements.iter().filter(|st| st.kind == "prepare");
    let mut strictest = Verdict::Allow;
    let mut strictest_note = QueryNote::default();
    for st in prepares {
        let Some(prepared) = st.prepared_query.as_deref() else {
            // Fail closed: what cannot be read cannot be judged.
            let unreadable = QueryNote {
                decided_by: Some("gateway".into()),
                rule: Some("unreadable-prepare".into()),
                ..Default::default()
            };
            let verdict = Verdict::Deny {
                reason: "the gateway could not read the statement this PREPARE prepares, so it cannot judge it; prepare it with the extended protocol (a driver's prepared statement) instead".into(),
            };
            return (verdict, unreadable);
        };
        let mut inner = QueryNote {
            summary: judged_summary(shared, prepared).await,
            ..Default::default()
        };
        let verdict = shared
            .policy()
            .on_query(QueryEvent::Simple { sql: prepared }, &mut inner);
        if verdict.strictness() > strictest.strictness() {
            strictest = verdict;
            strictest_note = inner;
        }
    }
    (strictest, strictest_note)
}

/// What became of an `Execute` of a held statement's portal.
enum HeldRun {
    /// Approved: it runs under this request, as the approver saw it.
    Run { approval_id: String, shown: String },
    /// Refused with this error (already recorded in the audit trail).
    Refused(Bytes),
}

/// Judges one run of a held statement (`Ok`), or refuses an `Execute` of a
/// portal the tracker cannot vouch for (`Err` with why); records refusals.
async fn judge_execution(
    shared: &Shared,
    w: WhileHeld<'_>,
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

/// The client side while a statement is held for approval: what it sent
/// meanwhile, and whether it went away (which withdraws the request).
struct WhileHeld<'a> {
    rd: &'a mut ReadHalf<Stream>,
    early: &'a mut BytesMut,
    client_gone: &'a mut bool,
    cancel: &'a mut tokio::sync::watch::Receiver<u64>,
}

/// Holds `sql` for approval (`reason`), still reading the client: bytes it
/// sends go to `early` (up to [`HELD_READ_LIMIT`]), and a client that goes
/// away cancels the wait.
async fn hold_reading(
    shared: &Shared,
    w: WhileHeld<'_>,
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
        cancel: w.cancel,
    };
    let hold = approval::hold(holder, sql, note, reason);
    tokio::pin!(hold);
    loop {
        tokio::select! {
            held = &mut hold => break held,
            n = w.rd.read_buf(w.early), if !*w.client_gone && w.early.len() < HELD_READ_LIMIT => {
                match n {
                    Ok(n) if n > 0 => count(&shared.from_client, n),
                    _ => {
                        *w.client_gone = true;
                        s.cancel_signal.send_modify(|c| *c = c.wrapping_add(1));
                    }
                }
            }
        }
    }
}

/// Text only this session's relay puts in a statement (a fresh random
/// reference per session): the upstream error it provokes for a refusal
/// carries it, and no other error can.
fn new_refusal_marker() -> String {
    format!(
        "portcullis refused a statement (ref {:016x}{:016x})",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A statement that fails in PostgreSQL's parse analysis (22P02), with the
/// marker in its error: sent upstream in place of a refused one, so the
/// server fails there as it would have, and a transaction block is left
/// aborted exactly as the refused statement's own error would have left it.
fn refusal_sql(marker: &str) -> String {
    format!("SELECT '{marker}'::int")
}

/// The failing statement as a simple `Query` (for a refused `Query` or
/// `FunctionCall`: it ends in its own `ReadyForQuery`).
fn failing_query(marker: &str) -> Bytes {
    let mut b = BytesMut::new();
    query::encode(&mut b, &refusal_sql(marker));
    b.freeze()
}

/// The failing statement as a `Parse` under a name nothing else uses (for a
/// refusal inside an extended batch: the server fails there and skips the
/// rest of the batch up to its `Sync`, which the client sends).
fn failing_parse(marker: &str) -> Bytes {
    let mut b = BytesMut::new();
    crate::protocols::postgres::codec::MessageWriter::start(&mut b, Some(fe::PARSE))
        .cstr("_portcullis_refused")
        .cstr(&refusal_sql(marker))
        .i16(0);
    b.freeze()
}

/// Refuses the rest of an extended batch with `err`: the refusal is queued
/// at once for the `ReadyForQuery` of the batch's `Sync` (number `syncs +
/// 1`: no Query or FunctionCall can come before it), because the server
/// answers the failing statement sent in its place right away — a client
/// that sends Flush and waits before its Sync must still get the refusal,
/// not the marked error. Returns what `pending_error` holds while the rest
/// of the batch is discarded.
fn refuse_batch(shared: &Shared, syncs: u64, err: Bytes) -> Bytes {
    push_injection(shared, syncs + 1, err.clone());
    err
}

/// Whether an error injection waits for `ReadyForQuery` number `seq`.
fn injection_pending(shared: &Shared, seq: u64) -> bool {
    let q = shared.injections.lock().unwrap_or_else(|p| p.into_inner());
    q.front().is_some_and(|i| i.seq == seq)
}

fn push_injection(shared: &Shared, seq: u64, bytes: Bytes) {
    let mut q = shared.injections.lock().unwrap_or_else(|p| p.into_inner());
    q.push_back(Injection { seq, bytes });
}

fn take_injection(shared: &Shared, seq: u64) -> Option<Bytes> {
    let mut q = shared.injections.lock().unwrap_or_else(|p| p.into_inner());
    if q.front().is_some_and(|i| i.seq == seq) {
        q.pop_front().map(|i| i.bytes)
    } else {
        None
    }
}

/// What the server→client side does with one message.
enum Act {
    Forward,
    Skip,
    Replace(Bytes),
}

/// The server's error without what could quote a value, for sessions whose
/// policy masks results. A cast or function in a WHERE clause makes
/// PostgreSQL quote its input in many errors — `invalid input syntax for
/// type integer: "4111 1111 1111 1111"`, `improper relation name: ...`,
/// `relation "ada@example.com" does not exist`, `Key (card)=(...) already
/// exists` — so every server error keeps its SQLSTATE and severity but
/// loses its message, detail and hint, except integrity violations (class
/// 23), which keep their message (constraint names) and lose the detail,
/// and the classes whose messages never quote data (connections,
/// transactions, privileges, resources, operator intervention). `None`:
/// relay it as it is. An error the gateway cannot read is withheld whole.
fn scrubbed_error(frame: &[u8]) -> Option<Bytes> {
    const QUOTES_NO_DATA: &[&str] = &[
        "08", "0A", "25", "28", "2D", "3D", "40", "53", "54", "55", "57", "58",
    ];
    let e = error_response::decode(frame).unwrap_or_default();
    let code = e.code;
    let class = code.get(..2).unwrap_or("");
    if QUOTES_NO_DATA.contains(&class) || code == "42501" {
        return None;
    }
    let valid = code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    let code: std::borrow::Cow<'static, str> = if valid {
        code.to_string().into()
    } else {
        "XX000".into()
    };
    let fields = if class == "23" {
        let mut f = ErrorFields::error("23000", e.message.to_string());
        f.code = code;
        f
    } else {
        let mut f = ErrorFields::error(
            "XX000",
            format!("the statement failed with SQLSTATE {code}; the database's message is withheld on this target because it may quote data masked for you"),
        )
        .with_hint("check the values, names and casts the statement uses, including in WHERE clauses; the SQLSTATE says which kind of error it is");
        f.code = code;
        f
    };
    let mut b = BytesMut::new();
    fields.encode(&mut b);
    Some(b.freeze())
}

/// State of the result being relayed, for policies that watch rows.
#[derive(Default)]
struct ResultState {
    /// Whether the current result's plan has been made.
    planned: bool,
    /// Whether the policy sees the current result's rows.
    watching: bool,
    /// The error to send instead of the current (withheld) result.
    withheld: Option<Bytes>,
    /// After a withheld result: drop answers up to `ReadyForQuery`.
    dropping: bool,
    /// Columns of described portals.
    portals: std::collections::HashMap<String, PortalColumns>,
    /// Result descriptions the policy passed, when it says such answers
    /// are stable (see [`SessionPolicy::stable_pass_plans`]).
    passed: Option<PassMemo>,
    /// Prepared statements and portals, for the lineage of their results.
    names: Names,
    /// Statements of the current simple `Query` the server has completed:
    /// the number of the statement a result belongs to.
    completed: usize,
}

/// What is known about a described portal's result.
enum PortalColumns {
    /// Its description was passed before: no need to ask again.
    Passed,
    /// Resolved columns, and the raw description to remember a pass by.
    Known(Vec<ResultColumn>, Vec<u8>),
}

/// `RowDescription`s the policy answered `Pass` for, with the lineage they
/// came with, trusted for as long as the catalog's column names are.
#[derive(Default)]
struct PassMemo {
    /// Per description: the hashes of the lineages it was passed with.
    seen: std::collections::HashMap<Vec<u8>, Vec<(u64, std::time::Instant)>>,
    /// Keys of the lineage hash, random per session.
    keys: std::collections::hash_map::RandomState,
}

/// Descriptions remembered per session before the memo starts over.
const PASS_MEMO_CAPACITY: usize = 256;
/// Lineages remembered per description (the oldest is forgotten).
const PASS_MEMO_LINEAGES: usize = 8;

impl PassMemo {
    fn hit(&self, frame: &[u8], lineage: Option<&[Lineage]>) -> bool {
        let Some(passed) = self.seen.get(frame) else {
            return false;
        };
        let key = std::hash::BuildHasher::hash_one(&self.keys, lineage);
        passed
            .iter()
            .any(|(k, t)| *k == key && t.elapsed() < super::catalog::TTL)
    }

    fn remember(&mut self, frame: &[u8], lineage: Option<&[Lineage]>) {
        if self.seen.len() >= PASS_MEMO_CAPACITY {
            self.seen.clear();
        }
        let key = std::hash::BuildHasher::hash_one(&self.keys, lineage);
        let passed = self.seen.entry(frame.to_vec()).or_default();
        passed.retain(|(k, t)| *k != key && t.elapsed() < super::catalog::TTL);
        if passed.len() >= PASS_MEMO_LINEAGES {
            passed.remove(0);
        }
        passed.push((key, std::time::Instant::now()));
    }
}

impl ResultState {
    fn apply(&mut self, plan: ResultPlan) {
        self.planned = true;
        self.watching = false;
        match plan {
            ResultPlan::Pass => {}
            ResultPlan::Watch => self.watching = true,
            ResultPlan::Deny { reason } => {
                let mut b = BytesMut::new();
                ErrorFields::error(sqlstate::INSUFFICIENT_PRIVILEGE, reason)
                    .with_hint("the result was withheld by the gateway's policy; change the query, or ask the gateway operator about the rule")
                    .encode(&mut b);
                self.withheld = Some(b.freeze());
            }
        }
    }

    fn end_result(&mut self) {
        self.planned = false;
        self.watching = false;
    }
}

/// Decodes a `RowDescription` and resolves its columns' sources.
async fn describe_result(
    frame: &[u8],
    catalog: &TargetCatalog,
) -> Result<Result<Vec<ResultColumn>, String>, RelayError> {
    let mut cols: Vec<ResultColumn> = row_description::decode(frame)?
        .into_iter()
        .map(|c| ResultColumn {
            name: c.name.to_string(),
            table_oid: c.table_oid,
            attribute_number: c.attribute_number,
            type_oid: c.type_oid,
            format: c.format,
            source: None,
        })
        .collect();
    Ok(match catalog.resolve(&mut cols).await {
        Ok(()) => Ok(cols),
        Err(e) => {
            tracing::warn!(error = %e, "result columns could not be resolved; result withheld");
            Err(format!("the gateway could not tell which table columns this result holds ({e}), so it was withheld; try again"))
        }
    })
}

fn plan_for(
    shared: &Shared,
    cols: Result<&[ResultColumn], String>,
    lineage: Option<&[Lineage]>,
) -> ResultPlan {
    match cols {
        Ok(cols) => shared.policy().on_row_description(cols, lineage),
        Err(reason) => ResultPlan::Deny { reason },
    }
}

/// Replaces `len` bytes of `buf` at `at` with `with` (a frame rewritten in
/// place, so everything after sees it as the server's).
fn splice(buf: &mut BytesMut, at: usize, len: usize, with: &[u8]) {
    let tail = buf.split_off(at + len);
    buf.truncate(at);
    buf.extend_from_slice(with);
    buf.extend_from_slice(&tail);
}

/// The number of columns a complete `RowDescription` frame announces.
fn described_columns(frame: &[u8]) -> usize {
    frame
        .get(5..7)
        .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]) as usize)
}

async fn server_to_client(
    rd: &mut ReadHalf<Stream>,
    wr: &mut WriteHalf<Stream>,
    shared: &Shared,
    max: usize,
    catalog: &TargetCatalog,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> Result<(), RelayError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut carry = Carry::None;
    let mut rfq_seen: u64 = 0;
    let mut error_since_rfq = false;
    let mut result = ResultState::default();
    if shared.wants_rows && shared.policy().stable_pass_plans() {
        result.passed = Some(PassMemo::default());
    }
    let mut scratch = BytesMut::new();
    let mut need = 0usize;
    // Whether the buffer grew past a few chunks since it was last small.
    let mut large = false;
    let mut sample = SampleState::default();
    let app_row_size = shared.app_name.row_size();
    loop {
        make_room(&mut buf, need, &mut large);
        let n = loop {
            tokio::select! {
                biased;
                n = rd.read_buf(&mut buf) => break n?,
                // A notice goes out only between messages.
                Some(notice) = notices.recv(), if matches!(carry, Carry::None) => {
                    wr.write_all(&notice).await?;
                    wr.flush().await?;
                }
            }
        };
        if n == 0 {
            let _ = wr.shutdown().await;
            return Ok(());
        }
        count(&shared.to_client, n);
        need = 0;
        let mut start = 0usize;
        let mut pos = 0usize;
        loop {
            if continue_carry(wr, &buf, &mut carry, &mut start, &mut pos).await? {
                break;
            }
            let Some(mut h) = peek_frame(&buf[pos..], max)? else {
                break;
            };
            // The client reads back the application_name it set, not the
            // gateway's name for the session upstream (only a ParameterStatus
            // or a one-column row of the right size is looked at).
            if h.tag == be::PARAMETER_STATUS
                || (h.tag == be::DATA_ROW && Some(h.total_len) == app_row_size)
            {
                if buf.len() - pos < h.total_len {
                    need = h.total_len;
                    break;
                }
                let frame = &buf[pos..pos + h.total_len];
                let theirs = if h.tag == be::PARAMETER_STATUS {
                    shared.app_name.status_for_client(frame)
                } else {
                    shared.app_name.row_for_client(frame)
                };
                if let Some(theirs) = theirs {
                    splice(&mut buf, pos, h.total_len, &theirs);
                    h.total_len = theirs.len();
                }
            }
            let available = buf.len() - pos;
            let mut act = Act::Forward;
            // The error the gateway provoked for a refusal: the client gets
            // the refusal instead, before this batch's ReadyForQuery.
            let mut swallowed = false;
            match h.tag {
                be::ERROR_RESPONSE => {
                    if injection_pending(shared, rfq_seen + 1) {
                        if available < h.total_len {
                            need = h.total_len;
                            break;
                        }
                        swallowed =
                            error_response::decode(&buf[pos..pos + h.total_len]).is_ok_and(|e| {
                                e.code == "22P02" && e.message.contains(shared.marker.as_str())
                            });
                    }
                    error_since_rfq |= !swallowed;
                    if !swallowed && shared.wants_rows {
                        if available < h.total_len {
                            need = h.total_len;
                            break;
                        }
                        if let Some(quiet) = scrubbed_error(&buf[pos..pos + h.total_len]) {
                            act = Act::Replace(quiet);
                        }
                    }
                }
                be::PARAMETER_STATUS => {
                    if available < h.total_len {
                        need = h.total_len;
                        break;
                    }
                    let (name, value) = parameter_status::decode(&buf[pos..pos + h.total_len])?;
                    // Whatever spelling analysis missed: a session whose
                    // strings PostgreSQL now reads differently ends.
                    if !standard_strings(&name, &value) {
                        return Err(RelayError::StandardStringsOff);
                    }
                    // A new client encoding, however it was switched: text
                    // that is not ASCII is read in it once everything sent
                    // before has been answered (the Query/Parse branch of
                    // `client_to_server`). One the
                    // gateway does not read ends the session.
                    if name.eq_ignore_ascii_case("client_encoding") {
                        match ClientEncoding::named(&value) {
                            Some(e) if shared.server_converts || e.reads_as_utf8() => shared
                                .encoding
                                .store(e.index(), std::sync::atomic::Ordering::Release),
                            _ => return Err(RelayError::EncodingChanged(value.into_owned())),
                        }
                    }
                    // The backstop behind the backstop: whatever analysis
                    // missed, a pinned session that becomes a superuser or
                    // another session user ends before its next statement.
                    let superuser = name.eq_ignore_ascii_case("is_superuser") && value == "on";
                    let left_role = superuser || name.eq_ignore_ascii_case("session_authorization");
                    if shared.upstream_role.is_some() && left_role {
                        let role = shared.upstream_role.as_deref().unwrap_or_default();
                        return Err(RelayError::RoleLeft(format!(
                            "this session is pinned to role \"{role}\" upstream, and the server reported {name} = {value}"
                        )));
                    }
                }
                be::READY_FOR_QUERY => {
                    rfq_seen += 1;
                    if let Some(err) = take_injection(shared, rfq_seen) {
                        // After an upstream error the server skipped the
                        // rest of the batch, refused statement included:
                        // one error per batch, as PostgreSQL would send.
                        if !error_since_rfq {
                            write_out(wr, &buf[start..pos]).await?;
                            start = pos;
                            wr.write_all(&err).await?;
                        }
                    }
                    error_since_rfq = false;
                }
                _ => {}
            }
            if shared.wants_rows {
                match h.tag {
                    be::READY_FOR_QUERY => {
                        if available < h.total_len {
                            need = h.total_len;
                            break;
                        }
                        shared.expected().ready();
                        result.completed = 0;
                        if buf.get(pos + 5) == Some(&be::EMPTY_QUERY_RESPONSE) {
                            // Out of any transaction: its portals are gone
                            // (a cursor WITH HOLD loses its lineage: its
                            // computed values are masked whole).
                            result.names.forget(false, true);
                        }
                        result.end_result();
                        result.dropping = false;
                        result.withheld = None;
                    }
                    be::ERROR_RESPONSE => {
                        result.end_result();
                        // The server's own error ends the result; ours is moot.
                        result.withheld = None;
                        let mut q = shared.expected();
                        if !matches!(q.front(), Some(Expect::Ready { .. })) {
                            q.skip_to_ready();
                        }
                        if result.dropping {
                            act = Act::Skip;
                        }
                    }
                    be::PARSE_COMPLETE | be::BIND_COMPLETE | be::CLOSE_COMPLETE => {
                        let answered = shared.expected().pop();
                        match answered {
                            Some(Expect::ParseComplete { statement, summary }) => {
                                result.names.prepared(
                                    statement,
                                    Source {
                                        summary,
                                        statement: 0,
                                    },
                                )?;
                            }
                            Some(Expect::BindComplete { portal, statement }) => {
                                result.portals.remove(&portal);
                                result.names.bound(portal, &statement)?;
                            }
                            Some(Expect::CloseComplete { closed }) => {
                                if let Closed::Portal(p) = &closed {
                                    result.portals.remove(p);
                                }
                                result.names.closed(&closed);
                            }
                            _ => {}
                        }
                    }
                    be::ROW_DESCRIPTION | be::NO_DATA => {
                        if h.tag == be::ROW_DESCRIPTION && available < h.total_len {
                            need = h.total_len;
                            break;
                        }
                        let front = shared.expected().front().cloned();
                        match front {
                            Some(Expect::StatementDescription) => {
                                shared.expected().pop();
                            }
                            Some(Expect::PortalDescription { portal, forward }) => {
                                shared.expected().pop();
                                if h.tag == be::ROW_DESCRIPTION {
                                    let frame = &buf[pos..pos + h.total_len];
                                    let source = result.names.portal(&portal);
                                    // An EXECUTE or FETCH runs what its name
                                    // means when it runs, not now.
                                    let settled = !source.is_some_and(result_lineage::follows);
                                    let lineage = source.and_then(|s| {
                                        result_lineage::of_result(
                                            s,
                                            described_columns(frame),
                                            &result.names,
                                        )
                                    });
                                    if settled
                                        && result
                                            .passed
                                            .as_ref()
                                            .is_some_and(|m| m.hit(frame, lineage.as_deref()))
                                    {
                                        result.portals.insert(portal, PortalColumns::Passed);
                                    } else {
                                        match describe_result(frame, catalog).await? {
                                            Ok(cols) => {
                                                result.portals.insert(
                                                    portal,
                                                    PortalColumns::Known(cols, frame.to_vec()),
                                                );
                                            }
                                            Err(_) => {
                                                // Unknown columns: the Execute fails closed.
                                                result.portals.remove(&portal);
                                            }
                                        }
                                    }
                                } else {
                                    result.portals.remove(&portal);
                                }
                                if !forward {
                                    act = Act::Skip;
                                }
                            }
                            Some(Expect::Ready {
                                query: true,
                                summary,
                            }) if h.tag == be::ROW_DESCRIPTION && !result.dropping => {
                                // A result of statement `completed` of a simple Query.
                                let source = Source {
                                    summary,
                                    statement: result.completed,
                                };
                                let frame = &buf[pos..pos + h.total_len];
                                let lineage = result_lineage::of_result(
                                    &source,
                                    described_columns(frame),
                                    &result.names,
                                );
                                let lineage = lineage.as_deref();
                                let plan = if result
                                    .passed
                                    .as_ref()
                                    .is_some_and(|m| m.hit(frame, lineage))
                                {
                                    ResultPlan::Pass
                                } else {
                                    let cols = describe_result(frame, catalog).await?;
                                    let plan = plan_for(
                                        shared,
                                        cols.as_deref().map_err(Clone::clone),
                                        lineage,
                                    );
                                    if let (ResultPlan::Pass, Some(m)) = (&plan, &mut result.passed)
                                    {
                                        m.remember(frame, lineage);
                                    }
                                    plan
                                };
                                result.apply(plan);
                                if result.withheld.is_some() {
                                    act = Act::Skip;
                                }
                            }
                            _ => {}
                        }
                    }
                    be::DATA_ROW if !result.dropping => {
                        if !result.planned {
                            // The first row of an Execute: its portal's columns.
                            let front = shared.expected().front().cloned();
                            let plan = match front {
                                Some(Expect::Execute { portal }) => match result.portals.get(&portal) {
                                    Some(PortalColumns::Passed) => ResultPlan::Pass,
                                    Some(PortalColumns::Known(cols, frame)) => {
                                        let lineage = result.names.portal(&portal).and_then(|s| {
                                            result_lineage::of_result(s, cols.len(), &result.names)
                                        });
                                        let lineage = lineage.as_deref();
                                        let plan = plan_for(shared, Ok(cols), lineage);
                                        // What an EXECUTE or FETCH in it runs
                                        // is fixed from its first run on.
                                        let ran = portal.clone();
                                        if let (ResultPlan::Pass, Some(m)) =
                                            (&plan, &mut result.passed)
                                        {
                                            m.remember(frame, lineage);
                                        }
                                        result.names.ran(&ran);
                                        plan
                                    }
                                    None => ResultPlan::Deny {
                                        reason: "the gateway could not tell which columns these rows have, so they were withheld".into(),
                                    },
                                },
                                _ => ResultPlan::Deny {
                                    reason: "the gateway could not match these rows with a result description, so they were withheld".into(),
                                },
                            };
                            result.apply(plan);
                        }
                        if result.withheld.is_some() {
                            act = Act::Skip;
                        } else if result.watching {
                            // A batch: every complete DataRow from here on.
                            let mut frames = Vec::new();
                            let mut at = pos;
                            while let Ok(Some(d)) = peek_frame(&buf[at..], max) {
                                if d.tag != be::DATA_ROW || buf.len() - at < d.total_len {
                                    break;
                                }
                                frames.push(at..at + d.total_len);
                                at += d.total_len;
                            }
                            if frames.is_empty() {
                                need = h.total_len;
                                break;
                            }
                            let rows = frames
                                .iter()
                                .map(|r| data_row::decode(&buf[r.clone()]))
                                .collect::<Result<Vec<_>, _>>()?;
                            let edits = shared.policy().on_data_rows(&rows);
                            if edits.is_empty() {
                                if sample.wanted(shared) {
                                    sample.rows(shared, rows.iter().map(|r| r.as_slice()));
                                }
                                pos = at;
                                continue;
                            }
                            write_out(wr, &buf[start..pos]).await?;
                            scratch.clear();
                            apply_edits(&mut scratch, &buf, &frames, rows, edits);
                            if sample.wanted(shared) {
                                let sent = sent_rows(&scratch, max)?;
                                sample.rows(shared, sent.iter().map(|r| r.as_slice()));
                            }
                            wr.write_all(&scratch).await?;
                            pos = at;
                            start = pos;
                            continue;
                        }
                    }
                    be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED => {
                        if h.tag == be::COMMAND_COMPLETE {
                            if available < h.total_len {
                                need = h.total_len;
                                break;
                            }
                            // A SQL PREPARE or DECLARE made a name whose
                            // runs have the lineage of what it prepared (most
                            // tags change no name: nothing is looked up).
                            let tag = command_complete::decode(&buf[pos..pos + h.total_len])?;
                            if result_lineage::changes_names(tag) {
                                let source = match shared.expected().front() {
                                    Some(Expect::Execute { portal }) => {
                                        result.names.portal(portal).cloned()
                                    }
                                    Some(Expect::Ready {
                                        query: true,
                                        summary,
                                    }) => Some(Source {
                                        summary: summary.clone(),
                                        statement: result.completed,
                                    }),
                                    _ => None,
                                };
                                if let Some(source) = source {
                                    result.names.completed(&source, tag)?;
                                }
                            }
                            result.completed += 1;
                        }
                        {
                            let mut q = shared.expected();
                            if matches!(q.front(), Some(Expect::Execute { .. })) {
                                q.pop();
                            }
                        }
                        result.end_result();
                        if let Some(err) = result.withheld.take() {
                            // The withheld result ends in an error, and the
                            // client sees nothing more until ReadyForQuery.
                            act = Act::Replace(err);
                            result.dropping = true;
                            error_since_rfq = true;
                        }
                    }
                    _ => {}
                }
                if result.dropping
                    && !matches!(act, Act::Replace(_))
                    && h.tag != be::READY_FOR_QUERY
                {
                    act = Act::Skip;
                }
            }
            if swallowed {
                act = Act::Skip;
            }
            if shared.tracking && h.tag == be::ROW_DESCRIPTION {
                if available < h.total_len {
                    need = h.total_len;
                    break;
                }
                let frame = &buf[pos..pos + h.total_len];
                sample.checked = false;
                if sample.wanted(shared) {
                    let columns = row_description::decode(frame)?
                        .into_iter()
                        .map(|c| (c.name.to_string(), c.format == 1))
                        .collect::<Vec<_>>();
                    shared.ledger().describe(|| columns);
                }
            }
            if shared.tracking
                && h.tag == be::DATA_ROW
                && matches!(act, Act::Forward)
                && sample.wanted(shared)
            {
                if available < h.total_len {
                    need = h.total_len;
                    break;
                }
                let row = data_row::decode(&buf[pos..pos + h.total_len])?;
                sample.rows(shared, std::iter::once(row.as_slice()));
            }
            if shared.tracking
                && !swallowed
                && matches!(
                    h.tag,
                    be::COMMAND_COMPLETE
                        | be::ERROR_RESPONSE
                        | be::EMPTY_QUERY_RESPONSE
                        | be::PORTAL_SUSPENDED
                        | be::READY_FOR_QUERY
                )
            {
                sample.checked = false;
                if available < h.total_len {
                    need = h.total_len;
                    break;
                }
                let frame = &buf[pos..pos + h.total_len];
                let settled = {
                    let mut ledger = shared.ledger();
                    match (h.tag, &act) {
                        (be::COMMAND_COMPLETE, Act::Replace(err)) => {
                            let reason = error_response::decode(err)
                                .map(|e| e.message)
                                .unwrap_or(std::borrow::Cow::Borrowed("withheld"));
                            ledger.withheld(&reason);
                        }
                        (be::COMMAND_COMPLETE, _) => {
                            ledger.command_complete(command_complete::decode(frame)?)
                        }
                        (be::ERROR_RESPONSE, Act::Replace(quiet)) => {
                            let e = error_response::decode(quiet)?;
                            ledger.server_error(&e.code, &e.message);
                        }
                        (be::ERROR_RESPONSE, _) => {
                            let e = error_response::decode(frame)?;
                            ledger.server_error(&e.code, &e.message);
                        }
                        (be::READY_FOR_QUERY, _) => {}
                        _ => ledger.empty_or_suspended(),
                    }
                    if h.tag == be::READY_FOR_QUERY {
                        ledger.ready(rfq_seen)
                    } else {
                        Vec::new()
                    }
                };
                shared.write_audit(settled).await;
            }
            shared.copy_start.server_message(h.tag, rfq_seen);
            let take = h.total_len.min(available);
            match act {
                Act::Forward => {}
                Act::Skip => {
                    write_out(wr, &buf[start..pos]).await?;
                    start = pos + take;
                }
                Act::Replace(bytes) => {
                    write_out(wr, &buf[start..pos]).await?;
                    wr.write_all(&bytes).await?;
                    start = pos + take;
                }
            }
            pos += take;
            if take < h.total_len {
                carry = if start > pos - take {
                    Carry::Skip(h.total_len - take)
                } else {
                    Carry::Forward(h.total_len - take)
                };
                break;
            }
        }
        write_out(wr, &buf[start..pos]).await?;
        wr.flush().await?;
        buf.advance(pos);
        shrink_if_idle(&mut buf, &mut large);
    }
}

/// Whether the statement being answered wants its rows sampled, asked of
/// the ledger once per result rather than once per row.
#[derive(Default)]
struct SampleState {
    checked: bool,
    wanted: bool,
}

impl SampleState {
    fn wanted(&mut self, shared: &Shared) -> bool {
        if !shared.tracking {
            return false;
        }
        if !self.checked {
            self.wanted = shared.ledger().sampling();
            self.checked = true;
        }
        self.wanted
    }

    /// Rows as the client receives them, into the sample.
    fn rows<'r>(&mut self, shared: &Shared, rows: impl Iterator<Item = &'r [Option<&'r [u8]>]>) {
        let mut ledger = shared.ledger();
        for row in rows {
            if !ledger.sample_row(row) {
                self.wanted = false;
                break;
            }
        }
    }
}

/// Decodes the `DataRow`s of an encoded batch.
fn sent_rows(bytes: &[u8], max: usize) -> Result<Vec<crate::policy::Row<'_>>, RelayError> {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(h) = peek_frame(&bytes[at..], max)? {
        if bytes.len() - at < h.total_len {
            break;
        }
        rows.push(data_row::decode(&bytes[at..at + h.total_len])?);
        at += h.total_len;
    }
    Ok(rows)
}

/// Writes a batch of rows with `edits` applied: unedited rows are copied as
/// they came, edited rows are re-encoded (straight from the original values
/// and the edits, without building a row first). Edits of a column a row
/// does not have are ignored; of several edits of one value the last wins.
fn apply_edits(
    out: &mut BytesMut,
    buf: &[u8],
    frames: &[std::ops::Range<usize>],
    rows: Vec<crate::policy::Row<'_>>,
    mut edits: Vec<RowEdit>,
) {
    // Stable: edits of one value keep their order. Already sorted when they
    // come from a plugin chain, which this sort then only checks.
    edits.sort_by_key(|e| (e.row, e.column));
    let mut next = 0usize;
    for (i, (frame, row)) in frames.iter().zip(&rows).enumerate() {
        while next < edits.len() && edits[next].row < i {
            next += 1;
        }
        let first = next;
        while next < edits.len() && edits[next].row == i {
            next += 1;
        }
        let mine = &edits[first..next];
        if !mine.iter().any(|e| e.column < row.len()) {
            out.extend_from_slice(&buf[frame.clone()]);
            continue;
        }
        let values =
            row.iter()
                .enumerate()
                .map(|(c, v)| match mine.iter().rev().find(|e| e.column == c) {
                    Some(RowEdit {
                        edit: ValueEdit::Replace(new),
                        ..
                    }) => Some(new.as_ref()),
                    Some(_) => None,
                    None => *v,
                });
        data_row::encode(out, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> BytesMut {
        let mut b = BytesMut::new();
        data_row::encode(&mut b, values.iter().copied());
        b
    }

    #[test]
    fn edits_are_applied_in_place_and_untouched_rows_copied() {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for r in [
            row(&[Some(b"1"), Some(b"ada"), Some(b"4111")]),
            row(&[Some(b"2"), None, Some(b"5500")]),
            row(&[Some(b"3"), Some(b"bob"), Some(b"6011")]),
        ] {
            frames.push(buf.len()..buf.len() + r.len());
            buf.extend_from_slice(&r);
        }
        let rows: Vec<_> = frames
            .iter()
            .map(|f| data_row::decode(&buf[f.clone()]).unwrap())
            .collect();
        let edit = |row, column, edit| RowEdit { row, column, edit };
        let edits = vec![
            edit(2, 0, ValueEdit::Replace(Bytes::from_static(b"x"))),
            edit(0, 2, ValueEdit::Replace(Bytes::from_static(b"****"))),
            edit(0, 1, ValueEdit::Null),
            edit(0, 1, ValueEdit::Replace(Bytes::from_static(b"later wins"))),
            edit(1, 7, ValueEdit::Null), // no such column: ignored
            edit(9, 0, ValueEdit::Null), // no such row: ignored
        ];
        let mut out = BytesMut::new();
        apply_edits(&mut out, &buf, &frames, rows, edits);
        let sent = sent_rows(&out, 1 << 20).unwrap();
        let text = |r: &crate::policy::Row<'_>| -> Vec<Option<String>> {
            r.iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(text(&sent[0]), vec![s("1"), s("later wins"), s("****")]);
        assert_eq!(text(&sent[1]), vec![s("2"), None, s("5500")]);
        assert_eq!(text(&sent[2]), vec![s("x"), s("bob"), s("6011")]);
        // The untouched row went out byte for byte (the third, re-encoded,
        // has its original length: "x" replaced "3").
        let second = frames[1].clone();
        let at = out.len() - frames[2].len() - second.len();
        assert_eq!(&out[at..at + second.len()], &buf[second]);
    }
}
