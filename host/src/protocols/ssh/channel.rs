//! One session channel, relayed between the client and the host: data both
//! ways at once (each direction its own task, so a full window one way
//! never stalls the other), requests forwarded in order with their replies
//! returned in the same order, and every exec, shell and subsystem
//! recorded as a `command` event with its exit status.
//!
//! Agent and X11 forwarding are refused here (answered with a failure,
//! never forwarded): they would hand the host a way back to the client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::{client, server, Channel, ChannelId, ChannelMsg};

use super::record::Commands;

/// How a request's reply reaches the client, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The host answers it; its answer is passed on.
    FromHost,
    /// The gateway answered it (`true`: success).
    Local(bool),
}

/// Replies owed to the client, oldest first.
#[derive(Default)]
struct Replies {
    queue: VecDeque<Reply>,
}

/// Bytes a session's channels carried, for its end record.
#[derive(Debug, Default)]
pub struct Counted {
    /// Channel data from the client.
    pub from_client: AtomicU64,
    /// Channel data (and stderr) to the client.
    pub to_client: AtomicU64,
}

/// One channel's relay.
pub struct Relay {
    /// The client's channel.
    pub client: Channel<server::Msg>,
    /// The connection to the client, for replies the channel cannot send.
    pub client_handle: server::Handle,
    /// The host's channel.
    pub host: Channel<client::Msg>,
    /// Where the channel's commands are recorded.
    pub commands: Commands,
    /// The session's byte counts.
    pub traffic: Arc<Counted>,
}

impl Relay {
    /// Relays until both directions are done.
    pub async fn run(self) {
        let id = self.client.id();
        let (client_rd, client_wr) = self.client.split();
        let (host_rd, host_wr) = self.host.split();
        let replies = Arc::new(Mutex::new(Replies::default()));
        let commands = Arc::new(Mutex::new(self.commands));
        let up = to_host(
            id,
            client_rd,
            host_wr,
            self.client_handle.clone(),
            replies.clone(),
            commands.clone(),
            self.traffic.clone(),
        );
        let down = to_client(
            id,
            host_rd,
            client_wr,
            self.client_handle,
            replies,
            commands.clone(),
            self.traffic,
        );
        tokio::join!(up, down);
        let pending = commands
            .lock()
            .map(|mut c| c.finish_all())
            .unwrap_or_default();
        for r in pending {
            r.write().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers the client's request `reply` now when nothing before it waits
/// for the host, or queues it behind what does.
async fn answer(handle: &server::Handle, id: ChannelId, replies: &Mutex<Replies>, success: bool) {
    let now = {
        let mut r = lock(replies);
        if r.queue.is_empty() {
            true
        } else {
            r.queue.push_back(Reply::Local(success));
            false
        }
    };
    if now {
        send_reply(handle, id, success).await;
    }
}

async fn send_reply(handle: &server::Handle, id: ChannelId, success: bool) {
    let _ = if success {
        handle.channel_success(id).await
    } else {
        handle.channel_failure(id).await
    };
}

/// Client to host: data, end of data, and requests.
async fn to_host(
    id: ChannelId,
    mut client: russh::ChannelReadHalf,
    host: russh::ChannelWriteHalf<client::Msg>,
    handle: server::Handle,
    replies: Arc<Mutex<Replies>>,
    commands: Arc<Mutex<Commands>>,
    traffic: Arc<Counted>,
) {
    let forwarded = |want_reply: bool| {
        if want_reply {
            lock(&replies).queue.push_back(Reply::FromHost);
        }
    };
    while let Some(msg) = client.wait().await {
        if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } = &msg {
            traffic
                .from_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let sent = match msg {
            ChannelMsg::Data { data } => host.data_bytes(data).await,
            ChannelMsg::ExtendedData { data, ext } => host.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => host.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::RequestPty {
                want_reply,
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
            } => {
                forwarded(want_reply);
                host.request_pty(
                    want_reply,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::SetEnv {
                want_reply,
                variable_name,
                variable_value,
            } => {
                forwarded(want_reply);
                host.set_env(want_reply, variable_name, variable_value)
                    .await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                host.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => host.signal(signal).await,
            ChannelMsg::RequestShell { want_reply } => {
                let Some(started) = lock(&commands).start("shell", "") else {
                    answer(&handle, id, &replies, false).await;
                    continue;
                };
                if !started.commit().await {
                    answer(&handle, id, &replies, false).await;
                    continue;
                }
                forwarded(want_reply);
                host.request_shell(want_reply).await
            }
            ChannelMsg::Exec {
                want_reply,
                command,
            } => {
                let text = String::from_utf8_lossy(&command).into_owned();
                let Some(started) = lock(&commands).start("exec", &text) else {
                    answer(&handle, id, &replies, false).await;
                    continue;
                };
                if !started.commit().await {
                    answer(&handle, id, &replies, false).await;
                    continue;
                }
                forwarded(want_reply);
                host.exec(want_reply, command).await
            }
            ChannelMsg::RequestSubsystem { want_reply, name } => {
                let Some(started) = lock(&commands).start("subsystem", &name) else {
                    answer(&handle, id, &replies, false).await;
                    continue;
                };
                if !started.commit().await {
                    answer(&handle, id, &replies, false).await;
                    continue;
                }
                forwarded(want_reply);
                host.request_subsystem(want_reply, name).await
            }
            ChannelMsg::AgentForward { want_reply } | ChannelMsg::RequestX11 { want_reply, .. } => {
                if want_reply {
                    answer(&handle, id, &replies, false).await;
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = host.close().await;
}

/// Host to client: data, exit status, end of data, and replies.
async fn to_client(
    id: ChannelId,
    mut host: russh::ChannelReadHalf,
    client: russh::ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    replies: Arc<Mutex<Replies>>,
    commands: Arc<Mutex<Commands>>,
    traffic: Arc<Counted>,
) {
    while let Some(msg) = host.wait().await {
        if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } = &msg {
            traffic
                .to_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let sent = match msg {
            ChannelMsg::Data { data } => client.data_bytes(data).await,
            ChannelMsg::ExtendedData { data, ext } => client.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => client.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                let done = lock(&commands).exited(exit_status, Instant::now());
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
                let done = lock(&commands).signalled(&format!("{signal_name:?}"), Instant::now());
                if let Some(r) = done {
                    r.write().await;
                }
                let _ = handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
                Ok(())
            }
            ChannelMsg::Success | ChannelMsg::Failure => {
                let success = matches!(msg, ChannelMsg::Success);
                // This reply, then every local one queued behind it.
                let mut due = vec![success];
                {
                    let mut r = lock(&replies);
                    if r.queue.front() == Some(&Reply::FromHost) {
                        r.queue.pop_front();
                    }
                    while let Some(Reply::Local(ok)) = r.queue.front().copied() {
                        r.queue.pop_front();
                        due.push(ok);
                    }
                }
                for ok in due {
                    send_reply(&handle, id, ok).await;
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
}
