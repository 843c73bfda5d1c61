//! One client connection from accept to close.
//!
//! Start-up follows PostgreSQL's order: optional `SSLRequest`/`GSSENCRequest`
//! (or a direct TLS handshake, as PostgreSQL 17 clients may do), then the
//! `StartupMessage`; `CancelRequest`s are served and the connection closed.
//! The gateway then asks for a cleartext password *inside TLS*, validates the
//! token, checks that the startup `user` is the token's user, authorizes the
//! target, opens the policy session, logs in upstream and replays the
//! upstream's greeting with a gateway-issued cancel secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::app_name::AppName;
use super::cancel::{CancelRegistry, CancelTarget};
use super::framed::{read_message, read_startup_packet, send};
use super::refusal::StartupRefusal;
use super::stream::Stream;
use super::upstream::{self, UpstreamLogin};
use super::{pump, RelayError};
use crate::config::Target;
use crate::gateway::core::ActiveGuard;
use crate::gateway::lifecycle::SessionLife;
use crate::gateway::{admission, Core};
use crate::identity::{Identity, MAX_TOKEN_BYTES};
use crate::policy::{Policy, SessionInfo};
use crate::protocols::postgres::codec::startup::{StartupMessage, StartupPacket};
use crate::protocols::postgres::codec::{
    authentication, backend_key_data, negotiate_protocol_version, startup,
};

/// Per-listener settings a session needs.
pub struct ListenerContext {
    /// TLS acceptor, if the listener has a certificate.
    pub tls: Option<TlsAcceptor>,
    /// Whether clients without TLS are served (loopback development only).
    pub plaintext_allowed: bool,
    /// Largest message accepted in either direction.
    pub max_message: usize,
    /// Deadline for TLS + start-up + authentication + upstream login.
    pub startup_timeout: Duration,
}

/// One target with its prepared upstream TLS config and credential.
pub struct TargetContext {
    /// Its configuration.
    pub cfg: Target,
    /// Upstream TLS client config (`None` = plain).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the gateway's upstream password comes from.
    pub credential: crate::credentials::CredentialProvider,
    /// The policy of this target's new sessions (its plugin chain, or the
    /// default). Replaced on reload; sessions keep the one they started with.
    pub policy: std::sync::RwLock<Arc<dyn Policy>>,
    /// Column names of the upstream's tables, for column identity.
    pub catalog: super::catalog::Catalog,
    /// The upstream's code (routines, triggers, rules, views), for the
    /// effects of what a statement runs.
    pub code: super::code_catalog::CodeCache,
}

impl TargetContext {
    /// How to log in to this target with the gateway's credential
    /// (`password`) and start-up parameters `params`.
    pub fn login(
        &self,
        password: Option<String>,
        params: Vec<(String, String)>,
    ) -> UpstreamLogin<'_> {
        UpstreamLogin {
            host: &self.cfg.host,
            port: self.cfg.port(),
            tls: self.tls.clone(),
            user: &self.cfg.user,
            database: &self.cfg.database,
            password,
            params,
            timeout: Duration::from_secs(self.cfg.connect_timeout_secs),
        }
    }
}

/// What every PostgreSQL session of the gateway shares.
pub struct GatewayContext {
    /// The protocol-neutral state (identity, audit, approvals, delegation).
    pub core: Arc<Core>,
    /// PostgreSQL targets by name, with their upstream TLS, credential,
    /// policy and catalogs.
    pub targets: HashMap<String, TargetContext>,
    /// Cancel keys of live sessions.
    pub cancels: CancelRegistry,
    /// Memory all sessions together may hold for incomplete client messages.
    pub message_budget: Arc<super::budget::MessageBudget>,
}

/// How long the end of a revoked session waits for its upstream cancel.
const REVOKED_CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted connection to the end.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    lc: Arc<ListenerContext>,
    gw: Arc<GatewayContext>,
) {
    let _ = tcp.set_nodelay(true);
    let _active = ActiveGuard::new(&gw.core);
    let started = tokio::time::timeout(lc.startup_timeout, start(tcp, peer, &lc, &gw)).await;
    let ready = match started {
        Err(_) => {
            tracing::info!(%peer, "client did not finish start-up in time; connection closed");
            return;
        }
        Ok(Err(RelayError::ClientGone)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "session refused");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(ready))) => ready,
    };
    let Ready {
        client,
        upstream,
        policy,
        info,
        registration,
        pending,
        cancel_signal,
        held,
        upstream_role,
        app_name,
        client_encoding,
        server_converts,
    } = ready;
    tracing::info!(
        session = info.session_id,
        user = %info.identity.user,
        target = %info.target,
        %peer,
        upstream_pid = registration.client_key().process_id,
        "session started"
    );
    // A session opened with a delegated token closes when a token of its
    // chain is revoked.
    let life = SessionLife::begin(&gw.core, &info);
    let catalog = super::catalog::TargetCatalog::new(gw.clone(), info.target.clone());
    let strict = gw
        .targets
        .get(&info.target)
        .is_some_and(|t| t.cfg.durability == crate::config::Durability::Strict);
    let ctx = pump::SessionContext {
        log: gw.core.audit.clone(),
        session_id: info.session_id,
        strict,
        identity: info.identity.clone(),
        target: info.target.clone(),
        approvals: gw.core.approvals.clone(),
        cancel: cancel_signal,
        cancel_signal: held,
        read_only: info
            .identity
            .delegation
            .as_ref()
            .is_some_and(|d| d.read_only),
        upstream_role,
        app_name,
        client_encoding,
        server_converts,
    };
    let (reason, mut policy, traffic) = pump::run(
        client,
        upstream,
        policy,
        pending,
        pump::Limits {
            max_message: lc.max_message,
            budget: gw.message_budget.clone(),
        },
        catalog,
        ctx,
        life.stopped(),
    )
    .await;
    if matches!(reason, crate::policy::EndReason::Revoked(_)) {
        // Stop whatever the revoked session still runs upstream — bounded,
        // so an upstream that accepts but never answers cannot hold back
        // the session's end (its policy, metrics and end record).
        let key = registration.client_key();
        let cancel = gw
            .cancels
            .cancel(crate::protocols::postgres::codec::startup::CancelRequest {
                process_id: key.process_id,
                secret_key: key.secret_key,
            });
        if tokio::time::timeout(REVOKED_CANCEL_TIMEOUT, cancel)
            .await
            .is_err()
        {
            tracing::warn!(
                session = info.session_id,
                "the upstream did not take the revoked session's cancel in time"
            );
        }
    }
    life.end(&gw.core, policy.as_mut(), &reason, traffic).await;
    drop(registration);
    tracing::info!(session = info.session_id, reason = ?reason, "session ended");
}

struct Ready {
    client: Stream,
    upstream: Stream,
    policy: Box<dyn crate::policy::SessionPolicy>,
    info: SessionInfo,
    registration: super::cancel::Registration,
    /// Bytes the client sent after its password, before the greeting; they
    /// go through the policy like everything else.
    pending: BytesMut,
    /// Changes when the client sends a cancel request.
    cancel_signal: tokio::sync::watch::Receiver<u64>,
    /// Its sending side.
    held: Arc<tokio::sync::watch::Sender<u64>>,
    /// The upstream role the session is pinned to, if its target maps one.
    upstream_role: Option<String>,
    /// How `application_name` reads upstream and to the client.
    app_name: AppName,
    /// The client encoding the session starts in.
    client_encoding: crate::protocols::postgres::codec::encoding::ClientEncoding,
    /// Whether the server converts client text.
    server_converts: bool,
}

/// Sends the refusal's `FATAL` and reports the session as refused.
async fn refuse(stream: &mut Stream, why: StartupRefusal) -> RelayError {
    let fields = why.fields();
    let mut buf = BytesMut::new();
    fields.encode(&mut buf);
    let _ = send(stream, &mut buf).await;
    let _ = stream.shutdown().await;
    RelayError::Refused(fields.message)
}

async fn accept_tls(tcp: TcpStream, lc: &ListenerContext) -> Result<Stream, RelayError> {
    let acceptor = lc
        .tls
        .as_ref()
        .ok_or_else(|| RelayError::Refused("TLS handshake on a listener without TLS".into()))?;
    let tls = acceptor.accept(tcp).await?;
    Ok(Stream::ServerTls(Box::new(tls)))
}

/// TLS negotiation and the start-up packet: answers `SSLRequest` and
/// `GSSENCRequest`, serves `CancelRequest` (returns `None`), and returns the
/// stream with the raw `StartupMessage`.
async fn negotiate(
    tcp: TcpStream,
    lc: &ListenerContext,
    gw: &GatewayContext,
) -> Result<Option<(Stream, Vec<u8>)>, RelayError> {
    // PostgreSQL 17 clients with sslnegotiation=direct start TLS at once.
    let mut first = [0u8; 1];
    let direct_tls = tcp.peek(&mut first).await? == 1 && first[0] == 0x16 && lc.tls.is_some();
    let mut stream = if direct_tls {
        accept_tls(tcp, lc).await?
    } else {
        Stream::Plain(tcp)
    };
    loop {
        let packet = read_startup_packet(&mut stream).await?;
        match startup::decode(&packet)? {
            StartupPacket::SslRequest => {
                if stream.is_tls() {
                    return Err(refuse(&mut stream, StartupRefusal::SslInsideTls).await);
                }
                let Stream::Plain(mut tcp) = stream else {
                    return Err(RelayError::Refused("unreachable stream state".into()));
                };
                if lc.tls.is_some() {
                    tcp.write_all(b"S").await?;
                    stream = accept_tls(tcp, lc).await?;
                } else {
                    tcp.write_all(b"N").await?;
                    stream = Stream::Plain(tcp);
                }
            }
            StartupPacket::GssEncRequest => {
                stream.write_all(b"N").await?;
            }
            StartupPacket::CancelRequest(req) => {
                gw.cancels.cancel(req).await;
                // Close as PostgreSQL does: over TLS with a close_notify,
                // which libpq 17+ waits for before it reports success.
                let _ = stream.shutdown().await;
                return Ok(None);
            }
            StartupPacket::Startup(_) => return Ok(Some((stream, packet))),
        }
    }
}

/// Serves a connection over the listener's client limit: TLS and start-up as
/// usual (so every client can read the error; cancels still work), then
/// `FATAL 53300`.
pub async fn refuse_too_many(tcp: TcpStream, lc: Arc<ListenerContext>, gw: Arc<GatewayContext>) {
    let work = async {
        if let Some((mut stream, _)) = negotiate(tcp, &lc, &gw).await? {
            return Err(refuse(&mut stream, StartupRefusal::TooManyClients).await);
        }
        Ok::<_, RelayError>(())
    };
    let _ = tokio::time::timeout(lc.startup_timeout, work).await;
}

async fn start(
    tcp: TcpStream,
    peer: SocketAddr,
    lc: &ListenerContext,
    gw: &GatewayContext,
) -> Result<Option<Ready>, RelayError> {
    let Some((mut stream, packet)) = negotiate(tcp, lc, gw).await? else {
        return Ok(None);
    };
    let StartupPacket::Startup(msg) = startup::decode(&packet)? else {
        return Err(RelayError::Refused("unreachable start-up state".into()));
    };
    let plaintext_ok = lc.plaintext_allowed && peer.ip().is_loopback();
    if !stream.is_tls() && !plaintext_ok {
        return Err(refuse(&mut stream, StartupRefusal::PlaintextNotAllowed).await);
    }
    if msg.major != 3 {
        let (major, minor) = (msg.major, msg.minor);
        return Err(refuse(
            &mut stream,
            StartupRefusal::UnsupportedProtocol { major, minor },
        )
        .await);
    }
    if msg
        .param("replication")
        .is_some_and(|v| v != "false" && v != "0" && v != "off")
    {
        return Err(refuse(&mut stream, StartupRefusal::Replication).await);
    }
    let mut out = BytesMut::new();
    let unsupported: Vec<&str> = msg
        .params
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if msg.minor > 0 || !unsupported.is_empty() {
        negotiate_protocol_version::encode(&mut out, 0, &unsupported);
    }
    let Some(user) = msg.param("user").filter(|u| !u.is_empty()) else {
        return Err(refuse(&mut stream, StartupRefusal::NoUser).await);
    };
    let target_name = msg
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);

    // Ask for the token.
    authentication::encode_cleartext_request(&mut out);
    send(&mut stream, &mut out).await?;
    let mut inbuf = BytesMut::with_capacity(4096);
    let Some(pw) = read_message(&mut stream, &mut inbuf, MAX_TOKEN_BYTES + 1024)
        .await
        .map_err(|e| match e {
            RelayError::Codec(crate::protocols::postgres::codec::CodecError::TooLarge {
                ..
            }) => RelayError::Refused("password message too large".into()),
            other => other,
        })?
    else {
        // psql closes and asks the user for a password when none was given.
        return Err(RelayError::ClientGone);
    };
    let token = match authentication::decode_password(&pw) {
        Ok(t) => t,
        Err(_) => return Err(refuse(&mut stream, StartupRefusal::NotAPassword).await),
    };
    let admitted = async {
        let identity = admission::authenticate(
            &gw.core.authenticator,
            &gw.core.revocations,
            token,
            Some(user),
            peer,
        )
        .await?;
        let target =
            admission::admit_to(&identity, target_name, gw.targets.get(target_name), |t| {
                &t.cfg
            })?;
        Ok::<_, admission::Refusal>((identity, target))
    }
    .await;
    let (identity, target) = match admitted {
        Ok(a) => a,
        Err(r) => return Err(refuse(&mut stream, r.into()).await),
    };
    if let Some(why) = super::role_lock::startup_violation(&msg) {
        return Err(refuse(&mut stream, StartupRefusal::LeavesPinnedRole(why)).await);
    }
    let upstream_role = target
        .cfg
        .upstream_role(&identity.groups)
        .map(str::to_string);
    let target_policy = target
        .policy
        .read()
        .map(|p| p.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let (info, policy) = match admission::open_session(
        &gw.core.audit,
        &target.cfg,
        &target_policy,
        &identity,
        peer,
        msg.param("application_name"),
    )
    .await
    {
        Ok(opened) => opened,
        Err(r) => return Err(refuse(&mut stream, r.into()).await),
    };
    let password = match target.credential.password().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(target = %target.cfg.name, error = %e, "upstream password unavailable");
            let target = target.cfg.name.clone();
            return Err(refuse(
                &mut stream,
                StartupRefusal::CredentialUnavailable { target },
            )
            .await);
        }
    };
    let mut params = forwarded_params(&msg, &identity);
    if let Some(role) = &upstream_role {
        // A start-up setting: RESET ROLE and DISCARD ALL come back to it.
        params.push(("role".into(), role.clone()));
    }
    let login = target.login(password, params);
    let up = match upstream::connect(login).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(target = %target.cfg.name, error = %e, "upstream login failed");
            let target = target.cfg.name.clone();
            return Err(refuse(
                &mut stream,
                StartupRefusal::UpstreamLogin { target, error: e },
            )
            .await);
        }
    };
    let (held, cancel_signal) = tokio::sync::watch::channel(0u64);
    let held = Arc::new(held);
    let registration = gw.cancels.register(CancelTarget {
        host: target.cfg.host.clone(),
        port: target.cfg.port(),
        tls: target.tls.clone(),
        upstream_key: up.key,
        held: held.clone(),
    });
    // AuthenticationOk, the upstream's greeting with our cancel key before
    // its final ReadyForQuery (6 bytes).
    authentication::encode_ok(&mut out);
    if let Some(notice) = super::app_name::truncation_notice(info.application_name.as_deref()) {
        notice.encode(&mut out);
    }
    // The client reads back the application_name it asked for.
    let (app_name, greeting) = AppName::learn(&up.greeting, info.application_name.as_deref());
    let split = greeting.len().saturating_sub(6);
    out.extend_from_slice(&greeting[..split]);
    backend_key_data::encode(&mut out, registration.client_key());
    out.extend_from_slice(&greeting[split..]);
    send(&mut stream, &mut out).await?;
    Ok(Some(Ready {
        client: stream,
        upstream: up.stream,
        policy,
        info,
        registration,
        pending: inbuf,
        cancel_signal,
        held,
        upstream_role,
        app_name,
        client_encoding: up.client_encoding,
        server_converts: up.server_converts,
    }))
}

/// Start-up parameters passed upstream: everything the client set except
/// `user`, `database`, `replication` and protocol options, with
/// `application_name` naming the person behind the session.
pub fn forwarded_params(msg: &StartupMessage<'_>, identity: &Identity) -> Vec<(String, String)> {
    let read_only = identity.delegation.as_ref().is_some_and(|d| d.read_only);
    let mut out: Vec<(String, String)> = msg
        .params
        .iter()
        .filter(|(k, _)| {
            let ours = matches!(*k, "user" | "database" | "replication" | "application_name");
            // A read-only session starts read-only whatever the client asks.
            let read_only_setting = matches!(
                *k,
                "options" | "default_transaction_read_only" | "transaction_read_only"
            );
            let dropped = ours || k.starts_with("_pq_.") || (read_only && read_only_setting);
            !dropped
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if read_only {
        out.push(("default_transaction_read_only".into(), "on".into()));
    }
    let name = super::app_name::upstream_name(msg.param("application_name"), identity);
    out.push(("application_name".into(), name));
    out
}
