//! The client→server side of the relay: one method per message family.
//! Statements (`Query`, `Parse`) are judged — by the host, the policy and
//! the held-statement tracker — recorded, held for approval or refused;
//! the extended protocol's `Bind`, `Describe`, `Execute` and `Close` are
//! followed so that results, held runs, COPY and the audit ledger know
//! which statement each portal runs; `Sync` ends a batch. Everything a
//! policy does not look at goes out of the read buffer as it came.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::super::approval;
use super::super::budget::BudgetShare;
use super::super::copy_in::{self, CopyWatch, SyncAction};
use super::super::held::{self, BindError, Execution, HeldStatements, Step};
use super::super::ledger::Before;
use super::super::responses::Expect;
use super::super::result_lineage::{Closed, Judged};
use super::super::RelayError;
use super::hold::{hold_reading, judge_execution, ClientReader, HeldRun};
use super::injection::{audit_failure_bytes, failing_parse, failing_query, refuse_batch};
use super::judge::{
    changes_catalog, changes_parsing, denial_bytes, host_refusal, judge_prepared, judged_summary,
    runs_unread_code, UnreadCode, NON_ASCII_MID_BATCH, PARSING_REFUSAL, UNREAD_CODE_REFUSAL,
};
use super::names::message_name_problem;
use super::scan::{write_out, Scan};
use super::{count, Shared, TERMINATE};
use crate::policy::{QueryEvent, QueryNote, Verdict};
use crate::protocols::postgres::codec::tags::frontend as fe;
use crate::protocols::postgres::codec::{bind, describe, parse, query, CodecError, FrameHeader};

/// `Flush` message.
const FLUSH: &[u8] = &[fe::FLUSH, 0, 0, 0, 4];

/// What the scan does after a message.
enum Flow {
    /// Go on with the next message in the buffer.
    Next,
    /// Read more first (the message is not whole yet).
    Read,
    /// The session is over (the client said so).
    End,
}

/// The client→server side and its state.
pub(super) struct ClientSide<'s, R, W> {
    shared: &'s Shared,
    /// The client: read here, and while a statement is held.
    client: ClientReader<R>,
    wr: W,
    buf: BytesMut,
    scan: Scan,
    /// The session's share of the gateway-wide message budget.
    share: BudgetShare,
    /// `ReadyForQuery`s the server owes for what was sent so far.
    syncs: u64,
    /// After a refusal inside an extended batch: messages up to the next
    /// `Sync` are dropped (its error is queued for that `Sync`'s
    /// `ReadyForQuery`).
    pending_error: Option<Bytes>,
    /// Whether the buffer holds bytes read before the relay started, not
    /// yet scanned.
    replay: bool,
    /// Whether bytes read while a statement was held were just moved into
    /// the buffer (scan them before reading).
    skip_read: bool,
    /// Portals described since their `Bind` (tracked when rows are watched).
    described: HashSet<String>,
    /// Prepared statements held for approval, judged at each run.
    held: HeldStatements,
    /// Whether the next message starts a batch (the server skips nothing
    /// before it): only such messages can give up a hold.
    batch_start: bool,
    /// COPY FROM STDIN: statements and portals that may copy, ignorable
    /// `Sync`s.
    copy: CopyWatch,
    /// Code the gateway cannot read (DO, dynamic SQL) may change how the
    /// server reads what follows (its client_encoding), which the gateway
    /// learns only at `ReadyForQuery`: nothing more is judged before then.
    unread_code: UnreadCode,
    /// Whether `Bind`, `Describe`, `Execute` and `Close` are decoded: when
    /// anything reads SQL or rows (a pass-through session never refuses
    /// or injects).
    decode_extended: bool,
}

impl<'s, R, W> ClientSide<'s, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// The client side of a session; `pending` holds bytes the client sent
    /// before the relay started.
    pub fn new(
        shared: &'s Shared,
        rd: R,
        wr: W,
        pending: BytesMut,
        max: usize,
        share: BudgetShare,
        cancel: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        let decode_extended = shared.wants_rows || shared.tracking || shared.judges_sql;
        Self {
            shared,
            client: ClientReader {
                rd,
                early: BytesMut::new(),
                client_gone: false,
                cancel,
            },
            wr,
            replay: !pending.is_empty(),
            buf: pending,
            scan: Scan::new(max),
            share,
            syncs: 0,
            pending_error: None,
            skip_read: false,
            described: HashSet::new(),
            held: HeldStatements::default(),
            batch_start: true,
            copy: CopyWatch::default(),
            unread_code: UnreadCode::default(),
            decode_extended,
        }
    }

    /// Relays until the client ends the session or goes away.
    pub async fn run(mut self) -> Result<(), RelayError> {
        loop {
            self.scan.cover_pending(&self.buf, &mut self.share)?;
            self.scan.make_room(&mut self.buf);
            if std::mem::take(&mut self.replay) {
                count(&self.shared.from_client, self.buf.len());
            } else if std::mem::take(&mut self.skip_read) {
                // Bytes read while a statement was held: scanned first.
            } else {
                let n =
                    tokio::io::AsyncReadExt::read_buf(&mut self.client.rd, &mut self.buf).await?;
                if n == 0 {
                    // Gone without Terminate: end the upstream session.
                    self.terminate_upstream().await;
                    return Ok(());
                }
                count(&self.shared.from_client, n);
            }
            self.scan.begin();
            while let Some(h) = self.scan.next(&mut self.wr, &self.buf).await? {
                match self.message(h).await? {
                    Flow::Next => {}
                    Flow::Read => break,
                    Flow::End => return Ok(()),
                }
            }
            self.scan.finish(&mut self.wr, &mut self.buf).await?;
            if self.client.client_gone {
                self.terminate_upstream().await;
                return Ok(());
            }
            if !self.client.early.is_empty() {
                self.buf.extend_from_slice(&self.client.early);
                self.client.early.clear();
                self.skip_read = true;
            }
            self.scan.shrink_if_idle(&mut self.buf);
        }
    }

    /// Ends the upstream session (the client went away).
    async fn terminate_upstream(&mut self) {
        let _ = self.wr.write_all(TERMINATE).await;
        let _ = self.wr.flush().await;
    }

    /// One message: the checks every message passes, then its family.
    async fn message(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        let ready_seen = self.shared.copy_start.ready_seen();
        self.copy
            .message(h.tag, ready_seen)
            .map_err(|_| RelayError::Codec(CodecError::Invalid(copy_in::SENT_DURING_COPY)))?;
        // A Sync or Flush with a body: PostgreSQL refuses it, and the
        // batch would not end (or go on) where the gateway thinks.
        if matches!(h.tag, fe::SYNC | fe::FLUSH) && h.total_len != 5 {
            return Err(RelayError::Codec(CodecError::Invalid(
                "Sync or Flush with a body",
            )));
        }
        let statement_work = !matches!(
            h.tag,
            fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL | fe::TERMINATE
        );
        if statement_work && self.unread_code.barrier > ready_seen {
            self.scan.flush_pending(&mut self.wr, &self.buf).await?;
            self.shared
                .copy_start
                .wait_ready(self.unread_code.barrier)
                .await;
        }
        if statement_work
            && h.tag != fe::SYNC
            && self.unread_code.in_batch
            && self.pending_error.is_none()
        {
            // The rest of the batch would be read by the server in an
            // encoding the gateway cannot know yet: refused.
            let err = denial_bytes(&Verdict::Deny {
                reason: UNREAD_CODE_REFUSAL.into(),
            })
            .unwrap_or_default();
            self.refuse_rest(&h, err).await?;
            return Ok(Flow::Next);
        }
        match h.tag {
            fe::QUERY | fe::PARSE => self.statement(h).await,
            fe::SYNC => self.sync(h).await,
            fe::TERMINATE => {
                self.scan.send_pending(&mut self.wr, &self.buf).await?;
                self.wr.write_all(TERMINATE).await?;
                self.wr.flush().await?;
                Ok(Flow::End)
            }
            fe::FUNCTION_CALL if self.pending_error.is_none() => self.function_call(h).await,
            fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE
                if (self.decode_extended || !self.held.is_empty())
                    && self.pending_error.is_none() =>
            {
                self.extended(h).await
            }
            _ => {
                // Extended-protocol messages that can fail open a batch
                // (Close and Flush cannot; COPY data after a Query does not).
                if matches!(h.tag, fe::BIND | fe::EXECUTE | fe::DESCRIBE) {
                    self.batch_start = false;
                }
                if self.pending_error.is_some() {
                    self.scan.drop_message(&mut self.wr, &self.buf, &h).await?;
                } else {
                    self.scan.forward(&self.buf, &h);
                }
                Ok(Flow::Next)
            }
        }
    }

    /// Refuses message `h` and the rest of its extended batch with `err`,
    /// as a refused `Parse` is: the client gets `err` before the batch's
    /// `ReadyForQuery`, the server a failing statement in its place, so
    /// that it skips the rest of the batch too.
    async fn refuse_rest(&mut self, h: &FrameHeader, err: Bytes) -> std::io::Result<()> {
        self.scan.drop_message(&mut self.wr, &self.buf, h).await?;
        self.pending_error = Some(refuse_batch(self.shared, self.syncs, err));
        write_out(&mut self.wr, &failing_parse(&self.shared.marker)).await
    }

    /// A `Query` or `Parse`: decoded as the server reads it, judged,
    /// recorded, held for approval or refused.
    async fn statement(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        if !self.scan.whole(&self.buf, &h) {
            return Ok(Flow::Read);
        }
        let shared = self.shared;
        let first_in_batch = self.batch_start;
        if h.tag == fe::PARSE {
            self.batch_start = false;
        }
        if self.pending_error.is_some() {
            // Still discarding after a refusal in the batch.
            self.scan.drop_message(&mut self.wr, &self.buf, &h).await?;
            return Ok(Flow::Next);
        }
        if h.tag == fe::QUERY && !first_in_batch {
            return Err(mid_batch());
        }
        if h.tag == fe::QUERY {
            // The query may CLOSE or DECLARE a portal by name.
            self.described.clear();
        }
        // A name is read before the rest (it may not be text).
        let frame = self.scan.frame(&self.buf, &h);
        if let Some(why) = message_name_problem(h.tag, frame, self.decode_extended) {
            let err = denial_bytes(&Verdict::Deny { reason: why }).unwrap_or_default();
            self.refuse_rest(&h, err).await?;
            return Ok(Flow::Next);
        }
        let frame = self.scan.frame(&self.buf, &h);
        let (raw_sql, statement, param_types) = if h.tag == fe::QUERY {
            (query::decode(frame)?, None, &[][..])
        } else {
            let p = parse::decode(frame)?;
            (p.query, Some(p.statement), p.param_types)
        };
        // Read as the server reads it: converted from the session's client
        // encoding (see codec::encoding); text that does not convert is
        // refused, as PostgreSQL refuses it. The client's bytes go upstream
        // unchanged. Text that is not ASCII reads differently in different
        // client encodings, and what runs before it may switch the encoding
        // unseen (code the gateway does not follow may switch and switch
        // back within a batch): it is read only where the encoding is
        // known, first in its batch once every earlier batch is answered.
        let mut mid_batch_text = None;
        if shared.judges_sql && !raw_sql.is_ascii() {
            if first_in_batch {
                if shared.copy_start.ready_seen() < self.syncs {
                    self.scan.flush_pending(&mut self.wr, &self.buf).await?;
                    shared.copy_start.wait_ready(self.syncs).await;
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
        let refusal = unreadable.or(mid_batch_text);
        let (mut verdict, mut note) = judge(shared, &self.held, sql, event, refusal).await;
        crate::metrics::global().query(verdict.label(), note.decided_by.as_deref());
        let mut denial = denial_bytes(&verdict);
        let parse_info = statement.map(|name| held::ParseInfo {
            name,
            param_types,
            first_in_batch,
        });
        match held::step(&mut self.held, &verdict, &note, sql, parse_info) {
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
                self.scan.flush_pending(&mut self.wr, &self.buf).await?;
                match hold_reading(shared, &mut self.client, &shown, &mut terms, &reason).await {
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
            None => shared.ledger().query(sql, &note, &verdict, self.syncs + 1),
            Some(name) => shared.ledger().parse(name, sql, &note, &verdict),
        };
        match before {
            Before::Forward => {}
            Before::Write(r) => shared.audit.record(r).await,
            Before::Durable(r) => {
                // What came before goes ahead while this one is stored.
                self.scan.flush_pending(&mut self.wr, &self.buf).await?;
                if let Err(e) = shared.audit.record_durably(r).await {
                    tracing::warn!(error = %e, "statement refused: it could not be recorded first");
                    let abandoned = shared.ledger().abandon_last(&e.to_string());
                    shared.write_audit(abandoned.into_iter().collect()).await;
                    denial = Some(audit_failure_bytes(&e));
                }
            }
        }
        let Some(err) = denial else {
            // What the server may run as COPY FROM STDIN.
            let copies = note.summary.as_ref().map_or_else(
                || copy_in::may_copy(sql),
                |s| s.statements.iter().any(|st| st.is_copy),
            );
            match statement {
                Some(name) if copies => self.copy.parsed(name),
                None if copies => self.copy.queried(self.syncs + 1),
                _ => {}
            }
            if runs_unread_code(&note) {
                match statement {
                    Some(name) => self.unread_code.names.mark_statement(name),
                    None => self.unread_code.barrier = self.syncs + 1,
                }
            }
            let summary = Judged(note.summary);
            match statement {
                None => {
                    self.syncs += 1;
                    shared.expect(Expect::Ready {
                        query: true,
                        summary,
                    });
                }
                Some(name) => shared.expect(Expect::ParseComplete {
                    statement: name.to_string(),
                    summary,
                }),
            }
            self.scan.forward(&self.buf, &h);
            return Ok(Flow::Next);
        };
        if h.tag == fe::QUERY {
            self.scan.drop_message(&mut self.wr, &self.buf, &h).await?;
            self.syncs += 1;
            shared.push_injection(self.syncs, err);
            shared.expect(Expect::sync());
            write_out(&mut self.wr, &failing_query(&shared.marker)).await?;
        } else {
            self.refuse_rest(&h, err).await?;
        }
        Ok(Flow::Next)
    }

    /// A `Sync`: ends the batch (unless the server is copying in, which
    /// ignores it).
    async fn sync(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        let action = self.copy.sync(self.syncs + 1);
        if action != SyncAction::Forward && !self.scan.whole(&self.buf, &h) {
            return Ok(Flow::Read);
        }
        let started = match action {
            SyncAction::Forward => false,
            SyncAction::Drop => true,
            SyncAction::Decide { batch, earlier } => {
                // Flush instead, and learn from the server's answer
                // whether it is copying in (then it would ignore this Sync).
                self.scan.send_pending(&mut self.wr, &self.buf).await?;
                self.wr.write_all(FLUSH).await?;
                self.wr.flush().await?;
                let started = self.shared.copy_start.wait(batch, earlier).await;
                self.copy.decided(started);
                started
            }
        };
        if started {
            // Dropped, uncounted: PostgreSQL ignores it.
            self.scan.drop_message(&mut self.wr, &self.buf, &h).await?;
            return Ok(Flow::Next);
        }
        self.batch_start = true;
        self.syncs += 1;
        self.held.batch_end();
        if std::mem::take(&mut self.unread_code.in_batch) {
            self.unread_code.barrier = self.syncs;
        }
        self.shared.expect(Expect::sync());
        // The refusal was queued for this Sync's ReadyForQuery when it was
        // decided (see `refuse_batch`).
        self.pending_error = None;
        self.scan.forward(&self.buf, &h);
        Ok(Flow::Next)
    }

    /// A `FunctionCall`: one `ReadyForQuery`, like a `Query`; refused in a
    /// read-only or role-pinned session (it could call anything).
    async fn function_call(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        if !self.batch_start {
            return Err(mid_batch());
        }
        let shared = self.shared;
        self.syncs += 1;
        shared.expect(Expect::sync());
        let verdict = if shared.read_only {
            Verdict::Deny {
                reason: "this session is read-only: the FunctionCall protocol message could call a function that writes; call functions in SQL instead".into(),
            }
        } else if let Some(role) = &shared.upstream_role {
            Verdict::Deny {
                reason: super::super::role_lock::function_call_violation(role),
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
            None => self.scan.forward(&self.buf, &h),
            Some(err) => {
                self.scan.drop_message(&mut self.wr, &self.buf, &h).await?;
                shared.push_injection(self.syncs, err);
                write_out(&mut self.wr, &failing_query(&shared.marker)).await?;
            }
        }
        Ok(Flow::Next)
    }

    /// `Bind`, `Describe`, `Execute` or `Close`, decoded.
    async fn extended(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        if !self.scan.whole(&self.buf, &h) {
            return Ok(Flow::Read);
        }
        // Close cannot fail, so it leaves the batch as fresh as it was.
        let first_in_batch = self.batch_start;
        if h.tag != fe::CLOSE {
            self.batch_start = false;
        }
        let frame = self.scan.frame(&self.buf, &h);
        if let Some(why) = message_name_problem(h.tag, frame, true) {
            // Refused like a Parse: the rest of the batch is dropped.
            let err = denial_bytes(&Verdict::Deny { reason: why }).unwrap_or_default();
            self.refuse_rest(&h, err).await?;
            return Ok(Flow::Next);
        }
        match h.tag {
            fe::BIND => return self.bind(h, first_in_batch).await,
            fe::DESCRIBE => self.describe(&h)?,
            fe::EXECUTE => return self.execute(h).await,
            _ => self.close(&h, first_in_batch)?,
        }
        self.scan.forward(&self.buf, &h);
        Ok(Flow::Next)
    }

    /// A `Bind`: the portal runs the statement from now on.
    async fn bind(&mut self, h: FrameHeader, first_in_batch: bool) -> Result<Flow, RelayError> {
        let shared = self.shared;
        // Malformed, PostgreSQL refuses it and keeps the portal it would
        // have replaced: the gateway ends the session (`decode` checks the
        // whole frame).
        let b = bind::decode(self.scan.frame(&self.buf, &h))?;
        let portal = b.portal;
        match self.held.bound(
            portal,
            b.statement,
            self.scan.frame(&self.buf, &h),
            first_in_batch,
        ) {
            Ok(()) => {}
            Err(BindError::Codec(e)) => return Err(e.into()),
            Err(BindError::Full(e)) => {
                // Refused like a Parse: the rest of the batch is dropped.
                let err = denial_bytes(&Verdict::Deny {
                    reason: e.to_string(),
                })
                .unwrap_or_default();
                self.refuse_rest(&h, err).await?;
                return Ok(Flow::Next);
            }
        }
        self.copy.bound(portal, b.statement);
        self.unread_code.names.bound(portal, b.statement);
        if shared.tracking {
            shared.ledger().bind(portal, b.statement);
        }
        self.described.remove(portal);
        shared.expect(Expect::BindComplete {
            portal: portal.to_string(),
            statement: b.statement.to_string(),
        });
        self.scan.forward(&self.buf, &h);
        Ok(Flow::Next)
    }

    /// A `Describe`: which answer the server owes.
    fn describe(&mut self, h: &FrameHeader) -> Result<(), RelayError> {
        match describe::decode_describe(self.scan.frame(&self.buf, h))? {
            describe::Target::Statement(_) => self.shared.expect(Expect::StatementDescription),
            describe::Target::Portal(p) => {
                self.described.insert(p.to_string());
                self.shared.expect(Expect::PortalDescription {
                    portal: p.to_string(),
                    forward: true,
                });
            }
        }
        Ok(())
    }

    /// A `Close`: the statement or portal is gone once the server answers.
    fn close(&mut self, h: &FrameHeader, first_in_batch: bool) -> Result<(), RelayError> {
        let target = describe::decode_close(self.scan.frame(&self.buf, h))?;
        match target {
            describe::Target::Portal(p) => {
                self.described.remove(p);
                self.held.closed_portal(p, first_in_batch);
            }
            describe::Target::Statement(st) => self.held.closed_statement(st, first_in_batch),
        }
        if self.shared.tracking {
            match target {
                describe::Target::Portal(p) => self.shared.ledger().close(None, Some(p)),
                describe::Target::Statement(st) => self.shared.ledger().close(Some(st), None),
            }
        }
        self.shared.expect(Expect::CloseComplete {
            closed: match target {
                describe::Target::Portal(p) => Closed::Portal(p.to_string()),
                describe::Target::Statement(st) => Closed::Statement(st.to_string()),
            },
        });
        Ok(())
    }

    /// An `Execute`: a run of a held statement waits for its approval; a
    /// recorded run is recorded first on a strict target; a watched
    /// portal's columns are learnt before it runs.
    async fn execute(&mut self, h: FrameHeader) -> Result<Flow, RelayError> {
        let shared = self.shared;
        let portal = describe::execute::decode(self.scan.frame(&self.buf, &h))?.to_string();
        let mut approved: Option<(String, String)> = None;
        let pending = match self.held.execution(&portal) {
            Execution::Free => None,
            Execution::Judge(run) => Some(Ok(run)),
            Execution::Refuse(why) => Some(Err(why)),
        };
        if let Some(pending) = pending {
            self.scan.flush_pending(&mut self.wr, &self.buf).await?;
            match judge_execution(shared, &mut self.client, &portal, pending).await {
                HeldRun::Run { approval_id, shown } => {
                    self.held.started(&portal);
                    approved = Some((approval_id, shown));
                }
                HeldRun::Refused(err) => {
                    // The rest of the batch is dropped; the error comes
                    // before its ReadyForQuery.
                    self.refuse_rest(&h, err).await?;
                    return Ok(Flow::Next);
                }
            }
        }
        if shared.tracking {
            let approved = approved
                .as_ref()
                .map(|(id, shown)| (id.as_str(), shown.as_str()));
            let before = shared.ledger().execute(&portal, self.syncs + 1, approved);
            if let Before::Durable(r) = before {
                // What came before goes ahead while this one is stored.
                self.scan.flush_pending(&mut self.wr, &self.buf).await?;
                if let Err(e) = shared.audit.record_durably(r).await {
                    tracing::warn!(error = %e, "statement refused: it could not be recorded first");
                    let abandoned = shared.ledger().abandon_last(&e.to_string());
                    shared.write_audit(abandoned.into_iter().collect()).await;
                    // Drop the rest of the batch; the error comes before
                    // its ReadyForQuery.
                    self.refuse_rest(&h, audit_failure_bytes(&e)).await?;
                    return Ok(Flow::Next);
                }
            }
        }
        if shared.wants_rows && !self.described.contains(&portal) {
            // Learn the portal's real columns and formats first; the
            // answer is kept from the client.
            self.scan.send_pending(&mut self.wr, &self.buf).await?;
            let mut d = BytesMut::new();
            describe::encode_describe_portal(&mut d, &portal);
            shared.expect(Expect::PortalDescription {
                portal: portal.clone(),
                forward: false,
            });
            self.wr.write_all(&d).await?;
            self.described.insert(portal.clone());
        }
        // What runs now may be SQL that closes or declares other portals
        // by name: their columns are learnt again before they run.
        self.described.retain(|p| *p == portal);
        self.copy.executed(&portal);
        self.unread_code.in_batch |= self.unread_code.names.portal(&portal);
        shared.expect(Expect::Execute { portal });
        self.scan.forward(&self.buf, &h);
        Ok(Flow::Next)
    }
}

/// Judges statement `sql` (sent as `event`): the host's own refusals
/// (`refusal`: text it cannot read; a read-only or role-pinned session),
/// the policy, a switch of how strings parse, the statements a SQL
/// `PREPARE` prepares, and portals of held statements a FETCH would run.
/// Returns the verdict with its note (summary, deciding plugin, rule).
async fn judge(
    shared: &Shared,
    held: &HeldStatements,
    sql: &str,
    event: QueryEvent<'_>,
    refusal: Option<String>,
) -> (Verdict, QueryNote) {
    let mut note = QueryNote {
        summary: judged_summary(shared, sql).await,
        ..Default::default()
    };
    let refusal = refusal.or_else(|| host_refusal(shared, &mut note));
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
        // New code or new shapes: read the catalog afresh (not for a
        // refused DDL, which changes nothing).
        shared.catalog.invalidate_code();
    }
    (verdict, note)
}

/// A `Query` or `FunctionCall` sent inside an extended-protocol batch,
/// before its `Sync`: PostgreSQL runs it, or skips it without a
/// `ReadyForQuery` if an earlier message of the batch failed — which the
/// gateway cannot know, and its count of `ReadyForQuery`s (where errors go,
/// which result is which) depends on. No driver does this; the session is
/// ended with a protocol error rather than relayed out of step.
fn mid_batch() -> RelayError {
    RelayError::Codec(CodecError::Invalid(
        "message order: a Query or FunctionCall inside an unfinished extended-protocol batch (send Sync first)",
    ))
}
