//! PostgreSQL, the gateway's first protocol: everything that moves bytes
//! between a PostgreSQL client and an upstream server, and what reads them.
//!
//! - [`codec`] turns bytes into typed messages and back (no I/O);
//! - [`sql`] summarizes statements with PostgreSQL's own grammar: actions
//!   on tables, the effects of code they run, column lineage;
//! - [`session`] drives one client connection: TLS, start-up, token check,
//!   authorization, upstream login, then hands over to `pump`;
//! - `upstream` logs in to the upstream with the gateway's own credential;
//! - `pump` relays the session in both directions and raises policy events
//!   (a client side and a server side, each owning its state, over one
//!   shared scan of their read buffers);
//! - `cancel` maps client cancel keys to upstream ones;
//! - `catalog` resolves result columns to `schema.table.column`, and
//!   `responses` pairs the server's answers with the client's messages, for
//!   policies that look at rows;
//! - `ledger` turns statements and the server's answers into audit events;
//! - [`budget`] caps the memory all sessions hold for incomplete messages;
//! - `approval` holds a statement for approval (notice, wait, cancel);
//! - `held` tracks prepared statements held for approval, so that each run
//!   of one (protocol `Execute` or SQL `EXECUTE`) waits for its own;
//! - [`code_catalog`] reads the target's routines, triggers, rules and
//!   views, so a statement is judged with the effects of the code it runs;
//! - `app_name` names the person upstream in `application_name` and gives
//!   the client back the name it set;
//! - [`refusal`] names why a start-up is refused and words its `FATAL`;
//! - [`read_only`] is the host's check for read-only delegated sessions;
//! - [`role_lock`] keeps sessions on the upstream role their groups map to;
//! - `framed` and `stream` are the small I/O helpers they share.
//!
//! It takes admission, identity, the audit log and approvals from
//! [`crate::gateway`] and raises events at [`crate::policy`]; none of the
//! shared rooms names it (the plugin chain reads its `sql` summaries, the
//! shape today's plugin contract has).

mod app_name;
mod approval;
pub mod budget;
pub mod cancel;
pub mod catalog;
pub mod code_catalog;
pub mod codec;
mod copy_in;
mod framed;
mod held;
mod ledger;
mod marked_names;
mod pump;
pub mod read_only;
pub mod refusal;
mod responses;
mod result_lineage;
pub mod role_lock;
pub mod session;
pub mod sql;
mod stream;
pub mod upstream;

pub use session::{GatewayContext, ListenerContext, TargetContext};
pub use stream::Stream;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Codec(#[from] crate::protocols::postgres::codec::CodecError),
    /// The client closed the connection during start-up.
    #[error("client closed the connection")]
    ClientGone,
    /// The gateway is shutting down and the grace period is over.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The session was refused; the client has been told why.
    #[error("refused: {0}")]
    Refused(String),
    /// A token of the session's delegation chain was revoked.
    #[error("{0}")]
    Revoked(String),
    /// The client's message did not fit the gateway's buffer budget.
    #[error("{0}")]
    Budget(#[from] budget::BudgetError),
    /// A session pinned to an upstream role left it (the server reported a
    /// superuser or another session authorization).
    #[error("{0}")]
    RoleLeft(String),
    /// The server reported `standard_conforming_strings` off: it reads
    /// string literals differently from the gateway.
    #[error("the server now reads backslashes in string literals as escapes (standard_conforming_strings is off), which the gateway's checks do not")]
    StandardStringsOff,
    /// The session's client encoding changed to one the gateway does not
    /// read (or, on a `SQL_ASCII` database, away from UTF-8).
    #[error("the session's client_encoding changed to {0}, which the gateway does not read here: it cannot tell how the server reads the statements that follow")]
    EncodingChanged(String),
    /// More prepared statements or portals than the relay tracks.
    #[error(transparent)]
    TooManyNames(#[from] result_lineage::TooManyNames),
}
