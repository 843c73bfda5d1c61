//! SSH: people and agents reach hosts with the plain OpenSSH client. The
//! gateway admits them with their token (sent as the password; the login
//! name picks the target: `ssh -p 2222 web-1@gateway`) or a certificate it
//! minted for that token (`portcullis ssh login`), logs in to the host
//! with a key only it holds, checks the host's key against a pinned
//! known_hosts file, relays every session channel and records each exec,
//! shell and subsystem in the audit store.
//!
//! - [`server`]: one client connection — admission, the gateway's login,
//!   the session's end;
//! - [`channel`]: one session channel relayed both ways, requests and
//!   replies in order;
//! - [`record`]: commands as audit events;
//! - [`upstream`]: the gateway's own login to a host, host key pinned.
//!
//! - [`judge`]: the target's plugins on exec, shell, subsystem and env
//!   requests, and approval holds;
//! - [`forward`]: local port forwards, where a target allows them;
//! - [`ident`]: the client's version line, as the session's application
//!   name;
//! - [`output`]: output plugins watch, cut into whole lines;
//! - [`sftp`]: SFTP packets read for the file operations plugins judge;
//! - [`typed`]: lines typed in an interactive shell, reconstructed for
//!   the plugins (advisory: an exec's verdict is exact).
//!
//! - [`certs`]: user certificates the gateway mints (`portcullis ssh
//!   login`) and checks at login, and the five-minute certificates it
//!   signs for itself upstream with a CA the host trusts.

pub mod certs;
pub mod channel;
pub mod forward;
pub mod ident;
pub mod judge;
pub mod output;
pub mod record;
pub mod server;
pub mod sftp;
pub mod typed;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{Listener, Target};
use crate::gateway::Core;
use crate::policy::Policy;

/// Why an SSH listener or target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SshSetupError {
    /// A key file could not be read or is not an OpenSSH private key.
    #[error("{what} {path}: {message}")]
    Key {
        /// Which key.
        what: &'static str,
        /// Its file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// An SSH target ready to serve.
pub struct SshTarget {
    /// Its configuration.
    pub cfg: Target,
    /// The policy its sessions start with (replaced by a plugin reload).
    pub policy: crate::gateway::core::PolicySlot,
    /// The gateway's key for the host (its own, or made at start for the
    /// certificates `upstream_ca` signs).
    pub key: Arc<PrivateKey>,
    /// The CA the host trusts, when the gateway logs in with certificates.
    pub upstream_ca: Option<certs::UserCa>,
    /// The known_hosts file pinning the host's key.
    pub known_hosts: PathBuf,
}

impl SshTarget {
    /// Loads the target's key, or its upstream CA (and makes the key the
    /// CA's certificates are for).
    pub fn load(cfg: &Target, policy: Arc<dyn Policy>) -> Result<Self, SshSetupError> {
        let (key, upstream_ca) = match &cfg.upstream_ca_key_file {
            Some(path) => (
                certs::fresh_key(),
                Some(certs::UserCa::from_key(load_key(
                    "the upstream CA key of target",
                    path,
                )?)),
            ),
            None => {
                let path = cfg.private_key_file.clone().unwrap_or_default();
                (load_key("the private key of target", &path)?, None)
            }
        };
        let known_hosts = cfg.known_hosts_file.clone().unwrap_or_default();
        check_known_hosts(&known_hosts)?;
        Ok(Self {
            cfg: cfg.clone(),
            policy: crate::gateway::core::PolicySlot::new(policy),
            key: Arc::new(key),
            upstream_ca,
            known_hosts: PathBuf::from(cfg.known_hosts_file.clone().unwrap_or_default()),
        })
    }

    /// The public key of the target's upstream CA, if it has one.
    pub fn upstream_ca_public(&self) -> Option<&russh::keys::PublicKey> {
        self.upstream_ca.as_ref().map(certs::UserCa::public_key)
    }

    /// The gateway's credential for session `session_id` of `identity`: a
    /// five-minute certificate naming them, when the target has an
    /// upstream CA; its key otherwise.
    pub fn credential(
        &self,
        session_id: u64,
        identity: &crate::identity::Identity,
    ) -> Result<upstream::Credential, certs::CertError> {
        match &self.upstream_ca {
            Some(ca) => {
                let key_id = format!(
                    "portcullis session {session_id} for {}",
                    identity.chain_text()
                );
                let cert = ca.sign_upstream(self.key.public_key(), &self.cfg.user, &key_id)?;
                Ok(upstream::Credential::Certificate(
                    self.key.clone(),
                    Box::new(cert),
                ))
            }
            None => Ok(upstream::Credential::Key(self.key.clone())),
        }
    }
}

/// Refuses a known_hosts file with markers: the library that reads it
/// would take `@revoked` and `@cert-authority` lines for plain host
/// entries (a revoked key listed elsewhere would still be accepted).
fn check_known_hosts(path: &str) -> Result<(), SshSetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| SshSetupError::Key {
        what: "the known_hosts file",
        path: path.to_string(),
        message: e.to_string(),
    })?;
    match text.lines().position(|l| l.trim_start().starts_with('@')) {
        Some(i) => Err(SshSetupError::Key {
            what: "the known_hosts file",
            path: path.to_string(),
            message: format!(
                "line {} has a marker (@revoked or @cert-authority), which the gateway does not support yet: list only the host keys to trust",
                i + 1
            ),
        }),
        None => Ok(()),
    }
}

fn load_key(what: &'static str, path: &str) -> Result<PrivateKey, SshSetupError> {
    russh::keys::load_secret_key(path, None).map_err(|e| SshSetupError::Key {
        what,
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// What every SSH connection shares.
pub struct SshContext {
    /// The protocol-neutral gateway.
    pub core: Arc<Core>,
    /// SSH targets by name.
    pub targets: Arc<HashMap<String, SshTarget>>,
    /// The SSH server's settings (host key, algorithms, limits).
    pub server: Arc<russh::server::Config>,
    /// The user CA whose certificates log in here, if the listener has one.
    pub user_ca: Option<Arc<certs::UserCa>>,
}

/// The SSH server settings of a listener: its host key, the token
/// (keyboard-interactive or password) and, with a user CA
/// (`certificates`), the certificates it signed as credentials, and
/// rejections that take a constant time.
pub fn server_config(
    l: &Listener,
    certificates: bool,
) -> Result<russh::server::Config, SshSetupError> {
    let key = load_key(
        "the host key of listener",
        l.host_key_file.as_deref().unwrap_or_default(),
    )?;
    let mut methods = vec![
        russh::MethodKind::KeyboardInteractive,
        russh::MethodKind::Password,
    ];
    if certificates {
        methods.insert(0, russh::MethodKind::PublicKey);
    }
    Ok(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-Portcullis".into()),
        methods: russh::MethodSet::from(&methods[..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        // A client offers its keys before its token: room for a few.
        max_auth_attempts: if certificates { 6 } else { 3 },
        keys: vec![key],
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    })
}

/// Accepts SSH clients on `listener` until the task is dropped.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<SshContext>,
    limit: Arc<Semaphore>,
    startup: Duration,
) {
    loop {
        let (tcp, peer) = crate::gateway::core::accept(&listener).await;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many clients; SSH connection refused");
            drop(tcp);
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            server::serve(tcp, peer, ctx, startup).await;
            drop(permit);
        });
    }
}
