//! A small HTTPS client (hyper + rustls) for the few outbound calls the
//! gateway makes: OIDC discovery and JWKS. Responses are size-capped and every
//! request has a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Largest response body accepted (JWKS documents are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Why an HTTP fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL could not be parsed.
    #[error("invalid URL {0:?}")]
    Url(String),
    /// Connecting or sending failed.
    #[error("request to {url} failed: {message}")]
    Request {
        /// URL requested.
        url: String,
        /// Cause.
        message: String,
    },
    /// No answer in time.
    #[error("request to {0} timed out")]
    Timeout(String),
    /// A status other than 200.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// URL requested.
        url: String,
        /// Status code.
        status: u16,
    },
    /// The body was not the JSON expected.
    #[error("{url} did not return valid JSON: {message}")]
    Json {
        /// URL requested.
        url: String,
        /// Cause.
        message: String,
    },
}

/// A shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client that trusts the system's root certificates.
    pub fn new(timeout: Duration) -> Result<Self, HttpError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| HttpError::Request {
                url: "(none)".into(),
                message: format!("cannot load system root certificates: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, timeout })
    }

    /// GETs `url` and parses the body as JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, HttpError> {
        self.request_json(hyper::Method::GET, url, &[], None).await
    }

    /// Sends a request with extra headers and an optional form body
    /// (`application/x-www-form-urlencoded`); parses the answer as JSON.
    pub async fn request_json(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Result<serde_json::Value, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.into()))?;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = match form {
            Some(fields) => {
                builder = builder.header("content-type", "application/x-www-form-urlencoded");
                Bytes::from(form_encode(fields))
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(body))
            .map_err(|_| HttpError::Url(url.into()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Request {
                    url: url.into(),
                    message: error_chain(&e),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Request {
                    url: url.into(),
                    message: e.to_string(),
                })?
                .to_bytes();
            if status != hyper::StatusCode::OK {
                return Err(HttpError::Status {
                    url: url.into(),
                    status: status.as_u16(),
                });
            }
            serde_json::from_slice(&body).map_err(|e| HttpError::Json {
                url: url.into(),
                message: e.to_string(),
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout(url.into()))?
    }
}

impl HttpClient {
    /// Sends a request with `headers` and an optional body (content type,
    /// bytes) and returns the response as it arrives (status checked by the
    /// caller; the body may be streamed). Only the answer's head is bounded
    /// by the timeout.
    pub async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Bytes)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.into()))?;
        let mut builder = hyper::Request::builder().method(method).uri(uri).header(
            "user-agent",
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                builder = builder.header("content-type", content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(bytes))
            .map_err(|_| HttpError::Url(url.into()))?;
        tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| HttpError::Timeout(url.into()))?
            .map_err(|e| HttpError::Request {
                url: url.into(),
                message: error_chain(&e),
            })
    }
}

/// Encodes `application/x-www-form-urlencoded` fields (the form body of an
/// OAuth token request, the query of a metadata endpoint).
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
