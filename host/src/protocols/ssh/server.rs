//! One client connection: the token sent as the password is admitted like
//! any other protocol's (the login name picks the target), the gateway logs
//! in to the host with its own key, and each session channel is relayed
//! (see [`super::channel`]). Port forwarding, agent and X11 forwarding are
//! refused: they are not relayed.
//!
//! A refused login is answered the way SSH answers any failed password
//! ("Permission denied"); the gateway's log says why.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::TcpStream;

use super::channel::Relay;
use super::record::{Commands, SessionEvents};
use super::upstream::{Login, Upstream};
use super::{SshContext, SshTarget};
use crate::config::Durability;
use crate::gateway::admission::{self, Refusal};
use crate::gateway::core::ActiveGuard;
use crate::gateway::lifecycle::{SessionLife, Stop, Traffic};
use crate::policy::{EndReason, SessionInfo, SessionPolicy};

/// An admitted session: what ends it, and what its channels use.
struct Admitted {
    info: SessionInfo,
    policy: Box<dyn SessionPolicy>,
    life: SessionLife,
    upstream: Arc<Upstream>,
    events: Arc<SessionEvents>,
}

/// State the connection's task and its protocol handler share.
#[derive(Default)]
struct Shared {
    admitted: Option<Admitted>,
    /// Why the gateway ended the session, when it did.
    stopped: Option<Stop>,
    /// Waits for the lifecycle's stop; ended with the session.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The protocol handler of one connection.
struct Connection {
    ctx: Arc<SshContext>,
    peer: SocketAddr,
    shared: SharedState,
    /// The connection's upstream and events once admitted, for channels.
    channels: Option<(Arc<Upstream>, Arc<SessionEvents>)>,
}

/// Serves one client connection until it ends.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<SshContext>, startup: Duration) {
    let _active = ActiveGuard::new(&ctx.core);
    let _ = tcp.set_nodelay(true);
    let shared = SharedState::default();
    let handler = Connection {
        ctx: ctx.clone(),
        peer,
        shared: shared.clone(),
        channels: None,
    };
    let running = match server::run_stream(ctx.server.clone(), tcp, handler).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
    };
    // A client that has not logged in within the start-up timeout is cut.
    let handle = running.handle();
    let watch = shared.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(startup).await;
        if lock(&watch).admitted.is_none() {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login took too long".into(),
                    "en".into(),
                )
                .await;
        }
    });
    let result = running.await;
    timer.abort();
    let (admitted, stopped) = {
        let mut s = lock(&shared);
        if let Some(w) = s.watcher.take() {
            w.abort();
        }
        (s.admitted.take(), s.stopped.take())
    };
    let Some(mut a) = admitted else {
        return;
    };
    let reason = match (stopped, result) {
        (Some(Stop::Revoked(why)), _) => EndReason::Revoked(why),
        (Some(Stop::ShuttingDown), _) => EndReason::Error("the gateway shut down".into()),
        (None, Ok(())) => EndReason::ClientClosed,
        (None, Err(e)) => EndReason::Error(e.to_string()),
    };
    a.upstream.close("the client's session ended").await;
    tracing::info!(session = a.info.session_id, %peer, target = %a.info.target, reason = %reason, "SSH session ended");
    a.life
        .end(&ctx.core, a.policy.as_mut(), &reason, Traffic::default())
        .await;
}

impl Connection {
    /// Admission, then the gateway's own login to the host.
    async fn admit(&self, target_name: &str, token: &str) -> Result<Admitted, String> {
        let core = &self.ctx.core;
        let identity = admission::authenticate(
            &core.authenticator,
            &core.revocations,
            token,
            None,
            self.peer,
        )
        .await
        .map_err(|r| r.message)?;
        let target: &SshTarget = admission::admit_to(
            &identity,
            target_name,
            self.ctx.targets.get(target_name),
            |t| &t.cfg,
        )
        .map_err(|r: Refusal| r.message)?;
        let (info, mut policy) = admission::open_session(
            &core.audit,
            &target.cfg,
            &target.policy,
            &identity,
            self.peer,
            None,
        )
        .await
        .map_err(|r| r.message)?;
        let life = SessionLife::begin(core, &info);
        let login = Login {
            host: &target.cfg.host,
            port: target.cfg.port(),
            user: &target.cfg.user,
            key: target.key.clone(),
            known_hosts: target.known_hosts.clone(),
            timeout: Duration::from_secs(target.cfg.connect_timeout_secs),
        };
        match Upstream::login(login).await {
            Ok(upstream) => Ok(Admitted {
                events: SessionEvents::new(
                    core.audit.clone(),
                    info.session_id,
                    target.cfg.durability == Durability::Strict,
                ),
                info,
                policy,
                life,
                upstream: Arc::new(upstream),
            }),
            Err(e) => {
                let why = e.to_string();
                life.end(
                    core,
                    policy.as_mut(),
                    &EndReason::Error(why.clone()),
                    Traffic::default(),
                )
                .await;
                Err(why)
            }
        }
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.channels.is_some() {
            return Ok(Auth::reject());
        }
        match self.admit(user, password).await {
            Ok(a) => {
                tracing::info!(session = a.info.session_id, peer = %self.peer, target = %a.info.target, user = %a.info.identity.user, "SSH session admitted");
                self.channels = Some((a.upstream.clone(), a.events.clone()));
                lock(&self.shared).admitted = Some(a);
                Ok(Auth::Accept)
            }
            Err(why) => {
                tracing::info!(peer = %self.peer, target = %user, reason = %why, "SSH login refused");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        // The session ends when the lifecycle says it must stop.
        let stopped = match lock(&self.shared).admitted.as_ref() {
            Some(a) => a.life.stopped(),
            None => return Ok(()),
        };
        let handle = session.handle();
        let shared = self.shared.clone();
        let watcher = tokio::spawn(async move {
            let stop = stopped.await;
            let message = match &stop {
                Stop::ShuttingDown => "the gateway is shutting down".to_string(),
                Stop::Revoked(why) => format!("access revoked: {why}"),
            };
            lock(&shared).stopped = Some(stop);
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, message, "en".into())
                .await;
        });
        lock(&self.shared).watcher = Some(watcher);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((upstream, events)) = self.channels.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let client_handle = session.handle();
        tokio::spawn(async move {
            match upstream.open_session().await {
                Ok(host) => {
                    reply.accept().await;
                    Relay {
                        client: channel,
                        client_handle,
                        host,
                        commands: Commands::new(events),
                    }
                    .run()
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the host refused a session channel");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }
}
