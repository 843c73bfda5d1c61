//! Revoked delegated tokens: revoking a token revokes every token minted
//! from it (each token carries its ancestors), refuses new connections and
//! exchanges with any of them, and closes live sessions opened with them
//! within moments. Revocations are stored, so they survive restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::identity::Delegation;
use crate::store::{now_micros, Store, StoreError};

/// A live session opened with a delegated token.
struct Live {
    lineage: Vec<String>,
    close: watch::Sender<Option<String>>,
}

/// The gateway's revoked tokens and the sessions they may close.
pub struct Revocations {
    store: Arc<dyn Store>,
    revoked: RwLock<HashSet<String>>,
    live: Mutex<HashMap<u64, Live>>,
}

/// Unregisters a session when dropped.
pub struct LiveSession {
    revocations: Arc<Revocations>,
    id: u64,
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.revocations.live().remove(&self.id);
    }
}

impl Revocations {
    /// The revocations recorded in `store`.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let revoked = store.revoked_tokens()?.into_iter().collect();
        Ok(Self {
            store,
            revoked: RwLock::new(revoked),
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revoked token of `d`'s lineage, if any.
    pub fn revoked_in(&self, d: &Delegation) -> Option<String> {
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        d.lineage()
            .find(|j| revoked.contains(*j))
            .map(str::to_string)
    }

    /// Registers session `id` opened with `d`; the receiver gets the reason
    /// when a token of its lineage is revoked.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        d: &Delegation,
    ) -> (LiveSession, watch::Receiver<Option<String>>) {
        let (close, rx) = watch::channel(None);
        self.live().insert(
            id,
            Live {
                lineage: d.lineage().map(str::to_string).collect(),
                close,
            },
        );
        // A revocation that came between the session's admission and this
        // registration found no live session to close: close it now. (A
        // revocation marks the token revoked before it looks for live
        // sessions, so one of the two always sees the other.)
        if let Some(jti) = self.revoked_in(d) {
            if let Some(live) = self.live().get(&id) {
                let _ = live.close.send(Some(format!(
                    "token {jti} of this session's delegation chain was revoked"
                )));
            }
        }
        (
            LiveSession {
                revocations: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Revokes `jti` (durably) and closes the live sessions it covers;
    /// returns their number.
    pub async fn revoke(&self, jti: &str, by: &str) -> Result<usize, StoreError> {
        let (store, key, who) = (self.store.clone(), jti.to_string(), by.to_string());
        tokio::task::spawn_blocking(move || store.revoke_token(&key, now_micros(), &who))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_string());
        let reason = format!("token {jti} of this session's delegation chain was revoked");
        let mut closed = 0;
        for live in self.live().values() {
            if live.lineage.iter().any(|j| j == jti) {
                let _ = live.close.send(Some(reason.clone()));
                closed += 1;
            }
        }
        tracing::info!(jti, by, sessions = closed, "delegated token revoked");
        Ok(closed)
    }
}
