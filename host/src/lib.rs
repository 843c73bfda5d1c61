//! Portcullis: an identity-aware gateway for PostgreSQL.
//!
//! A client connects with its usual driver and an OIDC access token as the
//! password. The gateway terminates TLS, validates the token, logs in to the
//! upstream database with a credential only it holds, and relays the session,
//! raising typed events at a policy seam where guardrails (WebAssembly plugins,
//! in a later step) decide.
//!
//! The crate is laid out in rooms with one-way arrows between them:
//!
//! ```text
//!  cli / main ─▶ server ─▶ relay ─▶ codec        (bytes ↔ messages, no I/O)
//!                  │         ├────▶ identity     (tokens → Identity)
//!                  │         └────▶ policy       (the seam: hooks + verdicts)
//!                  └─▶ config, tls, logging
//!  demo ─▶ server, config        (embedded issuer, cluster, certificate)
//! ```
//!
//! - [`codec`]: one file per PostgreSQL message; borrowed, panic-free parsing.
//! - [`relay`]: one session from accept to close; the streaming two-way pump.
//! - [`identity`]: JWT validation against OIDC issuers and their JWKS.
//! - [`policy`]: the [`policy::Policy`] / [`policy::SessionPolicy`] traits with
//!   pass-through defaults, in the style of pingora's phases.
//! - [`config`]: the TOML file, validated offline with errors that name the key.
//! - [`server`]: listeners, connection limits, the shared context.
//! - [`demo`]: `portcullis demo` — a development issuer, a self-signed
//!   certificate and a throwaway PostgreSQL cluster, reused by the tests.

pub mod codec;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod http_client;
pub mod identity;
pub mod logging;
pub mod plugins;
pub mod policy;
pub mod relay;
pub mod server;
pub mod sql;
pub mod tls;
