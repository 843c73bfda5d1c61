//! The policy seam: the typed events the relay raises and the verdicts it
//! obeys, in the style of pingora's `ProxyHttp` phases — every hook has a
//! default that allows and passes through, so a policy overrides only what it
//! cares about.
//!
//! A [`Policy`] is shared by all sessions; it opens one [`SessionPolicy`] per
//! session (where the WASM runtime will keep its per-session plugin
//! instances). The relay never decodes rows unless
//! [`SessionPolicy::wants_rows`] says so.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::identity::Identity;
use crate::protocols::postgres::sql::QuerySummary;

/// What is known about a session when it starts.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Gateway-unique session id.
    pub session_id: u64,
    /// The authenticated identity.
    pub identity: Identity,
    /// Target name (the client's `dbname`).
    pub target: String,
    /// The target's protocol, as configured (`postgres`).
    pub protocol: &'static str,
    /// Client's address.
    pub client_addr: SocketAddr,
    /// Client's `application_name`, if any.
    pub application_name: Option<String>,
}

/// An HTTP request before it is forwarded (a Kubernetes API request on a
/// Kubernetes target).
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Its number in the session (objects of its answer name it).
    pub id: u64,
    /// The method (`GET`, ...).
    pub method: String,
    /// The path upstream (without the target's prefix), percent-decoded.
    pub path: String,
    /// The query as sent, without `?`.
    pub query: Option<String>,
    /// The headers the gateway forwards.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body of a create, update or patch, when the gateway holds it.
    pub body: Option<bytes::Bytes>,
    /// The Kubernetes reading of the request.
    pub kube: Option<crate::protocols::kubernetes::request::RequestInfo>,
}

/// What the plugins did to one object of a watched response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEdit {
    /// Send it as it is.
    Unchanged,
    /// Send this JSON instead.
    Replaced(String),
    /// Do not send it (why).
    Withheld(String),
}

/// A statement the client wants to run.
#[derive(Debug, Clone, Copy)]
pub enum QueryEvent<'a> {
    /// Simple protocol `Query` (may hold several statements).
    Simple {
        /// SQL text.
        sql: &'a str,
    },
    /// Extended protocol `Parse`.
    Parse {
        /// Prepared statement name ("" = unnamed).
        statement: &'a str,
        /// SQL text.
        sql: &'a str,
    },
}

impl QueryEvent<'_> {
    /// The SQL text of the event.
    pub fn sql(&self) -> &str {
        match self {
            QueryEvent::Simple { sql } | QueryEvent::Parse { sql, .. } => sql,
        }
    }
}

/// A terminal an SSH client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPty {
    /// `TERM`, e.g. `xterm-256color`.
    pub term: String,
    /// Columns.
    pub columns: u32,
    /// Rows.
    pub rows: u32,
}

/// A request on an SSH session channel, as policies judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshRequest {
    /// One command line (`ssh host 'cmd'`), as the client sent it.
    Exec(String),
    /// An interactive shell, on the terminal asked for before it, if any.
    Shell(Option<SshPty>),
    /// A subsystem by name (`sftp`).
    Subsystem(String),
    /// An environment variable for what runs next.
    Env {
        /// Its name.
        name: String,
        /// Its value.
        value: String,
    },
    /// A local forward (`ssh -L`, `ssh -W`): the host dials this endpoint
    /// for the client.
    DirectTcpip {
        /// The host name or address, as the client sent it.
        host: String,
        /// The port.
        port: u16,
    },
}

impl SshRequest {
    /// The request in one line, as records and approvers see it:
    /// `exec: <command>`, `shell`, `subsystem: <name>`, `env: NAME=value`,
    /// `direct-tcpip: host:port`.
    pub fn text(&self) -> String {
        match self {
            SshRequest::Exec(command) => format!("exec: {command}"),
            SshRequest::Shell(_) => "shell".into(),
            SshRequest::Subsystem(name) => format!("subsystem: {name}"),
            SshRequest::Env { name, value } => format!("env: {name}={value}"),
            SshRequest::DirectTcpip { host, port } => format!("direct-tcpip: {host}:{port}"),
        }
    }
}

/// Which of a session's plugins watch one SSH command's output (by their
/// place in the chain; what the places mean is the policy's own). Empty:
/// nobody watches, and output passes untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputWatch(pub Vec<usize>);

impl OutputWatch {
    /// Whether any plugin watches.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Which of an SSH command's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A decision about a session or statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it; the reason reaches the client.
    Deny {
        /// Why, in words a person can act on.
        reason: String,
    },
    /// Hold it for a human approver.
    RequireApproval {
        /// Why approval is needed.
        reason: String,
    },
}

/// What a policy tells the audit trail about a statement, beside its
/// verdict. The relay passes a fresh note to every [`SessionPolicy::on_query`].
#[derive(Debug, Clone, Default)]
pub struct QueryNote {
    /// The plugin whose verdict decided: the one that denied, or those that
    /// asked for approval (comma-separated).
    pub decided_by: Option<String>,
    /// The rule the deciding plugin named.
    pub rule: Option<String>,
    /// Set when the statement is to be recorded with its outcome.
    pub record: Option<Recording>,
    /// How the approval a `RequireApproval` verdict asks for is handled
    /// (`None`: the defaults).
    pub approval: Option<ApprovalPolicy>,
    /// The approval request the statement waited for or ran under (set by
    /// the relay).
    pub approval_id: Option<String>,
    /// The host's summary of the SQL (with the effects of the code it
    /// runs), when the relay or the policy made one.
    pub summary: Option<Arc<QuerySummary>>,
}

/// How a requested approval is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Hold the statement until decided (else: refuse it now with the
    /// request id; it may run again once approved).
    pub wait: bool,
    /// Distinct approvers needed.
    pub min_approvals: u32,
    /// How long the request stays open, in seconds.
    pub timeout_secs: u32,
    /// Runs an approval allows (retry mode).
    pub grant_uses: u32,
    /// Minutes an approval allows them for (retry mode).
    pub grant_minutes: u32,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            wait: true,
            min_approvals: 1,
            timeout_secs: 300,
            grant_uses: 1,
            grant_minutes: 10,
        }
    }
}

/// How much of a statement the recording keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recording {
    /// Rows of the result to keep, as the client receives them.
    pub sample_rows: u32,
}

impl Verdict {
    /// How strict the verdict is: allow < require approval < deny.
    pub fn strictness(&self) -> u8 {
        match self {
            Verdict::Allow => 0,
            Verdict::RequireApproval { .. } => 1,
            Verdict::Deny { .. } => 2,
        }
    }

    /// How logs, metrics and audit records name it: `allow`, `deny`,
    /// `require-approval`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::RequireApproval { .. } => "require-approval",
        }
    }

    /// The reason given, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Allow => None,
            Verdict::Deny { reason } | Verdict::RequireApproval { reason } => Some(reason),
        }
    }
}

/// One column of a result as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    /// Label the client sees.
    pub name: String,
    /// Source table OID (0 for expressions).
    pub table_oid: u32,
    /// Attribute number in the source table (0 for expressions).
    pub attribute_number: i16,
    /// Type OID.
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
    /// `schema.table.column` of the source column, when the host could
    /// resolve the table OID; `None` for expressions.
    pub source: Option<String>,
}

/// What the relay does with one result, decided from its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultPlan {
    /// Send the rows as they come; no policy looks at them.
    Pass,
    /// Show the rows to [`SessionPolicy::on_data_rows`] and apply its edits.
    Watch,
    /// Withhold the result: its rows never reach the client, which gets an
    /// error with this reason instead.
    Deny {
        /// Why, in words a person can act on.
        reason: String,
    },
}

/// What to do with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueEdit {
    /// Replace it with these bytes (text or binary, matching the column's
    /// format). Often a slice of one buffer shared by a batch's edits.
    Replace(bytes::Bytes),
    /// Make it NULL.
    Null,
}

/// An edit of one value in a batch of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowEdit {
    /// Row index within the batch.
    pub row: usize,
    /// Column index.
    pub column: usize,
    /// The edit.
    pub edit: ValueEdit,
}

/// One row of a batch: values borrowed from the frames, `None` = NULL.
pub type Row<'a> = Vec<Option<&'a [u8]>>;

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent `Terminate` or closed its connection.
    ClientClosed,
    /// The upstream server closed the connection.
    UpstreamClosed,
    /// A protocol or I/O error ended it.
    Error(String),
    /// A token of its delegation chain was revoked.
    Revoked(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::ClientClosed => f.write_str("client closed the session"),
            EndReason::UpstreamClosed => {
                f.write_str("the target (database or host) closed the session")
            }
            EndReason::Error(e) => write!(f, "error: {e}"),
            EndReason::Revoked(why) => write!(f, "revoked: {why}"),
        }
    }
}

/// A session refused at start; the client gets `FATAL 42501` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRefused {
    /// Why, in words a person can act on.
    pub reason: String,
}

/// Creates per-session policy state; shared by every session of a target.
pub trait Policy: Send + Sync + 'static {
    /// Session-start hook: refuse the session, or return its per-session state.
    fn start_session(&self, info: &SessionInfo) -> Result<Box<dyn SessionPolicy>, SessionRefused> {
        let _ = info;
        Ok(Box::new(PassThrough))
    }
}

/// Per-session hooks, called by the relay in protocol order.
pub trait SessionPolicy: Send {
    /// Whether [`Self::on_query`] judges the statement's summary; the relay
    /// then makes it first (with the effects of the code it runs) and hands
    /// it over in [`QueryNote::summary`].
    fn reads_summary(&self) -> bool {
        false
    }

    /// A statement is about to be sent upstream. `note` collects what the
    /// audit trail should know beside the verdict (who decided, by which
    /// rule, whether to record it); its `summary`, when set on entry, is the
    /// relay's summary of the statement to judge.
    fn on_query(&mut self, event: QueryEvent<'_>, note: &mut QueryNote) -> Verdict {
        let _ = (event, note);
        Verdict::Allow
    }

    /// An SSH channel request (exec, shell, subsystem, env) is about to
    /// be sent to the host; `note` collects who decided and on what terms
    /// an approval is asked, as for [`Self::on_query`].
    fn on_ssh_request(&mut self, request: &SshRequest, note: &mut QueryNote) -> Verdict {
        let _ = (request, note);
        Verdict::Allow
    }

    /// SSH: an SFTP operation is about to be sent to the host; `note`
    /// collects who decided, as for [`Self::on_query`].
    fn on_file_operation(
        &mut self,
        operation: &crate::protocols::ssh::sftp::FileOp,
        note: &mut QueryNote,
    ) -> Verdict {
        let _ = (operation, note);
        Verdict::Allow
    }

    /// SSH: a line typed in an interactive shell, before its Enter is
    /// forwarded (advisory: see [`crate::protocols::ssh::typed`]); `note`
    /// collects who decided and whether to record it.
    fn on_command_line(
        &mut self,
        line: &crate::protocols::ssh::typed::TypedLine,
        note: &mut QueryNote,
    ) -> Verdict {
        let _ = (line, note);
        Verdict::Allow
    }

    /// HTTP (Kubernetes targets): a request before it is forwarded; `note`
    /// collects who decided and on what terms an approval is asked, as for
    /// [`Self::on_query`].
    fn on_http_request(&mut self, request: &HttpRequest, note: &mut QueryNote) -> Verdict {
        let _ = (request, note);
        Verdict::Allow
    }

    /// HTTP: which plugins watch the objects of the response to `request`
    /// (one the plugins let through); [`Self::on_kube_object`] then shows
    /// them each object.
    fn watch_response(&mut self, request: &HttpRequest) -> OutputWatch {
        let _ = request;
        OutputWatch::default()
    }

    /// HTTP: one object of the response to request `request_id` that
    /// `watch` covers (JSON text), before
    /// the client gets it: unchanged, replaced, or withheld (a plugin that
    /// watched it failed closed).
    fn on_kube_object(&mut self, watch: &OutputWatch, request_id: u64, object: &str) -> ObjectEdit {
        let _ = (watch, request_id, object);
        ObjectEdit::Unchanged
    }

    /// SSH: which plugins watch the output of `request` (an exec or shell
    /// the plugins let run); [`Self::on_ssh_output`] then shows them its
    /// output, for as long as it runs (each channel its own watch).
    fn watch_ssh_output(&mut self, request: &SshRequest) -> OutputWatch {
        let _ = request;
        OutputWatch::default()
    }

    /// SSH: output of a command `watch` covers, before the client gets it
    /// (whole lines, see `ssh-output` in the contract); what to send
    /// instead, if anything.
    fn on_ssh_output(
        &mut self,
        watch: &OutputWatch,
        stream: SshStream,
        text: &str,
    ) -> Option<String> {
        let _ = (watch, stream, text);
        None
    }

    /// The client sent a `FunctionCall` message (a function called by OID,
    /// outside any SQL text, so no statement summary can describe it).
    fn on_function_call(&mut self) -> Verdict {
        Verdict::Allow
    }

    /// Whether this policy may ask for statements to be recorded
    /// ([`QueryNote::record`]); if not, the relay does not track statements
    /// until their answers (refusals are recorded either way).
    fn may_record(&self) -> bool {
        false
    }

    /// Whether result descriptions must be decoded and shown to
    /// [`Self::on_row_description`] at all.
    fn wants_rows(&self) -> bool {
        false
    }

    /// Whether a [`ResultPlan::Pass`] answer may be reused for a later
    /// result whose `RowDescription` is byte for byte the same and whose
    /// lineage is the same (the answer depends only on those and has no
    /// side effects).
    fn stable_pass_plans(&self) -> bool {
        false
    }

    /// A result's columns are known (only when [`Self::wants_rows`]), with
    /// where each comes from (`lineage`, when the relay could match the
    /// result to its statement); decide whether its rows must be shown to
    /// [`Self::on_data_rows`], or whether the result is withheld.
    fn on_row_description(
        &mut self,
        columns: &[ResultColumn],
        lineage: Option<&[crate::protocols::postgres::sql::lineage::Lineage]>,
    ) -> ResultPlan {
        let _ = (columns, lineage);
        ResultPlan::Pass
    }

    /// A batch of rows (those that arrived together) is about to reach the
    /// client. Returns the edits to apply, in order.
    fn on_data_rows(&mut self, rows: &[Row<'_>]) -> Vec<RowEdit> {
        let _ = rows;
        Vec::new()
    }

    /// The session ended.
    fn on_session_end(&mut self, reason: &EndReason) {
        let _ = reason;
    }
}

/// The policy of a gateway without plugins: allow everything, touch nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Policy for PassThrough {}
impl SessionPolicy for PassThrough {}
