//! What every session of the gateway shares, whatever its protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::approvals::Approvals;
use crate::audit::AuditLog;
use crate::config::Target;
use crate::delegation::revocations::Revocations;
use crate::delegation::GatewayIssuer;
use crate::identity::Authenticator;

/// The gateway's protocol-neutral state: identity, targets, audit,
/// approvals, delegation, and the connection count.
pub struct Core {
    /// Token validation.
    pub authenticator: Authenticator,
    /// Every target's configuration, by name.
    pub targets: HashMap<String, Target>,
    /// The audit trail: session ids, sessions and events.
    pub audit: Arc<AuditLog>,
    /// Approval requests for held actions.
    pub approvals: Arc<Approvals>,
    /// The gateway's issuer of delegated tokens, when `[delegation]` is set.
    pub delegation: Option<Arc<GatewayIssuer>>,
    /// Revoked delegated tokens and the live sessions they close.
    pub revocations: Arc<Revocations>,
    /// Connections being served (start-up or relaying).
    pub active: AtomicUsize,
    /// Becomes `true` when live sessions must close (end of shutdown grace).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// The addresses the gateway listens on (every listener and the admin
    /// API), once all are bound: a forward or proxied request that would
    /// come back to the gateway itself is refused by them.
    pub listening: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
}

/// The policy a target's new sessions start with. A plugin reload
/// replaces it; sessions in flight keep the one they started with.
pub struct PolicySlot(std::sync::RwLock<Arc<dyn crate::policy::Policy>>);

impl PolicySlot {
    /// A slot holding `policy`.
    pub fn new(policy: Arc<dyn crate::policy::Policy>) -> Self {
        Self(std::sync::RwLock::new(policy))
    }

    /// The policy new sessions start with.
    pub fn current(&self) -> Arc<dyn crate::policy::Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it for sessions that start from now on.
    pub fn replace(&self, policy: Arc<dyn crate::policy::Policy>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }
}

/// The next connection on `listener`. A failed accept (out of file
/// descriptors and similar) is logged and retried after a short pause, so
/// a listener keeps serving through it.
pub async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection as active while it lives.
pub struct ActiveGuard<'a>(&'a Core);

impl<'a> ActiveGuard<'a> {
    /// Counts one more connection until the guard is dropped.
    pub fn new(core: &'a Core) -> Self {
        core.active.fetch_add(1, Ordering::SeqCst);
        Self(core)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}
