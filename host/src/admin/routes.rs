//! The admin API's endpoints, one function each, and the router. The
//! `#[utoipa::path]` attributes are the source of `docs/openapi.json`.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::auth::{authorize, Caller, Role};
use super::http::{error, full, json, json_status, reply, Body, ChannelBody, RequestBody};
use super::AdminState;
use crate::store::{EventRecord, SessionQuery, SessionRecord};

/// Routes one request.
pub async fn handle(req: Request<RequestBody>, state: &AdminState) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    // Segments are matched decoded: a client may percent-encode any byte.
    let decoded: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let query = parse_query(req.uri().query());
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().clone();
    let needed = match (&method, segments.as_slice()) {
        (_, ["healthz"] | ["readyz"] | ["metrics"] | ["openapi.json"]) => None,
        // The subject token is the credential of a token exchange, and the
        // bearer token the credential of an SSH login.
        (_, ["oauth", "token"] | [".well-known", "jwks.json"]) => None,
        (_, ["v1", "ssh", "certificates"]) => None,
        // What was typed and printed (passwords at prompts included).
        (&Method::GET, ["v1", "sessions", _, "recordings", ..]) => Some(Role::Admin),
        (&Method::GET, ["v1", "sessions", ..]) => Some(Role::Approver),
        (_, ["v1", "approvals", ..]) => Some(Role::Approver),
        _ => Some(Role::Admin),
    };
    let caller = match needed {
        Some(needed) => match authorize(auth.as_deref(), state, &method, needed).await {
            Ok(c) => Some(c),
            Err((status, message)) => return error(status, message),
        },
        None => None,
    };
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => healthz(),
        (&Method::GET, ["readyz"]) => readyz(state).await,
        (&Method::GET, ["metrics"]) => metrics(state).await,
        (&Method::GET, ["openapi.json"]) => reply(
            StatusCode::OK,
            "application/json",
            full(super::openapi::document()),
        ),
        (&Method::GET, ["v1", "sessions"]) => list_sessions(state, caller.as_ref(), &query).await,
        (&Method::GET, ["v1", "sessions", id]) => show_session(state, caller.as_ref(), id).await,
        (&Method::GET, ["v1", "sessions", id, "recordings", seq]) => {
            show_recording(state, caller.as_ref(), id, seq).await
        }
        (&Method::GET, ["v1", "audit", "export"]) => export_audit(state, &query),
        (&Method::GET, ["v1", "plugins"]) => list_plugins(state),
        (&Method::POST, ["oauth", "token"]) => token_exchange(state, req).await,
        (&Method::POST, ["v1", "ssh", "certificates"]) => {
            ssh_certificate(state, auth.as_deref(), req).await
        }
        (&Method::GET, [".well-known", "jwks.json"]) => match &state.gw.delegation {
            Some(d) => json(&d.jwks()),
            None => error(
                StatusCode::NOT_FOUND,
                "this gateway does not issue tokens ([delegation] is not configured)",
            ),
        },
        (&Method::POST, ["v1", "tokens", jti, "revoke"]) => {
            let by = caller.as_ref().map(|c| c.name()).unwrap_or_default();
            revoke_token(state, jti, &by).await
        }
        (&Method::GET, ["v1", "approvals"]) => list_approvals(state, caller.as_ref(), &query).await,
        (&Method::GET, ["v1", "approvals", id]) => show_approval(state, caller.as_ref(), id).await,
        (&Method::POST, ["v1", "approvals", id, verb @ ("approve" | "deny")]) => {
            let id = id.to_string();
            let approve = *verb == "approve";
            match read_decision(req).await {
                Ok(comment) => decide(state, caller.as_ref(), &id, approve, comment).await,
                Err(r) => r,
            }
        }
        (&Method::POST, ["v1", "plugins", "reload"]) => {
            // The body is not used; read it (bounded) so the connection
            // stays usable.
            match super::http::read_body(req.into_body()).await {
                Ok(_) => reload_plugins(state).await,
                Err(r) => r,
            }
        }
        (_, ["healthz"] | ["readyz"] | ["metrics"] | ["openapi.json"])
        | (_, ["v1", "sessions", ..])
        | (_, ["v1", "audit", "export"])
        | (_, ["v1", "plugins", ..])
        | (_, ["v1", "approvals", ..])
        | (_, ["v1", "tokens", ..])
        | (_, ["oauth", "token"])
        | (_, ["v1", "ssh", ..])
        | (_, [".well-known", "jwks.json"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (see /openapi.json)"),
        ),
    }
}

/// Whether `caller` may see records of `target` (no caller: an open endpoint).
fn visible(caller: Option<&Caller>, target: &str) -> bool {
    caller.is_none_or(|c| c.may_see(target))
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The gateway is alive", body = String, content_type = "text/plain")))]
pub fn healthz() -> Response<Body> {
    reply(StatusCode::OK, "text/plain", full("ok\n"))
}

/// What `/readyz` checked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Identity providers whose signing keys are not fetched yet.
    pub providers_without_keys: Vec<String>,
    /// Plugins loaded.
    pub plugins_loaded: usize,
    /// Whether the audit store accepts writes.
    pub store_writable: bool,
    /// Why the store is not writable, if it is not.
    pub store_error: Option<String>,
}

/// Readiness: signing keys fetched, plugins loaded, audit store writable.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready to serve", body = Readiness),
               (status = 503, description = "Not ready; the body says why", body = Readiness)))]
pub async fn readyz(state: &AdminState) -> Response<Body> {
    let without_keys = state.gw.authenticator.providers_without_keys();
    let store = state.gw.audit.store().clone();
    let checked = tokio::task::spawn_blocking(move || store.check_writable())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let store_error = checked.err();
    let r = Readiness {
        ready: without_keys.is_empty() && store_error.is_none(),
        providers_without_keys: without_keys,
        plugins_loaded: state.plugins.list().len(),
        store_writable: store_error.is_none(),
        store_error,
    };
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_status(status, &r)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(state: &AdminState) -> Response<Body> {
    let pending = state.gw.approvals.pending_count().await;
    crate::metrics::global()
        .approvals_pending
        .store(pending as i64, std::sync::atomic::Ordering::Relaxed);
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        full(crate::metrics::global().render()),
    )
}

fn store_failure(e: impl std::fmt::Display) -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the audit store could not answer: {e}"),
    )
}

/// Sessions, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(("user" = Option<String>, Query, description = "Only this user's sessions"),
           ("target" = Option<String>, Query, description = "Only sessions on this target"),
           ("active" = Option<bool>, Query, description = "Only sessions still open"),
           ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 10000)")),
    responses((status = 200, description = "Sessions", body = [SessionRecord]),
              (status = 400, description = "Bad parameter", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin or approver", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sessions(
    state: &AdminState,
    caller: Option<&Caller>,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a number from 1 to 10000",
            )
        }
    };
    let active_only = match q.get("active").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("active must be true or false, not {other:?}"),
            )
        }
    };
    let query = SessionQuery {
        user: q.get("user").cloned(),
        target: q.get("target").cloned(),
        active_only,
        limit,
    };
    let store = state.gw.audit.store().clone();
    match tokio::task::spawn_blocking(move || store.sessions(&query)).await {
        Ok(Ok(mut sessions)) => {
            sessions.retain(|s| visible(caller, &s.target));
            json(&sessions)
        }
        Ok(Err(e)) => store_failure(e),
        Err(e) => store_failure(e),
    }
}

/// A session and its recorded statements.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionDetail {
    /// The session.
    pub session: SessionRecord,
    /// Its statement events, in order.
    pub events: Vec<EventRecord>,
}

/// One session with its statement events.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "Session id")),
    responses((status = 200, description = "The session and its events", body = SessionDetail),
              (status = 400, description = "Not a session id", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin or approver", body = super::http::ErrorBody),
              (status = 404, description = "No such session", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_session(state: &AdminState, caller: Option<&Caller>, id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a session id (a positive number)"),
        );
    };
    let store = state.gw.audit.store().clone();
    let found = tokio::task::spawn_blocking(move || {
        let session = store.session(id)?;
        Ok::<_, crate::store::StoreError>(match session {
            Some(session) => Some(SessionDetail {
                events: store.events(id)?,
                session,
            }),
            None => None,
        })
    })
    .await;
    match found {
        Ok(Ok(Some(detail))) if visible(caller, &detail.session.target) => json(&detail),
        Ok(Ok(_)) => error(StatusCode::NOT_FOUND, format!("no session {id}")),
        Ok(Err(e)) => store_failure(e),
        Err(e) => store_failure(e),
    }
}

/// The terminal recording (asciicast v2) of one command of a session: an
/// SSH exec or shell, or a Kubernetes exec or attach, by its event's `seq`.
#[utoipa::path(get, path = "/v1/sessions/{id}/recordings/{seq}", tag = "sessions",
    params(("id" = u64, Path, description = "Session id"),
           ("seq" = u64, Path, description = "The command's event number in the session")),
    responses((status = 200, description = "The recording: a header line, then one event per line", body = String, content_type = "application/x-asciicast"),
              (status = 400, description = "Not a session id or event number", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin or approver", body = super::http::ErrorBody),
              (status = 404, description = "No such session, or no recording of that event", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_recording(
    state: &AdminState,
    caller: Option<&Caller>,
    id: &str,
    seq: &str,
) -> Response<Body> {
    let (Ok(id), Ok(seq)) = (id.parse::<u64>(), seq.parse::<u64>()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?}/{seq:?}: a session id and an event number are positive numbers"),
        );
    };
    let store = state.gw.audit.store().clone();
    let may_see = |target: &str| visible(caller, target);
    let session = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.session(id)).await
    };
    let target = match session {
        Ok(Ok(Some(s))) if may_see(&s.target) => s.target,
        Ok(Ok(_)) => return error(StatusCode::NOT_FOUND, format!("no session {id}")),
        Ok(Err(e)) => return store_failure(e),
        Err(e) => return store_failure(e),
    };
    let found = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>(Some((target, store.recording(id, seq)?)))
    })
    .await;
    match found {
        Ok(Ok(Some((target, Some(cast))))) if visible(caller, &target) => reply(
            StatusCode::OK,
            "application/x-asciicast",
            full(cast),
        ),
        Ok(Ok(Some((target, None)))) if visible(caller, &target) => error(
            StatusCode::NOT_FOUND,
            format!("session {id} has no recording of event {seq} (only SSH exec and shell channels and Kubernetes exec and attach streams are recorded)"),
        ),
        Ok(Ok(_)) => error(StatusCode::NOT_FOUND, format!("no session {id}")),
        Ok(Err(e)) => store_failure(e),
        Err(e) => store_failure(e),
    }
}

/// An exported event: the record, and its command's terminal recording
/// when one was kept.
#[derive(Serialize)]
struct ExportedEvent {
    #[serde(flatten)]
    event: crate::store::EventRecord,
    /// The asciicast v2 recording of an SSH exec or shell, or of a
    /// Kubernetes exec or attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    recording: Option<String>,
}

/// Statement events in a time range as JSON lines, streamed.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    params(("since" = Option<String>, Query, description = "From this time, inclusive (RFC 3339 such as 2026-11-30T00:00:00Z, or a date); default: the beginning"),
           ("until" = Option<String>, Query, description = "Up to this time, exclusive; default: now")),
    responses((status = 200, description = "One EventRecord per line; an SSH exec or shell, or a Kubernetes exec or attach, carries its terminal recording (asciicast v2) as `recording`", body = String, content_type = "application/x-ndjson"),
              (status = 400, description = "Bad time", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub fn export_audit(state: &AdminState, q: &HashMap<String, String>) -> Response<Body> {
    let time = |key: &str, default: i64| {
        match q.get(key) {
        None => Ok(default),
        Some(t) => crate::store::parse_time(t).ok_or_else(|| {
            format!("{key} must be a time such as 2026-11-30T12:00:00Z or a date such as 2026-11-30, not {t:?}")
        }),
    }
    };
    let range =
        time("since", 0).and_then(|s| Ok((s, time("until", crate::store::now_micros() + 1)?)));
    let (since, until) = match range {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let store = state.gw.audit.store().clone();
    tokio::task::spawn_blocking(move || {
        let recordings = store.clone();
        let result = store.export_events(since, until, &mut |event| {
            // SSH commands, and Kubernetes exec and attach (requests
            // whose kind is `create` on a stream subresource).
            let recorded = match event.action {
                crate::store::Action::Command => true,
                crate::store::Action::Request => {
                    &*event.protocol == "create"
                        && (event.sql.contains("/exec") || event.sql.contains("/attach"))
                }
                _ => false,
            };
            let recording = match recorded {
                true => recordings.recording(event.session_id, event.seq)?,
                false => None,
            };
            let e = ExportedEvent { event, recording };
            let mut line = serde_json::to_vec(&e)
                .map_err(|e| crate::store::StoreError::Database(e.to_string()))?;
            line.push(b'\n');
            tx.blocking_send(Bytes::from(line))
                .map_err(|_| crate::store::StoreError::Database("client went away".into()))
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "audit export ended early");
        }
    });
    reply(
        StatusCode::OK,
        "application/x-ndjson",
        BodyExt::boxed(ChannelBody(rx)),
    )
}

/// What a reload did.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Plugins loaded.
    pub loaded: usize,
    /// The plugins now serving new sessions.
    pub plugins: Vec<crate::server::PluginInfo>,
}

/// The loaded plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Plugins serving new sessions", body = [crate::server::PluginInfo]),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub fn list_plugins(state: &AdminState) -> Response<Body> {
    json(&state.plugins.list())
}

/// Reloads plugins from the configuration file, like SIGHUP.
#[utoipa::path(post, path = "/v1/plugins/reload", tag = "plugins",
    responses((status = 200, description = "Reloaded", body = Reloaded),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin", body = super::http::ErrorBody),
              (status = 409, description = "Refused; the previous plugins keep serving", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn reload_plugins(state: &AdminState) -> Response<Body> {
    let plugins = state.plugins.clone();
    match tokio::task::spawn_blocking(move || plugins.reload_from_file()).await {
        Ok(Ok(loaded)) => {
            tracing::info!(
                plugins = loaded,
                trigger = "admin API",
                "plugins reloaded; new sessions use them"
            );
            json(&Reloaded {
                loaded,
                plugins: state.plugins.list(),
            })
        }
        Ok(Err(e)) => error(
            StatusCode::CONFLICT,
            format!("reload refused; the previous plugins keep serving: {e}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Approval requests, newest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    params(("status" = Option<String>, Query, description = "Only requests with this status: pending, approved, denied, expired, cancelled"),
           ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 10000)")),
    responses((status = 200, description = "Approval requests", body = [crate::store::ApprovalRecord]),
              (status = 400, description = "Bad parameter", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an approver or admin", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_approvals(
    state: &AdminState,
    caller: Option<&Caller>,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let status = match q
        .get("status")
        .map(|s| crate::store::ApprovalStatus::parse(s))
    {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "status must be one of pending, approved, denied, expired, cancelled",
            )
        }
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a number from 1 to 10000",
            )
        }
    };
    match state.gw.approvals.list(status, limit).await {
        Ok(mut list) => {
            list.retain(|a| visible(caller, &a.target));
            json(&list)
        }
        Err(e) => store_failure(e),
    }
}

/// One approval request.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "Request id (apr_...)")),
    responses((status = 200, description = "The request", body = crate::store::ApprovalRecord),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an approver or admin", body = super::http::ErrorBody),
              (status = 404, description = "No such request", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_approval(
    state: &AdminState,
    caller: Option<&Caller>,
    id: &str,
) -> Response<Body> {
    match state.gw.approvals.get(id).await {
        Ok(Some(a)) if visible(caller, &a.target) => json(&a),
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no approval request {id}")),
        Err(e) => store_failure(e),
    }
}

/// The body of an approve or deny call (optional).
#[derive(Debug, Default, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why, in the approver's words (kept with the decision).
    pub comment: Option<String>,
}

/// Longest decision body accepted.
const MAX_DECISION_BODY: usize = 64 * 1024;

/// Reads an optional JSON `Decision`; a malformed body is a 400.
async fn read_decision(req: Request<RequestBody>) -> Result<Option<String>, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_DECISION_BODY);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 64 KiB",
            ))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Decision>(&bytes) {
        Ok(d) => Ok(d.comment),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {{\"comment\": \"why\"}}: {e}"),
        )),
    }
}

/// Approves a request.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "Request id (apr_...)")),
    request_body(content = Decision, description = "Optional comment", content_type = "application/json"),
    responses((status = 200, description = "The request after this decision", body = crate::store::ApprovalRecord),
              (status = 400, description = "Malformed body", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an approver, own request, or in the requester's actor chain", body = super::http::ErrorBody),
              (status = 404, description = "No such request", body = super::http::ErrorBody),
              (status = 409, description = "Not pending, or already decided by this approver", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub fn approve_doc() {}

/// Denies a request.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "Request id (apr_...)")),
    request_body(content = Decision, description = "Optional comment", content_type = "application/json"),
    responses((status = 200, description = "The request after this decision", body = crate::store::ApprovalRecord),
              (status = 400, description = "Malformed body", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an approver, own request, or in the requester's actor chain", body = super::http::ErrorBody),
              (status = 404, description = "No such request", body = super::http::ErrorBody),
              (status = 409, description = "Not pending, or already decided by this approver", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub fn deny_doc() {}

async fn decide(
    state: &AdminState,
    caller: Option<&super::auth::Caller>,
    id: &str,
    approve: bool,
    comment: Option<String>,
) -> Response<Body> {
    let Some(identity) = caller.and_then(|c| c.identity.as_ref()) else {
        return error(
            StatusCode::FORBIDDEN,
            "decisions need an approver's own token (the static admin token is nobody's)",
        );
    };
    // A token narrowed to other targets does not learn that the request exists.
    match state.gw.approvals.get(id).await {
        Ok(Some(a)) if visible(caller, &a.target) => {}
        Ok(_) => return error(StatusCode::NOT_FOUND, format!("no approval request {id}")),
        Err(e) => return store_failure(e),
    }
    match state
        .gw
        .approvals
        .decide(id, identity, approve, comment)
        .await
    {
        Ok(a) => json(&a),
        Err(e) => error(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        ),
    }
}

/// Token exchange (RFC 8693): a narrower, shorter-lived token for a child agent.
#[utoipa::path(post, path = "/oauth/token", tag = "delegation",
    request_body(content = String, description = "Form fields: grant_type=urn:ietf:params:oauth:grant-type:token-exchange, subject_token, optional actor_token, and the narrowing: target (repeatable), read_only, group (repeatable), expires_in, actor", content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The child token: access_token, issued_token_type, token_type, expires_in", body = Object),
              (status = 400, description = "OAuth error: {\"error\": \"invalid_request\" | \"invalid_grant\" | \"invalid_target\" | \"invalid_scope\" | \"unsupported_grant_type\", \"error_description\": \"...\"}", body = Object),
              (status = 404, description = "The gateway does not issue tokens", body = super::http::ErrorBody)))]
pub async fn token_exchange(state: &AdminState, req: Request<RequestBody>) -> Response<Body> {
    let Some(issuer) = &state.gw.delegation else {
        return error(
            StatusCode::NOT_FOUND,
            "this gateway does not issue tokens ([delegation] is not configured)",
        );
    };
    let limited = http_body_util::Limited::new(req.into_body(), 256 * 1024);
    let body = match limited.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => return oauth_error("invalid_request", "the request body is larger than 256 KiB"),
    };
    match crate::delegation::exchange::exchange(
        &body,
        &state.gw.authenticator,
        issuer,
        &state.gw.targets,
        &state.gw.revocations,
    )
    .await
    {
        Ok(v) => json(&v),
        Err(e) => oauth_error(e.code, &e.description),
    }
}

/// What `portcullis ssh login` sends.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CertificateRequest {
    /// The key to certify: one OpenSSH public key line.
    pub public_key: String,
}

/// An SSH user certificate for the caller's own key, signed by the
/// gateway's user CA: its principal is the bearer token's user, it expires
/// with the token (at most 12 hours), and logins with it carry the token's
/// identity (groups, delegation) as the gateway recorded it.
#[utoipa::path(post, path = "/v1/ssh/certificates", tag = "ssh",
    request_body = CertificateRequest,
    responses((status = 200, description = "The certificate, and the SSH listeners to reach", body = crate::protocols::ssh::certs::IssuedLogin),
              (status = 400, description = "Not a public key, or the token expires within a minute", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 404, description = "No SSH listener has a user CA", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn ssh_certificate(
    state: &AdminState,
    auth: Option<&str>,
    req: Request<RequestBody>,
) -> Response<Body> {
    let Some(login) = &state.ssh_login else {
        return error(
            StatusCode::NOT_FOUND,
            "this gateway mints no SSH certificates (no SSH listener has user_ca_key_file); log in with the token as the password",
        );
    };
    let Some(token) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "send your token as `Authorization: Bearer TOKEN` (portcullis ssh login --token-file FILE does)",
        );
    };
    let identity = match crate::gateway::admission::authenticate(
        &state.gw.authenticator,
        &state.gw.revocations,
        token.trim(),
        None,
        std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    )
    .await
    {
        Ok(i) => i,
        Err(r) => return error(StatusCode::UNAUTHORIZED, r.message),
    };
    let body = match super::http::read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let asked: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"public_key\": \"ssh-ed25519 AAAA...\"}}: {e}"),
            )
        }
    };
    let store = state.gw.audit.store().clone();
    match login.issue(store, &asked.public_key, &identity).await {
        Ok(issued) => {
            tracing::info!(user = %identity.user, serial = issued.serial, key_id = %issued.key_id, "SSH certificate minted");
            json(&issued)
        }
        Err(
            e @ (crate::protocols::ssh::certs::CertError::PublicKey(_)
            | crate::protocols::ssh::certs::CertError::Expiring),
        ) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::protocols::ssh::certs::CertError::TooMany) => {
            error(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "SSH certificate not minted");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// An OAuth error reply (RFC 6749 §5.2).
fn oauth_error(code: &str, description: &str) -> Response<Body> {
    json_status(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// What a revocation did.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The token revoked (and, with it, every token minted from it).
    pub revoked: String,
    /// Live sessions closed.
    pub sessions_closed: usize,
}

/// Revokes a delegated token and every token minted from it; live sessions
/// opened with any of them are closed.
#[utoipa::path(post, path = "/v1/tokens/{jti}/revoke", tag = "delegation",
    params(("jti" = String, Path, description = "The token id (jti claim, tok_...)")),
    responses((status = 200, description = "Revoked", body = Revoked),
              (status = 400, description = "Not a token id", body = super::http::ErrorBody),
              (status = 401, description = "No or bad token", body = super::http::ErrorBody),
              (status = 403, description = "Not an admin", body = super::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(state: &AdminState, jti: &str, by: &str) -> Response<Body> {
    let well_formed = !jti.is_empty()
        && jti.len() <= 100
        && jti
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !well_formed {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{jti:?} is not a token id"),
        );
    }
    match state.gw.revocations.revoke(jti, by).await {
        Ok(sessions_closed) => json(&Revoked {
            revoked: jti.to_string(),
            sessions_closed,
        }),
        Err(e) => store_failure(e),
    }
}
