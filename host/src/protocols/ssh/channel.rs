//! One session channel, relayed between the client and the host.
//!
//! Data flows both ways at once (each direction its own task, so a full
//! window one way never stalls the other). Requests — pty, env, shell,
//! exec, subsystem — are not read from the data stream: the connection's
//! handler receives each one and calls this channel's [`Open`], which
//! records it and forwards it, and the handler answers the client for
//! exactly that request at once (russh keeps one "wants a reply" flag per
//! channel, set by the latest request; waiting for the host there would
//! hold the whole connection). A command the host then refuses ends its
//! channel with a message on stderr and exit status 255.
//!
//! Once the client has closed the channel, or the session is stopping,
//! the host's output is read and dropped rather than written to a client
//! that may never read it: the host side never stalls, so a stopping
//! session's `KILL` always reaches the host.
//!
//! Agent and X11 forwarding are refused by the handler, never forwarded:
//! they would hand the host a way back to the client.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::{client, server, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty};
use tokio::sync::watch;

use super::record::{self, Commands};

/// Bytes a session's channels carried, for its end record.
#[derive(Debug, Default)]
pub struct Counted {
    /// Channel data from the client.
    pub from_client: AtomicU64,
    /// Channel data (and stderr) to the client.
    pub to_client: AtomicU64,
}

/// A session's open channels, by the client's channel id.
pub type Channels = Arc<Mutex<HashMap<ChannelId, Arc<Open>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a request sent to the host was, for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// pty or env: a refusal is logged.
    Setting,
    /// exec, shell or subsystem: a refusal ends the channel.
    Command,
}

/// A relayed channel, as the connection's handler uses it.
pub struct Open {
    host: ChannelWriteHalf<client::Msg>,
    /// The host's answers owed to requests sent, oldest first.
    asked: Mutex<VecDeque<Asked>>,
    commands: Mutex<Commands>,
    /// Becomes `true` when the session is stopping.
    stopping: watch::Receiver<bool>,
}

impl Open {
    /// Sends a request with `send`, its answer owed as `what`; `false`
    /// when it could not be sent.
    async fn ask<F>(&self, what: Asked, send: F) -> bool
    where
        F: std::future::Future<Output = Result<(), russh::Error>>,
    {
        lock(&self.asked).push_back(what);
        if send.await.is_err() {
            lock(&self.asked).pop_back();
            return false;
        }
        true
    }

    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Records a command of `kind` with `text`, and runs it with `send`
    /// when it may: not when the channel already ran one, nor when a
    /// strict target cannot record it first, nor once the session is
    /// stopping (and if it stopped while the command was being sent, the
    /// command is killed).
    async fn command<F>(&self, kind: &str, text: &str, send: F) -> bool
    where
        F: std::future::Future<Output = Result<(), russh::Error>>,
    {
        if self.stopping() {
            return false;
        }
        let Some(started) = lock(&self.commands).start(kind, text) else {
            return false;
        };
        if let Err(why) = started.commit().await {
            let refused = lock(&self.commands).refused(&why);
            record::write(refused).await;
            return false;
        }
        if !self.ask(Asked::Command, send).await {
            let failed = lock(&self.commands).host_refused();
            record::write(failed).await;
            return false;
        }
        if self.stopping() {
            self.kill().await;
        }
        true
    }

    /// Kills what the channel runs on the host (the `signal` request:
    /// sshd sends it to the command's process group); bounded in time.
    pub async fn kill(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.host.signal(russh::Sig::KILL)).await;
    }

    /// `exec`: one command line.
    pub async fn exec(&self, command: &[u8]) -> bool {
        let text = crate::store::bytes_text(command);
        self.command("exec", &text, self.host.exec(true, command.to_vec()))
            .await
    }

    /// `shell`: an interactive shell.
    pub async fn shell(&self) -> bool {
        self.command("shell", "", self.host.request_shell(true))
            .await
    }

    /// `subsystem`: e.g. `sftp`.
    pub async fn subsystem(&self, name: &str) -> bool {
        self.command("subsystem", name, self.host.request_subsystem(true, name))
            .await
    }

    /// `pty-req`: a terminal for what runs next.
    pub async fn pty(&self, term: &str, size: (u32, u32, u32, u32), modes: &[(Pty, u32)]) -> bool {
        let (cols, rows, px, py) = size;
        self.ask(
            Asked::Setting,
            self.host.request_pty(true, term, cols, rows, px, py, modes),
        )
        .await
    }

    /// `env`: one environment variable for what runs next.
    pub async fn env(&self, name: &str, value: &str) -> bool {
        self.ask(Asked::Setting, self.host.set_env(true, name, value))
            .await
    }

    /// `window-change`: the terminal was resized (no answer).
    pub async fn window_change(&self, size: (u32, u32, u32, u32)) {
        let (cols, rows, px, py) = size;
        let _ = self.host.window_change(cols, rows, px, py).await;
    }

    /// `signal`: passed on (no answer).
    pub async fn signal(&self, signal: russh::Sig) {
        let _ = self.host.signal(signal).await;
    }
}

/// The open channel `id` of a session, if it is open.
pub fn find(channels: &Channels, id: ChannelId) -> Option<Arc<Open>> {
    lock(channels).get(&id).cloned()
}

/// Kills what every open channel of a session runs on the host (the
/// `signal` request: sshd sends it to the command's process group).
pub async fn kill_all(channels: &Channels) {
    let open: Vec<Arc<Open>> = lock(channels).values().cloned().collect();
    for o in open {
        o.kill().await;
    }
}

/// Starts relaying a channel whose host side is open: registers it in
/// `channels` (before the client learns it is open) and returns the
/// relay, which runs until both directions are done.
pub fn start(
    client: russh::Channel<server::Msg>,
    handle: server::Handle,
    host: russh::Channel<client::Msg>,
    commands: Commands,
    traffic: Arc<Counted>,
    channels: Channels,
    stopping: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    let id = client.id();
    let (client_rd, client_wr) = client.split();
    let (host_rd, host_wr) = host.split();
    let open = Arc::new(Open {
        host: host_wr,
        asked: Mutex::new(VecDeque::new()),
        commands: Mutex::new(commands),
        stopping,
    });
    lock(&channels).insert(id, open.clone());
    let (closed_tx, closed_rx) = watch::channel(false);
    async move {
        tokio::join!(
            to_host(client_rd, &open, &traffic, closed_tx),
            to_client(host_rd, client_wr, handle, &open, &traffic, closed_rx),
        );
        lock(&channels).remove(&id);
        let unfinished = lock(&open.commands).closed();
        record::write(unfinished).await;
    }
}

/// Client to host: data and the end of data (requests come through the
/// handler, see [`Open`]).
async fn to_host(
    mut client: ChannelReadHalf,
    open: &Open,
    traffic: &Counted,
    closed: watch::Sender<bool>,
) {
    while let Some(msg) = client.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                traffic
                    .from_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                open.host.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                traffic
                    .from_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                open.host.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => open.host.eof().await,
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = closed.send(true);
    let _ = open.host.close().await;
}

/// Writes to the client unless it has closed the channel or the session
/// is stopping first; `false` then (nothing more is written).
async fn deliver<F>(
    write: F,
    closed: &mut watch::Receiver<bool>,
    stopping: &mut watch::Receiver<bool>,
) -> bool
where
    F: std::future::Future<Output = Result<(), russh::Error>>,
{
    tokio::select! {
        r = write => r.is_ok(),
        _ = closed.wait_for(|c| *c) => false,
        _ = stopping.wait_for(|s| *s) => false,
    }
}

/// Host to client: data, exit status or signal, end of data, and answers
/// to requests.
async fn to_client(
    mut host: ChannelReadHalf,
    client: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    open: &Open,
    traffic: &Counted,
    mut closed: watch::Receiver<bool>,
) {
    let mut stopping = open.stopping.clone();
    // Whether the client still takes what the host sends.
    let mut writing = true;
    while let Some(msg) = host.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } if writing => {
                traffic
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                deliver(client.data_bytes(data), &mut closed, &mut stopping).await
            }
            ChannelMsg::ExtendedData { data, ext } if writing => {
                traffic
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                deliver(
                    client.extended_data_bytes(ext, data),
                    &mut closed,
                    &mut stopping,
                )
                .await
            }
            ChannelMsg::Eof if writing => deliver(client.eof(), &mut closed, &mut stopping).await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                let done = lock(&open.commands).exited(exit_status, Instant::now());
                record::write(done).await;
                writing
                    && deliver(client.exit_status(exit_status), &mut closed, &mut stopping).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let done =
                    lock(&open.commands).signalled(&format!("{signal_name:?}"), Instant::now());
                record::write(done).await;
                if writing {
                    let id = client.id();
                    let _ = handle
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await;
                }
                writing
            }
            ChannelMsg::Success => {
                lock(&open.asked).pop_front();
                writing
            }
            ChannelMsg::Failure => {
                let asked = lock(&open.asked).pop_front();
                if asked == Some(Asked::Command) {
                    // The client was told the command started: it learns
                    // otherwise on stderr, and the channel ends.
                    let failed = lock(&open.commands).host_refused();
                    record::write(failed).await;
                    if writing {
                        let note = "Portcullis: the host refused the request\r\n";
                        let _ = deliver(
                            client
                                .extended_data_bytes(1, bytes::Bytes::from_static(note.as_bytes())),
                            &mut closed,
                            &mut stopping,
                        )
                        .await;
                        let _ = deliver(client.exit_status(255), &mut closed, &mut stopping).await;
                    }
                    break;
                }
                tracing::debug!("the host refused a pty or env request");
                writing
            }
            _ => writing,
        };
        // What the client no longer takes is read from the host and
        // dropped, so that the host side never stalls.
        writing = sent;
    }
    if writing {
        let _ = client.close().await;
    }
}
