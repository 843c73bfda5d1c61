//! A development OIDC issuer on loopback: discovery document, JWKS, and token
//! minting with keys it generates. `portcullis demo` runs one; the tests use it
//! to exercise the real validation path (discovery, JWKS fetch, rotation).
//! It is plain http on 127.0.0.1, which providers accept only with
//! `insecure_loopback_issuer = true`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why a development key or issuer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Key generation or parsing failed.
    #[error("signing key: {0}")]
    Key(String),
    /// The HTTP listener could not be bound.
    #[error("cannot bind the development issuer: {0}")]
    Bind(#[from] std::io::Error),
}

/// The development issuer's signing keys are ordinary gateway signing keys.
pub use crate::signing::SigningKey as DevKey;

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `preferred_username` (and `sub`).
    pub user: String,
    /// `groups`.
    pub groups: Vec<String>,
    /// Lifetime in seconds from now.
    pub ttl_secs: u64,
}

struct State {
    keys: Vec<DevKey>,
    current: usize,
    jwks_fetches: u64,
    /// Answer JWKS requests with 503 (an outage, for tests).
    jwks_failing: bool,
}

/// A running development issuer.
pub struct DevIssuer {
    url: String,
    audience: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DevIssuer {
    /// Starts serving on `127.0.0.1` (port 0 = any free port) with one key.
    pub async fn start(key: DevKey, audience: &str, port: u16) -> Result<Self, IssuerError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            keys: vec![key],
            current: 0,
            jwks_fetches: 0,
            jwks_failing: false,
        }));
        let (st, issuer) = (state.clone(), url.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (st, issuer) = (st.clone(), issuer.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (st, issuer) = (st.clone(), issuer.clone());
                        async move { Ok::<_, Infallible>(respond(&req, &st, &issuer)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            audience: audience.to_string(),
            state,
            task,
        })
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The audience its tokens carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key tokens are signed with now.
    pub fn current_key(&self) -> DevKey {
        let s = self.lock();
        s.keys[s.current].clone()
    }

    /// Standard claims for `spec`, issued now.
    pub fn claims(&self, spec: &TokenSpec) -> Value {
        let now = now();
        json!({
            "iss": self.url, "aud": self.audience, "sub": spec.user,
            "preferred_username": spec.user, "groups": spec.groups,
            "iat": now, "nbf": now, "exp": now + spec.ttl_secs,
        })
    }

    /// Mints a token for `spec` with the current key.
    pub fn mint(&self, spec: &TokenSpec) -> String {
        self.current_key().sign(&self.claims(spec))
    }

    /// Publishes another key; with `make_current`, new tokens use it.
    pub fn add_key(&self, key: DevKey, make_current: bool) {
        let mut s = self.lock();
        s.keys.push(key);
        if make_current {
            s.current = s.keys.len() - 1;
        }
    }

    /// Stops publishing every key except the current one.
    pub fn retire_old_keys(&self) {
        let mut s = self.lock();
        let cur = s.keys[s.current].clone();
        s.keys = vec![cur];
        s.current = 0;
    }

    /// How many times the JWKS was asked for (failed answers included).
    pub fn jwks_fetches(&self) -> u64 {
        self.lock().jwks_fetches
    }

    /// Makes the JWKS endpoint answer `503` (`true`) or serve keys again.
    pub fn set_jwks_failing(&self, failing: bool) {
        self.lock().jwks_failing = failing;
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    issuer: &str,
) -> Response<Full<Bytes>> {
    let body = match req.uri().path() {
        "/.well-known/openid-configuration" => json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }),
        "/jwks" => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.jwks_fetches += 1;
            if s.jwks_failing {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"unavailable")));
                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                return resp;
            }
            json!({"keys": s.keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()})
        }
        _ => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"not found")));
            *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
            return resp;
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
