//! One sandboxed plugin instance: an empty WASI context (no files, sockets,
//! environment or stdio), a memory cap, and a deadline on every call.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{
    http_types, portcullis::policy::host, ssh_types, types, HttpGuest, OutputStream, PolicyPlugin,
    PolicyPluginIndices, ResponseGuest, SshGuest, SshOutputGuest,
};
use super::engine::Running;
use crate::protocols::postgres::sql::lineage::Lineage;
use crate::protocols::postgres::sql::{QuerySummary, StatementSummary};

/// Deadline for instantiation (the component's start-up code), in ticks.
const START_DEADLINE_TICKS: u64 = 1000;

/// Longest log line a plugin may write.
const MAX_LOG_LINE: usize = 4096;

/// What the host keeps per instance.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: Arc<str>,
    /// What the current call noted (`record-statement`, `note-rule`,
    /// `set-approval-policy`, `reuse-verdict`).
    notes: CallNotes,
    /// The summary of the event `on-event` is judging, for
    /// `statement-effects`, `statement-lineage` and `statement-writes`;
    /// `None` outside `on-event`.
    judging: Option<Arc<QuerySummary>>,
    /// The lineage of the result `result-columns` is describing, for
    /// `result-lineage`; `None` outside `result-columns` or when unknown.
    describing: Option<Arc<Vec<Lineage>>>,
}

/// What a plugin told the host during one call, beside its return value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallNotes {
    /// The rule it named (`note-rule`).
    pub rule: Option<String>,
    /// Rows of the result to sample, if it asked to record the statement.
    pub record: Option<u32>,
    /// How a requested approval is handled (`set-approval-policy`).
    pub approval: Option<crate::policy::ApprovalPolicy>,
    /// The verdict holds for every statement of the same shape in this
    /// session (`reuse-verdict`).
    pub reuse: bool,
}

/// Longest rule name kept.
const MAX_RULE: usize = 200;

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn record_statement(&mut self, options: host::Recording) {
        let rows = self.notes.record.unwrap_or(0).max(options.sample_rows);
        self.notes.record = Some(rows);
    }

    fn set_approval_policy(&mut self, p: host::ApprovalPolicy) {
        self.notes.approval = Some(crate::policy::ApprovalPolicy {
            wait: p.wait,
            min_approvals: p.min_approvals.clamp(1, 100),
            timeout_secs: p.timeout_secs.clamp(1, 7 * 24 * 3600),
            grant_uses: p.grant_uses.clamp(1, 1_000_000),
            grant_minutes: p.grant_minutes.clamp(1, 7 * 24 * 60),
        });
    }

    fn statement_lineage(&mut self) -> Vec<host::Lineage> {
        self.judging
            .as_ref()
            .and_then(|s| s.lineage.as_ref())
            .map(|l| l.iter().map(to_lineage).collect())
            .unwrap_or_default()
    }

    fn result_lineage(&mut self) -> Option<Vec<host::ColumnLineage>> {
        self.describing
            .as_ref()
            .map(|cols| cols.iter().map(to_column_lineage).collect())
    }

    fn statement_effects(&mut self) -> Vec<host::Effects> {
        self.judging
            .as_ref()
            .map(|s| s.statements.iter().map(to_effects).collect())
            .unwrap_or_default()
    }

    fn statement_writes(&mut self) -> Vec<Option<String>> {
        self.judging
            .as_ref()
            .map(|s| {
                s.statements
                    .iter()
                    .map(|st| crate::protocols::postgres::read_only::writes(st).map(|w| w.why()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn reuse_verdict(&mut self) {
        self.notes.reuse = true;
    }

    fn note_rule(&mut self, rule: String) {
        let mut rule = rule;
        if rule.len() > MAX_RULE {
            let mut end = MAX_RULE;
            while !rule.is_char_boundary(end) {
                end -= 1;
            }
            rule.truncate(end);
        }
        self.notes.rule = Some(rule);
    }
}

impl types::Host for StoreState {}

/// One value's lineage as the contract spells it.
fn to_column_lineage(c: &Lineage) -> host::ColumnLineage {
    host::ColumnLineage {
        derived_from: c.sources.iter().map(ToString::to_string).collect(),
        unknown: c.unknown,
        origin: c.origin.as_ref().map(ToString::to_string),
    }
}

/// A statement's lineage as the contract spells them.
fn to_lineage(l: &crate::protocols::postgres::sql::lineage::StatementLineage) -> host::Lineage {
    let names = |set: &std::collections::BTreeSet<
        crate::protocols::postgres::sql::lineage::SourceColumn,
    >| {
        set.iter()
            .map(|c| format!("{}.{}.{}", c.schema, c.table, c.column))
            .collect::<Vec<_>>()
    };
    host::Lineage {
        output: l
            .output
            .as_ref()
            .map(|cols| cols.iter().map(to_column_lineage).collect()),
        writes: l
            .writes
            .iter()
            .map(|w| host::WriteFlow {
                target: w.target.clone(),
                column: w.column.clone(),
                derived_from: names(&w.sources),
                unknown: w.unknown,
            })
            .collect(),
    }
}

/// A statement's effects as the contract spells them.
fn to_effects(st: &StatementSummary) -> host::Effects {
    host::Effects {
        actions: st
            .actions
            .iter()
            .map(|a| host::TableAction {
                table: types::TableRef {
                    schema: a.table.schema.clone(),
                    name: a.table.name.clone(),
                },
                action: a.action.as_str().to_string(),
                bounded: a.bounded,
                via: a.via.clone(),
            })
            .collect(),
        switches_role: st.switches_role,
        server_files: st.server_files,
        creates_code: st.creates_code,
        unknown_effects: st.unknown_effects.clone(),
    }
}

/// The linker every plugin is instantiated with: WASI (with nothing granted)
/// and the `host` interface.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    PolicyPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// How a compiled plugin is instantiated: the component linked against the
/// contract, where its `plugin` exports are, and its `ssh-plugin` exports
/// when it has them.
pub struct Linked {
    /// The component, linked.
    pub pre: wasmtime::component::InstancePre<StoreState>,
    /// Its `plugin` interface.
    pub plugin: PolicyPluginIndices,
    /// Its `ssh-plugin` interface, if it exports one.
    pub ssh: Option<super::bindings::guard::exports::portcullis::policy::ssh_plugin::GuestIndices>,
    /// Its `ssh-output` interface (0.2.7), if it exports one.
    pub output:
        Option<super::bindings::guard::exports::portcullis::policy::ssh_output::GuestIndices>,
    /// Its `http-plugin` interface (0.2.8), if it exports one.
    pub http:
        Option<super::bindings::guard::exports::portcullis::policy::http_plugin::GuestIndices>,
    /// Its `http-response` interface (0.2.8), if it exports one.
    pub response:
        Option<super::bindings::guard::exports::portcullis::policy::http_response::GuestIndices>,
}

impl Linked {
    /// Finds the contract's exports in a linked component; an error when
    /// it does not export `plugin`.
    pub fn new(pre: wasmtime::component::InstancePre<StoreState>) -> wasmtime::Result<Self> {
        let plugin = PolicyPluginIndices::new(&pre)?;
        let ssh =
            super::bindings::guard::exports::portcullis::policy::ssh_plugin::GuestIndices::new(
                &pre,
            )
            .ok();
        let output =
            super::bindings::guard::exports::portcullis::policy::ssh_output::GuestIndices::new(
                &pre,
            )
            .ok();
        let http =
            super::bindings::guard::exports::portcullis::policy::http_plugin::GuestIndices::new(
                &pre,
            )
            .ok();
        let response =
            super::bindings::guard::exports::portcullis::policy::http_response::GuestIndices::new(
                &pre,
            )
            .ok();
        Ok(Self {
            pre,
            plugin,
            ssh,
            output,
            http,
            response,
        })
    }
}

/// A live instance.
pub struct PluginInstance {
    store: Store<StoreState>,
    plugin: PolicyPlugin,
    ssh: Option<SshGuest>,
    output: Option<SshOutputGuest>,
    http: Option<HttpGuest>,
    response: Option<ResponseGuest>,
    deadline_ticks: u64,
}

impl PluginInstance {
    /// Instantiates from the pre-linked component.
    pub fn new(
        engine: &Engine,
        linked: &Linked,
        name: Arc<str>,
        memory_limit: usize,
        deadline_ticks: u64,
    ) -> wasmtime::Result<Self> {
        let state = StoreState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            plugin: name,
            notes: CallNotes::default(),
            judging: None,
            describing: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Start-up code gets a generous deadline of its own; calls get theirs.
        store.set_epoch_deadline(START_DEADLINE_TICKS.max(deadline_ticks));
        let (plugin, ssh, output, http, response) = {
            let _running = Running::start();
            let instance = linked.pre.instantiate(&mut store)?;
            let plugin = linked.plugin.load(&mut store, &instance)?;
            let ssh = match &linked.ssh {
                Some(indices) => Some(indices.load(&mut store, &instance)?),
                None => None,
            };
            let output = match &linked.output {
                Some(indices) => Some(indices.load(&mut store, &instance)?),
                None => None,
            };
            let http = match &linked.http {
                Some(indices) => Some(indices.load(&mut store, &instance)?),
                None => None,
            };
            let response = match &linked.response {
                Some(indices) => Some(indices.load(&mut store, &instance)?),
                None => None,
            };
            (plugin, ssh, output, http, response)
        };
        Ok(Self {
            store,
            plugin,
            ssh,
            output,
            http,
            response,
            deadline_ticks,
        })
    }

    /// Sets the call's deadline and keeps the epoch ticking until the
    /// returned guard is dropped (after the call).
    fn arm(&mut self) -> Running {
        self.store.set_epoch_deadline(self.deadline_ticks);
        Running::start()
    }

    /// `describe`.
    pub fn describe(&mut self) -> wasmtime::Result<types::Metadata> {
        let _running = self.arm();
        self.plugin
            .portcullis_policy_plugin()
            .call_describe(&mut self.store)
    }

    /// `configure`.
    pub fn configure(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
        let _running = self.arm();
        self.plugin
            .portcullis_policy_plugin()
            .call_configure(&mut self.store, config)
    }

    /// `session-start`.
    pub fn session_start(&mut self, session: &types::Session) -> wasmtime::Result<types::Verdict> {
        let _running = self.arm();
        self.plugin
            .portcullis_policy_plugin()
            .call_session_start(&mut self.store, session)
    }

    /// What the last call noted (rule, recording), taken.
    pub fn take_notes(&mut self) -> CallNotes {
        std::mem::take(&mut self.store.data_mut().notes)
    }

    /// `on-event`, judging an event summarized as `summary`.
    pub fn on_event(
        &mut self,
        event: &types::Event,
        summary: &Arc<QuerySummary>,
    ) -> wasmtime::Result<types::Verdict> {
        let _running = self.arm();
        let state = self.store.data_mut();
        state.notes = CallNotes::default();
        state.judging = Some(summary.clone());
        let verdict = self
            .plugin
            .portcullis_policy_plugin()
            .call_on_event(&mut self.store, event);
        self.store.data_mut().judging = None;
        verdict
    }

    /// `result-columns`, describing a result whose lineage is `lineage`.
    pub fn result_columns(
        &mut self,
        columns: &[types::Column],
        lineage: Option<&Arc<Vec<Lineage>>>,
    ) -> wasmtime::Result<types::ResultPlan> {
        let _running = self.arm();
        self.store.data_mut().describing = lineage.cloned();
        let plan = self
            .plugin
            .portcullis_policy_plugin()
            .call_result_columns(&mut self.store, columns);
        self.store.data_mut().describing = None;
        plan
    }

    /// `result-rows`.
    pub fn result_rows(
        &mut self,
        batch: &types::RowBatch,
    ) -> wasmtime::Result<Vec<types::ColumnEdits>> {
        let _running = self.arm();
        self.plugin
            .portcullis_policy_plugin()
            .call_result_rows(&mut self.store, batch)
    }

    /// An `ssh-plugin` hook, armed with the call deadline and fresh notes;
    /// `None` when the plugin has no SSH hooks.
    fn ssh_call<T>(
        &mut self,
        call: impl FnOnce(&SshGuest, &mut Store<StoreState>) -> wasmtime::Result<T>,
    ) -> Option<wasmtime::Result<T>> {
        self.ssh.as_ref()?;
        let _running = self.arm();
        self.store.data_mut().notes = CallNotes::default();
        let ssh = self.ssh.as_ref()?;
        Some(call(ssh, &mut self.store))
    }

    /// `on-http-request`; `None` when the plugin has no HTTP hooks.
    pub fn on_http_request(
        &mut self,
        request: &http_types::HttpRequest,
    ) -> Option<wasmtime::Result<types::Verdict>> {
        self.http.as_ref()?;
        let _running = self.arm();
        self.store.data_mut().notes = CallNotes::default();
        let http = self.http.as_ref()?;
        Some(http.call_on_http_request(&mut self.store, request))
    }

    /// `watch-response`; `None` when the plugin does not export
    /// `http-response`.
    pub fn watch_response(
        &mut self,
        request: &http_types::HttpRequest,
    ) -> Option<wasmtime::Result<bool>> {
        self.response.as_ref()?;
        let _running = self.arm();
        let response = self.response.as_ref()?;
        Some(response.call_watch_response(&mut self.store, request))
    }

    /// `on-kube-object`; `None` when the plugin does not export
    /// `http-response`.
    pub fn on_kube_object(
        &mut self,
        request_id: u64,
        object: &str,
    ) -> Option<wasmtime::Result<Option<String>>> {
        self.response.as_ref()?;
        let _running = self.arm();
        let response = self.response.as_ref()?;
        Some(response.call_on_kube_object(&mut self.store, request_id, object))
    }

    /// `on-ssh-request`; `None` when the plugin has no SSH hooks.
    pub fn on_ssh_request(
        &mut self,
        request: &ssh_types::SshRequest,
    ) -> Option<wasmtime::Result<types::Verdict>> {
        self.ssh_call(|ssh, store| ssh.call_on_ssh_request(store, request))
    }

    /// `on-command-line`; `None` when the plugin has no SSH hooks.
    pub fn on_command_line(
        &mut self,
        line: &ssh_types::CommandLine,
    ) -> Option<wasmtime::Result<types::Verdict>> {
        self.ssh_call(|ssh, store| ssh.call_on_command_line(store, line))
    }

    /// `on-file-operation`; `None` when the plugin has no SSH hooks.
    pub fn on_file_operation(
        &mut self,
        operation: &ssh_types::FileOperation,
    ) -> Option<wasmtime::Result<types::Verdict>> {
        self.ssh_call(|ssh, store| ssh.call_on_file_operation(store, operation))
    }

    /// `watch-output`; `None` when the plugin does not watch output.
    pub fn watch_output(
        &mut self,
        request: &ssh_types::SshRequest,
    ) -> Option<wasmtime::Result<bool>> {
        self.output.as_ref()?;
        let _running = self.arm();
        let output = self.output.as_ref()?;
        Some(output.call_watch_output(&mut self.store, request))
    }

    /// `on-ssh-output`; `None` when the plugin does not watch output.
    pub fn on_ssh_output(
        &mut self,
        stream: OutputStream,
        text: &str,
    ) -> Option<wasmtime::Result<Option<String>>> {
        self.output.as_ref()?;
        let _running = self.arm();
        let output = self.output.as_ref()?;
        Some(output.call_on_ssh_output(&mut self.store, stream, text))
    }

    /// `session-end`.
    pub fn session_end(&mut self, reason: &str) -> wasmtime::Result<()> {
        let _running = self.arm();
        self.plugin
            .portcullis_policy_plugin()
            .call_session_end(&mut self.store, reason)
    }
}

/// Describes a failed call in words for logs and clients.
pub fn describe_failure(e: &wasmtime::Error, timeout_ms: u64) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!("timed out after {timeout_ms} ms"),
        Some(wasmtime::Trap::OutOfFuel) => "ran out of fuel".into(),
        Some(t) => format!("trapped ({t})"),
        None => {
            let text = format!("{e:#}");
            if text.contains("memory") && text.contains("limit") {
                "ran out of memory".into()
            } else {
                text
            }
        }
    }
}
