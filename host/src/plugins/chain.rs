//! A target's plugins as one policy. Plugins are called in chain order; the
//! first deny wins, approval requests are collected, and row edits compose
//! (each plugin sees the rows as the previous ones left them). A plugin that
//! fails (trap, timeout, out of memory) decides by its failure policy: its
//! broken instance is discarded, and a fresh one serves the session's next
//! event. A plugin that calls `reuse-verdict` is not called again in the
//! session for a statement of the same shape: its verdict and notes are
//! kept per plugin, keyed by the shared statement summary.

use std::sync::Arc;

use super::bindings::{http_types, ssh_types, types, OutputStream};
use super::executor::inline;
use super::instance::{describe_failure, CallNotes, PluginInstance};
use super::loaded::LoadedPlugin;
use crate::config::FailurePolicy;
use crate::policy::{
    EndReason, HttpRequest, ObjectEdit, OutputWatch, Policy, QueryEvent, QueryNote, Recording,
    ResultColumn, ResultPlan, Row, RowEdit, SessionInfo, SessionPolicy, SessionRefused, SshRequest,
    SshStream, ValueEdit, Verdict,
};
use crate::protocols::postgres::sql::{QuerySummary, SummaryCache};
use crate::protocols::ssh::sftp::FileOp;
use crate::protocols::ssh::typed::TypedLine;

/// The plugins of one target, in order.
pub struct PluginChain {
    plugins: Vec<Arc<LoadedPlugin>>,
    summaries: Arc<SummaryCache>,
}

impl PluginChain {
    /// A chain of `plugins`, summarizing SQL through `summaries`.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>, summaries: Arc<SummaryCache>) -> Self {
        Self { plugins, summaries }
    }
}

struct Member {
    plugin: Arc<LoadedPlugin>,
    instance: Option<PluginInstance>,
    /// Columns of the current result this plugin watches (empty: none).
    watched: Vec<u32>,
    /// A fail-closed plugin failed on a batch of the current result: every
    /// value it watches is NULL until the result ends, and it is not called
    /// again for this result (a fresh instance would not know its columns).
    failed_in_result: bool,
    /// Verdicts the plugin declared reusable for the statement's shape.
    verdicts: VerdictMemo,
}

/// Verdicts a plugin declared to depend only on a statement's summary
/// (`reuse-verdict`), keyed by the shared summary they were given for. An
/// entry holds its summary, so the address it is keyed by cannot be reused
/// by another summary while the entry lives.
#[derive(Default)]
struct VerdictMemo {
    entries: std::collections::HashMap<usize, (Arc<QuerySummary>, types::Verdict, CallNotes)>,
}

/// Reusable verdicts kept per plugin and session before the memo starts over.
const VERDICT_MEMO_CAPACITY: usize = 1024;

impl VerdictMemo {
    fn get(&self, summary: &Arc<QuerySummary>) -> Option<(types::Verdict, CallNotes)> {
        self.entries
            .get(&(Arc::as_ptr(summary) as usize))
            .map(|(_, v, n)| (v.clone(), n.clone()))
    }

    fn put(&mut self, summary: &Arc<QuerySummary>, verdict: &types::Verdict, notes: &CallNotes) {
        if self.entries.len() >= VERDICT_MEMO_CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(
            Arc::as_ptr(summary) as usize,
            (summary.clone(), verdict.clone(), notes.clone()),
        );
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The plugin side of a session: moved to a plugin thread for every call.
struct ChainInner {
    members: Vec<Member>,
    session: types::Session,
}

/// Types whose binary format is their text bytes, so a replacement value
/// written as text is still valid: text, varchar, bpchar, name, bytea,
/// json and unknown.
fn binary_is_text(type_oid: u32) -> bool {
    matches!(type_oid, 25 | 1043 | 1042 | 19 | 17 | 114 | 705)
}

/// Per-session state of a chain.
struct ChainSession {
    /// For each column of the current result: binary and not text-like.
    binary_opaque: Vec<bool>,
    /// `None` only if a call was lost to a host-side panic.
    inner: Option<ChainInner>,
    summaries: Arc<SummaryCache>,
    wants_rows: bool,
    stable_pass_plans: bool,
}

fn to_session(info: &SessionInfo) -> types::Session {
    types::Session {
        id: info.session_id,
        identity: types::Identity {
            subject: info.identity.subject.clone(),
            user: info.identity.user.clone(),
            groups: info.identity.groups.clone(),
            issuer: info.identity.issuer.clone(),
            actor_chain: info.identity.actor_chain.clone(),
        },
        target: info.target.clone(),
        client_addr: info.client_addr.to_string(),
        application_name: info.application_name.clone(),
    }
}

fn to_query(sql: &str, prepared: Option<&str>, s: &QuerySummary) -> types::Event {
    let table = |t: &crate::protocols::postgres::sql::TableName| types::TableRef {
        schema: t.schema.clone(),
        name: t.name.clone(),
    };
    types::Event::PgQuery(types::PgQuery {
        text: sql.to_string(),
        fingerprint: s.fingerprint.clone(),
        statements: s
            .statements
            .iter()
            .map(|st| types::Statement {
                kind: st.kind.clone(),
                tables_read: st.tables_read.iter().map(table).collect(),
                tables_written: st.tables_written.iter().map(table).collect(),
                functions: st.functions.clone(),
                has_where: st.has_where,
                is_copy: st.is_copy,
                copy_program: st.copy_program,
                explain_analyze: st.explain_analyze,
            })
            .collect(),
        parse_error: s.parse_error.clone(),
        prepared_name: prepared.map(str::to_string),
    })
}

/// An SSH request as the contract spells it.
/// The contract's form of an HTTP request.
fn to_http_request(r: &HttpRequest) -> http_types::HttpRequest {
    http_types::HttpRequest {
        id: r.id,
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r
            .headers
            .iter()
            .map(|(name, value)| http_types::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body: r.body.as_ref().map(|b| b.to_vec()),
        kube: r.kube.as_ref().map(|k| http_types::KubeRequest {
            verb: k.verb.clone(),
            is_resource: k.is_resource,
            api_group: k.api_group.clone(),
            api_version: k.api_version.clone(),
            resource: k.resource.clone(),
            subresource: k.subresource.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            exec: k.exec.as_ref().map(|e| http_types::KubeExec {
                command: e.command.clone(),
                container: e.container.clone(),
                stdin: e.stdin,
                tty: e.tty,
            }),
        }),
    }
}

fn to_ssh_request(r: &SshRequest) -> ssh_types::SshRequest {
    match r {
        SshRequest::Exec(command) => ssh_types::SshRequest::Exec(command.clone()),
        SshRequest::Shell(pty) => {
            ssh_types::SshRequest::Shell(pty.as_ref().map(|p| ssh_types::Pty {
                term: p.term.clone(),
                columns: p.columns,
                rows: p.rows,
            }))
        }
        SshRequest::Subsystem(name) => ssh_types::SshRequest::Subsystem(name.clone()),
        SshRequest::Env { name, value } => {
            ssh_types::SshRequest::Env((name.clone(), value.clone()))
        }
        SshRequest::DirectTcpip { host, port } => {
            ssh_types::SshRequest::DirectTcpip(ssh_types::Endpoint {
                host: host.clone(),
                port: *port,
            })
        }
    }
}

/// An SFTP operation as the contract spells it.
/// The verdict when the session's plugins are gone (a chain that failed
/// beyond repair).
fn plugins_lost() -> Verdict {
    Verdict::Deny {
        reason: "the gateway lost this session's plugins; reconnect".into(),
    }
}

fn to_file_operation(op: &FileOp) -> ssh_types::FileOperation {
    use ssh_types::FileOperation as F;
    match op.clone() {
        FileOp::Read(p) => F::Read(p),
        FileOp::Write(p) => F::Write(p),
        FileOp::Remove(p) => F::Remove(p),
        FileOp::Rename(a, b) => F::Rename((a, b)),
        FileOp::MakeDirectory(p) => F::MakeDirectory(p),
        FileOp::RemoveDirectory(p) => F::RemoveDirectory(p),
        FileOp::SetAttributes(p) => F::SetAttributes(p),
        FileOp::ListDirectory(p) => F::ListDirectory(p),
        FileOp::Link(to, at) => F::Rename((to, at)),
    }
}

fn from_verdict(v: types::Verdict) -> Verdict {
    match v {
        types::Verdict::Allow => Verdict::Allow,
        types::Verdict::Deny(reason) => Verdict::Deny { reason },
        types::Verdict::RequireApproval(reason) => Verdict::RequireApproval { reason },
    }
}

impl Policy for PluginChain {
    fn start_session(&self, info: &SessionInfo) -> Result<Box<dyn SessionPolicy>, SessionRefused> {
        let session = to_session(info);
        let plugins = self.plugins.clone();
        let session_id = info.session_id;
        let started = start_chain(plugins, session, session_id)?;
        let wants_rows = self.plugins.iter().any(|p| p.wants_rows);
        let stable_pass_plans = self
            .plugins
            .iter()
            .all(|p| !p.wants_rows || p.stable_result_plans);
        Ok(Box::new(ChainSession {
            binary_opaque: Vec::new(),
            inner: Some(started),
            summaries: self.summaries.clone(),
            wants_rows,
            stable_pass_plans,
        }))
    }
}

/// Instantiates every plugin of the chain for a session (on a plugin thread).
fn start_chain(
    plugins: Vec<Arc<LoadedPlugin>>,
    session: types::Session,
    session_id: u64,
) -> Result<ChainInner, SessionRefused> {
    let mut members = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        let mut member = Member {
            plugin: plugin.clone(),
            instance: None,
            watched: Vec::new(),
            failed_in_result: false,
            verdicts: VerdictMemo::default(),
        };
        match start_member(&mut member, &session) {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Deny { reason }) | Ok(Verdict::RequireApproval { reason }) => {
                return Err(SessionRefused { reason });
            }
            Err(why) => {
                tracing::warn!(plugin = %plugin.name, session = session_id, error = %why, "plugin failed at session start");
                if plugin.failure == FailurePolicy::FailClosed {
                    return Err(SessionRefused {
                        reason: format!(
                            "plugin \"{}\" failed ({why}); sessions are refused while it fails",
                            plugin.name
                        ),
                    });
                }
            }
        }
        members.push(member);
    }
    Ok(ChainInner { members, session })
}

/// Instantiates a member and runs its session-start hook.
fn start_member(m: &mut Member, session: &types::Session) -> Result<Verdict, String> {
    let plugin = m.plugin.clone();
    let (inst, v) = inline(|| -> Result<_, String> {
        let mut inst = plugin.instantiate()?;
        let v = inst
            .session_start(session)
            .map_err(|e| describe_failure(&e, plugin.timeout_ms))?;
        Ok((inst, v))
    })??;
    m.instance = Some(inst);
    Ok(from_verdict(v))
}

impl ChainInner {
    /// Calls `f` on member `i`'s instance, re-creating a discarded instance
    /// first; a failure discards the instance and is returned as text.
    fn call<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<T>,
    ) -> Result<T, String> {
        let session = &self.session;
        let m = &mut self.members[i];
        if m.instance.is_none() {
            match start_member(m, session)? {
                Verdict::Allow => {}
                other => return Err(format!("refused the session on restart: {other:?}")),
            }
        }
        let inst = m.instance.as_mut().ok_or("no instance")?;
        let timeout_ms = m.plugin.timeout_ms;
        let started = std::time::Instant::now();
        let outcome = inline(|| f(inst));
        m.plugin.calls.observe(started.elapsed());
        match outcome.map(|r| r.map_err(|e| describe_failure(&e, timeout_ms))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) | Err(why) => {
                m.instance = None;
                m.watched.clear();
                m.verdicts.clear();
                tracing::warn!(plugin = %m.plugin.name, session = session.id, error = %why, "plugin call failed; instance discarded");
                Err(why)
            }
        }
    }
}

/// A chain's verdict taking shape, member by member: the first deny
/// decides; approvals asked for are collected, on the strictest terms.
#[derive(Default)]
struct Verdicts {
    approvals: Vec<String>,
    approvers: Vec<String>,
    rules: Vec<String>,
}

impl Verdicts {
    /// Adds member `name`'s answer (or failure, handled by its `failure`
    /// policy) about a `what`; `Some(deny)` when it decides.
    fn add(
        &mut self,
        name: &str,
        failure: FailurePolicy,
        called: Result<(types::Verdict, CallNotes), String>,
        what: &str,
        note: &mut QueryNote,
    ) -> Option<Verdict> {
        match called {
            Ok((v, notes)) => match from_verdict(v) {
                Verdict::Allow => None,
                deny @ Verdict::Deny { .. } => {
                    note.decided_by = Some(name.to_string());
                    note.rule = notes.rule;
                    Some(deny)
                }
                Verdict::RequireApproval { reason } => {
                    self.approvals.push(reason);
                    self.approvers.push(name.to_string());
                    self.rules.extend(notes.rule);
                    // Several plugins asking: the strictest terms.
                    note.approval = Some(match (note.approval, notes.approval) {
                        (Some(a), Some(b)) => crate::policy::ApprovalPolicy {
                            wait: a.wait && b.wait,
                            min_approvals: a.min_approvals.max(b.min_approvals),
                            timeout_secs: a.timeout_secs.min(b.timeout_secs),
                            grant_uses: a.grant_uses.min(b.grant_uses),
                            grant_minutes: a.grant_minutes.min(b.grant_minutes),
                        },
                        (a, b) => b.or(a).unwrap_or_default(),
                    });
                    None
                }
            },
            Err(why) if failure == FailurePolicy::FailClosed => {
                note.decided_by = Some(name.to_string());
                note.rule = Some("plugin-failure".into());
                Some(Verdict::Deny {
                    reason: format!(
                        "plugin \"{name}\" failed ({why}); the {what} was refused because the plugin fails closed"
                    ),
                })
            }
            Err(_) => None,
        }
    }

    /// The verdict when no member denied.
    fn finish(self, note: &mut QueryNote) -> Verdict {
        if self.approvals.is_empty() {
            Verdict::Allow
        } else {
            note.decided_by = Some(self.approvers.join(", "));
            note.rule = (!self.rules.is_empty()).then(|| self.rules.join(", "));
            Verdict::RequireApproval {
                reason: self.approvals.join("; "),
            }
        }
    }
}

impl ChainInner {
    fn on_query(
        &mut self,
        sql: &str,
        prepared: Option<&str>,
        summary: &Arc<QuerySummary>,
        note: &mut QueryNote,
    ) -> Verdict {
        let mut verdicts = Verdicts::default();
        // Lowered for the first plugin that is called, if any is.
        let mut event: Option<types::Event> = None;
        for i in 0..self.members.len() {
            let kinds = &self.members[i].plugin.query_kinds;
            if !kinds.is_empty() && !summary.statements.iter().any(|st| kinds.contains(&st.kind)) {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let called = match self.members[i].verdicts.get(summary) {
                Some(memo) => Ok(memo),
                None => {
                    let event = event.get_or_insert_with(|| to_query(sql, prepared, summary));
                    let called = self.call(i, |inst| {
                        let v = inst.on_event(event, summary)?;
                        Ok((v, inst.take_notes()))
                    });
                    if let Ok((v, notes)) = &called {
                        if notes.reuse {
                            self.members[i].verdicts.put(summary, v, notes);
                        }
                    }
                    called
                }
            };
            let name = &self.members[i].plugin.name;
            if let Ok((_, notes)) = &called {
                if let Some(rows) = notes.record {
                    let r = note.record.get_or_insert_with(Recording::default);
                    r.sample_rows = r.sample_rows.max(rows);
                }
            }
            if let Some(deny) = verdicts.add(name, failure, called, "statement", note) {
                return deny;
            }
        }
        verdicts.finish(note)
    }

    /// Judges an SSH channel request with every member that exports the
    /// SSH hooks, like [`Self::on_query`]: the first deny wins, approvals
    /// are collected.
    fn on_ssh_request(&mut self, request: &ssh_types::SshRequest, note: &mut QueryNote) -> Verdict {
        self.judge_ssh("request", note, |inst| inst.on_ssh_request(request))
    }

    /// Judges an HTTP request with every member that exports the HTTP
    /// hooks, like [`Self::on_ssh_request`].
    fn on_http_request(
        &mut self,
        request: &http_types::HttpRequest,
        note: &mut QueryNote,
    ) -> Verdict {
        self.judge_hook("HTTP request", note, LoadedPlugin::guards_http, |inst| {
            inst.on_http_request(request)
        })
    }

    /// Judges with `hook` every member that exports the SSH hooks (`what`
    /// names the call in failure texts): the first deny wins, approvals
    /// are collected.
    fn judge_ssh(
        &mut self,
        what: &str,
        note: &mut QueryNote,
        hook: impl Fn(&mut PluginInstance) -> Option<wasmtime::Result<types::Verdict>>,
    ) -> Verdict {
        self.judge_hook(what, note, LoadedPlugin::guards_ssh, hook)
    }

    /// Judges with `hook` every member `exports` says has the hook's
    /// interface: the first deny wins, approvals are collected.
    fn judge_hook(
        &mut self,
        what: &str,
        note: &mut QueryNote,
        exports: fn(&LoadedPlugin) -> bool,
        hook: impl Fn(&mut PluginInstance) -> Option<wasmtime::Result<types::Verdict>>,
    ) -> Verdict {
        let mut verdicts = Verdicts::default();
        for i in 0..self.members.len() {
            if !exports(&self.members[i].plugin) {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let called = self.call(i, |inst| match hook(inst) {
                Some(v) => Ok((v?, inst.take_notes())),
                None => Ok((types::Verdict::Allow, CallNotes::default())),
            });
            // A plugin may ask for what it judged to be recorded (a typed
            // line is recorded only then, or when refused).
            if let Ok((
                _,
                CallNotes {
                    record: Some(_), ..
                },
            )) = &called
            {
                note.record.get_or_insert_with(Recording::default);
            }
            let name = &self.members[i].plugin.name;
            if let Some(deny) = verdicts.add(name, failure, called, what, note) {
                return deny;
            }
        }
        verdicts.finish(note)
    }

    /// Judges an SFTP operation like [`Self::on_ssh_request`].
    fn on_file_operation(
        &mut self,
        operation: &ssh_types::FileOperation,
        note: &mut QueryNote,
    ) -> Verdict {
        self.judge_ssh("file operation", note, |inst| {
            inst.on_file_operation(operation)
        })
    }

    /// Judges a typed shell line like [`Self::on_ssh_request`].
    fn on_command_line(&mut self, line: &ssh_types::CommandLine, note: &mut QueryNote) -> Verdict {
        self.judge_ssh("command line", note, |inst| inst.on_command_line(line))
    }

    /// Asks each member that exports `ssh-output` whether it watches the
    /// output of `request`; whether any does. A member that fails counts
    /// as watching when it fails closed (its output calls then fail too,
    /// and the output is withheld).
    fn watch_ssh_output(&mut self, request: &ssh_types::SshRequest) -> OutputWatch {
        let mut watchers = Vec::new();
        for i in 0..self.members.len() {
            if !self.members[i].plugin.watches_output() {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let watching =
                match self.call(i, |inst| inst.watch_output(request).unwrap_or(Ok(false))) {
                    Ok(w) => w,
                    Err(_) => failure == FailurePolicy::FailClosed,
                };
            if watching {
                watchers.push(i);
            }
        }
        OutputWatch(watchers)
    }

    /// Asks each member that exports `http-response` whether it watches
    /// the response to `request` (a fail-closed member that fails counts
    /// as watching; its object calls then fail too).
    fn watch_response(&mut self, request: &http_types::HttpRequest) -> OutputWatch {
        let mut watchers = Vec::new();
        for i in 0..self.members.len() {
            if !self.members[i].plugin.watches_responses() {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let watching =
                match self.call(i, |inst| inst.watch_response(request).unwrap_or(Ok(false))) {
                    Ok(w) => w,
                    Err(_) => failure == FailurePolicy::FailClosed,
                };
            if watching {
                watchers.push(i);
            }
        }
        OutputWatch(watchers)
    }

    /// One object of a watched response through each watching member in
    /// chain order (each sees the one before's edit). A fail-closed
    /// member that fails withholds it.
    fn on_kube_object(&mut self, watch: &OutputWatch, request_id: u64, object: &str) -> ObjectEdit {
        let mut edited: Option<String> = None;
        for &i in &watch.0 {
            if i >= self.members.len() {
                return ObjectEdit::Withheld("a plugin that watched it is gone".into());
            }
            let failure = self.members[i].plugin.failure;
            let current = edited.as_deref().unwrap_or(object);
            match self.call(i, |inst| {
                inst.on_kube_object(request_id, current).unwrap_or(Ok(None))
            }) {
                Ok(Some(replacement)) => edited = Some(replacement),
                Ok(None) => {}
                Err(why) if failure == FailurePolicy::FailClosed => {
                    let name = &self.members[i].plugin.name;
                    return ObjectEdit::Withheld(format!("plugin \"{name}\" failed ({why})"));
                }
                Err(_) => {}
            }
        }
        match edited {
            Some(e) => ObjectEdit::Replaced(e),
            None => ObjectEdit::Unchanged,
        }
    }

    /// Output of a watched SSH command through each watching member in
    /// chain order (each sees the one before's edit); the text to send
    /// instead, if any. A fail-closed member that fails withholds it.
    fn on_ssh_output(
        &mut self,
        watch: &OutputWatch,
        stream: OutputStream,
        text: &str,
    ) -> Option<String> {
        let mut edited: Option<String> = None;
        for &i in &watch.0 {
            if i >= self.members.len() {
                return Some(
                    "[Portcullis: output withheld: a plugin that watched it is gone]\r\n".into(),
                );
            }
            let failure = self.members[i].plugin.failure;
            let current = edited.as_deref().unwrap_or(text);
            let called = self.call(i, |inst| {
                inst.on_ssh_output(stream, current).unwrap_or(Ok(None))
            });
            match called {
                Ok(Some(replacement)) => edited = Some(replacement),
                Ok(None) => {}
                Err(why) if failure == FailurePolicy::FailClosed => {
                    let name = &self.members[i].plugin.name;
                    return Some(format!(
                        "[Portcullis: output withheld: plugin \"{name}\" failed ({why})]\r\n"
                    ));
                }
                Err(_) => {}
            }
        }
        edited
    }

    fn on_row_description(
        &mut self,
        cols: &[types::Column],
        lineage: Option<&Arc<Vec<crate::protocols::postgres::sql::lineage::Lineage>>>,
    ) -> ResultPlan {
        let mut any = false;
        for m in &mut self.members {
            m.watched.clear();
            m.failed_in_result = false;
        }
        for i in 0..self.members.len() {
            if !self.members[i].plugin.wants_rows {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let watched = match self.call(i, |inst| inst.result_columns(cols, lineage)) {
                Ok(types::ResultPlan::Pass) => Vec::new(),
                Ok(types::ResultPlan::Watch(mut columns)) => {
                    columns.retain(|&c| (c as usize) < cols.len());
                    columns.sort_unstable();
                    columns.dedup();
                    columns
                }
                Ok(types::ResultPlan::Deny(reason)) => return ResultPlan::Deny { reason },
                Err(why) if failure == FailurePolicy::FailClosed => {
                    let name = &self.members[i].plugin.name;
                    return ResultPlan::Deny {
                        reason: format!(
                            "plugin \"{name}\" failed ({why}); the result was withheld because the plugin fails closed"
                        ),
                    };
                }
                Err(_) => Vec::new(),
            };
            any |= !watched.is_empty();
            self.members[i].watched = watched;
        }
        if any {
            ResultPlan::Watch
        } else {
            ResultPlan::Pass
        }
    }

    /// Runs the watching plugins over a batch: each sees the values as the
    /// plugins before it left them. Returns the batch's edits.
    fn on_data_rows(&mut self, rows: &[Row<'_>]) -> Vec<RowEdit> {
        let mut overlay = Overlay::default();
        for i in 0..self.members.len() {
            if self.members[i].watched.is_empty() {
                continue;
            }
            let failure = self.members[i].plugin.failure;
            let watched = self.members[i].watched.clone();
            if self.members[i].failed_in_result {
                for &c in &watched {
                    overlay.null_column(rows.len(), c);
                }
                continue;
            }
            let batch = overlay.batch(rows, &watched);
            match self.call(i, |inst| inst.result_rows(&batch)) {
                Ok(edits) => {
                    for e in edits {
                        if !watched.contains(&e.column) {
                            continue; // a plugin edits only what it watches
                        }
                        overlay.apply(rows.len(), e);
                    }
                }
                Err(_) if failure == FailurePolicy::FailClosed => {
                    // Nothing this plugin should have masked may leak: every
                    // value it watches becomes NULL, in this batch and in
                    // every later batch of the result.
                    for &c in &watched {
                        overlay.null_column(rows.len(), c);
                    }
                    let m = &mut self.members[i];
                    m.watched = watched;
                    m.failed_in_result = true;
                }
                Err(_) => {}
            }
        }
        overlay.into_edits()
    }

    fn on_session_end(&mut self, text: &str) {
        for m in &mut self.members {
            if let Some(inst) = m.instance.as_mut() {
                if let Err(e) = inst.session_end(text) {
                    tracing::debug!(plugin = %m.plugin.name, error = %describe_failure(&e, m.plugin.timeout_ms), "session-end hook failed");
                }
            }
        }
    }
}

/// The values the plugins of a chain have changed in a batch, by column:
/// `None` = untouched, `Some(None)` = NULL, `Some(Some(v))` = replaced.
#[derive(Default)]
struct Overlay {
    columns: std::collections::BTreeMap<u32, Vec<Option<Option<bytes::Bytes>>>>,
}

impl Overlay {
    /// The batch a plugin watching `watched` sees: each row's value as the
    /// plugins before it left it.
    fn batch(&self, rows: &[Row<'_>], watched: &[u32]) -> types::RowBatch {
        let columns = watched
            .iter()
            .map(|&column| {
                let edited = self.columns.get(&column);
                let mut data = Vec::new();
                let mut ends = Vec::with_capacity(rows.len());
                let mut nulls = Vec::with_capacity(rows.len());
                for (r, row) in rows.iter().enumerate() {
                    let v = match edited.and_then(|c| c.get(r)).and_then(Option::as_ref) {
                        Some(edit) => edit.as_deref(),
                        None => row.get(column as usize).copied().flatten(),
                    };
                    if let Some(v) = v {
                        data.extend_from_slice(v);
                    }
                    ends.push(data.len() as u32);
                    nulls.push(v.is_none());
                }
                types::ColumnValues {
                    column,
                    data,
                    ends,
                    nulls,
                }
            })
            .collect();
        types::RowBatch {
            rows: rows.len() as u32,
            columns,
        }
    }

    fn slot(&mut self, n: usize, column: u32) -> &mut Vec<Option<Option<bytes::Bytes>>> {
        self.columns.entry(column).or_insert_with(|| vec![None; n])
    }

    /// Applies one plugin's edits of a column (malformed entries are skipped).
    /// The plugin's buffer is kept whole; each value is a slice of it.
    fn apply(&mut self, n: usize, e: types::ColumnEdits) {
        let slot = self.slot(n, e.column);
        let data = bytes::Bytes::from(e.data);
        let mut start = 0usize;
        for ((&row, &end), &null) in e.rows.iter().zip(&e.ends).zip(&e.nulls) {
            let end = end as usize;
            let value = match null {
                true => None,
                false if start <= end && end <= data.len() => Some(data.slice(start..end)),
                false => None, // out of range: NULL rather than a guess
            };
            start = end.max(start);
            if let Some(cell) = slot.get_mut(row as usize) {
                *cell = Some(value);
            }
        }
    }

    fn null_column(&mut self, n: usize, column: u32) {
        self.slot(n, column)
            .iter_mut()
            .for_each(|c| *c = Some(None));
    }

    fn into_edits(self) -> Vec<RowEdit> {
        let mut edits = Vec::new();
        for (column, cells) in self.columns {
            for (row, cell) in cells.into_iter().enumerate() {
                if let Some(value) = cell {
                    edits.push(RowEdit {
                        row,
                        column: column as usize,
                        edit: match value {
                            Some(v) => ValueEdit::Replace(v),
                            None => ValueEdit::Null,
                        },
                    });
                }
            }
        }
        edits.sort_by_key(|e| (e.row, e.column));
        edits
    }
}

impl ChainSession {
    /// Runs `f` on the session's plugins (on this thread); `None` if the
    /// call was lost to a host-side panic outside any one plugin's call,
    /// which callers treat as a failure.
    fn with_inner<R>(&mut self, f: impl FnOnce(&mut ChainInner) -> R) -> Option<R> {
        let inner = self.inner.as_mut()?;
        match inline(|| f(inner)) {
            Ok(r) => Some(r),
            Err(e) => {
                self.inner = None;
                tracing::error!(error = %e, "plugin call lost; the session's plugins are gone");
                None
            }
        }
    }
}

impl SessionPolicy for ChainSession {
    fn reads_summary(&self) -> bool {
        true
    }

    fn on_query(&mut self, event: QueryEvent<'_>, note: &mut QueryNote) -> Verdict {
        let (sql, prepared) = match event {
            QueryEvent::Simple { sql } => (sql, None),
            QueryEvent::Parse { statement, sql } => (sql, Some(statement)),
        };
        let summary = match note.summary.take() {
            Some(s) => s,
            None => self.summaries.get(sql),
        };
        let verdict = self.with_inner(|inner| inner.on_query(sql, prepared, &summary, note));
        note.summary = Some(summary);
        verdict.unwrap_or_else(plugins_lost)
    }

    fn on_ssh_request(&mut self, request: &SshRequest, note: &mut QueryNote) -> Verdict {
        let request = to_ssh_request(request);
        self.with_inner(|inner| inner.on_ssh_request(&request, note))
            .unwrap_or_else(plugins_lost)
    }

    fn on_command_line(&mut self, line: &TypedLine, note: &mut QueryNote) -> Verdict {
        let line = ssh_types::CommandLine {
            text: line.text.clone(),
            exact: line.exact,
        };
        self.with_inner(|inner| inner.on_command_line(&line, note))
            .unwrap_or_else(plugins_lost)
    }

    fn on_http_request(&mut self, request: &HttpRequest, note: &mut QueryNote) -> Verdict {
        let request = to_http_request(request);
        self.with_inner(|inner| inner.on_http_request(&request, note))
            .unwrap_or_else(plugins_lost)
    }

    fn on_file_operation(&mut self, operation: &FileOp, note: &mut QueryNote) -> Verdict {
        let operation = to_file_operation(operation);
        self.with_inner(|inner| inner.on_file_operation(&operation, note))
            .unwrap_or_else(plugins_lost)
    }

    fn watch_response(&mut self, request: &HttpRequest) -> OutputWatch {
        let request = to_http_request(request);
        // Lost plugins: watched, so that what follows is withheld.
        self.with_inner(|inner| inner.watch_response(&request))
            .unwrap_or(OutputWatch(vec![usize::MAX]))
    }

    fn on_kube_object(&mut self, watch: &OutputWatch, request_id: u64, object: &str) -> ObjectEdit {
        self.with_inner(|inner| inner.on_kube_object(watch, request_id, object))
            .unwrap_or_else(|| {
                ObjectEdit::Withheld("the gateway lost this session's plugins".into())
            })
    }

    fn watch_ssh_output(&mut self, request: &SshRequest) -> OutputWatch {
        let request = to_ssh_request(request);
        // Lost plugins: watched, so that what follows is withheld.
        self.with_inner(|inner| inner.watch_ssh_output(&request))
            .unwrap_or(OutputWatch(vec![usize::MAX]))
    }

    fn on_ssh_output(
        &mut self,
        watch: &OutputWatch,
        stream: SshStream,
        text: &str,
    ) -> Option<String> {
        let stream = match stream {
            SshStream::Stdout => OutputStream::Stdout,
            SshStream::Stderr => OutputStream::Stderr,
        };
        self.with_inner(|inner| inner.on_ssh_output(watch, stream, text))
            .unwrap_or_else(|| {
                Some(
                    "[Portcullis: output withheld: the gateway lost this session's plugins]\r\n"
                        .into(),
                )
            })
    }

    fn on_function_call(&mut self) -> Verdict {
        // Plugins judge SQL; a call by function OID would bypass them.
        Verdict::Deny {
            reason: "the FunctionCall protocol message is not allowed on this target because its plugins cannot inspect it; call the function in SQL instead".into(),
        }
    }

    fn may_record(&self) -> bool {
        true
    }

    fn wants_rows(&self) -> bool {
        self.wants_rows
    }

    fn stable_pass_plans(&self) -> bool {
        self.stable_pass_plans
    }

    fn on_row_description(
        &mut self,
        columns: &[ResultColumn],
        lineage: Option<&[crate::protocols::postgres::sql::lineage::Lineage]>,
    ) -> ResultPlan {
        self.binary_opaque = columns
            .iter()
            .map(|c| c.format == 1 && !binary_is_text(c.type_oid))
            .collect();
        let cols: Vec<types::Column> = columns
            .iter()
            .map(|c| types::Column {
                name: c.name.clone(),
                source: c.source.clone(),
                type_oid: c.type_oid,
                binary: c.format == 1,
            })
            .collect();
        let lineage = lineage.map(|l| Arc::new(l.to_vec()));
        self.with_inner(move |inner| inner.on_row_description(&cols, lineage.as_ref()))
            .unwrap_or_else(|| ResultPlan::Deny {
                reason:
                    "the gateway lost this session's plugins, so the result was withheld; reconnect"
                        .into(),
            })
    }

    fn on_data_rows(&mut self, rows: &[Row<'_>]) -> Vec<RowEdit> {
        match self.with_inner(|inner| inner.on_data_rows(rows)) {
            Some(mut edits) => {
                // Replacement bytes are not a valid binary value of a
                // non-text type: such a value becomes NULL instead.
                for e in &mut edits {
                    if self.binary_opaque.get(e.column).copied().unwrap_or(false) {
                        e.edit = ValueEdit::Null;
                    }
                }
                edits
            }
            // Nothing may leak when the plugins are gone.
            None => rows
                .iter()
                .enumerate()
                .flat_map(|(row, values)| {
                    (0..values.len()).map(move |column| RowEdit {
                        row,
                        column,
                        edit: ValueEdit::Null,
                    })
                })
                .collect(),
        }
    }

    fn on_session_end(&mut self, reason: &EndReason) {
        let text = reason.to_string();
        self.with_inner(move |inner| inner.on_session_end(&text));
    }
}
