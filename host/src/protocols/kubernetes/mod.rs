//! Kubernetes API targets: `kubectl` and client libraries reach an API
//! server through the gateway with a kubeconfig whose server is
//! `https://gateway:port/TARGET`. The gateway checks the bearer token as
//! it checks any other protocol's, reads every request the way the API
//! server's own authorizer does, records it, and calls the API server with
//! its own token while impersonating the person — so the cluster's RBAC
//! and audit log see who it really is, and a client can never choose whom
//! the gateway impersonates.
//!
//! - [`server`]: one client connection (TLS, HTTP/1.1 or HTTP/2), its
//!   sessions and each request's way through admission to the API server;
//! - [`request`]: a request's attributes (verb, group, version, resource,
//!   subresource, namespace, name) from its method and URL, as the API
//!   server derives them, and an exec's command and container;
//! - [`upstream`]: the pooled client of an API server, the gateway's token
//!   and the impersonation headers;
//! - [`record`]: requests as audit events;
//! - [`judge`]: the plugins' verdict on a request, approvals in retry mode;
//! - [`objects`]: responses plugins watch, object by object (documents and
//!   watch streams);
//! - [`status`]: errors as `Status` objects, the way kubectl reads them;
//! - [`websocket`]: the WebSocket handshake and frames, read whole;
//! - [`stream`]: exec, attach and port-forward relayed over WebSocket,
//!   exec and attach recorded as asciicast, refusals told in the stream.

pub mod judge;
pub mod objects;
pub mod record;
pub mod request;
pub mod server;
pub mod status;
pub mod stream;
pub mod upstream;
pub mod websocket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Target;
use crate::gateway::Core;
use crate::policy::Policy;

/// A Kubernetes target ready to serve.
pub struct KubeTarget {
    /// Its configuration.
    pub cfg: Target,
    /// The policy its sessions start with (replaced by a plugin reload).
    pub policy: crate::gateway::core::PolicySlot,
    /// Its API server.
    pub upstream: Arc<upstream::Upstream>,
}

impl KubeTarget {
    /// The target's API server client.
    pub fn load(
        cfg: &Target,
        policy: Arc<dyn Policy>,
        http: crate::http_client::HttpClient,
    ) -> Result<Self, upstream::UpstreamError> {
        Ok(Self {
            cfg: cfg.clone(),
            policy: crate::gateway::core::PolicySlot::new(policy),
            upstream: upstream::Upstream::new(cfg, http)?,
        })
    }
}

/// What every connection of a Kubernetes listener shares.
pub struct KubeContext {
    /// The protocol-neutral gateway.
    pub core: Arc<Core>,
    /// Kubernetes targets by name (the first segment of the path).
    pub targets: Arc<HashMap<String, KubeTarget>>,
    /// The listener's TLS (`None`: plain HTTP on a loopback development
    /// listener).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time a client has for TLS and each request's head.
    pub startup: Duration,
}

/// Accepts Kubernetes clients on `listener` until the task is dropped.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<KubeContext>, limit: Arc<Semaphore>) {
    loop {
        let (tcp, peer) = crate::gateway::core::accept(&listener).await;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many clients; Kubernetes connection refused");
            drop(tcp);
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            server::serve(tcp, peer, ctx).await;
            drop(permit);
        });
    }
}
