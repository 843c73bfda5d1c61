//! One session channel, relayed between the client and the host.
//!
//! Data flows both ways at once (each direction its own task, so a full
//! window one way never stalls the other). Requests — pty, env, shell,
//! exec, subsystem — are not read from the data stream: the connection's
//! handler receives each one and calls this channel's [`Open`], which
//! records it, forwards it and waits for the host's answer, so that the
//! handler answers the client for exactly that request (russh keeps one
//! "wants a reply" flag per channel, set by the latest request).
//!
//! Agent and X11 forwarding are refused by the handler, never forwarded:
//! they would hand the host a way back to the client.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::{client, server, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty};
use tokio::sync::oneshot;

use super::record::Commands;

/// How long the host may take to answer a request.
const HOST_REPLY_WAIT: Duration = Duration::from_secs(30);

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

/// A relayed channel, as the connection's handler uses it.
pub struct Open {
    host: ChannelWriteHalf<client::Msg>,
    /// The host's answers owed to requests sent, oldest first.
    replies: Mutex<VecDeque<oneshot::Sender<bool>>>,
    commands: Mutex<Commands>,
}

/// A command line as text: as it is when it is UTF-8, otherwise `\x` and
/// its bytes in hex (what ran is never recorded as something else).
fn command_text(command: &[u8]) -> String {
    match std::str::from_utf8(command) {
        Ok(t) => t.to_string(),
        Err(_) => {
            let mut out = String::with_capacity(2 + command.len() * 2);
            out.push_str("\\x");
            for b in command {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

impl Open {
    /// Sends a request with `send` and waits for the host's answer.
    async fn ask<F>(&self, send: F) -> bool
    where
        F: std::future::Future<Output = Result<(), russh::Error>>,
    {
        let (tx, rx) = oneshot::channel();
        lock(&self.replies).push_back(tx);
        if send.await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(HOST_REPLY_WAIT, rx).await,
            Ok(Ok(true))
        )
    }

    /// Records a command of `kind` with `text`, and runs it with `send`
    /// when it may: not when the channel already ran one, nor when a
    /// strict target cannot record it first. A refusal by the host is
    /// recorded as the command's outcome.
    async fn command<F>(&self, kind: &str, text: &str, send: F) -> bool
    where
        F: std::future::Future<Output = Result<(), russh::Error>>,
    {
        let Some(started) = lock(&self.commands).start(kind, text) else {
            return false;
        };
        if let Err(why) = started.commit().await {
            let refused = lock(&self.commands).refused(&why);
            if let Some(r) = refused {
                r.write().await;
            }
            return false;
        }
        let ok = self.ask(send).await;
        if !ok {
            let failed = lock(&self.commands).host_refused();
            if let Some(r) = failed {
                r.write().await;
            }
        }
        ok
    }

    /// `exec`: one command line.
    pub async fn exec(&self, command: &[u8]) -> bool {
        let text = command_text(command);
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
        self.ask(self.host.request_pty(true, term, cols, rows, px, py, modes))
            .await
    }

    /// `env`: one environment variable for what runs next.
    pub async fn env(&self, name: &str, value: &str) -> bool {
        self.ask(self.host.set_env(true, name, value)).await
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

/// Kills what every open channel of a session runs on the host (the
/// `signal` request: sshd sends it to the command's process group).
pub async fn kill_all(channels: &Channels) {
    let open: Vec<Arc<Open>> = lock(channels).values().cloned().collect();
    for o in open {
        o.signal(russh::Sig::KILL).await;
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
) -> impl std::future::Future<Output = ()> + Send {
    let id = client.id();
    let (client_rd, client_wr) = client.split();
    let (host_rd, host_wr) = host.split();
    let open = Arc::new(Open {
        host: host_wr,
        replies: Mutex::new(VecDeque::new()),
        commands: Mutex::new(commands),
    });
    lock(&channels).insert(id, open.clone());
    async move {
        tokio::join!(
            to_host(client_rd, &open, &traffic),
            to_client(host_rd, client_wr, handle, &open, &traffic),
        );
        lock(&channels).remove(&id);
        let pending = lock(&open.commands).finish_all();
        for r in pending {
            r.write().await;
        }
    }
}

/// Client to host: data and the end of data (requests come through the
/// handler, see [`Open`]).
async fn to_host(mut client: ChannelReadHalf, open: &Open, traffic: &Counted) {
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
    let _ = open.host.close().await;
}

/// Host to client: data, exit status or signal, end of data, and answers
/// to requests.
async fn to_client(
    mut host: ChannelReadHalf,
    client: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    open: &Open,
    traffic: &Counted,
) {
    while let Some(msg) = host.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                traffic
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                client.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                traffic
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                client.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => client.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                let done = lock(&open.commands).exited(exit_status, Instant::now());
                if let Some(r) = done {
                    r.write().await;
                }
                client.exit_status(exit_status).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let done =
                    lock(&open.commands).signalled(&format!("{signal_name:?}"), Instant::now());
                if let Some(r) = done {
                    r.write().await;
                }
                let id = client.id();
                let _ = handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
                Ok(())
            }
            ChannelMsg::Success | ChannelMsg::Failure => {
                let waiting = lock(&open.replies).pop_front();
                if let Some(w) = waiting {
                    let _ = w.send(matches!(msg, ChannelMsg::Success));
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = client.close().await;
    // Requests still waiting for an answer get none.
    lock(&open.replies).clear();
}
