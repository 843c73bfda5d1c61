//! The admin API: a separate HTTP listener (loopback by default) for
//! operators and the `portcullis` CLI — health and readiness, Prometheus
//! metrics, sessions and their recorded statements, the audit export, and
//! the loaded plugins. Its OpenAPI document is generated from this code
//! ([`openapi::document`]) and checked into `docs/openapi.json`.
//!
//! Every `/v1` endpoint needs a bearer token: an OIDC token of a member of
//! an admin or approver group (validated like the data path's), or the
//! static admin token from `token_file`. Errors are JSON
//! (`{"error": {"status": 403, "message": "..."}}`), never panics.
//!
//! The listener is bounded like the data path: at most `max_connections`
//! connections are served at once (more get a bare `503` and are closed),
//! a client has `header_read_timeout_secs` to send a request's headers and
//! 30 seconds more for the rest of the request, and no route reads more
//! than `max_body_bytes` of a body.
//!
//! - `auth`: who is calling, and what they may do;
//! - `http`: bodies, JSON replies and errors;
//! - `routes`: the endpoints, one function each;
//! - [`openapi`]: the generated document.

mod auth;
mod http;
pub mod openapi;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::AdminSettings;
use crate::gateway::Core;
use crate::server::PluginManager;

/// What every admin request may use.
pub struct AdminState {
    gw: Arc<Core>,
    plugins: Arc<PluginManager>,
    /// The SSH user CA, when an SSH listener has one.
    ssh_login: Option<Arc<crate::protocols::ssh::certs::SshLogin>>,
    settings: AdminSettings,
    static_token: Option<String>,
}

/// Binds the admin listener and serves it until the handle is aborted.
pub async fn start(
    settings: &AdminSettings,
    gw: Arc<Core>,
    plugins: Arc<PluginManager>,
    ssh_login: Option<Arc<crate::protocols::ssh::certs::SshLogin>>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let static_token = match &settings.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| std::io::Error::new(e.kind(), format!("admin token_file {f}: {e}")))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("admin token_file {f}: the token must be at least 16 characters"),
                ));
            }
            Some(t)
        }
        None => None,
    };
    let listener = TcpListener::bind(&settings.address).await?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(address = %local, "the admin API listens beyond loopback; put TLS in front of it");
    }
    tracing::info!(address = %local, "admin API listening");
    let state = Arc::new(AdminState {
        gw,
        plugins,
        ssh_login,
        settings: settings.clone(),
        static_token,
    });
    let handle = tokio::spawn(accept_loop(listener, state));
    Ok((local, handle))
}

/// Accepts admin connections, serving at most `max_connections` at once.
async fn accept_loop(listener: TcpListener, state: Arc<AdminState>) {
    let slots = Arc::new(Semaphore::new(state.settings.max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(tcp, state.clone(), permit));
            }
            Err(_) => {
                tracing::warn!(%peer, "too many admin connections; connection refused");
                refuse(tcp);
            }
        }
    }
}

/// The JSON error of a connection over the cap.
const BUSY: &str = r#"{"error": {"status": 503, "message": "too many admin connections; close an idle one or try again later"}}"#;

/// The whole `503` answer to a connection over the cap.
fn busy_response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BUSY}",
        BUSY.len()
    )
}

/// Answers `503` without waiting (whatever the socket takes at once) and
/// closes: a refusal costs no task and no timer.
fn refuse(tcp: TcpStream) {
    let _ = tcp.try_write(busy_response().as_bytes());
}

/// Longest an admin request may take from its headers to its reply (a
/// streamed reply, such as the audit export, goes on after that).
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves one admin connection; its slot is freed when it ends.
async fn serve_connection(tcp: TcpStream, state: Arc<AdminState>, _slot: OwnedSemaphorePermit) {
    let max_body = state.settings.max_body_bytes;
    let header_timeout = std::time::Duration::from_secs(state.settings.header_read_timeout_secs);
    let service = service_fn(move |req| {
        let state = state.clone();
        async move {
            let reply = match http::limit_body(req, max_body) {
                // Headers have a deadline; so has the rest of a request, or
                // a client trickling a body would hold its slot for ever.
                Ok(req) => match tokio::time::timeout(REQUEST_DEADLINE, routes::handle(req, &state))
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => http::error(
                        hyper::StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request took longer than {} s (a body sent too slowly?); send it again",
                            REQUEST_DEADLINE.as_secs()
                        ),
                    ),
                },
                Err(refused) => refused,
            };
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .await
    {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}
