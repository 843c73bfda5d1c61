//! The gateway's own login to an SSH host: its private key (never the
//! client's credential), and the host's key checked against the target's
//! known_hosts file — an unknown or changed key refuses the session.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

/// Why the gateway could not log in to the host.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host did not answer in time.
    #[error("host {0} did not answer within {1} s")]
    Timeout(String, u64),
    /// The host's key is not the pinned one.
    #[error("host {host} presented a key that {problem}; the session is refused (if the host's key really changed, update the target's known_hosts_file)")]
    HostKey {
        /// `host:port`.
        host: String,
        /// What is wrong with the key.
        problem: String,
    },
    /// The host refused the gateway's key.
    #[error("host {0} refused the gateway's key for user {1}: add the gateway's public key to that account's authorized_keys")]
    Refused(String, String),
    /// The connection or the protocol failed.
    #[error("cannot log in to host {0}: {1}")]
    Ssh(String, String),
}

/// Checks the host's key against the pinned ones and remembers why it was
/// refused (russh only learns "refused").
struct PinnedHost {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    problem: Arc<Mutex<Option<String>>>,
    /// Told when the host's connection ends.
    gone: Arc<tokio::sync::Notify>,
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                match russh::keys::check_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.known_hosts,
                ) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "is not in {} (an unknown host)",
                        self.known_hosts.display()
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                        "differs from the one pinned in {} line {line} (the host key changed)",
                        self.known_hosts.display()
                    )),
                    Err(e) => Err(format!(
                        "cannot be checked against {}: {e}",
                        self.known_hosts.display()
                    )),
                }
            }
            PublicKeyOrCertificate::Certificate(_) => Err(
                "is a host certificate, and this target pins plain host keys (known_hosts_file)"
                    .to_string(),
            ),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(problem) => {
                if let Ok(mut p) = self.problem.lock() {
                    *p = Some(problem);
                }
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        self.gone.notify_one();
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }

    // Channels the host opens towards the gateway are refused (dropping
    // the reply refuses): nothing on the gateway's side is the host's to
    // reach.
    async fn server_channel_open_session(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _socket_path: &str,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _socket_path: &str,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: russh::Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A logged-in connection to a host.
pub struct Upstream {
    handle: client::Handle<PinnedHost>,
    gone: Arc<tokio::sync::Notify>,
}

/// The algorithms the gateway asks hosts for: russh's safe defaults, with
/// AES-GCM before ChaCha20-Poly1305 — both authenticated ciphers, and on
/// processors with AES instructions GCM costs the relay less per byte (the
/// gateway encrypts everything twice: towards the client and the host).
fn upstream_algorithms() -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::AES_128_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
        ]),
        ..russh::Preferred::DEFAULT
    }
}

/// What the gateway logs in to a host with.
pub enum Credential {
    /// Its key, which the account's authorized_keys lists.
    Key(Arc<PrivateKey>),
    /// Its key and a certificate for it that a CA the host trusts signed.
    Certificate(Arc<PrivateKey>, Box<russh::keys::Certificate>),
}

/// Where and as whom the gateway logs in.
pub struct Login<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Account on the host.
    pub user: &'a str,
    /// The gateway's credential for that account.
    pub credential: Credential,
    /// The known_hosts file pinning the host's key.
    pub known_hosts: PathBuf,
    /// How long connecting and logging in may take.
    pub timeout: Duration,
}

impl Upstream {
    /// Connects, checks the host's key and logs in with the gateway's key.
    pub async fn login(login: Login<'_>) -> Result<Self, UpstreamError> {
        let addr = format!("{}:{}", login.host, login.port);
        let problem = Arc::new(Mutex::new(None));
        let gone = Arc::new(tokio::sync::Notify::new());
        let handler = PinnedHost {
            host: login.host.to_string(),
            port: login.port,
            known_hosts: login.known_hosts.clone(),
            problem: problem.clone(),
            gone: gone.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            preferred: upstream_algorithms(),
            ..Default::default()
        });
        let seconds = login.timeout.as_secs();
        let connecting = async {
            let mut handle = client::connect(config, (login.host, login.port), handler)
                .await
                .map_err(|e| match problem.lock().ok().and_then(|mut p| p.take()) {
                    Some(problem) => UpstreamError::HostKey {
                        host: addr.clone(),
                        problem,
                    },
                    None => UpstreamError::Ssh(addr.clone(), e.to_string()),
                })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| UpstreamError::Ssh(addr.clone(), e.to_string()))?
                .flatten();
            let auth = match login.credential {
                Credential::Key(key) => {
                    handle
                        .authenticate_publickey(login.user, PrivateKeyWithHashAlg::new(key, hash))
                        .await
                }
                Credential::Certificate(key, cert) => {
                    handle
                        .authenticate_openssh_cert(login.user, key, *cert)
                        .await
                }
            }
            .map_err(|e| UpstreamError::Ssh(addr.clone(), e.to_string()))?;
            if !auth.success() {
                return Err(UpstreamError::Refused(addr.clone(), login.user.to_string()));
            }
            Ok(Self { handle, gone })
        };
        match tokio::time::timeout(login.timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(addr, seconds)),
        }
    }

    /// Opens a session channel on the host.
    pub async fn open_session(&self) -> Result<russh::Channel<client::Msg>, russh::Error> {
        self.handle.channel_open_session().await
    }

    /// Opens a `direct-tcpip` channel: the host dials `host:port` for the
    /// client at `originator`.
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u16,
        originator: (&str, u32),
    ) -> Result<russh::Channel<client::Msg>, russh::Error> {
        self.handle
            .channel_open_direct_tcpip(host, u32::from(port), originator.0, originator.1)
            .await
    }

    /// Resolves when the host's connection has ended.
    pub async fn gone(&self) {
        self.gone.notified().await;
    }

    /// Ends the connection.
    pub async fn close(&self, why: &str) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, why, "en")
            .await;
    }
}
