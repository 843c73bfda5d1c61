//! One client connection: the token sent as the password is admitted like
//! any other protocol's (the login name picks the target), the gateway logs
//! in to the host with its own key, and each session channel is relayed
//! (see [`super::channel`]). Port forwarding, agent and X11 forwarding are
//! refused: they are not relayed.
//!
//! The token is read as a keyboard-interactive answer (OpenSSH's default
//! order tries that before passwords) so that a refused login can tell the
//! client why; sent as a password it is accepted too, and refused with
//! SSH's plain "Permission denied". The gateway's log says why either way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::server::{self, Auth, ChannelOpenHandle, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};
use tokio::net::TcpStream;

use super::certs;
use super::channel::{self, Channels, Counted, SessionParts};
use super::forward::{self, Forward, ForwardParts};
use super::judge::{self, Judge, SharedPolicy};
use super::record::SessionEvents;
use super::upstream::{Login, Upstream};
use super::{SshContext, SshTarget};
use crate::config::Durability;
use crate::gateway::admission::{self, Refusal};
use crate::gateway::core::ActiveGuard;
use crate::gateway::lifecycle::{SessionLife, Stop, Traffic};
use crate::policy::{EndReason, SessionInfo};

/// An admitted session: what ends it, and what its channels use.
struct Admitted {
    info: SessionInfo,
    policy: SharedPolicy,
    judge: Arc<Judge>,
    /// Terminal data each channel's recording keeps, in bytes.
    recording_limit: u64,
    /// The target relays local port forwards.
    local_forwarding: bool,
    life: SessionLife,
    upstream: Arc<Upstream>,
    events: Arc<SessionEvents>,
    traffic: Arc<Counted>,
    /// Set when the session must stop: no new channel or command starts.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// State the connection's task and its protocol handler share.
#[derive(Default)]
struct Shared {
    admitted: Option<Admitted>,
    /// Why the gateway ended the session, when it did.
    stopped: Option<Stop>,
    /// The host's connection ended first.
    upstream_gone: bool,
    /// Waits for the lifecycle's stop; ended with the session.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// The channels' relays: the session ends after them, so that their
    /// last events are queued before its end record.
    relays: Vec<tokio::task::JoinHandle<()>>,
    /// The session's open channels (what a relay ended by force leaves
    /// behind is recorded from here).
    channels: Option<Channels>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every channel of an admitted connection shares.
#[derive(Clone)]
struct ChannelParts {
    upstream: Arc<Upstream>,
    session: SessionParts,
    /// Forwards open in the session.
    forwards: Arc<std::sync::atomic::AtomicUsize>,
    /// The target relays local port forwards.
    local_forwarding: bool,
}

/// What a client logs in with.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// A token (keyboard-interactive answer or password).
    Token(&'a str),
    /// A certificate of the listener's user CA.
    Certificate(&'a russh::keys::Certificate),
}

/// Logins a connection may try before it is only refused.
const MAX_LOGINS: u32 = 3;

/// How long a refused login waits before it is answered, so that tries
/// cannot be made faster than this.
const REFUSAL_DELAY: Duration = Duration::from_millis(300);

/// The protocol handler of one connection.
struct Connection {
    /// The client's version (from its identification line).
    ident: super::ident::Ident,
    ctx: Arc<SshContext>,
    peer: SocketAddr,
    shared: SharedState,
    /// What the connection's channels use once it is admitted.
    channels: Option<ChannelParts>,
    /// A keyboard-interactive refusal was explained; its answer ends it.
    explained: bool,
    /// Logins refused so far.
    refusals: u32,
}

/// Serves one client connection until it ends.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<SshContext>, startup: Duration) {
    let _active = ActiveGuard::new(&ctx.core);
    let _ = tcp.set_nodelay(true);
    let shared = SharedState::default();
    let (sniffed, ident) = super::ident::Sniffed::new(tcp);
    let handler = Connection {
        ident,
        ctx: ctx.clone(),
        peer,
        shared: shared.clone(),
        channels: None,
        explained: false,
        refusals: 0,
    };
    let running = match server::run_stream(ctx.server.clone(), sniffed, handler).await {
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
    let (admitted, stopped, relays, upstream_gone, channels) = {
        let mut s = lock(&shared);
        if let Some(w) = s.watcher.take() {
            w.abort();
        }
        (
            s.admitted.take(),
            s.stopped.take(),
            std::mem::take(&mut s.relays),
            s.upstream_gone,
            s.channels.take(),
        )
    };
    let Some(a) = admitted else {
        return;
    };
    end_relays(relays, &a.upstream, channels.as_ref()).await;
    let reason = match (stopped, result) {
        (Some(Stop::Revoked(why)), _) => EndReason::Revoked(why),
        (Some(Stop::ShuttingDown), _) => EndReason::Error("the gateway shut down".into()),
        (None, _) if upstream_gone => EndReason::UpstreamClosed,
        (None, Ok(())) => EndReason::ClientClosed,
        (None, Err(e)) => EndReason::Error(e.to_string()),
    };
    a.upstream.close("the client's session ended").await;
    tracing::info!(session = a.info.session_id, %peer, target = %a.info.target, reason = %reason, "SSH session ended");
    let traffic = Traffic {
        from_client: a.traffic.from_client.load(Ordering::Relaxed),
        to_client: a.traffic.to_client.load(Ordering::Relaxed),
    };
    if let Some(mut policy) = judge::take(&a.policy) {
        a.life
            .end(&ctx.core, policy.as_mut(), &reason, traffic)
            .await;
    }
}

/// Once the client is gone, its channels end: their last events (exit
/// statuses, the rest of a recording) come first, then the session's end.
/// The host gets a moment to report what the gateway killed; then its
/// connection is closed (nothing more can reach the client, and a host
/// channel may stay open as long as a process holds its terminal), and a
/// relay still running after that is ended, its command and recording
/// closed from what it left.
async fn end_relays(
    mut relays: Vec<tokio::task::JoinHandle<()>>,
    upstream: &Upstream,
    channels: Option<&Channels>,
) {
    let grace = tokio::time::Instant::now() + Duration::from_secs(1);
    for relay in relays.iter_mut() {
        if tokio::time::timeout_at(grace, relay).await.is_err() {
            break;
        }
    }
    relays.retain(|r| !r.is_finished());
    if relays.is_empty() {
        return;
    }
    upstream.close("the client's session ended").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    for mut relay in relays {
        if tokio::time::timeout_at(deadline, &mut relay).await.is_err() {
            relay.abort();
            // Ended before what follows reads the channels it left.
            let _ = relay.await;
        }
    }
    if let Some(channels) = channels {
        channel::abandon(channels).await;
    }
}

/// A refusal in words: what went wrong, and what to do when known.
fn words(r: Refusal) -> String {
    match r.hint {
        Some(hint) => format!("{} ({hint})", r.message),
        None => r.message,
    }
}

/// OpenSSH reads a password or a prompt's answer into 1,024 bytes: a
/// longer token arrives cut at 1,023.
const OPENSSH_SECRET_LIMIT: usize = 1023;

/// Answers the client's current request on `channel`.
fn answer(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
    if ok {
        session.channel_success(channel)
    } else {
        session.channel_failure(channel)
    }
}

impl Connection {
    /// The relayed channel `id`, once open.
    fn open(&self, id: ChannelId) -> Option<Arc<channel::Open>> {
        channel::find(&self.channels.as_ref()?.session.channels, id)
    }

    /// Admits the client with `credential` for target `target_name`; why
    /// not, in words for the client, otherwise.
    async fn login(&mut self, target_name: &str, credential: Credential<'_>) -> Result<(), String> {
        if self.channels.is_some() {
            return Err("this connection is already logged in".into());
        }
        if self.refusals >= MAX_LOGINS {
            return Err(format!(
                "{MAX_LOGINS} logins were refused on this connection"
            ));
        }
        match self.admit(target_name, credential).await {
            Ok(a) => {
                tracing::info!(session = a.info.session_id, peer = %self.peer, target = %a.info.target, user = %a.info.identity.user, "SSH session admitted");
                self.channels = Some(ChannelParts {
                    upstream: a.upstream.clone(),
                    local_forwarding: a.local_forwarding,
                    forwards: Arc::default(),
                    session: SessionParts {
                        events: a.events.clone(),
                        judge: a.judge.clone(),
                        traffic: a.traffic.clone(),
                        channels: Channels::default(),
                        stopping: a.stopping.subscribe(),
                        recording_limit: a.recording_limit,
                    },
                });
                let mut shared = lock(&self.shared);
                shared.admitted = Some(a);
                shared.channels = self.channels.as_ref().map(|c| c.session.channels.clone());
                Ok(())
            }
            Err(mut why) => {
                self.refusals += 1;
                tokio::time::sleep(REFUSAL_DELAY).await;
                tracing::info!(peer = %self.peer, target = %target_name, reason = %why, "SSH login refused");
                let cut = match credential {
                    Credential::Token(t) if t.len() >= OPENSSH_SECRET_LIMIT => Some(t),
                    _ => None,
                };
                if let Some(token) = cut {
                    why.push_str(&format!(
                        ". The token that arrived is {} bytes long: OpenSSH cuts what it reads as a password at {OPENSSH_SECRET_LIMIT} bytes, so a longer token arrives cut; use a shorter one (a delegated token from the gateway's token exchange is)",
                        token.len()
                    ));
                }
                Err(why)
            }
        }
    }

    /// Admission, then the gateway's own login to the host.
    async fn admit(
        &self,
        target_name: &str,
        credential: Credential<'_>,
    ) -> Result<Admitted, String> {
        let core = &self.ctx.core;
        let identity = match credential {
            Credential::Token(token) => admission::authenticate(
                &core.authenticator,
                &core.revocations,
                token,
                None,
                self.peer,
            )
            .await
            .map_err(words)?,
            Credential::Certificate(cert) => {
                let ca = self
                    .ctx
                    .user_ca
                    .as_ref()
                    .ok_or("this listener accepts no certificates")?;
                let identity = certs::identity_of(ca, core.audit.store().clone(), cert)
                    .await
                    .map_err(|e| e.to_string())?;
                admission::still_valid(&identity, &core.revocations, None).map_err(words)?;
                identity
            }
        };
        let target: &SshTarget = admission::admit_to(
            &identity,
            target_name,
            self.ctx.targets.get(target_name),
            |t| &t.cfg,
        )
        .map_err(words)?;
        // A command on a host cannot be judged read-only: a read-only
        // delegated token may not open SSH sessions at all.
        if identity.delegation.as_ref().is_some_and(|d| d.read_only) {
            return Err("this delegated token is read-only, and a command on a host cannot be held to reading; ask for a token with read_only=false".into());
        }
        let client_version = self.ident.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (info, mut policy) = admission::open_session(
            &core.audit,
            &target.cfg,
            &target.policy.current(),
            &identity,
            self.peer,
            client_version.as_deref(),
        )
        .await
        .map_err(words)?;
        let life = SessionLife::begin(core, &info);
        let credential = match target.credential(info.session_id, &info.identity) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("the gateway could not make its credential for the host: {e}");
                life.end(
                    core,
                    policy.as_mut(),
                    &EndReason::Error(why.clone()),
                    Traffic::default(),
                )
                .await;
                return Err(why);
            }
        };
        let login = Login {
            host: &target.cfg.host,
            port: target.cfg.port(),
            user: &target.cfg.user,
            credential,
            known_hosts: target.known_hosts.clone(),
            timeout: Duration::from_secs(target.cfg.connect_timeout_secs),
        };
        match Upstream::login(login).await {
            Ok(upstream) => {
                let policy: SharedPolicy = Arc::new(Mutex::new(Some(policy)));
                Ok(Admitted {
                    events: SessionEvents::new(
                        core.audit.clone(),
                        info.session_id,
                        target.cfg.durability == Durability::Strict,
                    ),
                    judge: Arc::new(Judge::new(policy.clone(), core.approvals.clone(), &info)),
                    recording_limit: target.cfg.recording_limit_mib.saturating_mul(1 << 20),
                    local_forwarding: target.cfg.local_forwarding,
                    info,
                    policy,
                    life,
                    upstream: Arc::new(upstream),
                    traffic: Arc::default(),
                    stopping: Arc::new(tokio::sync::watch::channel(false).0),
                })
            }
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

    /// The token as a password: a refusal reads "Permission denied" (the
    /// password method has no way to say why).
    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(match self.login(user, Credential::Token(password)).await {
            Ok(()) => Auth::Accept,
            Err(_) => Auth::reject(),
        })
    }

    /// The token typed at a prompt: a refusal is shown to the client as
    /// the instructions of one more, empty, round, then rejected.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if self.refusals >= MAX_LOGINS {
            return Ok(Auth::reject());
        }
        let Some(mut response) = response else {
            self.explained = false;
            return Ok(Auth::Partial {
                name: "Portcullis".into(),
                instructions: "".into(),
                prompts: vec![(format!("Token for {user}: ").into(), false)].into(),
            });
        };
        if std::mem::take(&mut self.explained) {
            // The answer to a refusal's explanation: nothing more to try.
            return Ok(Auth::reject());
        }
        let token = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match self.login(user, Credential::Token(&token)).await {
            Ok(()) => Ok(Auth::Accept),
            Err(why) => {
                self.explained = true;
                Ok(Auth::Partial {
                    name: "".into(),
                    instructions: format!("Portcullis refused the login: {why}\n").into(),
                    prompts: Vec::new().into(),
                })
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        // The session ends when the lifecycle says it must stop.
        // So does it when the host's connection ends.
        let (stopped, upstream, stopping) = match lock(&self.shared).admitted.as_ref() {
            Some(a) => (a.life.stopped(), a.upstream.clone(), a.stopping.clone()),
            None => return Ok(()),
        };
        let handle = session.handle();
        let shared = self.shared.clone();
        let channels = self.channels.as_ref().map(|c| c.session.channels.clone());
        let watcher = tokio::spawn(async move {
            let (stop, message) = tokio::select! {
                stop = stopped => {
                    let message = match &stop {
                        Stop::ShuttingDown => "the gateway is shutting down".to_string(),
                        Stop::Revoked(why) => format!("access revoked: {why}"),
                    };
                    (Some(stop), message)
                }
                _ = upstream.gone() => (None, "the host closed the connection".to_string()),
            };
            // What a stopped session still runs on the host is killed
            // first: closing its channel would not end a command without
            // a terminal (sshd leaves it running).
            // No channel or command starts from here on; output to the
            // client stops, so the host side never stalls.
            stopping.send_replace(true);
            if stop.is_some() {
                if let Some(channels) = &channels {
                    channel::kill_all(channels).await;
                }
            }
            {
                let mut s = lock(&shared);
                s.upstream_gone = stop.is_none();
                s.stopped = stop;
            }
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
        let Some(parts) = self
            .channels
            .clone()
            .filter(|p| !*p.session.stopping.borrow())
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let client_handle = session.handle();
        let relay = tokio::spawn(async move {
            match parts.upstream.open_session().await {
                Ok(host) => {
                    let relay = channel::start(channel, client_handle, host, parts.session);
                    reply.accept().await;
                    relay.await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the host refused a session channel");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        let mut shared = lock(&self.shared);
        shared.relays.retain(|r| !r.is_finished());
        shared.relays.push(relay);
        Ok(())
    }

    /// A local forward (`-L`, `-W`): judged, recorded and relayed on its
    /// own task (see [`forward`]).
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(parts), Ok(port)) = (self.channels.clone(), u16::try_from(port_to_connect))
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let forward = Forward {
            host: host_to_connect.to_string(),
            port,
            originator: (originator_address.to_string(), originator_port),
        };
        let forward_parts = ForwardParts {
            allowed: parts.local_forwarding,
            gateway: self.ctx.core.listening.get().cloned(),
            open: parts.forwards,
            upstream: parts.upstream,
            events: parts.session.events,
            judge: parts.session.judge,
            traffic: parts.session.traffic,
            stopping: parts.session.stopping,
        };
        let relay = tokio::spawn(forward::run(forward, channel, reply, forward_parts));
        let mut shared = lock(&self.shared);
        shared.relays.retain(|r| !r.is_finished());
        shared.relays.push(relay);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.open(channel) {
            Some(open) => {
                open.pty(term, (col_width, row_height, pix_width, pix_height), modes)
                    .await
            }
            None => false,
        };
        answer(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.open(channel) {
            Some(open) => open.env(variable_name, variable_value).await,
            None => false,
        };
        answer(session, channel, ok)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.open(channel) {
            Some(open) => open.shell(),
            None => false,
        };
        answer(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.open(channel) {
            Some(open) => open.exec(data),
            None => false,
        };
        answer(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.open(channel) {
            Some(open) => open.subsystem(name),
            None => false,
        };
        answer(session, channel, ok)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(open) = self.open(channel) {
            open.window_change((col_width, row_height, pix_width, pix_height))
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(open) = self.open(channel) {
            open.signal(signal).await;
        }
        Ok(())
    }

    /// X11 forwarding is refused: it would let the host reach back.
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        answer(session, channel, false)
    }

    /// Agent forwarding is refused: it would let the host use the
    /// client's keys.
    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    /// A key is a credential only as a certificate of the listener's user
    /// CA: with one, an offer may go on to prove it holds the key (a plain
    /// key is then refused in `auth_publickey`); without, none may.
    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.ctx.user_ca {
            Some(_) if self.refusals < MAX_LOGINS => Auth::Accept,
            _ => Auth::reject(),
        })
    }

    /// A plain key (not a certificate) is never a credential.
    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    /// A certificate the gateway minted (`portcullis ssh login`), its
    /// key's possession proved: admitted with the identity recorded for
    /// it. A refusal reads "Permission denied"; the log says why.
    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(
            match self.login(user, Credential::Certificate(certificate)).await {
                Ok(()) => Auth::Accept,
                Err(_) => Auth::reject(),
            },
        )
    }
}
