//! The protocol-neutral gateway: what every protocol's sessions share.
//!
//! - [`core`]: the shared state — token validation, every target's
//!   configuration, the audit log, approvals, delegation and revocations,
//!   the count of connections being served;
//! - [`admission`]: token → revocation check → user match → target
//!   authorization → session id → policy session → session record, with
//!   refusals a protocol turns into its own errors;
//! - [`hold`]: an action held for approval — grant, request, wait, and
//!   why it does not run, for the protocol to word;
//! - [`cast`]: terminal recordings (asciicast v2) of commands — SSH exec
//!   and shell channels, Kubernetes exec and attach streams;
//! - [`lifecycle`]: an admitted session's life — metrics, the shutdown and
//!   revocation watch, and its end (policy told, end record).
//!
//! A protocol (PostgreSQL, SSH, Kubernetes, under [`crate::protocols`]) depends on this room;
//! this room depends on no protocol.

pub mod admission;
pub mod cast;
pub mod core;
pub mod hold;
pub mod lifecycle;

pub use self::core::Core;
