//! The server→client side of the relay: one method per message family.
//! Session messages (`ParameterStatus`, `ErrorResponse`, `ReadyForQuery`)
//! keep the gateway's view of the session true and put refusals where the
//! server's own errors would be; results are planned, edited and withheld
//! for a policy that watches rows; answers settle the audit records.
//! Everything else goes out of the read buffer as it came.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::super::responses::Expect;
use super::super::result_lineage::{self, Closed, Source};
use super::super::RelayError;
use super::results::{
    describe_result, described_columns, plan_for, PassMemo, PortalColumns, ResultState,
};
use super::rows::{apply_edits, sent_rows, SampleState};
use super::scan::Scan;
use super::scrub::scrubbed_error;
use super::{count, standard_strings, Shared};
use crate::policy::ResultPlan;
use crate::protocols::postgres::codec::encoding::ClientEncoding;
use crate::protocols::postgres::codec::tags::backend as be;
use crate::protocols::postgres::codec::{
    command_complete, data_row, error_response, parameter_status, peek_frame, row_description,
    FrameHeader,
};

/// What the server→client side does with one message.
enum Act {
    Forward,
    Skip,
    Replace(bytes::Bytes),
}

/// What the scan does after a step of a message.
enum Then {
    /// Go on with this message.
    Go,
    /// Read more first (the message is not whole yet).
    Read,
    /// The message (and maybe more) was handled: go on with the next.
    Done,
}

/// The server→client side and its state.
pub(super) struct ServerSide<'s, R, W> {
    shared: &'s Shared,
    rd: R,
    wr: W,
    buf: BytesMut,
    scan: Scan,
    /// Notices for the client (approval waits), written between messages.
    notices: tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    /// `ReadyForQuery`s relayed so far.
    rfq_seen: u64,
    /// Whether the server reported an error since the last `ReadyForQuery`.
    error_since_rfq: bool,
    /// The result being relayed (for a policy that watches rows).
    result: ResultState,
    /// Edited rows on their way out.
    scratch: BytesMut,
    /// Whether the rows of the statement answered are sampled.
    sample: SampleState,
    /// The length of a one-column row that may hold the gateway's upstream
    /// `application_name`.
    app_row_size: Option<usize>,
}

impl<'s, R, W> ServerSide<'s, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// The server side of a session.
    pub fn new(
        shared: &'s Shared,
        rd: R,
        wr: W,
        max: usize,
        notices: tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    ) -> Self {
        let mut result = ResultState::default();
        if shared.wants_rows && shared.policy().stable_pass_plans() {
            result.passed = Some(PassMemo::default());
        }
        Self {
            shared,
            rd,
            wr,
            buf: BytesMut::with_capacity(super::scan::READ_CHUNK),
            scan: Scan::new(max),
            notices,
            rfq_seen: 0,
            error_since_rfq: false,
            result,
            scratch: BytesMut::new(),
            sample: SampleState::default(),
            app_row_size: shared.app_name.row_size(),
        }
    }

    /// Relays until the server closes the connection.
    pub async fn run(mut self) -> Result<(), RelayError> {
        loop {
            self.scan.make_room(&mut self.buf);
            let n = loop {
                tokio::select! {
                    biased;
                    n = self.rd.read_buf(&mut self.buf) => break n?,
                    // A notice goes out only between messages.
                    Some(notice) = self.notices.recv(), if self.scan.between_messages() => {
                        self.wr.write_all(&notice).await?;
                        self.wr.flush().await?;
                    }
                }
            };
            if n == 0 {
                let _ = self.wr.shutdown().await;
                return Ok(());
            }
            count(&self.shared.to_client, n);
            self.scan.begin();
            while let Some(h) = self.scan.next(&mut self.wr, &self.buf).await? {
                if !self.message(h).await? {
                    break;
                }
            }
            self.scan.finish(&mut self.wr, &mut self.buf).await?;
            self.scan.shrink_if_idle(&mut self.buf);
        }
    }

    /// One message; `false`: read more first.
    async fn message(&mut self, mut h: FrameHeader) -> Result<bool, RelayError> {
        // The end of a batch or of a result is read whole before anything
        // counts it: a message that arrived in part is scanned again once
        // the rest is in, and must not be counted (or its answer popped)
        // twice. They are five or six bytes unless malformed.
        let ends = matches!(
            h.tag,
            be::READY_FOR_QUERY | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED
        );
        if ends && !self.scan.whole(&self.buf, &h) {
            return Ok(false);
        }
        if !self.client_app_name(&mut h) {
            return Ok(false);
        }
        let mut act = Act::Forward;
        // The error the gateway provoked for a refusal: the client gets the
        // refusal instead, before this batch's ReadyForQuery.
        let mut swallowed = false;
        match h.tag {
            be::ERROR_RESPONSE => match self.server_error(&h)? {
                Some((s, a)) => {
                    swallowed = s;
                    act = a;
                }
                None => return Ok(false),
            },
            be::PARAMETER_STATUS => {
                if !self.scan.whole(&self.buf, &h) {
                    return Ok(false);
                }
                self.parameter_status(&h)?;
            }
            be::READY_FOR_QUERY => self.ready_for_query().await?,
            _ => {}
        }
        if self.shared.wants_rows {
            match self.watch_result(&h, &mut act).await? {
                Then::Go => {}
                Then::Read => return Ok(false),
                Then::Done => return Ok(true),
            }
        }
        if swallowed {
            act = Act::Skip;
        }
        if self.shared.tracking && !self.record_answer(&h, &act, swallowed).await? {
            return Ok(false);
        }
        self.shared.copy_start.server_message(h.tag, self.rfq_seen);
        match act {
            Act::Forward => self.scan.forward(&self.buf, &h),
            Act::Skip => self.scan.drop_message(&mut self.wr, &self.buf, &h).await?,
            Act::Replace(bytes) => {
                self.scan
                    .replace(&mut self.wr, &self.buf, &h, &bytes)
                    .await?
            }
        }
        Ok(true)
    }

    /// The client reads back the application_name it set, not the
    /// gateway's name for the session upstream (only a `ParameterStatus`
    /// or a one-column row of the right size is looked at). `false`: read
    /// more first.
    fn client_app_name(&mut self, h: &mut FrameHeader) -> bool {
        if h.tag != be::PARAMETER_STATUS
            && !(h.tag == be::DATA_ROW && Some(h.total_len) == self.app_row_size)
        {
            return true;
        }
        if !self.scan.whole(&self.buf, h) {
            return false;
        }
        let frame = self.scan.frame(&self.buf, h);
        let theirs = if h.tag == be::PARAMETER_STATUS {
            self.shared.app_name.status_for_client(frame)
        } else {
            self.shared.app_name.row_for_client(frame)
        };
        if let Some(theirs) = theirs {
            self.scan.splice(&mut self.buf, h, &theirs);
        }
        true
    }

    /// An `ErrorResponse`: the marked error of a refusal is swallowed (the
    /// refusal goes out at the batch's `ReadyForQuery`); a masked
    /// session's client gets the error without what could quote data.
    /// Returns whether it was swallowed and what to do with it, or `None`
    /// to read more first.
    fn server_error(&mut self, h: &FrameHeader) -> Result<Option<(bool, Act)>, RelayError> {
        let shared = self.shared;
        let mut swallowed = false;
        if shared.injection_pending(self.rfq_seen + 1) {
            if !self.scan.whole(&self.buf, h) {
                return Ok(None);
            }
            swallowed = error_response::decode(self.scan.frame(&self.buf, h))
                .is_ok_and(|e| e.code == "22P02" && e.message.contains(shared.marker.as_str()));
        }
        self.error_since_rfq |= !swallowed;
        let mut act = Act::Forward;
        if !swallowed && shared.wants_rows {
            if !self.scan.whole(&self.buf, h) {
                return Ok(None);
            }
            if let Some(quiet) = scrubbed_error(self.scan.frame(&self.buf, h)) {
                act = Act::Replace(quiet);
            }
        }
        Ok(Some((swallowed, act)))
    }

    /// A `ParameterStatus` (whole): a setting that would make the server
    /// read statements differently from the gateway, or a pinned session
    /// that left its role, ends the session; a new client encoding is
    /// followed.
    fn parameter_status(&mut self, h: &FrameHeader) -> Result<(), RelayError> {
        let shared = self.shared;
        let (name, value) = parameter_status::decode(self.scan.frame(&self.buf, h))?;
        // Whatever spelling analysis missed: a session whose strings
        // PostgreSQL now reads differently ends.
        if !standard_strings(&name, &value) {
            return Err(RelayError::StandardStringsOff);
        }
        // A new client encoding, however it was switched: text that is not
        // ASCII is read in it once everything sent before has been
        // answered (see the client side's statements). One the gateway
        // does not read ends the session.
        if name.eq_ignore_ascii_case("client_encoding") {
            match ClientEncoding::named(&value) {
                Some(e) if shared.server_converts || e.reads_as_utf8() => shared
                    .encoding
                    .store(e.index(), std::sync::atomic::Ordering::Release),
                _ => return Err(RelayError::EncodingChanged(value.into_owned())),
            }
        }
        // The backstop behind the backstop: whatever analysis missed, a
        // pinned session that becomes a superuser or another session user
        // ends before its next statement.
        let superuser = name.eq_ignore_ascii_case("is_superuser") && value == "on";
        let left_role = superuser || name.eq_ignore_ascii_case("session_authorization");
        if let (Some(role), true) = (shared.upstream_role.as_deref(), left_role) {
            return Err(RelayError::RoleLeft(format!(
                "this session is pinned to role \"{role}\" upstream, and the server reported {name} = {value}"
            )));
        }
        Ok(())
    }

    /// A `ReadyForQuery`: the refusal queued for it goes out just before
    /// it — unless the server reported an error in the batch, which then
    /// skipped the refused statement too: one error per batch, as
    /// PostgreSQL sends.
    async fn ready_for_query(&mut self) -> Result<(), RelayError> {
        self.rfq_seen += 1;
        if let Some(err) = self.shared.take_injection(self.rfq_seen) {
            if !self.error_since_rfq {
                self.scan.send_pending(&mut self.wr, &self.buf).await?;
                self.wr.write_all(&err).await?;
            }
        }
        self.error_since_rfq = false;
        Ok(())
    }

    /// Follows results for a policy that watches rows: which statement
    /// and columns each belongs to, the policy's plan for it, its rows
    /// (edited, or withheld with an error in place of its end).
    async fn watch_result(&mut self, h: &FrameHeader, act: &mut Act) -> Result<Then, RelayError> {
        let shared = self.shared;
        match h.tag {
            be::READY_FOR_QUERY => {
                shared.expected().ready();
                self.result.completed = 0;
                if self.scan.frame(&self.buf, h).get(5) == Some(&be::EMPTY_QUERY_RESPONSE) {
                    // Out of any transaction: its portals are gone (a
                    // cursor WITH HOLD loses its lineage: its computed
                    // values are masked whole).
                    self.result.names.forget(false, true);
                }
                self.result.end_result();
                self.result.dropping = false;
                self.result.withheld = None;
            }
            be::ERROR_RESPONSE => {
                self.result.end_result();
                // The server's own error ends the result; ours is moot.
                self.result.withheld = None;
                let mut q = shared.expected();
                if !matches!(q.front(), Some(Expect::Ready { .. })) {
                    q.skip_to_ready();
                }
                if self.result.dropping {
                    *act = Act::Skip;
                }
            }
            be::PARSE_COMPLETE | be::BIND_COMPLETE | be::CLOSE_COMPLETE => {
                let answered = shared.expected().pop();
                self.answered(answered)?;
            }
            be::ROW_DESCRIPTION | be::NO_DATA => {
                if h.tag == be::ROW_DESCRIPTION && !self.scan.whole(&self.buf, h) {
                    return Ok(Then::Read);
                }
                self.description(h, act).await?;
            }
            be::DATA_ROW if !self.result.dropping => {
                if !self.result.planned {
                    self.plan_execute_result();
                }
                if self.result.withheld.is_some() {
                    *act = Act::Skip;
                } else if self.result.watching {
                    return self.watched_rows(h).await;
                }
            }
            be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED => {
                if h.tag == be::COMMAND_COMPLETE {
                    if !self.scan.whole(&self.buf, h) {
                        return Ok(Then::Read);
                    }
                    self.command_complete(h)?;
                }
                {
                    let mut q = shared.expected();
                    if matches!(q.front(), Some(Expect::Execute { .. })) {
                        q.pop();
                    }
                }
                self.result.end_result();
                if let Some(err) = self.result.withheld.take() {
                    // The withheld result ends in an error, and the client
                    // sees nothing more until ReadyForQuery.
                    *act = Act::Replace(err);
                    self.result.dropping = true;
                    self.error_since_rfq = true;
                }
            }
            _ => {}
        }
        if self.result.dropping && !matches!(act, Act::Replace(_)) && h.tag != be::READY_FOR_QUERY {
            *act = Act::Skip;
        }
        Ok(Then::Go)
    }

    /// A `ParseComplete`, `BindComplete` or `CloseComplete` answered what
    /// the client side expected: names take (or lose) their lineage.
    fn answered(&mut self, answered: Option<Expect>) -> Result<(), RelayError> {
        match answered {
            Some(Expect::ParseComplete { statement, summary }) => {
                self.result.names.prepared(
                    statement,
                    Source {
                        summary,
                        statement: 0,
                    },
                )?;
            }
            Some(Expect::BindComplete { portal, statement }) => {
                self.result.portals.remove(&portal);
                self.result.names.bound(portal, &statement)?;
            }
            Some(Expect::CloseComplete { closed }) => {
                if let Closed::Portal(p) = &closed {
                    self.result.portals.remove(p);
                }
                self.result.names.closed(&closed);
            }
            _ => {}
        }
        Ok(())
    }

    /// A `RowDescription` (whole) or `NoData`: a described portal's columns
    /// are learnt (and the answer to the gateway's own `Describe` kept from
    /// the client); a simple query's result is planned.
    async fn description(&mut self, h: &FrameHeader, act: &mut Act) -> Result<(), RelayError> {
        let shared = self.shared;
        let front = shared.expected().front().cloned();
        match front {
            Some(Expect::StatementDescription) => {
                shared.expected().pop();
            }
            Some(Expect::PortalDescription { portal, forward }) => {
                shared.expected().pop();
                if h.tag == be::ROW_DESCRIPTION {
                    let frame = self.scan.frame(&self.buf, h);
                    let result = &mut self.result;
                    let source = result.names.portal(&portal);
                    // An EXECUTE or FETCH runs what its name means when it
                    // runs, not now.
                    let settled = !source.is_some_and(result_lineage::follows);
                    let lineage = source.and_then(|s| {
                        result_lineage::of_result(s, described_columns(frame), &result.names)
                    });
                    if settled
                        && result
                            .passed
                            .as_ref()
                            .is_some_and(|m| m.hit(frame, lineage.as_deref()))
                    {
                        result.portals.insert(portal, PortalColumns::Passed);
                    } else {
                        match describe_result(frame, &shared.catalog).await? {
                            Ok(cols) => {
                                result
                                    .portals
                                    .insert(portal, PortalColumns::Known(cols, frame.to_vec()));
                            }
                            Err(_) => {
                                // Unknown columns: the Execute fails closed.
                                result.portals.remove(&portal);
                            }
                        }
                    }
                } else {
                    self.result.portals.remove(&portal);
                }
                if !forward {
                    *act = Act::Skip;
                }
            }
            Some(Expect::Ready {
                query: true,
                summary,
            }) if h.tag == be::ROW_DESCRIPTION && !self.result.dropping => {
                // A result of statement `completed` of a simple Query.
                let result = &mut self.result;
                let source = Source {
                    summary,
                    statement: result.completed,
                };
                let frame = self.scan.frame(&self.buf, h);
                let lineage =
                    result_lineage::of_result(&source, described_columns(frame), &result.names);
                let lineage = lineage.as_deref();
                let plan = if result
                    .passed
                    .as_ref()
                    .is_some_and(|m| m.hit(frame, lineage))
                {
                    ResultPlan::Pass
                } else {
                    let cols = describe_result(frame, &shared.catalog).await?;
                    let plan = plan_for(shared, cols.as_deref().map_err(Clone::clone), lineage);
                    if let (ResultPlan::Pass, Some(m)) = (&plan, &mut result.passed) {
                        m.remember(frame, lineage);
                    }
                    plan
                };
                result.apply(plan);
                if result.withheld.is_some() {
                    *act = Act::Skip;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Plans the result of an `Execute` at its first row: by its portal's
    /// columns, learnt from the `Describe` before it.
    fn plan_execute_result(&mut self) {
        let shared = self.shared;
        let result = &mut self.result;
        let front = shared.expected().front().cloned();
        let plan = match front {
            Some(Expect::Execute { portal }) => match result.portals.get(&portal) {
                Some(PortalColumns::Passed) => ResultPlan::Pass,
                Some(PortalColumns::Known(cols, frame)) => {
                    let lineage = result
                        .names
                        .portal(&portal)
                        .and_then(|s| result_lineage::of_result(s, cols.len(), &result.names));
                    let lineage = lineage.as_deref();
                    let plan = plan_for(shared, Ok(cols), lineage);
                    // What an EXECUTE or FETCH in it runs is fixed from its
                    // first run on.
                    if let (ResultPlan::Pass, Some(m)) = (&plan, &mut result.passed) {
                        m.remember(frame, lineage);
                    }
                    result.names.ran(&portal);
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

    /// Watched rows: every whole `DataRow` from here on goes to the policy
    /// as one batch, and out with its edits.
    async fn watched_rows(&mut self, h: &FrameHeader) -> Result<Then, RelayError> {
        let shared = self.shared;
        let max = self.scan.max();
        let mut frames = Vec::new();
        let mut at = self.scan.at();
        while let Ok(Some(d)) = peek_frame(&self.buf[at..], max) {
            if d.tag != be::DATA_ROW || self.buf.len() - at < d.total_len {
                break;
            }
            frames.push(at..at + d.total_len);
            at += d.total_len;
        }
        if frames.is_empty() {
            self.scan.whole(&self.buf, h);
            return Ok(Then::Read);
        }
        let rows = frames
            .iter()
            .map(|r| data_row::decode(&self.buf[r.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        let edits = shared.policy().on_data_rows(&rows);
        if edits.is_empty() {
            if self.sample.wanted(shared) {
                self.sample.rows(shared, rows.iter().map(|r| r.as_slice()));
            }
            self.scan.forward_to(at);
            return Ok(Then::Done);
        }
        self.scratch.clear();
        apply_edits(&mut self.scratch, &self.buf, &frames, rows, edits);
        if self.sample.wanted(shared) {
            let sent = sent_rows(&self.scratch, max)?;
            self.sample.rows(shared, sent.iter().map(|r| r.as_slice()));
        }
        self.scan
            .replace_to(&mut self.wr, &self.buf, at, &self.scratch)
            .await?;
        Ok(Then::Done)
    }

    /// A `CommandComplete` (whole): a SQL `PREPARE` or `DECLARE` made a
    /// name whose runs have the lineage of what it prepared (most tags
    /// change no name: nothing is looked up).
    fn command_complete(&mut self, h: &FrameHeader) -> Result<(), RelayError> {
        let tag = command_complete::decode(self.scan.frame(&self.buf, h))?;
        let result = &mut self.result;
        if result_lineage::changes_names(tag) {
            let source = match self.shared.expected().front() {
                Some(Expect::Execute { portal }) => result.names.portal(portal).cloned(),
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
        Ok(())
    }

    /// Settles the audit ledger with the server's answer: result columns
    /// and sampled rows, and each statement's end (its tag, its error, or
    /// the withholding) — written out at `ReadyForQuery`. `false`: read
    /// more first.
    async fn record_answer(
        &mut self,
        h: &FrameHeader,
        act: &Act,
        swallowed: bool,
    ) -> Result<bool, RelayError> {
        let shared = self.shared;
        if h.tag == be::ROW_DESCRIPTION {
            if !self.scan.whole(&self.buf, h) {
                return Ok(false);
            }
            self.sample.checked = false;
            if self.sample.wanted(shared) {
                let columns = row_description::decode(self.scan.frame(&self.buf, h))?
                    .into_iter()
                    .map(|c| (c.name.to_string(), c.format == 1))
                    .collect::<Vec<_>>();
                shared.ledger().describe(|| columns);
            }
        }
        if h.tag == be::DATA_ROW && matches!(act, Act::Forward) && self.sample.wanted(shared) {
            if !self.scan.whole(&self.buf, h) {
                return Ok(false);
            }
            let row = data_row::decode(self.scan.frame(&self.buf, h))?;
            self.sample.rows(shared, std::iter::once(row.as_slice()));
        }
        let ends = matches!(
            h.tag,
            be::COMMAND_COMPLETE
                | be::ERROR_RESPONSE
                | be::EMPTY_QUERY_RESPONSE
                | be::PORTAL_SUSPENDED
                | be::READY_FOR_QUERY
        );
        if swallowed || !ends {
            return Ok(true);
        }
        self.sample.checked = false;
        if !self.scan.whole(&self.buf, h) {
            return Ok(false);
        }
        let frame = self.scan.frame(&self.buf, h);
        let settled = {
            let mut ledger = shared.ledger();
            match (h.tag, act) {
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
                ledger.ready(self.rfq_seen)
            } else {
                Vec::new()
            }
        };
        shared.write_audit(settled).await;
        Ok(true)
    }
}
