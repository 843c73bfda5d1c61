//! SSH end-to-end harness: a real OpenSSH server on loopback that trusts
//! only the gateway's key, a gateway with an SSH listener and target
//! `web-1` for it, and the real OpenSSH client driven with a token.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::{GatewayOptions, ScratchDir, TestGateway};

/// Runs a program to completion, panicking if it cannot start or fails.
pub fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &path.display().to_string(),
        ],
    );
}

pub fn public(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap_or_else(|e| panic!("public key of {}: {e}", path.display()))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An OpenSSH server on loopback that lets in only the gateway's key, as
/// the user running the tests — or, when that is root, as the unprivileged
/// account `portcullis-ssh` (made by scripts/setup): OpenSSH runs a root
/// login without privilege separation and then ignores signal requests.
pub struct Host {
    /// Its directory (keys, configuration, markers).
    pub dir: ScratchDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    /// The account the gateway logs in as.
    pub user: String,
}

impl Host {
    /// Starts the server.
    pub fn start() -> Self {
        let dir = ScratchDir::new("portcullis-sshd");
        let d = dir.path();
        // The account the host runs commands as writes its markers here.
        run("chmod", &["1777", &d.display().to_string()]);
        keygen(&d.join("host_key"));
        keygen(&d.join("gateway_key"));
        // A CA the host trusts, for the gateway's own certificates.
        keygen(&d.join("upstream_ca"));
        std::fs::write(d.join("authorized_keys"), public(&d.join("gateway_key")))
            .expect("authorized_keys");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel INFO\n\
             AcceptEnv PC_* SECRET_*\nTrustedUserCAKeys {d}/upstream_ca.pub\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        // Privilege separation needs its directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = std::process::Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-E")
            .arg(d.join("sshd.log"))
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server, installed by scripts/setup)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let id = |args: &[&str]| {
            let out = std::process::Command::new("id")
                .args(args)
                .output()
                .expect("id");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        };
        let user = if id(&["-u"]).1 == "0" {
            assert!(
                id(&["portcullis-ssh"]).0,
                "the SSH tests run as root need the account portcullis-ssh: run scripts/setup"
            );
            "portcullis-ssh".to_string()
        } else {
            id(&["-un"]).1
        };
        Self {
            dir,
            port,
            child,
            user,
        }
    }

    /// A file in its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file in its directory holding `text`, owned by the account the
    /// host runs commands as, so that a command that ran could remove it
    /// (the directory is sticky): a test that it is still there can fail.
    pub fn marker(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("marker file");
        run("chown", &[&self.user, &path.display().to_string()]);
        path
    }

    /// A known_hosts file pinning `key` (this host's, or another) for it.
    pub fn known_hosts(&self, name: &str, key: &Path) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("[127.0.0.1]:{} {}", self.port, public(key)))
            .expect("known_hosts");
        path
    }
}

impl Host {
    /// The host dies as a crash would: every process of this sshd — the
    /// listener and each connection's own (which OpenSSH puts in sessions
    /// of their own, out of the listener's process group) with what they
    /// run — is killed with SIGKILL. Their sockets close under the gateway.
    pub fn die(&mut self) {
        let listener = self.child.id();
        let mut doomed = vec![listener];
        // Descendants by parent pid, found breadth first.
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(children_of(parent));
            i += 1;
        }
        // Stopped first, all of them, so that none reports the others'
        // deaths (a connection's sshd would send its command's exit).
        for signal in ["-STOP", "-KILL"] {
            for pid in &doomed {
                let _ = std::process::Command::new("kill")
                    .args([signal, &pid.to_string()])
                    .status();
            }
        }
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                // `pid (comm) state ppid ...`: comm may hold spaces.
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway with an SSH listener and target `web-1` for `host`, its
/// host key pinned by `known_hosts`.
pub async fn gateway(host: &Host, known_hosts: &Path) -> (TestGateway, std::net::SocketAddr) {
    gateway_with(host, known_hosts, "").await
}

/// The same, with `extra` TOML appended right after the target's table:
/// leading keys are the target's (`plugins = [...]`), then tables (the
/// admin API, delegation, plugins).
pub async fn gateway_with(
    host: &Host,
    known_hosts: &Path,
    extra: &str,
) -> (TestGateway, std::net::SocketAddr) {
    try_gateway_with(host, known_hosts, extra)
        .await
        .unwrap_or_else(|e| panic!("the gateway did not start: {e}"))
}

/// [`gateway_with`], or why the gateway refused to start.
pub async fn try_gateway_with(
    host: &Host,
    known_hosts: &Path,
    extra: &str,
) -> Result<(TestGateway, std::net::SocketAddr), String> {
    let key = format!(
        "private_key_file = {:?}",
        host.path("gateway_key").display().to_string()
    );
    try_gateway_logging_in_with(host, known_hosts, &key, extra).await
}

/// [`try_gateway_with`], the gateway's credential for the host given as
/// the target's `credential` line (`private_key_file = ...` or
/// `upstream_ca_key_file = ...`).
pub async fn try_gateway_logging_in_with(
    host: &Host,
    known_hosts: &Path,
    credential: &str,
    extra: &str,
) -> Result<(TestGateway, std::net::SocketAddr), String> {
    let gateway_host_key = host.path("gateway_host_key");
    if !gateway_host_key.exists() {
        keygen(&gateway_host_key);
    }
    // The gateway's user CA, for `portcullis ssh login` certificates.
    let user_ca = host.path("gateway_user_ca");
    if !user_ca.exists() {
        keygen(&user_ca);
    }
    let tail = format!(
        r#"
[[listeners]]
protocol = "ssh"
address = "127.0.0.1:0"
host_key_file = {hk:?}
user_ca_key_file = {ca:?}

[[targets]]
protocol = "ssh"
name = "web-1"
host = "127.0.0.1"
port = {port}
user = {user:?}
{credential}
known_hosts_file = {kh:?}
allow_groups = ["testers"]

{extra}
"#,
        hk = gateway_host_key.display().to_string(),
        ca = user_ca.display().to_string(),
        port = host.port,
        user = host.user,
        kh = known_hosts.display().to_string(),
    );
    let gw = TestGateway::try_start_with(GatewayOptions {
        tail,
        ..Default::default()
    })
    .await?;
    let ssh_addr = gw.gateway.addresses[2];
    Ok((gw, ssh_addr))
}

/// What a shell (an empty command) is sent on its standard input.
pub const SHELL_SCRIPT: &str = "echo from-the-shell\nexit 4\n";

/// What the OpenSSH client printed and how it exited.
pub struct Ran {
    /// Standard output.
    pub stdout: String,
    /// Standard error (the client's own messages included).
    pub stderr: String,
    /// Exit status.
    pub code: Option<i32>,
}

/// Runs `ssh OPTIONS login@gateway COMMAND` with `token` typed at the
/// gateway's prompt (keyboard-interactive, unless OPTIONS prefer the
/// password method); the gateway's host key is pinned for the client.
pub async fn ssh(
    host: &Host,
    gw_addr: std::net::SocketAddr,
    login: &str,
    token: &str,
    options: &[&str],
    command: &str,
) -> Ran {
    let mut child = spawn_ssh(host, gw_addr, login, token, options, command);
    // An empty command is a shell: its commands come on standard input.
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let script = if command.is_empty() { SHELL_SCRIPT } else { "" };
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    finished(child).await
}

/// Waits (up to 30 s) for an OpenSSH client started with piped streams to
/// finish, and what it printed.
pub async fn finished(child: tokio::process::Child) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the OpenSSH client finished within 30 s")
        .expect("its output");
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// How an OpenSSH client program is started to reach the gateway at
/// `gw_addr` with `token` typed at its prompt and the gateway's host key
/// pinned: its arguments (before the destination) and environment.
/// `options` come first (for OpenSSH the first value of an option wins),
/// then the port with `port_flag` (`-p` for ssh, `-P` for sftp).
fn client_setup(
    host: &Host,
    gw_addr: std::net::SocketAddr,
    token: &str,
    options: &[&str],
    port_flag: &str,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let d = host.dir.path();
    let askpass = d.join("askpass.sh");
    std::fs::write(d.join("token"), token).expect("token file");
    std::fs::write(
        &askpass,
        format!("#!/bin/sh\ncat {}\n", d.join("token").display()),
    )
    .expect("askpass");
    run("chmod", &["700", &askpass.display().to_string()]);
    let client_known = d.join("client_known_hosts");
    std::fs::write(
        &client_known,
        format!(
            "[127.0.0.1]:{} {}",
            gw_addr.port(),
            public(&d.join("gateway_host_key"))
        ),
    )
    .expect("client known_hosts");
    let mut args: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    args.extend(
        [
            "-F",
            "/dev/null",
            port_flag,
            &gw_addr.port().to_string(),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", client_known.display()),
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
        ]
        .map(str::to_string),
    );
    let env = vec![
        ("SSH_ASKPASS", askpass.display().to_string()),
        ("SSH_ASKPASS_REQUIRE", "force".to_string()),
        ("DISPLAY", ":0".to_string()),
        ("SSH_AUTH_SOCK", d.join("agent.sock").display().to_string()),
    ];
    (args, env)
}

/// An OpenSSH client program (`ssh`, `sftp`) set up by [`client_setup`],
/// its standard streams piped.
fn client(
    program: &str,
    host: &Host,
    gw_addr: std::net::SocketAddr,
    token: &str,
    options: &[&str],
    port_flag: &str,
) -> tokio::process::Command {
    let (args, env) = client_setup(host, gw_addr, token, options, port_flag);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A shell script that runs `ssh` as [`ssh`] does for `login`, for a
/// terminal to run (an interactive shell in tmux); its path.
pub fn ssh_script(host: &Host, gw_addr: std::net::SocketAddr, login: &str, token: &str) -> PathBuf {
    let (mut args, env) = client_setup(host, gw_addr, token, &[], "-p");
    args.push(format!("{login}@127.0.0.1"));
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut script = String::from("#!/bin/sh\n");
    for (name, value) in env {
        script.push_str(&format!("export {name}={}\n", quote(&value)));
    }
    script.push_str("exec ssh");
    for arg in &args {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    script.push('\n');
    let path = host.path("ssh.sh");
    std::fs::write(&path, script).expect("ssh script");
    run("chmod", &["755", &path.display().to_string()]);
    path
}

/// Starts `ssh` as [`ssh`] does, its standard streams piped and left to
/// the caller (who may never read them).
pub fn spawn_ssh(
    host: &Host,
    gw_addr: std::net::SocketAddr,
    login: &str,
    token: &str,
    options: &[&str],
    command: &str,
) -> tokio::process::Child {
    let mut options = options.to_vec();
    options.push("-T");
    client("ssh", host, gw_addr, token, &options, "-p")
        .arg(format!("{login}@127.0.0.1"))
        .arg(command)
        .spawn()
        .expect("ssh (openssh-client) runs")
}

/// Runs `sftp` through the gateway with the commands of `batch` (`-b`).
pub async fn sftp(
    host: &Host,
    gw_addr: std::net::SocketAddr,
    login: &str,
    token: &str,
    batch: &str,
) -> Ran {
    let file = host.path("sftp-batch");
    std::fs::write(&file, batch).expect("sftp batch file");
    // `-b` turns batch mode on, which would not ask for the token.
    let child = client("sftp", host, gw_addr, token, &["-o", "BatchMode=no"], "-P")
        .arg("-b")
        .arg(&file)
        .arg(format!("{login}@127.0.0.1"))
        .spawn()
        .expect("sftp (openssh-client) runs");
    finished(child).await
}

/// What a [`Terminal`] prints once its program has exited, before the
/// status and `]`.
const EXITED: &str = "[terminal: the program exited with status ";

/// A terminal a person would use: a tmux session (on a server of its own)
/// running one program, whose screen the test reads and whose keyboard it
/// types on.
pub struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Runs `program` in a `columns`×`rows` terminal; tmux's files go in
    /// `dir`. The pane stays once the program exits, to read its last screen.
    pub fn start(dir: &Path, program: &Path, columns: u16, rows: u16) -> Self {
        let socket = dir.join("tmux.sock");
        let conf = dir.join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\n").expect("tmux.conf");
        let this = Self { socket };
        // The program's exit status is printed after it (tmux does not
        // always reap a pane's process, so its own record can stay empty).
        let run = format!(
            "'{}'; echo \"{EXITED}$?]\"",
            program.display().to_string().replace('\'', "'\\''")
        );
        this.tmux(&[
            "-f",
            &conf.display().to_string(),
            "new-session",
            "-d",
            "-x",
            &columns.to_string(),
            "-y",
            &rows.to_string(),
            &run,
        ]);
        this
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the screen shows now (scrollback included).
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-200"])
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        self.tmux(&["send-keys", "Enter"]);
    }

    /// Types `text` (no Enter).
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    /// Waits (up to `within`) until the program has exited; its status.
    pub async fn wait_for_exit(&self, within: Duration) -> i32 {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the program did not exit within {within:?}:\n{}\n{}",
                self.screen(),
                self.diagnose()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses one key by its tmux name (`Up`, `Enter`, `C-c`).
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    /// Waits (up to `within`) until the screen shows `needle`; the screen.
    pub async fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} did not appear on the screen within {within:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What tmux and the process table say of the pane, for a test that
    /// failed waiting for it.
    pub fn diagnose(&self) -> String {
        let pane = self.tmux(&[
            "display-message",
            "-p",
            "dead=#{pane_dead} status=#{pane_dead_status} signal=#{pane_dead_signal} pid=#{pane_pid}",
        ]);
        let ps = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,wchan:24,args"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ours: Vec<&str> = ps
            .lines()
            .filter(|l| l.contains("ssh") || l.contains("tmux"))
            .collect();
        format!("{pane}\n{}", ours.join("\n"))
    }

    /// The program's exit status once it has exited (128 + the signal's
    /// number when a signal ended it, as shells say).
    pub fn exited(&self) -> Option<i32> {
        let screen = self.screen();
        let at = screen.rfind(EXITED)? + EXITED.len();
        let rest = &screen[at..];
        rest[..rest.find(']')?].trim().parse().ok()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}
