//! One client connection: TLS, then HTTP/1.1 or HTTP/2 (ALPN), and each
//! request's way to the API server.
//!
//! A request names its target by the first segment of its path
//! (`/prod/api/v1/pods` is `/api/v1/pods` on target `prod`) and carries a
//! bearer token. Admission is the shared one; the first admitted request
//! of an identity on a target opens a session, which lives as long as the
//! connection and holds every later request of that identity there as an
//! event (a client that multiplexes several identities or clusters over
//! one connection gets one session each). Each request's token is checked:
//! a token seen before on the connection again for expiry and revocation,
//! a new one in full. When a token of a session's delegation chain is
//! revoked, or the gateway shuts down, the connection is cut — a running
//! watch ends with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::judge;
use super::objects;
use super::record::SessionEvents;
use super::request::RequestInfo;
use super::status::{self, Reason};
use super::stream::{self, Relay};
use super::upstream::Body;
use super::websocket::{self, Upgrade};
use super::{KubeContext, KubeTarget};
use crate::config::Durability;
use crate::gateway::admission::{self, Refusal, RefusalKind};
use crate::gateway::cast::{self, Cast};
use crate::gateway::core::ActiveGuard;
use crate::gateway::lifecycle::{SessionLife, Stop, Traffic};
use crate::identity::Identity;
use crate::policy::{
    EndReason, HttpRequest, ObjectEdit, OutputWatch, QueryNote, SessionInfo, SessionPolicy,
};

/// The largest request body plugins judge (the API server's own limit is
/// 3 MiB); a larger write to a judged target is refused.
const MAX_JUDGED_BODY: usize = 4 << 20;

/// Sessions (identities × targets) one connection may carry.
const MAX_SESSIONS_PER_CONNECTION: usize = 16;

/// Tokens a connection remembers (a client refreshing its token often
/// sends a few); past this, they are forgotten and checked in full again.
const TOKENS_KEPT: usize = 8;

/// An open session: one identity on one target over this connection.
struct Session {
    info: SessionInfo,
    /// `None` once ended.
    ended: Mutex<Option<(SessionLife, Box<dyn SessionPolicy>)>>,
    events: Arc<SessionEvents>,
    traffic: Arc<Counters>,
    /// Requests judged so far (each one's number for the plugins).
    requests: AtomicU64,
    /// Waits for the session's stop (revocation, shutdown).
    watcher: tokio::task::JoinHandle<()>,
}

/// Bytes a session moved.
#[derive(Default)]
struct Counters {
    from_client: Arc<AtomicU64>,
    to_client: Arc<AtomicU64>,
}

/// The state of one connection, shared by its requests.
struct Connection {
    ctx: Arc<KubeContext>,
    peer: SocketAddr,
    /// Sessions by target and identity.
    sessions: tokio::sync::Mutex<HashMap<(String, String), Arc<Session>>>,
    /// Tokens admitted before on this connection: whom they name, and the
    /// session key of that identity ([`identity_key`], made once).
    tokens: Mutex<HashMap<String, (Identity, String)>>,
    /// Why the connection must be cut, once it must.
    stop: watch::Sender<Option<Stop>>,
    /// A request has arrived.
    asked: std::sync::atomic::AtomicBool,
    /// Streams (exec, attach) running: they outlive the
    /// HTTP connection they were upgraded from.
    streams: watch::Sender<usize>,
}

/// One running stream, counted in [`Connection::streams`] while it lives.
struct StreamGuard(watch::Sender<usize>);

impl StreamGuard {
    fn new(streams: &watch::Sender<usize>) -> Self {
        streams.send_modify(|n| *n += 1);
        Self(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What a request gets.
enum Answer {
    /// An HTTP response.
    Plain(Response<Body>),
    /// `101`: the stream to relay once the client's side is upgraded.
    Stream(Response<Body>, Box<Relay>),
}

/// An empty body.
pub(super) fn empty_body() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Serves one client connection until it ends or is cut.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<KubeContext>) {
    let _active = ActiveGuard::new(&ctx.core);
    let _ = tcp.set_nodelay(true);
    let (stop, mut stopped) = watch::channel(None);
    let conn = Arc::new(Connection {
        ctx: ctx.clone(),
        peer,
        sessions: Default::default(),
        tokens: Default::default(),
        stop,
        asked: Default::default(),
        streams: watch::channel(0).0,
    });
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.handle(request).await) }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.startup);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .max_concurrent_streams(250);
    // A connection that sends no request within the start-up time (after
    // TLS, hyper waits for the first bytes with no limit of its own) is
    // closed, so idle connections cannot hold every slot.
    {
        let (conn, startup) = (conn.clone(), ctx.startup);
        tokio::spawn(async move {
            tokio::time::sleep(startup * 2).await;
            if !conn.asked.load(Ordering::Relaxed) {
                let _ = conn.stop.send(Some(Stop::ShuttingDown));
            }
        });
    }
    let mut closing = ctx.core.closing.clone();
    let outcome = match &ctx.tls {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(ctx.startup, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "Kubernetes TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "Kubernetes TLS handshake timed out");
                    return;
                }
            };
            let serving = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                r = serving => r.err().map(|e| EndReason::Error(e.to_string())),
                s = stopped.wait_for(Option::is_some) => Some(stop_reason(s.ok().and_then(|s| s.clone()))),
                _ = closing.wait_for(|c| *c) => Some(stop_reason(Some(Stop::ShuttingDown))),
            }
        }
        None => {
            let serving = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::select! {
                r = serving => r.err().map(|e| EndReason::Error(e.to_string())),
                s = stopped.wait_for(Option::is_some) => Some(stop_reason(s.ok().and_then(|s| s.clone()))),
                _ = closing.wait_for(|c| *c) => Some(stop_reason(Some(Stop::ShuttingDown))),
            }
        }
    };
    // An exec or attach outlives the HTTP connection it was
    // upgraded from; it ends on its own or when the session is stopped.
    let _ = conn.streams.subscribe().wait_for(|n| *n == 0).await;
    let stopped_by = conn.stop.borrow().clone();
    let reason = outcome
        .or_else(|| stopped_by.map(|s| stop_reason(Some(s))))
        .unwrap_or(EndReason::ClientClosed);
    let sessions: Vec<Arc<Session>> = conn.sessions.lock().await.drain().map(|(_, s)| s).collect();
    for s in sessions {
        s.watcher.abort();
        let ended = s.ended.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((life, mut policy)) = ended {
            tracing::info!(session = s.info.session_id, %peer, target = %s.info.target, reason = %reason, "Kubernetes session ended");
            let traffic = Traffic {
                from_client: s.traffic.from_client.load(Ordering::Relaxed),
                to_client: s.traffic.to_client.load(Ordering::Relaxed),
            };
            life.end(&ctx.core, policy.as_mut(), &reason, traffic).await;
        }
    }
}

/// A session's end when the gateway cut it.
fn stop_reason(stop: Option<Stop>) -> EndReason {
    match stop {
        Some(Stop::Revoked(why)) => EndReason::Revoked(why),
        Some(Stop::ShuttingDown) | None => EndReason::Error("the gateway shut down".into()),
    }
}

/// A `Status` answer.
fn refusal(reason: Reason, message: &str, info: Option<&RequestInfo>) -> Response<Body> {
    let body = status::failure(
        reason,
        message,
        info.and_then(|i| i.resource.as_deref()),
        info.and_then(|i| i.name.as_deref()),
    );
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::from_u16(reason.code()).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether a request is kubectl's discovery (`/api`, `/apis` in the
/// aggregated format). client-go reads a refusal of these only as plain
/// text: as a `Status` it shows "unknown" instead of the message.
fn is_discovery(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("apidiscovery.k8s.io"))
}

/// A refusal of a discovery request, as text kubectl shows.
fn plain_refusal(reason: Reason, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(message.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::from_u16(reason.code()).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The `Status` for an admission refusal (plain text for discovery, see
/// [`is_discovery`]).
fn admission_refusal(r: &Refusal, discovery: bool) -> Response<Body> {
    let reason = match r.kind {
        RefusalKind::BadCredential => Reason::Unauthorized,
        RefusalKind::UnknownTarget => Reason::NotFound,
        RefusalKind::NotAuthorized | RefusalKind::PolicyRefused => Reason::Forbidden,
        RefusalKind::Unavailable => Reason::ServiceUnavailable,
    };
    let message = match &r.hint {
        Some(h) => format!("{} ({h})", r.message),
        None => r.message.clone(),
    };
    let message = format!("portcullis: {message}");
    if discovery {
        return plain_refusal(reason, &message);
    }
    refusal(reason, &message, None)
}

/// The target named by a path's first segment, and the rest of the path
/// (what the API server is asked for).
fn split_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// The bearer token of a request.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Which session an identity's requests belong to: the same person
/// through the same chain with the same groups.
fn identity_key(id: &Identity) -> String {
    serde_json::json!([
        id.issuer,
        id.subject,
        id.user,
        id.groups,
        id.actor_chain,
        id.delegation.as_ref().map(|d| d.jti.as_str()),
    ])
    .to_string()
}

impl Connection {
    /// Answers one request. An exec or attach asked for over WebSocket is
    /// answered inside the stream even when refused (see [`stream`]).
    async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<Body> {
        self.asked.store(true, Ordering::Relaxed);
        let upgrade = websocket::upgrade(request.headers());
        let client =
            matches!(upgrade, Upgrade::WebSocket(_)).then(|| hyper::upgrade::on(&mut request));
        let in_stream = match &upgrade {
            Upgrade::WebSocket(offer) if !request.uri().path().ends_with("/portforward") => {
                Some(offer.clone())
            }
            _ => None,
        };
        match self.clone().answer(request, &upgrade).await {
            Answer::Stream(response, relay) => match client {
                Some(client) => {
                    let guard = StreamGuard::new(&self.streams);
                    tokio::spawn(async move {
                        relay.run(client).await;
                        drop(guard);
                    });
                    response
                }
                None => refusal(Reason::BadRequest, "portcullis: not an upgrade", None),
            },
            Answer::Plain(response) => match (in_stream, client) {
                (Some(offer), Some(client))
                    if response.status() != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    stream::refuse_in_stream(
                        &offer,
                        response,
                        client,
                        StreamGuard::new(&self.streams),
                    )
                }
                _ => response,
            },
        }
    }

    /// The answer to one request (see [`Connection::handle`]).
    async fn answer(self: Arc<Self>, request: Request<Incoming>, upgrade: &Upgrade) -> Answer {
        let path = request.uri().path().to_string();
        let Some((target_name, rest)) = split_target(&path) else {
            return Answer::Plain(refusal(Reason::NotFound, "portcullis: no target in the path: the server in your kubeconfig must be https://GATEWAY:PORT/TARGET", None));
        };
        let (target_name, rest) = (target_name.to_string(), rest.to_string());
        let Some(target) = self.ctx.targets.get(&target_name) else {
            let message = format!("portcullis: there is no Kubernetes target {target_name:?} on this gateway: the server in your kubeconfig must be https://GATEWAY:PORT/TARGET (portcullis kube login writes it)");
            if is_discovery(&request) {
                return Answer::Plain(plain_refusal(Reason::NotFound, &message));
            }
            return Answer::Plain(refusal(Reason::NotFound, &message, None));
        };
        let Some(token) = bearer(&request) else {
            return Answer::Plain(refusal(Reason::Unauthorized, "portcullis: no bearer token: log in with `portcullis kube login`, or pass a token from your identity provider with --token", None));
        };
        let (identity, identity_key) = match self.identity(token).await {
            Ok(known) => known,
            Err(r) => return Answer::Plain(admission_refusal(&r, is_discovery(&request))),
        };
        let session = match self
            .session(&target_name, target, &identity, identity_key, &request)
            .await
        {
            Ok(s) => s,
            Err(r) => return Answer::Plain(admission_refusal(&r, is_discovery(&request))),
        };
        let upgrading = request.headers().contains_key(hyper::header::UPGRADE)
            || request.method() == hyper::Method::CONNECT;
        let info = match RequestInfo::read(
            request.method().as_str(),
            &rest,
            request.uri().query(),
            upgrading,
        ) {
            Ok(info) => info,
            Err(e) => {
                return Answer::Plain(refusal(
                    Reason::BadRequest,
                    &format!("portcullis: the request cannot be read unambiguously: {e}"),
                    None,
                ))
            }
        };
        let text = match request.uri().query() {
            Some(q) => format!("{} {rest}?{q}", request.method()),
            None => format!("{} {rest}", request.method()),
        };
        let mut started = session.events.start(&info, &text);
        // Before any plugin: a read-only token's write never opens an
        // approval request (nor uses a grant).
        if identity.delegation.as_ref().is_some_and(|d| d.read_only)
            && !reads_only(&info, request.method().as_str(), upgrading)
        {
            let why = "this delegated token is read-only: it may get, list and watch, and nothing that changes the cluster or runs a command (exec, attach, port-forward, proxy)";
            started.refused(Some("gateway"), why).await;
            return Answer::Plain(refusal(
                Reason::Forbidden,
                &format!("portcullis: {why}"),
                Some(&info),
            ));
        }
        // Before any plugin: streams the gateway cannot relay.
        let stream_protocols = match stream_offer(&info, request.method(), upgrade, upgrading) {
            Ok(p) => p,
            Err(why) => {
                started.refused(Some("gateway"), &why).await;
                return Answer::Plain(refusal(
                    Reason::BadRequest,
                    &format!("portcullis: {why}"),
                    Some(&info),
                ));
            }
        };
        let (parts, body) = request.into_parts();
        // A write's body is read whole when plugins judge the target.
        let judged = !target.cfg.plugins.is_empty();
        let reads_body = judged
            && !upgrading
            && matches!(
                info.verb.as_str(),
                "create" | "update" | "patch" | "delete" | "deletecollection"
            );
        let (body, held_body): (Body, Option<Bytes>) = if reads_body {
            match http_body_util::Limited::new(body, MAX_JUDGED_BODY)
                .collect()
                .await
            {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    let full = Full::new(bytes.clone())
                        .map_err(|never| match never {})
                        .boxed();
                    (full, Some(bytes))
                }
                Err(_) => {
                    let why = format!("the request's body could not be read whole (the gateway's plugins judge bodies of up to {} MiB)", MAX_JUDGED_BODY >> 20);
                    started.refused(Some("gateway"), &why).await;
                    return Answer::Plain(refusal(
                        Reason::RequestEntityTooLarge,
                        &format!("portcullis: {why}"),
                        Some(&info),
                    ));
                }
            }
        } else {
            (body.boxed(), None)
        };
        let headers = super::upstream::forwarded_headers(&parts.headers);
        let mut watch = OutputWatch::default();
        let mut request_id = 0;
        if judged {
            let asked = HttpRequest {
                id: session.requests.fetch_add(1, Ordering::Relaxed) + 1,
                method: parts.method.to_string(),
                path: info.path.clone(),
                query: parts.uri.query().map(str::to_string),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
                body: held_body.clone(),
                kube: Some(info.clone()),
            };
            let mut note = QueryNote::default();
            let verdict = {
                let mut ended = session.ended.lock().unwrap_or_else(|p| p.into_inner());
                judge::verdict(ended.as_mut().map(|(_, p)| p), &asked, &mut note)
            };
            // What an approver sees, and what a later request must match.
            let approval_text = approval_text(&text, &info, &parts.headers, held_body.as_ref());
            let who = judge::requester(
                session.info.session_id,
                &session.info.identity,
                &target_name,
            );
            let settled = judge::settle(
                &self.ctx.core.approvals,
                who,
                verdict.clone(),
                &approval_text,
                &mut note,
            )
            .await;
            started.judged(&verdict, &note);
            if let judge::Judged::Refused { message, .. } = settled {
                started.refused(None, &message).await;
                return Answer::Plain(refusal(Reason::Forbidden, &message, Some(&info)));
            }
            request_id = asked.id;
            watch = {
                let mut ended = session.ended.lock().unwrap_or_else(|p| p.into_inner());
                match ended.as_mut() {
                    Some((_, p)) => p.watch_response(&asked),
                    None => OutputWatch(vec![usize::MAX]),
                }
            };
            // An exec's output is not shown to plugins: one that asks to
            // see it (or cannot say) would have it pass unseen.
            if stream_protocols.is_some() && watch.any() {
                let why = "a plugin of this target watches this exec's output, which the gateway does not show to plugins yet";
                started.refused(Some("gateway"), why).await;
                return Answer::Plain(refusal(
                    Reason::Forbidden,
                    &format!("portcullis: {why}"),
                    Some(&info),
                ));
            }
        }
        let started = match started.commit().await {
            Ok(s) => s,
            Err(why) => {
                return Answer::Plain(refusal(
                    Reason::ServiceUnavailable,
                    &format!("portcullis: {why}"),
                    Some(&info),
                ))
            }
        };
        let uri = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.clone(),
        };
        if let Some(protocols) = stream_protocols {
            return self
                .open_stream(StreamAsked {
                    target,
                    session: &session,
                    identity: &identity,
                    info: &info,
                    uri: &uri,
                    headers,
                    offer: upgrade,
                    protocols,
                    started,
                })
                .await;
        }
        let mut upstream_request =
            Request::new(Counted::new(body, session.traffic.clone(), true).boxed());
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.headers_mut() = headers;
        if watch.any() {
            // Plain JSON objects plugins can read: no protobuf, no tables,
            // no compression.
            let h = upstream_request.headers_mut();
            h.insert(
                hyper::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            h.remove(hyper::header::ACCEPT_ENCODING);
        }
        let sent = self
            .send_upstream(
                target,
                &session,
                &identity,
                &info,
                &uri,
                upstream_request,
                started,
            )
            .await;
        match sent {
            Ok((response, started)) => {
                started
                    .answered(Some(response.status().as_u16()), None)
                    .await;
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = if watch.any() {
                    match watched_body(&session, watch, request_id, &info, &mut parts, body).await {
                        Ok(b) => b,
                        Err(why) => {
                            tracing::warn!(session = session.info.session_id, reason = %why, "response withheld");
                            return Answer::Plain(refusal(
                                Reason::Forbidden,
                                &format!("portcullis: the response was withheld: {why}"),
                                Some(&info),
                            ));
                        }
                    }
                } else {
                    body.boxed()
                };
                Answer::Plain(Response::from_parts(
                    parts,
                    Counted::new(body, session.traffic.clone(), false).boxed(),
                ))
            }
            Err(answer) => answer,
        }
    }

    /// Sends `request` to `uri` on `target`'s API server as `identity` —
    /// unless the path cannot be sent or the token was revoked while the
    /// request was judged or recorded. A failure finishes the event and is
    /// the client's answer.
    #[allow(clippy::too_many_arguments)]
    async fn send_upstream(
        &self,
        target: &KubeTarget,
        session: &Session,
        identity: &Identity,
        info: &RequestInfo,
        uri: &str,
        mut request: Request<Body>,
        started: super::record::Started,
    ) -> Result<(Response<Incoming>, super::record::Started), Answer> {
        match uri.parse() {
            Ok(u) => *request.uri_mut() = u,
            Err(_) => {
                started
                    .answered(None, Some("the path cannot be sent".into()))
                    .await;
                return Err(Answer::Plain(refusal(
                    Reason::BadRequest,
                    "portcullis: the path cannot be sent on",
                    Some(info),
                )));
            }
        }
        if let Err(r) = admission::still_valid(identity, &self.ctx.core.revocations, None) {
            started.answered(None, Some(r.message.clone())).await;
            return Err(Answer::Plain(admission_refusal(&r, false)));
        }
        match target
            .upstream
            .send(request, identity, session.info.session_id)
            .await
        {
            Ok(response) => Ok((response, started)),
            Err(e) => {
                tracing::warn!(target = %session.info.target, error = %e, "Kubernetes request failed upstream");
                let message = e.to_string();
                started.answered(None, Some(message.clone())).await;
                Err(Answer::Plain(refusal(
                    Reason::ServiceUnavailable,
                    &format!("portcullis: {message}; try again, and tell the gateway operator if it persists"),
                    Some(info),
                )))
            }
        }
    }

    /// Opens a judged, recorded stream: the gateway's own WebSocket
    /// upgrade to the API server, checked, then the relay to run once the
    /// client's side is upgraded too. An answer other than `101` is passed
    /// back (and told inside the stream, see [`Connection::handle`]).
    async fn open_stream(&self, asked: StreamAsked<'_>) -> Answer {
        let StreamAsked {
            target,
            session,
            identity,
            info,
            uri,
            mut headers,
            offer,
            protocols,
            started,
        } = asked;
        let Upgrade::WebSocket(offer) = offer else {
            started
                .answered(None, Some("not a WebSocket upgrade".into()))
                .await;
            return Answer::Plain(refusal(
                Reason::BadRequest,
                "portcullis: only WebSocket streams are relayed",
                Some(info),
            ));
        };
        let key = websocket::new_key();
        // The upgrade request has no body (a proxy in front of the API
        // server that honoured a length would take frames for a body).
        for name in [
            hyper::header::SEC_WEBSOCKET_EXTENSIONS,
            hyper::header::SEC_WEBSOCKET_ACCEPT,
            hyper::header::CONTENT_LENGTH,
            hyper::header::CONTENT_TYPE,
            hyper::header::EXPECT,
        ] {
            headers.remove(name);
        }
        websocket::request_headers(&mut headers, &key, &protocols);
        let mut upstream_request = Request::new(empty_body());
        *upstream_request.headers_mut() = headers;
        let (response, started) = match self
            .send_upstream(
                target,
                session,
                identity,
                info,
                uri,
                upstream_request,
                started,
            )
            .await
        {
            Ok(sent) => sent,
            Err(answer) => return answer,
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            started
                .answered(Some(response.status().as_u16()), None)
                .await;
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Answer::Plain(Response::from_parts(parts, body.boxed()));
        }
        let chosen = match websocket::check_answer(response.headers(), &key, &protocols) {
            Ok(p) => p,
            Err(why) => {
                started.answered(Some(101), Some(why.clone())).await;
                return Answer::Plain(refusal(
                    Reason::ServiceUnavailable,
                    &format!("portcullis: {why}"),
                    Some(info),
                ));
            }
        };
        let upstream = match hyper::upgrade::on(response).await {
            Ok(u) => u,
            Err(e) => {
                let why = format!("the API server's stream could not be opened: {e}");
                started.answered(Some(101), Some(why.clone())).await;
                return Answer::Plain(refusal(
                    Reason::ServiceUnavailable,
                    &format!("portcullis: {why}"),
                    Some(info),
                ));
            }
        };
        let terminal = websocket::CHANNEL_PROTOCOLS.contains(&chosen.as_str())
            && matches!(info.subresource.as_deref(), Some("exec" | "attach"));
        let limit = target.cfg.recording_limit_mib.saturating_mul(1 << 20);
        let cast = (terminal && limit > 0).then(|| {
            let command = info
                .exec
                .as_ref()
                .map(|e| e.command.join(" "))
                .filter(|c| !c.is_empty());
            let title = format!(
                "{} {}/{}{}",
                info.subresource.as_deref().unwrap_or("exec"),
                info.namespace.as_deref().unwrap_or(""),
                info.name.as_deref().unwrap_or(""),
                command
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default(),
            );
            let header = cast::Header {
                width: 80,
                height: 24,
                term: None,
                timestamp: crate::store::now_micros() / 1_000_000,
                command: command.as_deref(),
                title: &title,
            };
            Cast::start(session.info.session_id, started.seq(), &header, limit)
        });
        let response = websocket::switching(offer, &chosen)
            .body(empty_body())
            .unwrap_or_else(|_| Response::new(empty_body()));
        let relay = Relay {
            protocol: chosen,
            terminal,
            started,
            cast,
            events: session.events.clone(),
            traffic: stream::Traffic {
                from_client: session.traffic.from_client.clone(),
                to_client: session.traffic.to_client.clone(),
            },
            stop: self.stop.subscribe(),
            expires_at: identity.expires_at,
            upstream,
        };
        Answer::Stream(response, Box::new(relay))
    }

    /// Whom `token` names, and that identity's session key: checked in
    /// full the first time on this connection, for expiry and revocation
    /// after that.
    async fn identity(&self, token: &str) -> Result<(Identity, String), Refusal> {
        let core = &self.ctx.core;
        let known = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        if let Some(known) = known {
            admission::still_valid(&known.0, &core.revocations, None)?;
            return Ok(known);
        }
        let id = admission::authenticate(
            &core.authenticator,
            &core.revocations,
            token,
            None,
            self.peer,
        )
        .await?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= TOKENS_KEPT {
            tokens.clear();
        }
        let known = (id.clone(), identity_key(&id));
        tokens.insert(token.to_string(), known.clone());
        Ok(known)
    }

    /// The session of `identity` on `target`: the open one, or a new one
    /// once admission lets it in.
    async fn session(
        &self,
        target_name: &str,
        target: &KubeTarget,
        identity: &Identity,
        identity_key: String,
        request: &Request<Incoming>,
    ) -> Result<Arc<Session>, Refusal> {
        let key = (target_name.to_string(), identity_key);
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&key) {
            return Ok(s.clone());
        }
        let core = &self.ctx.core;
        admission::admit_to(identity, target_name, Some(target), |t| &t.cfg)?;
        if let Some(name) = super::upstream::reserved_name(identity) {
            return Err(Refusal {
                kind: RefusalKind::NotAuthorized,
                message: format!("{name} of your token is reserved by Kubernetes (system:), and the gateway never impersonates it"),
                hint: Some("ask your identity provider's administrator to rename it".into()),
            });
        }
        if sessions.len() >= MAX_SESSIONS_PER_CONNECTION {
            return Err(Refusal {
                kind: RefusalKind::NotAuthorized,
                message: format!("this connection already carries {MAX_SESSIONS_PER_CONNECTION} sessions (identities and targets)"),
                hint: Some("open a new connection".into()),
            });
        }
        let user_agent = request
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        let (info, policy) = admission::open_session(
            &core.audit,
            &target.cfg,
            &target.policy.current(),
            identity,
            self.peer,
            user_agent.as_deref(),
        )
        .await?;
        tracing::info!(session = info.session_id, peer = %self.peer, user = %identity.chain_text(), target = %target_name, "Kubernetes session started");
        let life = SessionLife::begin(core, &info);
        let stopped = life.stopped();
        let stop = self.stop.clone();
        // The session also ends when the token that opened it expires, so
        // a stream (a watch, `logs -f`) does not outlive it.
        let expires_in = std::time::Duration::from_secs(
            identity
                .expires_at
                .saturating_sub(crate::store::now_micros() as u64 / 1_000_000),
        );
        let watcher = tokio::spawn(async move {
            let why = tokio::select! {
                why = stopped => why,
                _ = tokio::time::sleep(expires_in) => Stop::Revoked("the token that opened the session expired".into()),
            };
            let _ = stop.send(Some(why));
        });
        let session = Arc::new(Session {
            events: SessionEvents::new(
                core.audit.clone(),
                info.session_id,
                target.cfg.durability == Durability::Strict,
            ),
            info,
            ended: Mutex::new(Some((life, policy))),
            traffic: Default::default(),
            requests: AtomicU64::new(0),
            watcher,
        });
        sessions.insert(key, session.clone());
        Ok(session)
    }
}

/// A judged request that opens a stream (see [`Connection::open_stream`]).
struct StreamAsked<'a> {
    target: &'a KubeTarget,
    session: &'a Arc<Session>,
    identity: &'a Identity,
    info: &'a RequestInfo,
    /// The API server's path and query.
    uri: &'a str,
    /// The client's headers that go on.
    headers: hyper::HeaderMap,
    offer: &'a Upgrade,
    /// The subprotocols to offer the API server.
    protocols: Vec<String>,
    started: super::record::Started,
}

/// The subprotocols to offer the API server when a request opens a
/// stream (`None`: it does not), or why the stream cannot be relayed:
/// exec and attach over the WebSocket channel protocols; not yet
/// port-forward; never SPDY, nor an upgrade of anything else.
fn stream_offer(
    info: &RequestInfo,
    method: &hyper::Method,
    upgrade: &Upgrade,
    upgrading: bool,
) -> Result<Option<Vec<String>>, String> {
    if !upgrading {
        return Ok(None);
    }
    let sub = info.subresource.as_deref().filter(|_| info.is_resource);
    // Relaying it would be a byte pipe, but no client here speaks it to
    // test (kubectl tunnels SPDY inside the WebSocket); refused whichever
    // way kubectl asks, so its fallback does not blame SPDY.
    if sub == Some("portforward") {
        return Err("port-forward is not relayed by this gateway yet".into());
    }
    let offer = match upgrade {
        Upgrade::WebSocket(offer) => offer,
        Upgrade::Other(p) if p.to_ascii_lowercase().starts_with("spdy") => {
            return Err(SPDY_REFUSED.into())
        }
        Upgrade::Other(p) => {
            return Err(format!(
            "the upgrade to {p:?} is not relayed: exec and attach are relayed over WebSocket only"
        ))
        }
        Upgrade::BadWebSocket(why) => {
            return Err(format!("the WebSocket request cannot be relayed: {why}"))
        }
        Upgrade::None => return Err(
            "CONNECT is not relayed: exec and attach are relayed over WebSocket (HTTP/1.1) only"
                .into(),
        ),
    };
    if method != hyper::Method::GET {
        return Err("a WebSocket stream is opened with GET".into());
    }
    let relayed: &[&str] = match sub {
        Some("exec" | "attach") => websocket::CHANNEL_PROTOCOLS,
        _ => return Err("only exec and attach are relayed as streams".into()),
    };
    let protocols: Vec<String> = offer
        .protocols
        .iter()
        .filter(|p| relayed.contains(&p.as_str()))
        .cloned()
        .collect();
    if protocols.is_empty() {
        return Err(format!(
            "offer one of the subprotocols {} (kubectl 1.30 and later do)",
            relayed.join(", ")
        ));
    }
    Ok(Some(protocols))
}

/// Why a SPDY stream is refused, and what to do.
const SPDY_REFUSED: &str = "exec and attach are relayed over WebSocket only, not SPDY: use kubectl 1.30 or later and leave KUBECTL_REMOTE_COMMAND_WEBSOCKETS unset or true";

/// What an approver sees of a request, and what a later request must
/// match to run under the approval: the request line, the body's content
/// type, and the body — its SHA-256 instead when it is not text or when
/// it is about Secrets (approvers must not read their values).
fn approval_text(
    line: &str,
    info: &RequestInfo,
    headers: &hyper::HeaderMap,
    body: Option<&Bytes>,
) -> String {
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return line.to_string();
    };
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let secret = info.api_group.is_empty() && info.resource.as_deref() == Some("secrets");
    let shown = match std::str::from_utf8(body) {
        Ok(text) if !secret => text.to_string(),
        _ => {
            let digest = ring::digest::digest(&ring::digest::SHA256, body);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("[{} bytes, sha256 {hex}; not shown]", body.len())
        }
    };
    format!("{line}\nContent-Type: {content_type}\n\n{shown}")
}

/// Whether a request only reads: `get`, `list` or `watch` of a resource
/// other than a subresource that reaches into a container or node
/// (`exec`, `attach`, `portforward`, `proxy`), or a `GET`/`HEAD` of a path
/// that names no resource — never an upgrade.
fn reads_only(info: &RequestInfo, method: &str, upgrade: bool) -> bool {
    if upgrade {
        return false;
    }
    if !info.is_resource {
        return matches!(method, "GET" | "HEAD");
    }
    matches!(info.verb.as_str(), "get" | "list" | "watch")
        && !matches!(
            info.subresource.as_deref(),
            Some("exec" | "attach" | "portforward" | "proxy")
        )
}

/// The body of a response plugins watch: each object shown to them (a
/// watch as its events arrive, anything else read whole); `Err` says why
/// it is withheld.
async fn watched_body(
    session: &Arc<Session>,
    watch: OutputWatch,
    request_id: u64,
    info: &RequestInfo,
    parts: &mut hyper::http::response::Parts,
    body: Incoming,
) -> Result<Body, String> {
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    if header(hyper::header::CONTENT_ENCODING).is_some_and(|e| e != "identity") {
        return Err("the API server compressed it".into());
    }
    let json =
        header(hyper::header::CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return Err(
            "the API server did not answer with JSON, so the plugins that watch it cannot read it"
                .into(),
        );
    }
    let edit: objects::Editor = {
        let session = session.clone();
        Arc::new(move |object: &str| {
            let mut ended = session.ended.lock().unwrap_or_else(|p| p.into_inner());
            match ended.as_mut() {
                Some((_, p)) => p.on_kube_object(&watch, request_id, object),
                None => ObjectEdit::Withheld("the session has ended".into()),
            }
        })
    };
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    if info.verb == "watch" {
        return Ok(objects::WatchedStream::new(body.boxed(), edit).boxed());
    }
    let bytes = http_body_util::Limited::new(body, objects::MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| {
            format!(
                "it could not be read whole ({e}; at most {} MiB)",
                objects::MAX_DOCUMENT >> 20
            )
        })?
        .to_bytes();
    let edited = objects::edit_document(&bytes, &edit)?;
    Ok(Full::new(Bytes::from(edited))
        .map_err(|never| match never {})
        .boxed())
}

/// Removes the headers that name the API server's connection to the
/// gateway rather than the response.
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "trailer",
    ] {
        headers.remove(name);
    }
}

/// A body whose bytes are counted for the session's traffic.
struct Counted {
    inner: Body,
    counters: Arc<Counters>,
    from_client: bool,
}

impl Counted {
    fn new(inner: Body, counters: Arc<Counters>, from_client: bool) -> Self {
        Self {
            inner,
            counters,
            from_client,
        }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let counter = if self.from_client {
                    &self.counters.from_client
                } else {
                    &self.counters.to_client
                };
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
