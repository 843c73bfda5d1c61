//! One session channel, relayed between the client and the host.
//!
//! Data flows both ways at once (each direction its own task, so a full
//! window one way never stalls the other). Requests — pty, env, shell,
//! exec, subsystem — are not read from the data stream: the connection's
//! handler receives each one and calls this channel's [`Open`], and the
//! handler answers the client for exactly that request at once (russh
//! keeps one "wants a reply" flag per channel, set by the latest request;
//! waiting for the host or an approver there would hold the whole
//! connection).
//!
//! A command (exec, shell, subsystem) is then judged by the target's
//! plugins, held for approval if they ask (its own task: the connection's
//! other channels go on), recorded, and only then sent to the host; what
//! the client sends on the channel before that waits (up to
//! [`MAX_HELD_INPUT`]), so nothing reaches the host ahead of a command
//! that may be refused. A refused command — by a plugin, an approver, the
//! audit store or the host — ends its channel with a message on stderr and
//! exit status 255. An env request is judged at once (it cannot wait) and
//! forwarded or refused.
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
use tokio::sync::{mpsc, watch};

use super::judge::{self, HoldOutcome, Judge};
use super::output::{self, Lines};
use super::record::{self, Commands, SessionEvents, Started};
use super::sftp::{self, Request};
use super::typed::{self, Pending, Reading, Script, Step, Typed, TypedLine};
use crate::gateway::cast::{self, Cast};
use crate::policy::{OutputWatch, QueryNote, SshPty, SshRequest, SshStream, Verdict};

/// Client data a channel keeps while its command is being judged or held
/// (beyond it, the client's data is not read until the command starts).
pub const MAX_HELD_INPUT: usize = 1 << 20;

/// SFTP operations a channel may have refused before it is ended (each
/// refusal is an answer queued for the client and an audit event).
const MAX_SFTP_REFUSALS: u32 = 1000;

/// Exit status of a command the gateway did not run (OpenSSH's own
/// failures use it too).
const REFUSED_STATUS: u32 = 255;

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
    /// env: a refusal is logged.
    Setting,
    /// pty: a refusal is logged, and the command runs without one.
    Pty,
    /// exec, shell or subsystem: a refusal ends the channel.
    Command,
}

/// Where a channel's command is, for its client's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not asked for yet, or being judged, held or recorded: data is held.
    Waiting,
    /// Being sent to the host: data is held (past the limit too).
    Starting,
    /// Running on the host: data is forwarded.
    Running,
    /// It will not run: data is dropped.
    Ended,
}

/// The line a client whose held input overflowed sees.
const OVERFLOW: &str = "more than 1 MiB of input arrived before the command started (while it was judged or held for approval), so it was not run; send input once the command runs";

/// What a refused typed line's client is told (after the reason).
const LINE_NOT_RUN: &str = "the line was not run";

/// Terminal modes a client may not set: the keys that edit, end or
/// interrupt a line, and the flags that turn signals and their flush off
/// or change how a line ends. The host keeps its defaults for them.
const LINE_KEYS: &[Pty] = &[
    Pty::VINTR,
    Pty::VERASE,
    Pty::VKILL,
    Pty::VEOF,
    Pty::VEOL,
    Pty::VEOL2,
    Pty::VWERASE,
    Pty::VLNEXT,
    Pty::VREPRINT,
    Pty::ISIG,
    Pty::NOFLSH,
    Pty::ICANON,
    Pty::IGNCR,
    Pty::INLCR,
    Pty::ICRNL,
];

/// Typed lines a channel may have refused before it is ended (each is a
/// message to the client and an audit event).
const MAX_LINE_REFUSALS: u32 = 1000;

/// A shell's input, read for the plugins' `on-command-line`.
enum Typing {
    /// On a terminal: keystrokes, read with the host's echo (advisory).
    Terminal(Box<Typed>),
    /// Without one: a script, command by command, each held until judged.
    Script(Script),
}

/// What the gateway itself tells the client on a channel.
enum ToClient {
    /// A line on stderr.
    Line(String),
    /// A line on stderr, then exit status 255 and the channel's end.
    Refuse(String),
    /// Channel data of the gateway's own (an SFTP refusal's status).
    Data(bytes::Bytes),
}

/// A relayed channel, as the connection's handler uses it.
pub struct Open {
    host: ChannelWriteHalf<client::Msg>,
    /// The host's answers owed to requests sent, oldest first.
    asked: Mutex<VecDeque<Asked>>,
    commands: Mutex<Commands>,
    /// Becomes `true` when the session is stopping.
    stopping: watch::Receiver<bool>,
    judge: Arc<Judge>,
    events: Arc<SessionEvents>,
    /// The gateway's own lines for the client.
    to_client: mpsc::UnboundedSender<ToClient>,
    /// Where the channel's command is: the client's data waits until it
    /// runs, and is dropped once it will not.
    phase: watch::Sender<Phase>,
    /// The client sent more than [`MAX_HELD_INPUT`] before the command
    /// started: it does not run (it would get cut input).
    overflowed: std::sync::atomic::AtomicBool,
    /// Changes when the client closes the channel (ends an approval wait).
    gone: watch::Sender<u64>,
    /// The terminal asked for, for the shell's judgment.
    pty: Mutex<Option<SshPty>>,
    /// The command's terminal recording, once it runs.
    cast: Mutex<Option<Cast>>,
    /// How much terminal data a recording keeps (0: none).
    recording_limit: u64,
    /// The host's side ended without closing the channel: its connection
    /// is gone.
    host_lost: std::sync::atomic::AtomicBool,
    /// The plugins that watch the command's output (set once, before it
    /// runs: the relay reads it per message without a lock).
    watch: std::sync::OnceLock<OutputWatch>,
    /// An `sftp` subsystem's packets, read for the plugins (set once,
    /// before it runs; other channels never lock it).
    sftp: std::sync::OnceLock<Mutex<sftp::Packets>>,
    /// SFTP operations refused on the channel so far.
    sftp_refusals: std::sync::atomic::AtomicU32,
    /// A shell's input, read line by line for the plugins (set once,
    /// before it runs).
    typing: std::sync::OnceLock<Mutex<Typing>>,
    /// Typed lines refused on the channel so far.
    line_refusals: std::sync::atomic::AtomicU32,
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

    /// Tells the client `why` the channel's command does not run, and
    /// ends the channel.
    fn refuse(&self, why: &str) {
        self.phase.send_replace(Phase::Ended);
        let _ = self.to_client.send(ToClient::Refuse(why.to_string()));
    }

    /// Refuses the command with `why` (or, if the client's held input
    /// overflowed meanwhile, with that) and records `refused` with it.
    async fn refuse_started(&self, started: Started, decided_by: Option<&str>, why: &str) {
        let overflowed = self.overflowed.load(Ordering::SeqCst);
        let (by, why) = match overflowed {
            true => (Some("gateway"), OVERFLOW),
            false => (decided_by, why),
        };
        record::write(Some(started.refused(by, why))).await;
        self.refuse(why);
    }

    /// A command: `false` when it cannot be asked for at all (the channel
    /// already asked for one, or the session is stopping). Otherwise it is
    /// judged, held, recorded and sent to the host on its own task, and a
    /// refusal reaches the client on stderr.
    pub fn command(self: &Arc<Self>, request: SshRequest) -> bool {
        if self.stopping() {
            return false;
        }
        let (kind, text) = match &request {
            SshRequest::Exec(command) => ("exec", command.as_str()),
            SshRequest::Shell(_) => ("shell", ""),
            SshRequest::Subsystem(name) => ("subsystem", name.as_str()),
            SshRequest::Env { .. } | SshRequest::DirectTcpip { .. } => return false,
        };
        let Some(started) = lock(&self.commands).start(kind, text) else {
            return false;
        };
        tokio::spawn(self.clone().run(request, started));
        true
    }

    /// Judges, holds, records and sends the channel's command.
    async fn run(self: Arc<Self>, request: SshRequest, mut started: Started) {
        let mut note = QueryNote::default();
        let verdict = self.judge.decide(&request, &mut note);
        if let Verdict::RequireApproval { reason } = &verdict {
            let mut gone = self.gone.subscribe();
            let mut stopping = self.stopping.clone();
            let lines = self.to_client.clone();
            let waiting = |id: &str| {
                let _ = lines.send(ToClient::Line(judge::waiting_line(id, reason)));
            };
            let outcome = tokio::select! {
                o = self.judge.hold(&request, &mut note, reason, waiting, &mut gone) => o,
                _ = stopping.wait_for(|s| *s) => HoldOutcome::Refused("the session is stopping".into()),
            };
            started.judged(&verdict, &note);
            if let HoldOutcome::Refused(why) = outcome {
                self.refuse_started(started, None, &why).await;
                return;
            }
        } else {
            started.judged(&verdict, &note);
        }
        if let Verdict::Deny { reason } = &verdict {
            self.refuse_started(started, None, reason).await;
            return;
        }
        if self.overflowed.load(Ordering::SeqCst) {
            self.refuse_started(started, Some("gateway"), OVERFLOW)
                .await;
            return;
        }
        let record = match started.commit().await {
            Ok(record) => record,
            Err((refused, why)) => {
                record::write(Some(refused)).await;
                self.refuse(&why);
                return;
            }
        };
        let seq = record.seq;
        lock(&self.commands).running(record);
        // From here the client's held data waits for the command whatever
        // its size (the request is on its way); unless it overflowed first.
        let starting = self.phase.send_if_modified(|p| {
            let waiting = *p == Phase::Waiting;
            if waiting {
                *p = Phase::Starting;
            }
            waiting
        });
        if self.stopping() || *self.gone.borrow() > 0 || !starting {
            let ended = lock(&self.commands).closed();
            record::write(ended).await;
            let why = match self.overflowed.load(Ordering::SeqCst) {
                true => OVERFLOW,
                false => "the channel ended before the command started",
            };
            self.refuse(why);
            return;
        }
        // Output plugins watch is an exec's or a shell's (a subsystem's
        // data is a protocol an edit would break).
        if matches!(request, SshRequest::Exec(_) | SshRequest::Shell(_)) {
            let _ = self.watch.set(self.judge.watch_output(&request));
        }
        if matches!(&request, SshRequest::Subsystem(name) if name == "sftp") {
            let _ = self.sftp.set(Mutex::default());
        }
        // A shell's lines are judged: typed on a terminal (a shell, or
        // whatever an exec with a terminal runs), or read as a script by a
        // shell without one — known once the host answered the pty
        // request (one it refused leaves the command without a terminal).
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&self.asked).contains(&Asked::Pty) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let terminal = lock(&self.pty).is_some();
        let typing = match &request {
            SshRequest::Shell(_) | SshRequest::Exec(_) if terminal => {
                Some(Typing::Terminal(Box::default()))
            }
            // (A shell whose pty the host refused has none either.)
            SshRequest::Shell(_) => Some(Typing::Script(Script::default())),
            SshRequest::Exec(command) if typed::reads_a_script(command) => {
                Some(Typing::Script(Script::default()))
            }
            _ => None,
        };
        if let Some(typing) = typing {
            let _ = self.typing.set(Mutex::new(typing));
        }
        if !self.ask(Asked::Command, self.send_command(&request)).await {
            let failed = lock(&self.commands).host_refused();
            record::write(failed).await;
            self.refuse("the host refused the request");
            return;
        }
        self.start_recording(&request, seq);
        self.phase.send_replace(Phase::Running);
        if self.stopping() {
            self.kill().await;
        }
    }

    /// Starts the terminal recording of an exec or shell (a subsystem's
    /// data is a protocol, not a terminal) whose event is `seq`.
    fn start_recording(&self, request: &SshRequest, seq: u64) {
        let command = match request {
            SshRequest::Exec(command) => Some(command.as_str()),
            SshRequest::Shell(_) => None,
            _ => return,
        };
        if self.recording_limit == 0 {
            return;
        }
        let pty = lock(&self.pty).clone();
        let title = request.text();
        let header = cast::Header {
            width: pty.as_ref().map_or(80, |p| p.columns.max(1)),
            height: pty.as_ref().map_or(24, |p| p.rows.max(1)),
            term: pty.as_ref().map(|p| p.term.as_str()),
            timestamp: crate::store::now_micros() / 1_000_000,
            command,
            title: &title,
        };
        *lock(&self.cast) = Some(Cast::start(
            self.events.session_id(),
            seq,
            &header,
            self.recording_limit,
        ));
    }

    /// Adds to the recording with `f`, storing a chunk when one is ready.
    async fn record(&self, f: impl FnOnce(&mut Cast) -> Option<crate::store::Record>) {
        let chunk = lock(&self.cast).as_mut().and_then(f);
        if let Some(chunk) = chunk {
            self.events.store(chunk).await;
        }
    }

    /// Sends the command to the host.
    async fn send_command(&self, request: &SshRequest) -> Result<(), russh::Error> {
        match request {
            SshRequest::Exec(command) => self.host.exec(true, command.as_bytes().to_vec()).await,
            SshRequest::Shell(_) => self.host.request_shell(true).await,
            SshRequest::Subsystem(name) => self.host.request_subsystem(true, name).await,
            SshRequest::Env { .. } | SshRequest::DirectTcpip { .. } => Ok(()),
        }
    }

    /// Kills what the channel runs on the host (the `signal` request:
    /// sshd sends it to the command's process group); bounded in time.
    pub async fn kill(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.host.signal(russh::Sig::KILL)).await;
    }

    /// `exec`: one command line. A line that is not UTF-8 is refused:
    /// plugins judge text, and the host must run exactly what they judged.
    pub fn exec(self: &Arc<Self>, command: &[u8]) -> bool {
        match std::str::from_utf8(command) {
            Ok(text) => self.command(SshRequest::Exec(text.to_string())),
            Err(_) => {
                let Some(started) =
                    lock(&self.commands).start("exec", &crate::store::bytes_text(command))
                else {
                    return false;
                };
                let why = "the command line is not valid UTF-8; the gateway runs only commands its plugins can read";
                let refused = started.refused(Some("gateway"), why);
                let this = self.clone();
                tokio::spawn(async move {
                    record::write(Some(refused)).await;
                    this.refuse(why);
                });
                true
            }
        }
    }

    /// `shell`: an interactive shell.
    pub fn shell(self: &Arc<Self>) -> bool {
        let pty = lock(&self.pty).clone();
        self.command(SshRequest::Shell(pty))
    }

    /// `subsystem`: e.g. `sftp`.
    pub fn subsystem(self: &Arc<Self>, name: &str) -> bool {
        self.command(SshRequest::Subsystem(name.to_string()))
    }

    /// `pty-req`: a terminal for what runs next; refused once the channel
    /// asked for its command (the plugins judged it without this one).
    pub async fn pty(&self, term: &str, size: (u32, u32, u32, u32), modes: &[(Pty, u32)]) -> bool {
        if lock(&self.commands).asked() {
            return false;
        }
        let (cols, rows, px, py) = size;
        // The line discipline keeps its usual keys and signals: typed lines
        // are read assuming them (Ctrl-C drops a refused one).
        let modes: Vec<(Pty, u32)> = modes
            .iter()
            .filter(|(mode, _)| !LINE_KEYS.contains(mode))
            .copied()
            .collect();
        *lock(&self.pty) = Some(SshPty {
            term: term.to_string(),
            columns: cols,
            rows,
        });
        self.ask(
            Asked::Pty,
            self.host
                .request_pty(true, term, cols, rows, px, py, &modes),
        )
        .await
    }

    /// `env`: one environment variable for what runs next, judged at once
    /// (it cannot wait for an approver) and recorded by name (values often
    /// carry secrets).
    pub async fn env(&self, name: &str, value: &str) -> bool {
        // Settings come before the command (and the host's answers to
        // them must stay in the order the requests were sent).
        if lock(&self.commands).asked() {
            return false;
        }
        let request = SshRequest::Env {
            name: name.to_string(),
            value: value.to_string(),
        };
        let mut note = QueryNote::default();
        let verdict = self.judge.decide(&request, &mut note);
        let refused = judge::refusal_now(
            &verdict,
            "an environment variable cannot wait for approval, so it was not set",
        );
        let event = self
            .events
            .setting("env", name, &verdict, &note, refused.as_deref());
        record::write(Some(event)).await;
        if refused.is_some() {
            return false;
        }
        self.ask(Asked::Setting, self.host.set_env(true, name, value))
            .await
    }

    /// Client data of an `sftp` subsystem: each whole packet is read, a
    /// file operation judged and recorded (event kind `sftp`), and sent
    /// to the host only if allowed; a refused one is answered with a
    /// "permission denied" status carrying the reason.
    async fn sftp_data(&self, data: &[u8]) -> Result<(), russh::Error> {
        let packets = match self.sftp.get().map(|p| lock(p).push(data)) {
            Some(Ok(packets)) => packets,
            Some(Err(sftp::TooLong(n))) => {
                self.refuse(&format!(
                    "an SFTP packet of {n} bytes is longer than the gateway reads ({} bytes)",
                    sftp::MAX_PACKET
                ));
                return Ok(());
            }
            None => return Ok(()),
        };
        for packet in packets {
            let (id, text, verdict, note) = match sftp::read(&packet) {
                Request::Pass => {
                    let packet = sftp::pinned_init(&packet).unwrap_or(packet);
                    self.host.data_bytes(bytes::Bytes::from(packet)).await?;
                    continue;
                }
                Request::Operations(id, ops) => {
                    // Every part must be allowed; the first refused one
                    // (or the first part, when all are) is recorded.
                    let mut judged = None;
                    for op in &ops {
                        let mut note = QueryNote::default();
                        let verdict = self.judge.decide_file(op, &mut note);
                        let allowed = matches!(verdict, Verdict::Allow);
                        if judged.is_none() || !allowed {
                            judged = Some((op.text(), verdict, note));
                        }
                        if !allowed {
                            break;
                        }
                    }
                    let Some((text, verdict, note)) = judged else {
                        self.host.data_bytes(bytes::Bytes::from(packet)).await?;
                        continue;
                    };
                    (id, text, verdict, note)
                }
                Request::Unknown(id, what) => {
                    let note = QueryNote {
                        decided_by: Some("gateway".into()),
                        ..QueryNote::default()
                    };
                    let reason = format!("{what} is not one the gateway can judge");
                    (id, what, Verdict::Deny { reason }, note)
                }
            };
            let refused = judge::refusal_now(
                &verdict,
                "an SFTP operation cannot wait for approval, so it was refused",
            );
            let event = self
                .events
                .setting("sftp", &text, &verdict, &note, refused.as_deref());
            record::write(Some(event)).await;
            match refused {
                None => self.host.data_bytes(bytes::Bytes::from(packet)).await?,
                Some(why) => {
                    let refusals = self.sftp_refusals.fetch_add(1, Ordering::SeqCst) + 1;
                    if refusals > MAX_SFTP_REFUSALS {
                        self.refuse(&format!(
                            "more than {MAX_SFTP_REFUSALS} SFTP operations were refused on this channel"
                        ));
                        return Ok(());
                    }
                    let status = bytes::Bytes::from(sftp::denied(id, &why));
                    let _ = self.to_client.send(ToClient::Data(status));
                }
            }
        }
        Ok(())
    }

    /// Client data of a shell: each line the plugins judge before the key
    /// that hands it to the shell (on a terminal) or each whole command (a
    /// script) goes to the host; a refused line's key becomes Ctrl-C (the
    /// shell drops the line), a refused command is not sent, and the
    /// client is told.
    async fn typed_data(
        &self,
        typing: &Mutex<Typing>,
        data: bytes::Bytes,
    ) -> Result<(), russh::Error> {
        let steps = match &mut *lock(typing) {
            Typing::Terminal(typed) => typed.input(&data),
            Typing::Script(script) => script.push(&data),
        };
        // Waiting for echo is bounded per message, not per line.
        let mut echo_budget = typed::ECHO_WAIT;
        for step in steps {
            if self.stopping() || *self.phase.borrow() == Phase::Ended {
                break;
            }
            self.typed_step(typing, &data, step, &mut echo_budget)
                .await?;
        }
        Ok(())
    }

    /// Sends one step of a shell's input (of `data`) to the host.
    async fn typed_step(
        &self,
        typing: &Mutex<Typing>,
        data: &bytes::Bytes,
        step: Step,
        echo_budget: &mut Duration,
    ) -> Result<(), russh::Error> {
        match step {
            Step::Pass(range) => self.host.data_bytes(data.slice(range)).await,
            Step::Enter(at, pending) => {
                if pending.needs_echo() {
                    self.settle(typing, &pending, echo_budget).await;
                }
                let reading = match &*lock(typing) {
                    Typing::Terminal(typed) => typed.read(&pending),
                    Typing::Script(_) => Reading::Blank,
                };
                let refused = match reading {
                    Reading::Blank | Reading::Secret => None,
                    Reading::Judge(readings) => {
                        let (judged, refused) = self.judge_line(&readings).await;
                        if let Typing::Terminal(typed) = &mut *lock(typing) {
                            typed.judged(&judged, refused.is_none());
                        }
                        refused
                    }
                    Reading::Unreadable(why) => Some(self.unreadable(why).await),
                };
                match refused {
                    None => self.host.data_bytes(data.slice(at..at + 1)).await,
                    Some(why) => {
                        let shown = format!("\r\nPortcullis: {why}; {LINE_NOT_RUN}\r\n");
                        let _ = self
                            .to_client
                            .send(ToClient::Data(bytes::Bytes::from(shown)));
                        self.count_refusal();
                        self.host
                            .data_bytes(bytes::Bytes::from_static(b"\x03"))
                            .await
                    }
                }
            }
            Step::Line(line, readings) => {
                let refused = match readings.is_empty() {
                    true => None,
                    false => self.judge_line(&readings).await.1,
                };
                match refused {
                    None => self.host.data_bytes(bytes::Bytes::from(line)).await,
                    Some(why) => {
                        let _ = self
                            .to_client
                            .send(ToClient::Line(format!("{why}; {LINE_NOT_RUN}")));
                        self.count_refusal();
                        Ok(())
                    }
                }
            }
            Step::Drop(why) => {
                let why = self.unreadable(why).await;
                let _ = self.to_client.send(ToClient::Line(why));
                self.count_refusal();
                Ok(())
            }
        }
    }

    /// Waits until the echo of `pending`'s keys has settled on the
    /// terminal, or `budget` is spent, or the channel or session ends.
    async fn settle(&self, typing: &Mutex<Typing>, pending: &Pending, budget: &mut Duration) {
        let started = Instant::now();
        loop {
            let settled = match &*lock(typing) {
                Typing::Terminal(typed) => typed.settled(pending),
                Typing::Script(_) => true,
            };
            let ended = self.stopping() || *self.phase.borrow() == Phase::Ended;
            if settled || ended || started.elapsed() >= *budget {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *budget = budget.saturating_sub(started.elapsed());
    }

    /// Counts a refused line; past [`MAX_LINE_REFUSALS`] the channel ends.
    fn count_refusal(&self) {
        let refusals = self.line_refusals.fetch_add(1, Ordering::SeqCst) + 1;
        if refusals > MAX_LINE_REFUSALS {
            self.refuse(&format!(
                "more than {MAX_LINE_REFUSALS} lines were refused on this channel"
            ));
        }
    }

    /// Records a line the gateway refused because it cannot read it;
    /// `why`, for the client.
    async fn unreadable(&self, why: &str) -> String {
        let note = QueryNote {
            decided_by: Some("gateway".into()),
            ..QueryNote::default()
        };
        let verdict = Verdict::Deny {
            reason: why.to_string(),
        };
        let event = self.events.setting(
            "command-line",
            "[a line the gateway could not read]",
            &verdict,
            &note,
            Some(why),
        );
        record::write(Some(event)).await;
        why.to_string()
    }

    /// Judges the readings of a line (all must be allowed): the reading
    /// judged (the first refused one, or the first), and why it is
    /// refused, if it is. The line is recorded (event kind
    /// `command-line`) when refused or when a plugin asks.
    async fn judge_line(&self, readings: &[TypedLine]) -> (String, Option<String>) {
        let mut judged = None;
        for line in readings {
            let mut note = QueryNote::default();
            let verdict = self.judge.decide_line(line, &mut note);
            let allowed = verdict == Verdict::Allow;
            if judged.is_none() || !allowed {
                judged = Some((line, verdict, note));
            }
            if !allowed {
                break;
            }
        }
        let Some((line, verdict, note)) = judged else {
            return (String::new(), None);
        };
        let refused = judge::refusal_now(
            &verdict,
            "a typed line cannot wait for approval; run it as a command (ssh TARGET 'command') to ask",
        );
        if refused.is_some() || note.record.is_some() {
            let event = self.events.setting(
                "command-line",
                &line.text,
                &verdict,
                &note,
                refused.as_deref(),
            );
            record::write(Some(event)).await;
        }
        (line.text.clone(), refused)
    }

    /// `window-change`: the terminal was resized (no answer).
    pub async fn window_change(&self, size: (u32, u32, u32, u32)) {
        let (cols, rows, px, py) = size;
        self.record(|c| c.resize(cols, rows)).await;
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

/// Records what the channels still open left — the rest of each
/// recording, each command closed without a status — for relays ended by
/// force (their own ending would have done it).
pub async fn abandon(channels: &Channels) {
    let open: Vec<Arc<Open>> = lock(channels).drain().map(|(_, o)| o).collect();
    for o in open {
        let rest = lock(&o.cast).take().and_then(Cast::finish);
        if let Some(rest) = rest {
            o.events.store(rest).await;
        }
        let unfinished = lock(&o.commands).host_lost();
        record::write(unfinished).await;
    }
}

/// What every channel of a session shares.
#[derive(Clone)]
pub struct SessionParts {
    /// The session's recorder.
    pub events: Arc<SessionEvents>,
    /// Its plugins' judge.
    pub judge: Arc<Judge>,
    /// Bytes carried.
    pub traffic: Arc<Counted>,
    /// Its open channels.
    pub channels: Channels,
    /// Becomes `true` when the session is stopping.
    pub stopping: watch::Receiver<bool>,
    /// How much terminal data each channel's recording keeps (0: none).
    pub recording_limit: u64,
}

/// Starts relaying a channel whose host side is open: registers it in the
/// session's channels (before the client learns it is open) and returns
/// the relay, which runs until both directions are done.
pub fn start(
    client: russh::Channel<server::Msg>,
    handle: server::Handle,
    host: russh::Channel<client::Msg>,
    session: SessionParts,
) -> impl std::future::Future<Output = ()> + Send {
    let id = client.id();
    let (client_rd, client_wr) = client.split();
    let (host_rd, host_wr) = host.split();
    let (to_client_tx, to_client_rx) = mpsc::unbounded_channel();
    let open = Arc::new(Open {
        host: host_wr,
        asked: Mutex::new(VecDeque::new()),
        commands: Mutex::new(Commands::new(session.events.clone())),
        stopping: session.stopping,
        judge: session.judge,
        events: session.events,
        to_client: to_client_tx,
        phase: watch::channel(Phase::Waiting).0,
        overflowed: std::sync::atomic::AtomicBool::new(false),
        gone: watch::channel(0).0,
        pty: Mutex::new(None),
        cast: Mutex::new(None),
        recording_limit: session.recording_limit,
        host_lost: std::sync::atomic::AtomicBool::new(false),
        watch: std::sync::OnceLock::new(),
        sftp: std::sync::OnceLock::new(),
        sftp_refusals: std::sync::atomic::AtomicU32::new(0),
        typing: std::sync::OnceLock::new(),
        line_refusals: std::sync::atomic::AtomicU32::new(0),
    });
    let (channels, traffic) = (session.channels, session.traffic);
    lock(&channels).insert(id, open.clone());
    let (closed_tx, closed_rx) = watch::channel(false);
    async move {
        tokio::join!(
            to_host(client_rd, &open, &traffic, closed_tx),
            to_client(
                host_rd,
                client_wr,
                to_client_rx,
                handle,
                &open,
                &traffic,
                closed_rx
            ),
        );
        // Recorded before the channel leaves the session's map: a relay
        // ended by force mid-way leaves the rest to [`abandon`] (each part
        // is taken once).
        let rest = lock(&open.cast).take().and_then(Cast::finish);
        if let Some(rest) = rest {
            open.events.store(rest).await;
        }
        let unfinished = match open.host_lost.load(Ordering::SeqCst) {
            true => lock(&open.commands).host_lost(),
            false => lock(&open.commands).closed(),
        };
        record::write(unfinished).await;
        lock(&channels).remove(&id);
    }
}

/// What a held message counts against [`MAX_HELD_INPUT`]: its data, and
/// at least this much, so that empty messages cannot pile up for free.
const HELD_MESSAGE_COST: usize = 64;

/// Client to host: data and the end of data (requests come through the
/// handler, see [`Open`]), held until the channel's command runs and
/// dropped if it will not. The client is always read, so a channel whose
/// command waits never stalls the connection; past [`MAX_HELD_INPUT`]
/// held, the command is refused instead.
async fn to_host(
    mut client: ChannelReadHalf,
    open: &Open,
    traffic: &Counted,
    closed: watch::Sender<bool>,
) {
    let mut phase = open.phase.subscribe();
    let mut held: VecDeque<ChannelMsg> = VecDeque::new();
    let mut held_bytes = 0usize;
    'relay: loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Running => {
                while let Some(msg) = held.pop_front() {
                    if forward(open, traffic, msg).await.is_err() {
                        break 'relay;
                    }
                }
                held_bytes = 0;
            }
            Phase::Ended => {
                held.clear();
                held_bytes = 0;
            }
            Phase::Waiting | Phase::Starting => {}
        }
        let msg = tokio::select! {
            msg = client.wait() => msg,
            _ = phase.changed(), if matches!(now, Phase::Waiting | Phase::Starting) => continue,
        };
        let Some(msg) = msg else { break };
        let size = match &msg {
            ChannelMsg::Close => break,
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
            ChannelMsg::Eof => 0,
            // Requests reach the handler; nothing else is relayed.
            _ => continue,
        };
        let current = *phase.borrow();
        match current {
            Phase::Running => {
                if forward(open, traffic, msg).await.is_err() {
                    break;
                }
            }
            Phase::Ended => {}
            Phase::Waiting | Phase::Starting => {
                let cost = size.max(HELD_MESSAGE_COST);
                if held_bytes + cost > MAX_HELD_INPUT {
                    let refused = open.phase.send_if_modified(|p| {
                        let waiting = *p == Phase::Waiting;
                        if waiting {
                            *p = Phase::Ended;
                        }
                        waiting
                    });
                    if refused {
                        // The command is refused (a hold ends at once).
                        open.overflowed.store(true, Ordering::SeqCst);
                        open.gone.send_modify(|n| *n += 1);
                        continue;
                    }
                }
                held_bytes += cost;
                held.push_back(msg);
            }
        }
    }
    let _ = closed.send(true);
    open.gone.send_modify(|n| *n += 1);
    let _ = open.host.close().await;
}

/// Sends one message of the client's to the host.
async fn forward(open: &Open, traffic: &Counted, msg: ChannelMsg) -> Result<(), russh::Error> {
    match msg {
        ChannelMsg::Data { data } if open.sftp.get().is_some() => {
            traffic
                .from_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            open.sftp_data(&data).await
        }
        // sshd ignores extended data from a client; on sftp, so does the
        // gateway (it is not SFTP it could read).
        ChannelMsg::ExtendedData { .. } if open.sftp.get().is_some() => Ok(()),
        // Nor on a shell whose lines are judged (a shell reads no such
        // thing; a host that did would read what no plugin saw).
        ChannelMsg::ExtendedData { .. } if open.typing.get().is_some() => Ok(()),
        ChannelMsg::Data { data } if open.typing.get().is_some() => {
            traffic
                .from_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            open.record(|c| c.input(&data)).await;
            match open.typing.get() {
                Some(typing) => open.typed_data(typing, data).await,
                None => Ok(()),
            }
        }
        ChannelMsg::Eof => {
            // A script's last line, if it had no line end, is judged first.
            let last = open.typing.get().and_then(|t| match &mut *lock(t) {
                Typing::Script(script) => script.finish(),
                Typing::Terminal(_) => None,
            });
            if let (Some(step), Some(typing)) = (last, open.typing.get()) {
                let mut no_wait = Duration::ZERO;
                open.typed_step(typing, &bytes::Bytes::new(), step, &mut no_wait)
                    .await?;
            }
            open.host.eof().await
        }
        ChannelMsg::Data { data } => {
            traffic
                .from_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            open.record(|c| c.input(&data)).await;
            open.host.data_bytes(data).await
        }
        ChannelMsg::ExtendedData { data, ext } => {
            traffic
                .from_client
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            open.host.extended_data_bytes(ext, data).await
        }
        _ => Ok(()),
    }
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

/// Tells the client on stderr why its command does not run, then exit
/// status 255, the end of data and the channel's close.
async fn refuse(
    client: &ChannelWriteHalf<server::Msg>,
    why: &str,
    closed: &mut watch::Receiver<bool>,
    stopping: &mut watch::Receiver<bool>,
) {
    let line = bytes::Bytes::from(format!("Portcullis: {why}\r\n"));
    if deliver(client.extended_data_bytes(1, line), closed, stopping).await
        && deliver(client.exit_status(REFUSED_STATUS), closed, stopping).await
        && deliver(client.eof(), closed, stopping).await
    {
        let _ = client.close().await;
    }
}

/// Tells the client its command's host is gone, then exit status 255 and
/// the channel's end; bounded in time (the session is stopping, and a
/// client that does not read must not hold it).
async fn host_lost(client: &ChannelWriteHalf<server::Msg>) {
    let line = bytes::Bytes::from_static(
        b"Portcullis: the host closed the connection before the command finished\r\n",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        client.extended_data_bytes(1, line).await?;
        client.exit_status(REFUSED_STATUS).await?;
        client.eof().await?;
        client.close().await
    })
    .await;
}

/// Sleeps until `at` (never, without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes the host's output to the client: counted, recorded as sent.
struct Output<'a> {
    client: &'a ChannelWriteHalf<server::Msg>,
    open: &'a Open,
    traffic: &'a Counted,
}

impl Output<'_> {
    /// Sends `data` on `stream` (stderr: extended data 1).
    async fn send(
        &mut self,
        stream: SshStream,
        data: bytes::Bytes,
        closed: &mut watch::Receiver<bool>,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        match stream {
            SshStream::Stdout => self.send_ext(0, data, closed, stopping).await,
            SshStream::Stderr => self.send_ext(1, data, closed, stopping).await,
        }
    }

    /// Sends `data` as channel data (`ext` 0) or extended data `ext`.
    async fn send_ext(
        &mut self,
        ext: u32,
        data: bytes::Bytes,
        closed: &mut watch::Receiver<bool>,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        self.traffic
            .to_client
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.open.record(|c| c.output(&data)).await;
        match ext {
            0 => deliver(self.client.data_bytes(data), closed, stopping).await,
            ext => deliver(self.client.extended_data_bytes(ext, data), closed, stopping).await,
        }
    }

    /// Shows `data` (whole lines) to the plugins watching the output and
    /// sends what they make of it.
    async fn judged(
        &mut self,
        stream: SshStream,
        data: Vec<u8>,
        closed: &mut watch::Receiver<bool>,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let edited = self.open.watch.get().and_then(|watch| {
            let text = String::from_utf8_lossy(&data);
            self.open.judge.output(watch, stream, &text)
        });
        let shown = match edited {
            Some(edited) => bytes::Bytes::from(edited.into_bytes()),
            None => bytes::Bytes::from(data),
        };
        self.send(stream, shown, closed, stopping).await
    }

    /// Shows every held partial line to the plugins and sends it;
    /// `false` once the client no longer takes output.
    async fn flush(
        &mut self,
        lines: &mut Lines,
        closed: &mut watch::Receiver<bool>,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        for stream in [SshStream::Stdout, SshStream::Stderr] {
            if let Some(held) = lines.take(stream) {
                if !self.judged(stream, held, closed, stopping).await {
                    return false;
                }
            }
        }
        true
    }
}

/// Host to client: data, exit status or signal, end of data, the
/// gateway's own lines, and answers to requests.
async fn to_client(
    mut host: ChannelReadHalf,
    client: ChannelWriteHalf<server::Msg>,
    mut own: mpsc::UnboundedReceiver<ToClient>,
    handle: server::Handle,
    open: &Open,
    traffic: &Counted,
    mut closed: watch::Receiver<bool>,
) {
    let mut stopping = open.stopping.clone();
    // Whether the client still takes what the host sends.
    let mut writing = true;
    // Output plugins watch waits for the rest of its line.
    let mut lines = Lines::default();
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let mut out = Output {
        client: &client,
        open,
        traffic,
    };
    // An sftp channel's host packets, cut whole so that the gateway's own
    // answers (refusals) go only between them; answers wait meanwhile.
    let mut host_packets = sftp::Packets::default();
    let mut deferred: VecDeque<bytes::Bytes> = VecDeque::new();
    loop {
        let msg = tokio::select! {
            msg = host.wait() => msg,
            _ = sleep_until(quiet_until), if quiet_until.is_some() && writing => {
                quiet_until = None;
                writing = out.flush(&mut lines, &mut closed, &mut stopping).await;
                continue;
            }
            Some(line) = own.recv(), if writing => {
                writing = match line {
                    ToClient::Line(text) => {
                        let line = bytes::Bytes::from(format!("Portcullis: {text}\r\n"));
                        deliver(client.extended_data_bytes(1, line), &mut closed, &mut stopping).await
                    }
                    ToClient::Refuse(text) => {
                        refuse(&client, &text, &mut closed, &mut stopping).await;
                        let _ = open.host.close().await;
                        false
                    }
                    ToClient::Data(data) if host_packets.holding() => {
                        deferred.push_back(data);
                        true
                    }
                    ToClient::Data(data) => {
                        out.send(SshStream::Stdout, data, &mut closed, &mut stopping).await
                    }
                };
                continue;
            }
        };
        // What is held goes out before anything that ends the command
        // (window adjustments and answers to settings do not).
        let ending = matches!(
            msg,
            None | Some(
                ChannelMsg::Eof
                    | ChannelMsg::ExitStatus { .. }
                    | ChannelMsg::ExitSignal { .. }
                    | ChannelMsg::Close
                    | ChannelMsg::Failure
            )
        );
        if ending && lines.holding() && writing {
            quiet_until = None;
            writing = out.flush(&mut lines, &mut closed, &mut stopping).await;
        }
        let Some(msg) = msg else {
            // No close from the host: its connection ended. The client is
            // told so on the channel (the session's disconnect, which says
            // the same, may come after the channel's end).
            open.host_lost.store(true, Ordering::SeqCst);
            if writing {
                host_lost(&client).await;
                writing = false;
            }
            break;
        };
        // A terminal's output, as drawn, for reading typed lines.
        if let (Some(typing), ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) =
            (open.typing.get(), &msg)
        {
            if let Typing::Terminal(typed) = &mut *lock(typing) {
                typed.output(data);
            }
        }
        let msg_is_stdout = matches!(msg, ChannelMsg::Data { .. });
        let sent = match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, ext: 1 }
                if writing && open.watch.get().is_some_and(OutputWatch::any) =>
            {
                let stream = match msg_is_stdout {
                    true => SshStream::Stdout,
                    false => SshStream::Stderr,
                };
                let sent = match lines.push(stream, &data) {
                    Some(ready) => out.judged(stream, ready, &mut closed, &mut stopping).await,
                    None => true,
                };
                // A partial line (a prompt, a protocol's last bytes) goes
                // out once the host has been quiet a moment.
                quiet_until = lines
                    .holding()
                    .then(|| tokio::time::Instant::now() + output::QUIET);
                sent
            }
            ChannelMsg::Data { data } if writing && open.sftp.get().is_some() => {
                let whole = match host_packets.push(&data) {
                    Ok(packets) => bytes::Bytes::from(packets.concat()),
                    // Not SFTP as the gateway reads it: passed as it came.
                    Err(_) => {
                        host_packets = sftp::Packets::default();
                        data
                    }
                };
                let mut sent = whole.is_empty()
                    || out
                        .send(SshStream::Stdout, whole, &mut closed, &mut stopping)
                        .await;
                while sent && !host_packets.holding() {
                    let Some(answer) = deferred.pop_front() else {
                        break;
                    };
                    sent = out
                        .send(SshStream::Stdout, answer, &mut closed, &mut stopping)
                        .await;
                }
                sent
            }
            ChannelMsg::Data { data } if writing => {
                out.send(SshStream::Stdout, data, &mut closed, &mut stopping)
                    .await
            }
            ChannelMsg::ExtendedData { data, ext } if writing => {
                out.send_ext(ext, data, &mut closed, &mut stopping).await
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
                        refuse(
                            &client,
                            "the host refused the request",
                            &mut closed,
                            &mut stopping,
                        )
                        .await;
                        writing = false;
                    }
                    break;
                }
                if asked == Some(Asked::Pty) {
                    // What runs has no terminal: its input is not typing.
                    *lock(&open.pty) = None;
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
