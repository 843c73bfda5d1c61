//! The upstream side of a session: connect (TLS per target), log in with the
//! gateway's own credential (SCRAM-SHA-256, md5, cleartext or trust), and
//! collect the server's greeting up to the first `ReadyForQuery`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::framed::{read_message, send};
use super::stream::Stream;
use crate::protocols::postgres::codec::authentication::{self, Authentication};
use crate::protocols::postgres::codec::backend_key_data::{self, BackendKeyData};
use crate::protocols::postgres::codec::error_response;
use crate::protocols::postgres::codec::startup;

/// Largest message accepted from the upstream during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Why the gateway could not open an upstream session.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("no answer from {0} within the connect timeout")]
    Timeout(String),
    /// The server refused TLS, or the handshake failed.
    #[error("TLS to {addr} failed: {message}")]
    Tls {
        /// host:port.
        addr: String,
        /// Cause.
        message: String,
    },
    /// The server sent an `ErrorResponse` during login.
    #[error("upstream refused the gateway's login: {message} (SQLSTATE {code})")]
    Rejected {
        /// SQLSTATE.
        code: String,
        /// Server message.
        message: String,
    },
    /// The session would read string literals differently from the gateway
    /// (`standard_conforming_strings` off, by the server's configuration,
    /// the role's or database's settings, or the client's start-up
    /// options).
    #[error("the session has standard_conforming_strings off, so PostgreSQL would read backslashes in string literals as escapes and the gateway's checks would not hold; keep it on (PostgreSQL's default)")]
    StandardStringsOff,
    /// The session would be in an encoding the gateway does not read.
    #[error("the session would have {0}: the gateway reads statements exactly as PostgreSQL does in UTF-8, SQL_ASCII and the single-byte encodings (LATIN1-10, WIN1250-1258, WIN866, WIN874, KOI8R, ISO_8859_5-8), on a UTF-8 or SQL_ASCII database; connect with one of those, and convert multibyte text such as SJIS or BIG5 to UTF-8 in the client")]
    Encoding(String),
    /// The server asked for an authentication method the gateway lacks.
    #[error("upstream asks for an authentication method the gateway does not support ({0})")]
    UnsupportedAuth(String),
    /// The server asked for a password but the target has none configured.
    #[error("upstream asks for a password but the target configures none (set password_env or password_file)")]
    NoPassword,
    /// The password source failed.
    #[error("cannot read the upstream password: {0}")]
    Password(String),
    /// The server broke the protocol.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// I/O error after connecting.
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::protocols::postgres::codec::CodecError> for UpstreamError {
    fn from(e: crate::protocols::postgres::codec::CodecError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// Where and how to log in upstream.
pub struct UpstreamLogin<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// TLS client config; `None` = plain.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Role name.
    pub user: &'a str,
    /// Database name.
    pub database: &'a str,
    /// Password, if the target has one.
    pub password: Option<String>,
    /// Further start-up parameters (application_name, client_encoding, ...).
    pub params: Vec<(String, String)>,
    /// Deadline for connect + login.
    pub timeout: Duration,
}

/// A logged-in upstream connection.
pub struct Upstream {
    /// The connection, ready for queries.
    pub stream: Stream,
    /// The server's real process id and secret.
    pub key: BackendKeyData,
    /// Messages after `AuthenticationOk` up to and including `ReadyForQuery`,
    /// minus `BackendKeyData`, exactly as the server sent them.
    pub greeting: BytesMut,
    /// The client encoding the server reported (one the gateway reads).
    pub client_encoding: crate::protocols::postgres::codec::encoding::ClientEncoding,
    /// Whether the server converts client text (not a `SQL_ASCII` database).
    pub server_converts: bool,
}

/// Opens a TCP (and TLS, if configured) connection to the upstream.
pub async fn open(
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Stream, UpstreamError> {
    let addr = format!("{host}:{port}");
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true)?;
    let Some(cfg) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut buf = BytesMut::new();
    startup::encode_ssl_request(&mut buf);
    send(&mut tcp, &mut buf).await?;
    let answer = tcp.read_u8().await?;
    if answer != b'S' {
        return Err(UpstreamError::Tls {
            addr,
            message: "the server does not accept TLS connections".into(),
        });
    }
    let name = ServerName::try_from(host.to_string()).map_err(|e| UpstreamError::Tls {
        addr: addr.clone(),
        message: format!("invalid server name: {e}"),
    })?;
    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls {
            addr,
            message: e.to_string(),
        })?;
    Ok(Stream::ClientTls(Box::new(tls)))
}

/// Connects and logs in, within `login.timeout`.
pub async fn connect(login: UpstreamLogin<'_>) -> Result<Upstream, UpstreamError> {
    let addr = format!("{}:{}", login.host, login.port);
    tokio::time::timeout(login.timeout, connect_inner(login))
        .await
        .map_err(|_| UpstreamError::Timeout(addr))?
}

async fn connect_inner(login: UpstreamLogin<'_>) -> Result<Upstream, UpstreamError> {
    let mut stream = open(login.host, login.port, login.tls.as_ref()).await?;
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![("user", login.user), ("database", login.database)];
    params.extend(login.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    startup::encode_startup(&mut out, &params);
    send(&mut stream, &mut out).await?;

    let mut inbuf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let msg = next(&mut stream, &mut inbuf).await?;
        match msg.first() {
            Some(b'R') => {}
            Some(b'E') => return Err(rejected(&msg)),
            Some(b'v') => continue, // NegotiateProtocolVersion: we asked for 3.0 only.
            _ => {
                return Err(UpstreamError::Protocol(
                    "expected an authentication request".into(),
                ))
            }
        }
        match authentication::decode(&msg)? {
            Authentication::Ok => break,
            Authentication::CleartextPassword => {
                let pw = login.password.as_deref().ok_or(UpstreamError::NoPassword)?;
                authentication::encode_password(&mut out, pw);
            }
            Authentication::Md5Password(salt) => {
                let pw = login.password.as_deref().ok_or(UpstreamError::NoPassword)?;
                let hash = postgres_protocol::authentication::md5_hash(
                    login.user.as_bytes(),
                    pw.as_bytes(),
                    salt,
                );
                authentication::encode_password(&mut out, &hash);
            }
            Authentication::Sasl(mechanisms) => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(UpstreamError::UnsupportedAuth(format!(
                        "SASL {}",
                        mechanisms.join(", ")
                    )));
                }
                let pw = login.password.as_deref().ok_or(UpstreamError::NoPassword)?;
                // Channel binding is not used: saying "unsupported" (n,,) is
                // honest and cannot trip the server's downgrade check.
                let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                authentication::encode_sasl_initial(&mut out, "SCRAM-SHA-256", s.message());
                scram = Some(s);
            }
            Authentication::SaslContinue(data) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLContinue before SASL".into()))?;
                s.update(data)
                    .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                authentication::encode_sasl_response(&mut out, s.message());
            }
            Authentication::SaslFinal(data) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLFinal before SASL".into()))?;
                // Verifies the server's signature: the server proves it knows
                // the password too.
                s.finish(data)
                    .map_err(|e| UpstreamError::Protocol(format!("SCRAM server proof: {e}")))?;
                continue;
            }
            Authentication::Unsupported(code) => {
                return Err(UpstreamError::UnsupportedAuth(format!(
                    "method code {code}"
                )))
            }
        }
        send(&mut stream, &mut out).await?;
    }

    let mut greeting = BytesMut::with_capacity(1024);
    let mut key = None;
    let mut client_encoding =
        Some(crate::protocols::postgres::codec::encoding::ClientEncoding::UTF8);
    let mut server_converts = true;

    loop {
        let msg = next(&mut stream, &mut inbuf).await?;
        match msg.first() {
            Some(b'K') => key = Some(backend_key_data::decode(&msg)?),
            Some(b'E') => return Err(rejected(&msg)),
            Some(b'Z') => {
                greeting.put_slice(&msg);
                break;
            }
            Some(b'S') => {
                let (name, value) =
                    crate::protocols::postgres::codec::parameter_status::decode(&msg)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                if !super::pump::standard_strings(&name, &value) {
                    return Err(UpstreamError::StandardStringsOff);
                }
                use crate::protocols::postgres::codec::encoding::{
                    server_reads_utf8, ClientEncoding,
                };
                if name.eq_ignore_ascii_case("client_encoding") {
                    client_encoding = ClientEncoding::named(&value);
                }
                if name.eq_ignore_ascii_case("server_encoding") {
                    server_converts =
                        !crate::protocols::postgres::codec::encoding::clean_name(&value)
                            .eq("sqlascii");
                }
                let unreadable = (name.eq_ignore_ascii_case("client_encoding")
                    && client_encoding.is_none())
                    || (name.eq_ignore_ascii_case("server_encoding") && !server_reads_utf8(&value));
                if unreadable {
                    return Err(UpstreamError::Encoding(format!("{name} = {value}")));
                }
                greeting.put_slice(&msg);
            }
            _ => greeting.put_slice(&msg),
        }
    }
    if !inbuf.is_empty() {
        return Err(UpstreamError::Protocol(
            "unexpected data after ReadyForQuery".into(),
        ));
    }
    // A SQL_ASCII database converts nothing: it reads a single-byte
    // client's bytes as they are, not as the gateway would convert them.
    if let Some(e) = client_encoding.filter(|e| !server_converts && !e.reads_as_utf8()) {
        return Err(UpstreamError::Encoding(format!(
            "client_encoding = {} on a SQL_ASCII database",
            e.name
        )));
    }
    let key = key.ok_or_else(|| UpstreamError::Protocol("no BackendKeyData".into()))?;
    Ok(Upstream {
        stream,
        key,
        greeting,
        client_encoding: client_encoding
            .unwrap_or(crate::protocols::postgres::codec::encoding::ClientEncoding::UTF8),
        server_converts,
    })
}

async fn next(stream: &mut Stream, inbuf: &mut BytesMut) -> Result<BytesMut, UpstreamError> {
    read_message(stream, inbuf, MAX_LOGIN_MESSAGE)
        .await
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        .ok_or_else(|| UpstreamError::Protocol("server closed the connection during login".into()))
}

fn rejected(msg: &[u8]) -> UpstreamError {
    match error_response::decode(msg) {
        Ok(e) => UpstreamError::Rejected {
            code: e.code.to_string(),
            message: e.message.to_string(),
        },
        Err(e) => UpstreamError::Protocol(e.to_string()),
    }
}
