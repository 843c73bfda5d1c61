//! The gateway's side of a Kubernetes target: one pooled HTTP client per
//! API server, the gateway's own token, and the request a client's
//! request becomes upstream — the client's credentials and any identity it
//! claims removed, the person it really is named in `Impersonate-*`
//! headers, so the cluster's RBAC and audit log see who it is.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::config::{Target, UpstreamTls};
use crate::credentials::CredentialProvider;
use crate::http_client::HttpClient;
use crate::identity::Identity;

/// A request or response body as the gateway relays it.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The gateway's own token could not be had.
    #[error("the gateway could not get its own token for the API server: {0}")]
    Credential(String),
    /// A name or group of the identity cannot be sent as a header.
    #[error("the identity cannot be named to the API server: {0}")]
    Identity(String),
    /// The API server did not answer.
    #[error("the API server could not be reached: {0}")]
    Unreachable(String),
    /// The TLS settings could not be loaded.
    #[error("TLS for the API server: {0}")]
    Tls(String),
}

/// One API server: where it is, how the gateway reaches it and with what.
pub struct Upstream {
    /// `https://host:port` (`http://` only on loopback, as validated).
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    credential: CredentialProvider,
}

impl Upstream {
    /// The client of `target`'s API server.
    pub fn new(target: &Target, http: HttpClient) -> Result<Arc<Self>, UpstreamError> {
        let plain = target.tls == UpstreamTls::Disable;
        // Plain targets (loopback only) still need a TLS config for the
        // connector's type; their URL is http, so it is never used.
        let mode = if plain {
            UpstreamTls::VerifyFull
        } else {
            target.tls
        };
        let tls = crate::tls::upstream_config(
            mode,
            target.tls_ca_file.as_deref().map(std::path::Path::new),
        )
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .ok_or_else(|| UpstreamError::Tls("no TLS configuration".into()))?;
        let mut http_connector = HttpConnector::new();
        http_connector.enforce_http(false);
        http_connector.set_nodelay(true);
        http_connector.set_connect_timeout(Some(Duration::from_secs(target.connect_timeout_secs)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls).clone());
        let connector = if plain {
            builder
                .https_or_http()
                .enable_http1()
                .wrap_connector(http_connector)
        } else {
            builder
                .https_only()
                .enable_http1()
                .wrap_connector(http_connector)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let host = if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        Ok(Arc::new(Self {
            base: format!(
                "{}://{host}:{}",
                if plain { "http" } else { "https" },
                target.port()
            ),
            client,
            credential: CredentialProvider::new(target, http),
        }))
    }

    /// Sends `request` (whose URI is the API server's path and query) with
    /// the gateway's token and `identity` impersonated; the client's own
    /// credentials and identity headers must already be gone
    /// ([`forwarded_headers`]).
    pub async fn send(
        &self,
        mut request: hyper::Request<Body>,
        identity: &Identity,
        session_id: u64,
    ) -> Result<hyper::Response<hyper::body::Incoming>, UpstreamError> {
        let token = self
            .credential
            .password()
            .await
            .map_err(|e| UpstreamError::Credential(e.to_string()))?
            .ok_or_else(|| UpstreamError::Credential("no token source is configured".into()))?;
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: hyper::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| UpstreamError::Unreachable(e.to_string()))?;
        *request.uri_mut() = uri;
        *request.version_mut() = hyper::Version::HTTP_11;
        let headers = request.headers_mut();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            UpstreamError::Credential("the token is not a valid header value".into())
        })?;
        headers.insert(hyper::header::AUTHORIZATION, bearer);
        impersonate(headers, identity, session_id)?;
        self.client
            .request(request)
            .await
            .map_err(|e| UpstreamError::Unreachable(describe(&e)))
    }
}

/// The error and its causes, in one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Headers that name the connection rather than the request (RFC 9110
/// §7.6.1), never forwarded by a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Whether the client may send `name` on to the API server. Never: its
/// credentials (`Authorization`, cookies), any identity it claims
/// (`Impersonate-*`, and the `X-Remote-*` headers an authenticating front
/// proxy sets), and hop-by-hop headers.
pub fn forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(HOP_BY_HOP.contains(&n)
        || AUDIT_SHAPING.contains(&n)
        || n == "authorization"
        || n == "cookie"
        || n.starts_with("impersonate-")
        || n.starts_with("x-remote-"))
}

/// Headers the API server writes into its audit log as facts (the
/// client's addresses, the event's id) or reads as a credential (a
/// WebSocket token): a client does not choose them.
const AUDIT_SHAPING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "audit-id",
    "sec-websocket-protocol",
];

/// The client's headers that go on to the API server (see [`forwarded`]);
/// so do those the client named in `Connection` only if no rule drops them
/// (they name the client's own connection, so they are dropped too).
pub fn forwarded_headers(client: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = client
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        if forwarded(name) && !named_by_connection.iter().any(|c| c == name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The `Impersonate-Extra-` key naming the actors an identity acts
/// through (delegation), one value per actor, outermost first.
pub const EXTRA_ACTOR: &str = "impersonate-extra-portcullis.dev%2factor";
/// The `Impersonate-Extra-` key carrying the gateway's session id.
pub const EXTRA_SESSION: &str = "impersonate-extra-portcullis.dev%2fsession";

/// Why the gateway will not name `identity` to an API server: a user or
/// group in the `system:` namespace, which Kubernetes reserves for its own
/// components and administrators (`system:masters` is cluster-admin), so
/// no identity provider's claim may become one.
pub fn reserved_name(identity: &Identity) -> Option<String> {
    if identity.user.starts_with("system:") {
        return Some(format!("the user {:?}", identity.user));
    }
    identity
        .groups
        .iter()
        .find(|g| g.starts_with("system:"))
        .map(|g| format!("the group {g:?}"))
}

/// Names `identity` to the API server: `Impersonate-User` (the token's
/// user), `Impersonate-Uid` (its subject), one `Impersonate-Group` per
/// group, and as extras the actor chain and the session. Never a reserved
/// `system:` name (see [`reserved_name`]).
pub fn impersonate(
    headers: &mut HeaderMap,
    identity: &Identity,
    session_id: u64,
) -> Result<(), UpstreamError> {
    let value = |what: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            UpstreamError::Identity(format!(
                "{what} {v:?} has characters an HTTP header cannot carry"
            ))
        })
    };
    if let Some(name) = reserved_name(identity) {
        return Err(UpstreamError::Identity(format!(
            "{name} is reserved by Kubernetes (system:)"
        )));
    }
    headers.insert("impersonate-user", value("the user", &identity.user)?);
    headers.insert("impersonate-uid", value("the subject", &identity.subject)?);
    for g in &identity.groups {
        headers.append("impersonate-group", value("the group", g)?);
    }
    for actor in identity.actor_chain.iter().rev() {
        headers.append(
            HeaderName::from_static(EXTRA_ACTOR),
            value("the actor", actor)?,
        );
    }
    headers.insert(
        HeaderName::from_static(EXTRA_SESSION),
        value("the session", &session_id.to_string())?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_send_credentials_or_claim_an_identity() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer client"),
            ("Impersonate-User", "system:admin"),
            ("impersonate-group", "system:masters"),
            ("Impersonate-Uid", "0"),
            ("impersonate-extra-scopes", "all"),
            ("x-remote-user", "admin"),
            ("x-remote-group", "system:masters"),
            ("x-forwarded-for", "10.0.0.5"),
            ("audit-id", "someone-else"),
            (
                "sec-websocket-protocol",
                "base64url.bearer.authorization.k8s.io.dG9r",
            ),
            ("cookie", "a=b"),
            ("proxy-authorization", "Basic x"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("accept", "application/json"),
            ("user-agent", "kubectl/v1.31"),
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let out = forwarded_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "user-agent"]);
    }

    #[test]
    fn the_person_is_named_with_groups_and_actors() {
        let id = Identity {
            subject: "sub-1".into(),
            user: "alice@example.com".into(),
            groups: vec!["dev".into(), "ops".into()],
            issuer: "https://issuer".into(),
            actor_chain: vec!["agent:a".into(), "agent:b".into()],
            expires_at: 0,
            delegation: None,
        };
        let mut h = HeaderMap::new();
        impersonate(&mut h, &id, 7).unwrap();
        assert_eq!(h["impersonate-user"], "alice@example.com");
        assert_eq!(h["impersonate-uid"], "sub-1");
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["dev", "ops"]);
        let actors: Vec<_> = h.get_all(EXTRA_ACTOR).iter().collect();
        assert_eq!(actors, ["agent:b", "agent:a"]);
        assert_eq!(h[EXTRA_SESSION], "7");
        let mut bad = id.clone();
        bad.groups.push("x\ny".into());
        assert!(impersonate(&mut HeaderMap::new(), &bad, 1).is_err());
        for (user, group) in [("system:admin", "dev"), ("alice", "system:masters")] {
            let mut reserved = id.clone();
            reserved.user = user.into();
            reserved.groups = vec![group.into()];
            assert!(reserved_name(&reserved).is_some());
            assert!(impersonate(&mut HeaderMap::new(), &reserved, 1).is_err());
        }
    }
}
