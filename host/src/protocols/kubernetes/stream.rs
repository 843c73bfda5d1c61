//! `kubectl exec` and `attach`: the WebSocket stream a judged request
//! became, relayed both ways frame by frame, and the
//! refusals of such requests told inside the stream.
//!
//! Each frame is read whole before it is passed on (an unreadable one —
//! compressed, oversized, unmasked from a client — ends the stream). Exec
//! and attach speak a channel protocol (`v5`/`v4.channel.k8s.io`): their
//! standard input, output and error, terminal resizes and exit status are
//! read from the frames into an asciicast recording of the event, as an
//! SSH shell's are.
//!
//! A refusal is told inside an accepted stream — the `Status` on the
//! error channel, then a close — because kubectl reads any other answer
//! to its WebSocket request as "WebSockets are not spoken here" and tries
//! again over SPDY, showing that attempt's error instead of the refusal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::record::{SessionEvents, Started};
use super::upstream::Body;
use super::websocket::{self, Channels, Frame, Offer};
use crate::gateway::cast::Cast;
use crate::gateway::lifecycle::Stop;

/// How long a stream waits for its other direction to finish once one
/// has (a close answered, the last output passed on).
const LINGER: Duration = Duration::from_secs(5);

/// The most of the error channel kept to read the exit status from.
const MAX_STATUS: usize = 64 << 10;

/// Channel numbers of the channel protocols.
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
}

/// Bytes a stream moved, added to its session's.
pub struct Traffic {
    /// From the client.
    pub from_client: Arc<AtomicU64>,
    /// To the client.
    pub to_client: Arc<AtomicU64>,
}

/// A judged, recorded stream ready to relay.
pub struct Relay {
    /// The subprotocol both sides speak.
    pub protocol: String,
    /// Frames carry a terminal's channels (exec, attach), read into the
    /// recording.
    pub terminal: bool,
    /// Its event (finished when the stream ends).
    pub started: Started,
    /// The recording of an exec or attach (none when it is not one, or
    /// when the target records none).
    pub cast: Option<Cast>,
    /// Where recordings go.
    pub events: Arc<SessionEvents>,
    /// The session's byte counts.
    pub traffic: Traffic,
    /// The session's stop (revocation, expiry, shutdown).
    pub stop: watch::Receiver<Option<Stop>>,
    /// When the token that opened this stream expires (Unix seconds): the
    /// stream is cut then, even if the session was opened by a token that
    /// lives longer.
    pub expires_at: u64,
    /// The API server's side.
    pub upstream: Upgraded,
}

impl Relay {
    /// Relays until both sides have finished, one side fails, or the
    /// session is stopped; then finishes the event (and its recording).
    pub async fn run(self, client: OnUpgrade) {
        let client = match tokio::time::timeout(LINGER, client).await {
            Ok(Ok(c)) => c,
            _ => {
                self.started
                    .answered(
                        Some(101),
                        Some("the API server started the command, but the client went away before its stream opened".into()),
                    )
                    .await;
                return;
            }
        };
        let channels = self.terminal;
        let shared = Arc::new(Shared {
            cast: Mutex::new(self.cast),
            events: self.events,
            exit: Mutex::new(Vec::new()),
            unclean: AtomicBool::new(false),
        });
        let (client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
        let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(self.upstream));
        let input = pump(
            client_read,
            upstream_write,
            Side::Client,
            channels,
            shared.clone(),
            self.traffic.from_client.clone(),
        );
        let output = pump(
            upstream_read,
            &mut client_write,
            Side::Upstream,
            channels,
            shared.clone(),
            self.traffic.to_client.clone(),
        );
        let mut stop = self.stop;
        let mut failure: Option<String> = None;
        let mut cut: Option<String> = None;
        {
            tokio::pin!(input, output);
            let (mut input_done, mut output_done) = (false, false);
            let linger = tokio::time::sleep(Duration::MAX);
            tokio::pin!(linger);
            let expiry = tokio::time::sleep(Duration::from_secs(
                self.expires_at
                    .saturating_sub(crate::store::now_micros() as u64 / 1_000_000),
            ));
            tokio::pin!(expiry);
            while !(input_done && output_done) {
                tokio::select! {
                    r = &mut input, if !input_done => {
                        input_done = true;
                        if let Err(e) = r { failure.get_or_insert(format!("from the client: {e}")); }
                        linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                    }
                    r = &mut output, if !output_done => {
                        output_done = true;
                        if let Err(e) = r { failure.get_or_insert(format!("from the API server: {e}")); }
                        linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                    }
                    s = stop.wait_for(Option::is_some) => {
                        cut = Some(match s.ok().and_then(|s| s.clone()) {
                            Some(Stop::Revoked(why)) => format!("the session was revoked: {why}"),
                            _ => "the gateway shut down".to_string(),
                        });
                        break;
                    }
                    _ = &mut expiry => {
                        cut = Some("the token that opened the stream expired".into());
                        break;
                    }
                    _ = &mut linger => break,
                }
            }
        }
        // The record first: a client that stops reading cannot hold it.
        let rest = shared
            .cast
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .and_then(Cast::finish);
        if let Some(chunk) = rest {
            shared.events.store(chunk).await;
        }
        let exit = exit_status(&shared.exit.lock().unwrap_or_else(|p| p.into_inner()));
        let error = cut.clone().or(failure).or(exit);
        self.started.answered(Some(101), error).await;
        let farewell = async {
            if let Some(why) = &cut {
                // Told on the error channel when no frame is half written.
                if channels && !shared.unclean.load(Ordering::Relaxed) {
                    let status = super::status::failure(
                        super::status::Reason::Forbidden,
                        &format!("portcullis: {why}"),
                        None,
                        None,
                    );
                    let _ = write_refusal(&mut client_write, &status).await;
                }
            }
            let _ = client_write.shutdown().await;
        };
        let _ = tokio::time::timeout(LINGER, farewell).await;
    }
}

/// What both directions of a stream share.
struct Shared {
    cast: Mutex<Option<Cast>>,
    events: Arc<SessionEvents>,
    /// The error channel's data (the exit status).
    exit: Mutex<Vec<u8>>,
    /// A frame to the client is half written or a message half sent: the
    /// gateway cannot put a frame of its own in between.
    unclean: AtomicBool,
}

/// Which side a direction reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Passes whole frames from `from` to `to` until a close frame passed or
/// `from` ended; what they carry is recorded.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    side: Side,
    channels: bool,
    shared: Arc<Shared>,
    counter: Arc<AtomicU64>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut messages = Channels::default();
    loop {
        let mut ready = 0;
        let mut closed = false;
        while let Some(frame) =
            websocket::read_frame(&buf[ready..], side == Side::Client).map_err(|e| e.to_string())?
        {
            // The API server reads a channel byte from every frame, the
            // gateway per message: a client's message cut into frames
            // could be read two ways (input hidden from the recording),
            // so it ends the stream. kubectl and the client libraries
            // send each message whole.
            if side == Side::Client
                && frame.opcode < websocket::CLOSE
                && (!frame.fin || frame.opcode == websocket::CONTINUATION)
            {
                return Err("a message cut into several frames (not relayed: the API server and the gateway could read it differently)".into());
            }
            ready += frame.wire_len;
            if frame.opcode == websocket::CLOSE {
                closed = true;
                break;
            }
            if channels {
                observe(&frame, &mut messages, side, &shared).await;
            }
        }
        if ready > 0 {
            let out: Bytes = buf.split_to(ready).freeze();
            if side == Side::Upstream {
                shared.unclean.store(true, Ordering::Relaxed);
            }
            to.write_all(&out).await.map_err(|e| e.to_string())?;
            to.flush().await.map_err(|e| e.to_string())?;
            if side == Side::Upstream {
                shared
                    .unclean
                    .store(messages.mid_message(), Ordering::Relaxed);
            }
            counter.fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        if closed {
            return Ok(());
        }
        match from.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Records what a channel frame carries.
async fn observe(frame: &Frame, messages: &mut Channels, side: Side, shared: &Shared) {
    let Some((channel, data)) = messages.data(frame) else {
        return;
    };
    if data.is_empty() {
        return;
    }
    let chunk = {
        let mut cast = shared.cast.lock().unwrap_or_else(|p| p.into_inner());
        match (side, channel) {
            (Side::Client, channel::STDIN) => cast.as_mut().and_then(|c| c.input(data)),
            (Side::Client, channel::RESIZE) => {
                let size: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
                match (size["Width"].as_u64(), size["Height"].as_u64()) {
                    (Some(w), Some(h)) => cast
                        .as_mut()
                        .and_then(|c| c.resize(w.min(10_000) as u32, h.min(10_000) as u32)),
                    _ => None,
                }
            }
            (Side::Upstream, channel::STDOUT | channel::STDERR) => {
                cast.as_mut().and_then(|c| c.output(data))
            }
            (Side::Upstream, channel::ERROR) => {
                let mut exit = shared.exit.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_STATUS.saturating_sub(exit.len());
                exit.extend_from_slice(&data[..data.len().min(room)]);
                None
            }
            _ => None,
        }
    };
    if let Some(chunk) = chunk {
        shared.events.store(chunk).await;
    }
}

/// What the error channel said, as the event's error: `None` for success
/// (or nothing said).
fn exit_status(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Some(String::from_utf8_lossy(data).chars().take(500).collect());
    };
    if status["status"] == "Success" {
        return None;
    }
    let code = status["details"]["causes"]
        .as_array()
        .and_then(|causes| causes.iter().find(|c| c["reason"] == "ExitCode"))
        .and_then(|c| c["message"].as_str());
    match (status["reason"].as_str(), code) {
        (Some("NonZeroExitCode"), Some(code)) => {
            Some(format!("the command exited with status {code}"))
        }
        _ => Some(
            status["message"]
                .as_str()
                .unwrap_or("the stream failed")
                .chars()
                .take(500)
                .collect(),
        ),
    }
}

/// Writes `status` (a `Status` JSON) on the error channel, then a close.
async fn write_refusal<W: AsyncWrite + Unpin>(to: &mut W, status: &[u8]) -> std::io::Result<()> {
    let mut message = vec![channel::ERROR];
    message.extend_from_slice(status);
    to.write_all(&websocket::write_frame(websocket::BINARY, &message, false))
        .await?;
    to.write_all(&websocket::close_frame(1000, "", false))
        .await?;
    to.flush().await
}

/// A refusal told inside the stream (see the module doc): the client's
/// upgrade is accepted with the best channel protocol it offered, the
/// refusal's `Status` — read from `refusal`, the answer it would have had
/// — is sent on the error channel, and the stream is closed. A client
/// that offered no channel protocol gets the answer as it is.
pub fn refuse_in_stream<G: Send + 'static>(
    offer: &Offer,
    refusal: hyper::Response<Body>,
    client: OnUpgrade,
    guard: G,
) -> hyper::Response<Body> {
    let Some(protocol) = offer
        .protocols
        .iter()
        .find(|p| websocket::CHANNEL_PROTOCOLS.contains(&p.as_str()))
    else {
        return refusal;
    };
    let code = refusal.status();
    let response = websocket::switching(offer, protocol)
        .body(super::server::empty_body())
        .unwrap_or_else(|_| hyper::Response::new(super::server::empty_body()));
    tokio::spawn(async move {
        let body = tokio::time::timeout(
            LINGER,
            http_body_util::Limited::new(refusal.into_body(), MAX_STATUS).collect(),
        )
        .await;
        let bytes = match body {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        let status = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) if v["kind"] == "Status" => bytes.to_vec(),
            _ => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("the API server answered HTTP {code}")
                } else {
                    text.chars().take(2000).collect()
                };
                super::status::failure(super::status::Reason::Forbidden, &message, None, None)
            }
        };
        if let Ok(Ok(upgraded)) = tokio::time::timeout(LINGER, client).await {
            let mut io = TokioIo::new(upgraded);
            let _ = tokio::time::timeout(LINGER, async {
                let _ = write_refusal(&mut io, &status).await;
                let _ = io.shutdown().await;
            })
            .await;
        }
        drop(guard);
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client message cut into frames could be read one way by the API
    /// server (a channel byte per frame) and another by the recording:
    /// the stream ends and not one byte of it is passed on.
    #[tokio::test]
    async fn a_client_message_cut_into_frames_is_not_passed_on() {
        use tokio::io::AsyncReadExt;
        let mut first = websocket::write_frame(websocket::BINARY, b"\x01", true);
        first[0] &= 0x7f; // not the last frame of its message
        let mut rest = websocket::write_frame(websocket::CONTINUATION, b"\x00rm -rf /\n", true);
        first.append(&mut rest);
        let whole = websocket::write_frame(websocket::BINARY, b"\x00ls\n", true);
        let dir = crate::test_dir::TestDir::new("portcullis-kube-stream");
        let store: Arc<dyn crate::store::Store> = Arc::new(
            crate::store::sqlite::SqliteStore::open(&dir.join("audit.db")).expect("store"),
        );
        let audit = crate::audit::AuditLog::start(store, Duration::from_millis(50));
        for (wire, passes) in [(first, false), (whole.clone(), true)] {
            let (mut client, gateway_side) = tokio::io::duplex(1 << 16);
            let (upstream_side, mut api) = tokio::io::duplex(1 << 16);
            tokio::io::AsyncWriteExt::write_all(&mut client, &wire)
                .await
                .expect("write");
            drop(client);
            let shared = Arc::new(Shared {
                cast: Mutex::new(None),
                events: SessionEvents::new(audit.clone(), 1, false),
                exit: Mutex::new(Vec::new()),
                unclean: AtomicBool::new(false),
            });
            let result = pump(
                gateway_side,
                upstream_side,
                Side::Client,
                true,
                shared,
                Arc::new(AtomicU64::new(0)),
            )
            .await;
            let mut got = Vec::new();
            api.read_to_end(&mut got).await.expect("read");
            if passes {
                assert!(result.is_ok(), "{result:?}");
                assert_eq!(got, whole);
            } else {
                assert!(result.is_err());
                assert!(got.is_empty(), "{got:?}");
            }
        }
    }

    #[test]
    fn the_exit_status_is_read_from_the_error_channel() {
        assert_eq!(exit_status(b""), None);
        assert_eq!(exit_status(br#"{"metadata":{},"status":"Success"}"#), None);
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(
            exit_status(failed).as_deref(),
            Some("the command exited with status 3")
        );
        let other = br#"{"status":"Failure","message":"container not found"}"#;
        assert_eq!(exit_status(other).as_deref(), Some("container not found"));
    }
}
