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
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::AdminSettings;
use crate::relay::GatewayContext;
use crate::server::PluginManager;

/// What every admin request may use.
pub struct AdminState {
    gw: Arc<GatewayContext>,
    plugins: Arc<PluginManager>,
    settings: AdminSettings,
    static_token: Option<String>,
}

/// Binds the admin listener and serves it until the handle is aborted.
pub async fn start(
    settings: &AdminSettings,
    gw: Arc<GatewayContext>,
    plugins: Arc<PluginManager>,
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
        settings: settings.clone(),
        static_token,
    });
    let handle = tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(routes::handle(req, &state).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    });
    Ok((local, handle))
}
