//! The operator commands that talk to a running gateway's admin API:
//! `portcullis sessions`, `audit export`, `plugins` (and `approvals`).
//! Each renders a human-readable table by default and the API's JSON with
//! `--output json`, so scripts get exactly what the API returns.
//!
//! - [`AdminClient`]: the API's address and bearer token, and requests;
//! - `table`: column-aligned text tables;
//! - [`sessions`], [`audit`], [`plugins`]: one module per command group.

pub mod approvals;
pub mod audit;
pub mod kube_login;
pub mod play;
pub mod plugins;
pub mod sessions;
pub mod ssh_login;
mod table;
pub mod token;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::http_client::{HttpClient, HttpError};

/// Default admin API address (the `[admin]` default).
pub const DEFAULT_API: &str = "http://127.0.0.1:9187";

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API could not be reached.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The API answered with an error.
    #[error("the admin API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer was not what the command expected.
    #[error("unexpected answer from the admin API: {0}")]
    Answer(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
}

/// A client of one gateway's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: HttpClient,
}

impl AdminClient {
    /// A client of the API at `base` (`http://host:port`) with an optional
    /// bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: HttpClient::new(Duration::from_secs(30))?,
        })
    }

    /// Sends a request; returns the response if its status is 2xx, else the
    /// API's error message.
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        json_body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("accept", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = json_body.map(|v| ("application/json", Bytes::from(v.to_string())));
        let resp = self.http.send(method, &url, &headers, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(CliError::Api { status, message })
    }

    /// Posts a form (no bearer token: the form carries its credential) and
    /// returns the JSON answer; an OAuth error becomes [`CliError::Api`].
    pub async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<serde_json::Value, CliError> {
        let url = format!("{}{path}", self.base);
        let body = Bytes::from(crate::http_client::form_encode(fields));
        let resp = self
            .http
            .send(
                hyper::Method::POST,
                &url,
                &[("accept", "application/json")],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await?;
        let status = resp.status();
        let value = body_json(resp).await?;
        if !status.is_success() {
            let message = match (value["error"].as_str(), value["error_description"].as_str()) {
                (Some(code), Some(d)) => format!("{code}: {d}"),
                _ => value["error"]["message"].as_str().unwrap_or("").to_string(),
            };
            return Err(CliError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(value)
    }

    /// A JSON answer, whole.
    pub async fn json(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, CliError> {
        body_json(self.request(method, path, body).await?).await
    }
}

/// Reads a response's body whole and parses it as JSON.
async fn body_json(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<serde_json::Value, CliError> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Answer(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| CliError::Answer(e.to_string()))
}

/// Prints an API answer: as it is (`--output json`), or decoded as `T` and
/// rendered for people.
pub fn print<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    output: Output,
    out: &mut dyn std::io::Write,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    let text = match output {
        Output::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Output::Table => {
            let decoded: T =
                serde_json::from_value(value).map_err(|e| CliError::Answer(e.to_string()))?;
            render(&decoded)
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Bytes a path segment or query value keeps as they are: RFC 3986's
/// unreserved characters (letters, digits, `-`, `.`, `_`, `~`).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
pub fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, UNRESERVED).to_string()
}

/// Microseconds as `12.3 ms` / `850 µs` / `2.1 s`.
pub fn human_micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}
