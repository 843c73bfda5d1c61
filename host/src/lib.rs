//! Portcullis: an identity-aware gateway for PostgreSQL.
//!
//! A client connects with its usual driver and an OIDC access token as the
//! password. The gateway terminates TLS, validates the token, logs in to the
//! upstream database with a credential only it holds, and relays the session,
//! raising typed events at a policy seam where guardrails — sandboxed
//! WebAssembly plugins — decide.
//!
//! The crate is laid out in rooms with one-way arrows between them:
//!
//! ```text
//!  cli / main ─▶ server ─▶ protocols::postgres ─▶ gateway ─▶ identity, audit ─▶ store,
//!                  │       protocols::ssh ───────────┤        approvals, delegation,
//!                  │            │                    │        credentials, policy, config
//!                  │            ├─▶ codec, sql       (its own: bytes ↔ messages; summaries)
//!                  │            └─▶ policy            (the seam: hooks + verdicts)
//!                  ├─▶ plugins ──▶ policy, protocols::postgres::sql (WASM components)
//!                  ├─▶ admin ─▶ gateway (HTTP API: health, metrics, sessions, approvals, token exchange)
//!                  └─▶ config, tls, logging, watch, metrics, signing
//!  delegation ─▶ gateway (authorize), identity
//!  demo ─▶ server, config        (embedded issuer, cluster, certificate)
//! ```
//!
//! - [`gateway`]: what every protocol shares, no protocol in it: the core
//!   state (identity, target configurations, audit, approvals, delegation)
//!   the admin API and every protocol use, and admission (token, revocation,
//!   user, target authorization, session id, policy session, session record)
//!   with refusals each protocol words its own way, the session lifecycle
//!   (metrics, the shutdown and revocation watch, the end record) and
//!   approval holds.
//! - [`protocols`]: one room per protocol. [`protocols::ssh`] admits SSH
//!   clients with their token, logs in to hosts with the gateway's own key
//!   (host key pinned), relays channels and records commands.
//!   [`protocols::postgres`] is one
//!   session from accept to close: start-up and TLS, the upstream login, the
//!   streaming two-way pump, the audit ledger, statements held for
//!   approval, read-only sessions, sessions pinned to an upstream role, the
//!   target's catalog (column sources, code, relations) read on the
//!   gateway's own connection; its `codec` (one file per PostgreSQL
//!   message; borrowed, panic-free parsing) and its `sql` (statement
//!   summaries from PostgreSQL's own grammar, pg_query: actions on tables
//!   in every spelling, the effects of the code a statement runs, column
//!   lineage).
//! - [`identity`]: JWT validation against OIDC issuers and their JWKS, and
//!   the actor chain and scope of delegated tokens.
//! - [`policy`]: the [`policy::Policy`] / [`policy::SessionPolicy`] traits with
//!   pass-through defaults, in the style of pingora's phases.
//! - [`plugins`]: wasmtime components implementing `wit/policy.wit`, one
//!   instance per session, chained per target.
//! - [`store`] and [`audit`]: the audit store (SQLite, behind a trait) and
//!   its group-commit writer with batched and strict durability.
//! - [`approvals`]: approval requests, approvers, quorum, grants, webhooks.
//! - [`delegation`]: RFC 8693 token exchange, the gateway's signing key,
//!   revocation.
//! - [`admin`] and [`cli`]: the admin HTTP API (OpenAPI from the code) and
//!   the operator commands over it; [`metrics`]: the Prometheus counters.
//! - [`credentials`]: where each target's upstream password or token comes from.
//! - [`config`]: the TOML file, validated offline with errors that name the key.
//! - [`server`]: listeners, connection limits, the shared context, reloads.
//! - [`watch`]: hot reload when the configuration or a plugin file changes.
//! - [`signing`]: private signing keys with their public JWK.
//! - [`demo`]: `portcullis demo` — a development issuer, a self-signed
//!   certificate and a throwaway PostgreSQL cluster, reused by the tests.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod delegation;
pub mod demo;
pub mod gateway;
pub mod http_client;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod policy;
pub mod protocols;
pub mod server;
pub mod signing;
pub mod store;
pub mod tls;
pub mod watch;

#[cfg(test)]
mod test_dir;
