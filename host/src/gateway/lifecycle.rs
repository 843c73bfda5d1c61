//! The life of an admitted session, whatever its protocol: it counts in the
//! metrics while it lives, learns when it must stop (the gateway shuts
//! down, or a delegated token of its chain is revoked), and ends with its policy told, the metrics settled and its end
//! record written. A protocol calls [`SessionLife::begin`] once admission
//! has opened the session and [`SessionLife::end`] when its relay returns;
//! what only the protocol can do (PostgreSQL: cancel what a revoked session
//! still runs upstream) happens in between.

use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::Core;
use crate::delegation::revocations::LiveSession;
use crate::policy::{EndReason, SessionInfo, SessionPolicy};
use crate::store::{now_micros, Record, SessionEnd};

/// Bytes a session moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Read from the client.
    pub from_client: u64,
    /// Read from the server for the client.
    pub to_client: u64,
}

/// Why a live session must stop before either side ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The gateway's shutdown grace period is over.
    ShuttingDown,
    /// A token of the session's delegation chain was revoked (the reason).
    Revoked(String),
}

/// A session between admission and its end.
pub struct SessionLife {
    session_id: u64,
    /// Keeps the session in the revocation watch while it lives.
    _revocation: Option<LiveSession>,
    /// Becomes `true` when live sessions must close.
    closing: watch::Receiver<bool>,
    /// Gets a reason when a token of the session's chain is revoked.
    revoked: Option<watch::Receiver<Option<String>>>,
}

impl SessionLife {
    /// Counts the session as active and, for a delegated token, watches its
    /// chain (see [`SessionLife::stopped`]).
    pub fn begin(core: &Core, info: &SessionInfo) -> Self {
        let (revocation, revoked) = match &info.identity.delegation {
            Some(d) => {
                let (live, rx) = core.revocations.register(info.session_id, d);
                (Some(live), Some(rx))
            }
            None => (None, None),
        };
        let metrics = crate::metrics::global();
        metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
        metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
        Self {
            session_id: info.session_id,
            _revocation: revocation,
            closing: core.closing.clone(),
            revoked,
        }
    }

    /// Resolves when the session must stop: the gateway's shutdown grace is
    /// over, or a token of its delegation chain was revoked. A protocol's
    /// relay races it against its own end and tells its client why.
    pub fn stopped(&self) -> impl std::future::Future<Output = Stop> + Send + 'static {
        let mut closing = self.closing.clone();
        let mut revoked = self.revoked.clone();
        async move {
            let revocation = async {
                if let Some(rx) = revoked.as_mut() {
                    if let Ok(v) = rx.wait_for(Option::is_some).await {
                        return v.clone().unwrap_or_default();
                    }
                }
                std::future::pending().await
            };
            tokio::select! {
                _ = closing.wait_for(|c| *c) => Stop::ShuttingDown,
                why = revocation => Stop::Revoked(why),
            }
        }
    }

    /// Ends the session: tells its policy why, settles the metrics and
    /// queues its end record.
    pub async fn end(
        self,
        core: &Core,
        policy: &mut dyn SessionPolicy,
        reason: &EndReason,
        traffic: Traffic,
    ) {
        policy.on_session_end(reason);
        let metrics = crate::metrics::global();
        metrics.sessions_active.fetch_sub(1, Ordering::Relaxed);
        metrics
            .bytes_from_clients
            .fetch_add(traffic.from_client, Ordering::Relaxed);
        metrics
            .bytes_to_clients
            .fetch_add(traffic.to_client, Ordering::Relaxed);
        core.audit
            .record(Record::SessionEnd(SessionEnd {
                id: self.session_id,
                ended_at: now_micros(),
                reason: reason.to_string(),
                bytes_from_client: traffic.from_client,
                bytes_to_client: traffic.to_client,
            }))
            .await;
    }
}
