//! The protocols the gateway speaks, one room each. A protocol owns its wire
//! format, its start-up and its session loop, and takes everything else —
//! identity, admission, plugin chains, approvals, the audit store — from
//! [`crate::gateway`]; nothing here is named by the shared rooms except
//! through the policy seam's statement summaries (`postgres::sql`), which
//! the plugin contract is shaped by today.

pub mod kubernetes;
pub mod postgres;
pub mod ssh;
