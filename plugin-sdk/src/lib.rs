//! The Portcullis plugin SDK: write a policy plugin as a plain Rust type.
//!
//! A plugin implements [`Plugin`] — every hook has a default that allows and
//! passes through — and exports itself with [`export_plugin!`]. Built with
//! `cargo build --target wasm32-wasip2`, the crate becomes a WebAssembly
//! component implementing the `portcullis:policy` world (see `wit/`).
//!
//! ```ignore
//! use portcullis_plugin_sdk::*;
//!
//! #[derive(Default)]
//! struct NoUnboundedDelete;
//!
//! impl Plugin for NoUnboundedDelete {
//!     const NAME: &'static str = "no-unbounded-delete";
//!     const VERSION: &'static str = "0.1.0";
//!     fn on_query(&mut self, q: &PgQuery) -> Verdict {
//!         match q.statements.iter().find(|s| s.kind == "delete" && !s.has_where) {
//!             Some(_) => Verdict::Deny("DELETE without WHERE".into()),
//!             None => Verdict::Allow,
//!         }
//!     }
//! }
//! export_plugin!(NoUnboundedDelete);
//! ```
//!
//! One instance of the component serves one session, so a plugin keeps
//! per-session state in `self`. `configure` runs once per instance, before
//! any hook.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "guard-plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_guard_plugin",
        default_bindings_module: "portcullis_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub mod audience;
pub mod kube_rules;
pub mod names;
pub mod rows;
pub mod shell;
pub mod ssh_rules;
pub mod testing;

pub use audience::Audience;
pub use bindings::portcullis::policy::types::{
    Column, Event, Identity, Metadata, PgQuery, ResultPlan, Session, Statement, TableRef, Verdict,
};
pub use rows::{Batch, ColumnView, Edits};

/// Which output stream of an SSH command (contract 0.2.7).
pub use bindings::exports::portcullis::policy::ssh_output::OutputStream;

/// What an SSH client asks of a host (contract 0.2.6; local forwards
/// are asked about since 0.2.7), and the terminal a shell runs on.
pub use bindings::portcullis::policy::ssh_types::{
    CommandLine, Endpoint, FileOperation, Pty, SshRequest,
};

/// An HTTP request and its Kubernetes reading (contract 0.2.8).
pub use bindings::portcullis::policy::http_types::{Header, HttpRequest, KubeExec, KubeRequest};

/// Log severity for [`log`].
pub use bindings::portcullis::policy::host::Level;

/// Writes a line to the gateway's log (stderr when not running in the gateway).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::portcullis::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

#[cfg(not(target_arch = "wasm32"))]
std::thread_local! {
    /// Outside the gateway (native tests): what the plugin noted, for
    /// [`testing::take_notes`].
    static NOTES: std::cell::RefCell<testing::Notes> = Default::default();
}

/// Asks the gateway to record the statement being judged (call it from
/// [`Plugin::on_query`]) in the audit store with its outcome, keeping the
/// first `sample_rows` rows of its result as the client receives them
/// (after masking). Refused statements are recorded anyway.
pub fn record_statement(sample_rows: u32) {
    #[cfg(target_arch = "wasm32")]
    bindings::portcullis::policy::host::record_statement(
        bindings::portcullis::policy::host::Recording { sample_rows },
    );
    #[cfg(not(target_arch = "wasm32"))]
    NOTES.with(|n| {
        let mut n = n.borrow_mut();
        n.record = Some(n.record.unwrap_or(0).max(sample_rows));
    });
}

/// Names the rule behind the verdict being returned, for the audit trail
/// and approval requests. [`deny_by`] and [`approval_by`] call it for you.
pub fn note_rule(rule: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::portcullis::policy::host::note_rule(rule);
    #[cfg(not(target_arch = "wasm32"))]
    NOTES.with(|n| n.borrow_mut().rule = Some(rule.to_string()));
}

/// Declares that the verdict being returned (and what was noted with it:
/// rule, recording, approval policy) depends only on the statement's parsed
/// summary and the session — not on the constants in its text, the
/// prepared statement's name, the time or earlier statements. The gateway
/// then gives the same answer to later statements of this session with the
/// same shape (the same text up to its constants) without calling
/// [`Plugin::on_query`], which makes a repeated statement nearly free.
/// Call it from [`Plugin::on_query`]; do not call it when the verdict looks
/// at `text` or `prepared_name`, the clock, or counts statements.
pub fn reuse_verdict() {
    #[cfg(target_arch = "wasm32")]
    bindings::portcullis::policy::host::reuse_verdict();
    #[cfg(not(target_arch = "wasm32"))]
    NOTES.with(|n| n.borrow_mut().reuse_verdict = true);
}

/// What one statement will do (actions on tables, role switches, server
/// files, code it creates), and one action on one table (contract 0.2.3).
pub use bindings::portcullis::policy::host::{Effects, TableAction};

/// Where a statement's values come from and go to (contract 0.2.3).
pub use bindings::portcullis::policy::host::{ColumnLineage, Lineage, WriteFlow};

#[cfg(not(target_arch = "wasm32"))]
std::thread_local! {
    /// Outside the gateway (native tests): the effects
    /// [`statement_effects`] returns, set by [`testing::set_effects`].
    static EFFECTS: std::cell::RefCell<Vec<Effects>> = Default::default();
    /// Outside the gateway (native tests): what [`statement_lineage`]
    /// returns, set by [`testing::set_lineage`].
    static LINEAGE: std::cell::RefCell<Vec<Lineage>> = Default::default();
    /// Outside the gateway (native tests): what [`result_lineage`]
    /// returns, set by [`testing::set_result_lineage`].
    static RESULT_LINEAGE: std::cell::RefCell<Option<Vec<ColumnLineage>>> = Default::default();
    /// Outside the gateway (native tests): what [`statement_writes`]
    /// returns, set by [`testing::set_writes`].
    static WRITES: std::cell::RefCell<Vec<Option<String>>> = Default::default();
}

/// Whether each statement of the query being judged may change data,
/// schema or server state, in the order of its `statements` (contract
/// 0.2.5): `Some(why)` when it may — it writes a table (itself or through
/// the code it runs), calls a function that writes or changes server
/// state (`nextval`, `set_config`, ...), is DDL, `COPY ... FROM`, `CALL`,
/// `DO`, `PREPARE`/`EXECUTE`, or would make the session writable — `None`
/// when it cannot. It is the host's own judgement, the one its read-only
/// sessions are held to. Call it from [`Plugin::on_query`]; see
/// [`may_write`] for the whole query.
pub fn statement_writes() -> Vec<Option<String>> {
    #[cfg(target_arch = "wasm32")]
    return bindings::portcullis::policy::host::statement_writes();
    #[cfg(not(target_arch = "wasm32"))]
    WRITES.with(|w| w.borrow().clone())
}

/// Whether `query` may change data, schema or server state: it did not
/// parse, or [`statement_writes`] says a statement may (a statement it has
/// no answer for counts as writing). Call it from [`Plugin::on_query`].
pub fn may_write(query: &PgQuery) -> bool {
    if query.parse_error.is_some() {
        return true;
    }
    let writes = statement_writes();
    writes.len() < query.statements.len() || writes.iter().any(Option::is_some)
}

/// Where each column of the result being described comes from, in order
/// (contract 0.2.4): the host matches the result to the statement that
/// produced it. `None` when it has no lineage for this result — rows of a
/// cursor or of a statement prepared in SQL, a statement that did not
/// parse — and outside [`Plugin::result_columns`]. When the gateway's
/// analysis and the server disagree on the number of columns, every column
/// is `unknown` and derived from all of the statement's sources.
pub fn result_lineage() -> Option<Vec<ColumnLineage>> {
    #[cfg(target_arch = "wasm32")]
    return bindings::portcullis::policy::host::result_lineage();
    #[cfg(not(target_arch = "wasm32"))]
    RESULT_LINEAGE.with(|l| l.borrow().clone())
}

/// Where the values of each statement of the query being judged come from
/// (each result column's source columns, through any expression, view or
/// SQL function, and whether PostgreSQL reports it as a plain column) and
/// where they go (tables, files, the client of a `COPY`), in the order of
/// its `statements`. Only for plugins that want rows; empty when the
/// gateway could not tell — judge that as unknown. Call it from
/// [`Plugin::on_query`].
pub fn statement_lineage() -> Vec<Lineage> {
    #[cfg(target_arch = "wasm32")]
    return bindings::portcullis::policy::host::statement_lineage();
    #[cfg(not(target_arch = "wasm32"))]
    LINEAGE.with(|l| l.borrow().clone())
}

/// What each statement of the query being judged will do, in the order of
/// its `statements`, wherever it is spelled: every insert, update, delete
/// and truncate with its table and whether a condition bounds it (MERGE
/// branches, `ON CONFLICT DO UPDATE`, data-modifying CTEs, `EXPLAIN
/// ANALYZE`, `PREPARE`), role switches (`SET ROLE`, `set_config('role',
/// ...)`), server files (`COPY ... FROM 'file'`, `pg_read_file`), and code
/// created (functions, triggers, rules). Call it from [`Plugin::on_query`];
/// elsewhere it is empty. Judge by these rather than by `kind` when a rule
/// is about what happens to a table.
pub fn statement_effects() -> Vec<Effects> {
    #[cfg(target_arch = "wasm32")]
    return bindings::portcullis::policy::host::statement_effects();
    #[cfg(not(target_arch = "wasm32"))]
    EFFECTS.with(|e| e.borrow().clone())
}

/// The effects of a statement that does nothing the host can name (what to
/// judge a statement by when [`statement_effects`] has no entry for it).
pub fn no_effects() -> Effects {
    Effects {
        actions: Vec::new(),
        switches_role: false,
        server_files: false,
        creates_code: false,
        unknown_effects: Vec::new(),
    }
}

/// How the gateway handles an approval a plugin asks for.
pub use bindings::portcullis::policy::host::ApprovalPolicy;

/// Sets how the gateway handles the approval the verdict being returned
/// asks for (call it from [`Plugin::on_query`] before returning
/// [`Verdict::RequireApproval`]).
pub fn set_approval_policy(policy: ApprovalPolicy) {
    #[cfg(target_arch = "wasm32")]
    bindings::portcullis::policy::host::set_approval_policy(policy);
    #[cfg(not(target_arch = "wasm32"))]
    NOTES.with(|n| n.borrow_mut().approval = Some(policy));
}

/// A deny verdict that names its rule.
pub fn deny_by(rule: &str, reason: impl Into<String>) -> Verdict {
    note_rule(rule);
    Verdict::Deny(reason.into())
}

/// A require-approval verdict that names its rule.
pub fn approval_by(rule: &str, reason: impl Into<String>) -> Verdict {
    note_rule(rule);
    Verdict::RequireApproval(reason.into())
}

/// A policy plugin. Implement the hooks you need; the rest allow.
pub trait Plugin: Default + 'static {
    /// Plugin name (shown in logs and refusals).
    const NAME: &'static str;
    /// Plugin version.
    const VERSION: &'static str;

    /// JSON Schema of the configuration, published to the host.
    fn config_schema() -> String {
        r#"{"type":"object"}"#.into()
    }

    /// Whether the plugin wants result columns and rows at all.
    fn wants_rows() -> bool {
        false
    }

    /// Statement kinds the plugin judges; `on_query` is called only for
    /// queries with a statement of one of these kinds. Empty (the default):
    /// every query, unparseable ones included.
    fn query_kinds() -> Vec<String> {
        Vec::new()
    }

    /// Whether `result_columns` depends only on the columns and the session
    /// and has no side effects, so the host may reuse a `Pass` answer for
    /// later results with the same description (default: no).
    fn stable_result_plans() -> bool {
        false
    }

    /// Applies the configuration (JSON text); an error refuses the plugin.
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// A session starts.
    fn session_start(&mut self, session: &Session) -> Verdict {
        let _ = session;
        Verdict::Allow
    }

    /// A PostgreSQL statement is about to run.
    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        let _ = query;
        Verdict::Allow
    }

    /// A result's columns: pass it, watch some of its columns
    /// (`ResultPlan::Watch(indices)`), or withhold it.
    fn result_columns(&mut self, columns: &[Column]) -> ResultPlan {
        let _ = columns;
        ResultPlan::Pass
    }

    /// A batch of rows of the current result (the watched columns); record
    /// new values in `edits`.
    fn result_rows(&mut self, batch: &Batch, edits: &mut Edits) {
        let _ = (batch, edits);
    }

    /// An SSH channel request (contract 0.2.6): `exec` (the whole command
    /// line), `shell`, `subsystem` or `env`, before it reaches the host.
    /// `Deny` ends the channel with the text on the client's stderr and
    /// exit status 255; `RequireApproval` holds an exec, shell or subsystem
    /// (and refuses an env, which cannot wait). The session's `target` is
    /// the SSH target.
    fn on_ssh_request(&mut self, request: &SshRequest) -> Verdict {
        let _ = request;
        Verdict::Allow
    }

    /// A line typed in an SSH shell, before its Enter reaches the host
    /// (contract 0.2.6; called by gateways from 0.2.7 on). On a terminal
    /// the gateway reconstructs the line from keystrokes and echo, and
    /// `exact` is `false` when editing keys, history or completion made it
    /// unsure: a verdict here is advisory. Without a terminal the shell
    /// reads a script from its input, judged command by command before
    /// any of it reaches the shell (`exact`: what the gateway read is what
    /// was sent; still advisory, as the docs say).
    /// `Deny` drops the line (the client is told); `RequireApproval`
    /// refuses it (a typed line cannot wait).
    fn on_command_line(&mut self, line: &CommandLine) -> Verdict {
        let _ = line;
        Verdict::Allow
    }

    /// An SFTP operation (contract 0.2.6; called by gateways speaking
    /// 0.2.7), before the host sees it. `Deny` answers the client
    /// "permission denied" with the text; `RequireApproval` refuses too
    /// (an SFTP request cannot wait).
    fn on_file_operation(&mut self, operation: &FileOperation) -> Verdict {
        let _ = operation;
        Verdict::Allow
    }

    /// An HTTP request before it is forwarded (contract 0.2.8): on a
    /// Kubernetes target, `request.kube` says what it asks of the API
    /// server. `Deny` answers it with a `Status` (403) carrying the text;
    /// `RequireApproval` refuses it with the approval request's id (the
    /// same request runs once approved, within the grant's window).
    fn on_http_request(&mut self, request: &HttpRequest) -> Verdict {
        let _ = request;
        Verdict::Allow
    }

    /// Whether this plugin watches the objects of the response to an HTTP
    /// request the plugins let through (contract 0.2.8); `false` (the
    /// default) costs nothing. For a watched request the gateway asks the
    /// API server for plain JSON and withholds what it cannot read.
    fn watch_response(&mut self, request: &HttpRequest) -> bool {
        let _ = request;
        false
    }

    /// One object of a watched response, as JSON text — the response
    /// itself, each item of a list, the object of each watch event
    /// (contract 0.2.8) — answering the request whose `id` is
    /// `request_id` (a session's requests may be in flight together).
    /// `Some(json)` (a JSON object) is sent instead; `None` sends it
    /// unchanged.
    fn on_kube_object(&mut self, request_id: u64, object: &str) -> Option<String> {
        let _ = (request_id, object);
        None
    }

    /// Whether this plugin watches the output of an SSH `exec` or `shell`
    /// the plugins let run (contract 0.2.7); `false` (the default) costs
    /// nothing per byte.
    fn watch_ssh_output(&mut self, request: &SshRequest) -> bool {
        let _ = request;
        false
    }

    /// Output of a watched SSH command before the client (and the
    /// session's recording) gets it (contract 0.2.7): whole lines as text.
    /// `Some(text)` is sent instead; `None` sends it unchanged.
    fn on_ssh_output(&mut self, stream: OutputStream, text: &str) -> Option<String> {
        let _ = (stream, text);
        None
    }

    /// The session ended.
    fn session_end(&mut self, reason: &str) {
        let _ = reason;
    }
}

/// Parses a plugin's JSON configuration into a serde type, with an error
/// message that names the problem.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))
}

/// Exports a [`Plugin`] type as the component's implementation.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            use $crate::bindings::exports::portcullis::policy::plugin::Guest;
            use $crate::Plugin as _;

            std::thread_local! {
                static STATE: std::cell::RefCell<$plugin> =
                    std::cell::RefCell::new(<$plugin as Default>::default());
            }

            struct Exported;

            impl Guest for Exported {
                fn describe() -> $crate::Metadata {
                    $crate::Metadata {
                        name: <$plugin as $crate::Plugin>::NAME.to_string(),
                        version: <$plugin as $crate::Plugin>::VERSION.to_string(),
                        config_schema: <$plugin as $crate::Plugin>::config_schema(),
                        wants_rows: <$plugin as $crate::Plugin>::wants_rows(),
                        query_kinds: <$plugin as $crate::Plugin>::query_kinds(),
                        stable_result_plans: <$plugin as $crate::Plugin>::stable_result_plans(),
                    }
                }
                fn configure(config: String) -> Result<(), String> {
                    STATE.with(|s| s.borrow_mut().configure(&config))
                }
                fn session_start(session: $crate::Session) -> $crate::Verdict {
                    STATE.with(|s| s.borrow_mut().session_start(&session))
                }
                fn on_event(event: $crate::Event) -> $crate::Verdict {
                    match event {
                        $crate::Event::PgQuery(q) => STATE.with(|s| s.borrow_mut().on_query(&q)),
                    }
                }
                fn result_columns(columns: Vec<$crate::Column>) -> $crate::ResultPlan {
                    STATE.with(|s| s.borrow_mut().result_columns(&columns))
                }
                fn result_rows(
                    batch: $crate::bindings::portcullis::policy::types::RowBatch,
                ) -> Vec<$crate::bindings::portcullis::policy::types::ColumnEdits> {
                    let batch = $crate::Batch::new(batch);
                    let mut edits = $crate::Edits::default();
                    STATE.with(|s| s.borrow_mut().result_rows(&batch, &mut edits));
                    edits.into_inner()
                }
                fn session_end(reason: String) {
                    STATE.with(|s| s.borrow_mut().session_end(&reason))
                }
            }

            impl $crate::bindings::exports::portcullis::policy::ssh_plugin::Guest for Exported {
                fn on_ssh_request(request: $crate::SshRequest) -> $crate::Verdict {
                    STATE.with(|s| s.borrow_mut().on_ssh_request(&request))
                }
                fn on_command_line(line: $crate::CommandLine) -> $crate::Verdict {
                    STATE.with(|s| s.borrow_mut().on_command_line(&line))
                }
                fn on_file_operation(operation: $crate::FileOperation) -> $crate::Verdict {
                    STATE.with(|s| s.borrow_mut().on_file_operation(&operation))
                }
            }

            impl $crate::bindings::exports::portcullis::policy::http_plugin::Guest for Exported {
                fn on_http_request(request: $crate::HttpRequest) -> $crate::Verdict {
                    STATE.with(|s| s.borrow_mut().on_http_request(&request))
                }
            }

            impl $crate::bindings::exports::portcullis::policy::http_response::Guest for Exported {
                fn watch_response(request: $crate::HttpRequest) -> bool {
                    STATE.with(|s| s.borrow_mut().watch_response(&request))
                }
                fn on_kube_object(request_id: u64, object: String) -> Option<String> {
                    STATE.with(|s| s.borrow_mut().on_kube_object(request_id, &object))
                }
            }

            impl $crate::bindings::exports::portcullis::policy::ssh_output::Guest for Exported {
                fn watch_output(request: $crate::SshRequest) -> bool {
                    STATE.with(|s| s.borrow_mut().watch_ssh_output(&request))
                }
                fn on_ssh_output(stream: $crate::OutputStream, text: String) -> Option<String> {
                    STATE.with(|s| s.borrow_mut().on_ssh_output(stream, &text))
                }
            }

            // Exported only in the component: the export names (with `:`) cannot be
            // linked into a native shared library, where the type is only tested.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_guard_plugin!(Exported with_types_in $crate::bindings);
        };
    };
}
