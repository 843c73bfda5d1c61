//! Query cancellation through the gateway.
//!
//! Clients are told the upstream's real process id (so `pg_backend_pid()` and
//! `NotificationResponse` agree with `BackendKeyData`) but a secret the gateway
//! made up. A `CancelRequest` carrying that pair is looked up here and sent
//! upstream with the upstream's own secret; unknown pairs are ignored, as
//! PostgreSQL ignores them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::protocols::postgres::codec::backend_key_data::BackendKeyData;
use crate::protocols::postgres::codec::startup::{self, CancelRequest};

/// How to reach the upstream of one session to cancel its query.
#[derive(Clone)]
pub struct CancelTarget {
    /// Upstream host.
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Upstream TLS config, if the target uses TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The upstream's real key.
    pub upstream_key: BackendKeyData,
    /// Bumped on every cancel request, so a statement the gateway itself
    /// holds (waiting for approval) is cancelled too.
    pub held: Arc<tokio::sync::watch::Sender<u64>>,
}

/// All cancellable sessions of the gateway.
#[derive(Default, Clone)]
pub struct CancelRegistry {
    map: Arc<Mutex<HashMap<BackendKeyData, CancelTarget>>>,
}

/// Removes a session from the registry when dropped.
pub struct Registration {
    registry: CancelRegistry,
    key: BackendKeyData,
}

impl Registration {
    /// The key the client was given.
    pub fn client_key(&self) -> BackendKeyData {
        self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.registry.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

impl CancelRegistry {
    /// Registers a session; the returned key (same pid, fresh secret) goes to the client.
    pub fn register(&self, target: CancelTarget) -> Registration {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = loop {
            let candidate = BackendKeyData {
                process_id: target.upstream_key.process_id,
                secret_key: rand::random::<i32>(),
            };
            if !map.contains_key(&candidate) {
                break candidate;
            }
        };
        map.insert(key, target);
        Registration {
            registry: self.clone(),
            key,
        }
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forwards a client's cancel request upstream, if the key is known.
    pub async fn cancel(&self, req: CancelRequest) {
        let key = BackendKeyData {
            process_id: req.process_id,
            secret_key: req.secret_key,
        };
        let target = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&key).cloned()
        };
        let Some(t) = target else {
            tracing::debug!(
                pid = req.process_id,
                "cancel request with unknown key ignored"
            );
            return;
        };
        t.held.send_modify(|n| *n = n.wrapping_add(1));
        let result = async {
            let mut s = super::upstream::open(&t.host, t.port, t.tls.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = BytesMut::new();
            startup::encode_cancel(
                &mut buf,
                CancelRequest {
                    process_id: t.upstream_key.process_id,
                    secret_key: t.upstream_key.secret_key,
                },
            );
            s.write_all(&buf).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            let _ = s.shutdown().await;
            Ok::<_, String>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(pid = req.process_id, "forwarded cancel request upstream"),
            Err(e) => {
                tracing::warn!(pid = req.process_id, error = %e, "could not forward cancel request")
            }
        }
    }
}
