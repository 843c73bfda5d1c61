//! SSH targets end to end: the real OpenSSH client, through the gateway, to
//! a real OpenSSH server on loopback that trusts only the gateway's key.
//! Refusals are checked by their effect — a command that would leave a
//! file behind never runs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use portcullis::store::{Action, EventStatus, SessionQuery};
use portcullis_e2e::ssh::{
    gateway, gateway_with, keygen, spawn_ssh, ssh, ssh_script, Host, Ran, Terminal,
};
use portcullis_e2e::TestGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_on_the_host_through_the_gateway_and_is_recorded() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway(&host, &known).await;
    let token = gw.token("alice@example.com");
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        "echo through-the-gateway; echo to-stderr >&2; exit 3",
    )
    .await;
    assert_eq!(ran.stdout, "through-the-gateway\n", "{}", ran.stderr);
    assert!(ran.stderr.contains("to-stderr"), "{}", ran.stderr);
    assert_eq!(
        ran.code,
        Some(3),
        "the host's exit status reaches the client"
    );

    let store = gw.gateway.context.core.audit.store().clone();
    // The session's end is recorded once the gateway has seen it close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let session = loop {
        gw.gateway.context.core.audit.flush().await;
        let sessions = store.sessions(&SessionQuery::default()).expect("sessions");
        let ssh = sessions.into_iter().find(|s| s.protocol == "ssh");
        if let Some(s) = ssh.filter(|s| s.ended_at.is_some()) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the SSH session's end was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        session.bytes_to_client,
        ("through-the-gateway\n".len() + "to-stderr\n".len()) as u64,
        "stdout and stderr are counted"
    );
    assert_eq!(
        (session.target.as_str(), session.identity.user.as_str()),
        ("web-1", "alice@example.com")
    );
    // The client's version line is the session's application name.
    let app = session.application_name.clone().unwrap_or_default();
    assert!(app.starts_with("OpenSSH_"), "{app:?}");
    let events = store.events(session.id).expect("events");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.action, Action::Command);
    assert_eq!(&*e.protocol, "exec");
    assert_eq!(
        &*e.sql,
        "echo through-the-gateway; echo to-stderr >&2; exit 3"
    );
    assert_eq!(e.status, EventStatus::Error);
    assert_eq!(e.error.as_deref(), Some("exit status 3"));
}

/// Asserts that `ran` is a refused login whose message says `why`.
fn refused(ran: &Ran, why: &str) {
    assert_eq!(ran.code, Some(255), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Portcullis refused the login") && ran.stderr.contains(why),
        "expected {why:?} in: {}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_an_unknown_target_or_an_unpinned_host_runs_nothing() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway(&host, &known).await;
    let marker = host.path("marker");
    let touch = format!("touch {}", marker.display());
    let token = gw.token("alice@example.com");

    let forged = format!("{token}x");
    let ran = ssh(&host, addr, "web-1", &forged, &[], &touch).await;
    refused(&ran, "authentication failed");
    // Sent as a password, the same token gets SSH's plain refusal.
    let password = ["-o", "PreferredAuthentications=password"];
    let ran = ssh(&host, addr, "web-1", &forged, &password, &touch).await;
    assert_eq!(ran.code, Some(255), "{}", ran.stderr);
    assert!(ran.stderr.contains("Permission denied"), "{}", ran.stderr);

    let ran = ssh(&host, addr, "no-such-host", &token, &[], &touch).await;
    refused(
        &ran,
        "target \"no-such-host\" does not exist on this gateway",
    );

    // A user outside the target's groups.
    let outsider = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "mallory@example.com".into(),
        groups: vec!["sales".into()],
        ttl_secs: 600,
    });
    let ran = ssh(&host, addr, "web-1", &outsider, &[], &touch).await;
    refused(&ran, "is not allowed to use target \"web-1\"");

    // A token longer than OpenSSH reads arrives cut, and is named so.
    let long = format!("{token}{}", "x".repeat(2000));
    let ran = ssh(&host, addr, "web-1", &long, &[], &touch).await;
    refused(&ran, "cuts what it reads");
    assert!(!marker.exists(), "a refused login ran a command");

    // The same gateway setup, but the host's key is not the pinned one.
    drop(gw);
    keygen(&host.path("other_key"));
    let wrong = host.known_hosts("wrong_known_hosts", &host.path("other_key"));
    let (gw, addr) = gateway(&host, &wrong).await;
    let token = gw.token("alice@example.com");
    let ran = ssh(&host, addr, "web-1", &token, &[], &touch).await;
    refused(&ran, "the host key changed");
    assert!(
        !marker.exists(),
        "a session to a host with a changed key ran a command"
    );

    // The control: with the right pin the same command does run, whether
    // the token is typed at the prompt or sent as a password.
    drop(gw);
    let (gw, addr) = gateway(&host, &known).await;
    let token = gw.token("alice@example.com");
    let ran = ssh(&host, addr, "web-1", &token, &password, &touch).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(marker.exists(), "the control command did not run");
    std::fs::remove_file(&marker).expect("marker removed");
    let ran = ssh(&host, addr, "web-1", &token, &[], &touch).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(marker.exists(), "the control command did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_port_forward_is_refused_and_its_command_never_runs() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway(&host, &known).await;
    let marker = host.path("forward-marker");
    let touch = format!("touch {}", marker.display());
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &gw.token("alice@example.com"),
        &["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"],
        &touch,
    )
    .await;
    assert_ne!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("forwarding failed"), "{}", ran.stderr);
    assert!(!marker.exists(), "the command of a refused forward ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_runs_its_input_and_forwarded_agents_and_tcp_never_reach_the_host() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway(&host, &known).await;
    let token = gw.token("alice@example.com");

    // A shell without a terminal, its commands on standard input.
    let ran = ssh(&host, addr, "web-1", &token, &[], "").await;
    assert_eq!(ran.stdout, "from-the-shell\n", "{}", ran.stderr);
    assert_eq!(ran.code, Some(4), "{}", ran.stderr);

    // Agent forwarding asked for (an agent is running for the client): the
    // command still runs, and the host has no agent to use.
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(host.path("agent.sock"))
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !host.path("agent.sock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &["-A"],
        "echo agent=${SSH_AUTH_SOCK:-none}",
    )
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, "agent=none\n", "{}", ran.stderr);

    // A TCP forward through the host (-W: a direct-tcpip channel) is
    // refused: nothing connects to the listener behind it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let behind = listener.local_addr().expect("address");
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &["-W", &behind.to_string()],
        "true",
    )
    .await;
    assert_ne!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("administratively prohibited"),
        "{}",
        ran.stderr
    );
    assert!(
        listener.accept().is_err(),
        "a refused forward reached the listener behind the host"
    );

    // Each command is recorded as what it was: the shell, then the exec.
    gw.gateway.context.core.audit.flush().await;
    let store = gw.gateway.context.core.audit.store().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let kinds = loop {
        gw.gateway.context.core.audit.flush().await;
        let mut kinds = Vec::new();
        for s in store.sessions(&SessionQuery::default()).expect("sessions") {
            for e in store.events(s.id).expect("events") {
                if e.status != EventStatus::Started {
                    kinds.push((e.protocol.to_string(), e.sql.to_string()));
                }
            }
        }
        kinds.sort();
        if kinds.len() >= 3 || std::time::Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        kinds,
        [
            ("direct-tcpip".to_string(), behind.to_string()),
            (
                "exec".to_string(),
                "echo agent=${SSH_AUTH_SOCK:-none}".to_string()
            ),
            ("shell".to_string(), String::new()),
        ]
    );
}

const ADMIN: &str = "ssh-test-admin-token-0123456789abcdef";

/// A gateway with the admin API and delegation, and a token delegated by
/// alice to an agent: (gateway, SSH address, token, its jti, admin URL).
async fn delegating_gateway(
    host: &Host,
) -> (TestGateway, std::net::SocketAddr, String, String, String) {
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    std::fs::write(host.path("admin_token"), ADMIN).expect("admin token");
    let extra = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[delegation]\nkey_file = {:?}\nmax_depth = 3\n",
        host.path("admin_token").display().to_string(),
        host.path("delegation.pem").display().to_string(),
    );
    let (gw, addr) = gateway_with(host, &known, &extra).await;
    let person = gw.token("alice@example.com");
    let (status, answer) = portcullis_e2e::exchange_child(&gw, &person, "agent:ops", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let delegated = answer["access_token"]
        .as_str()
        .expect("a delegated token")
        .to_string();
    let jti = portcullis_e2e::jti_of(&delegated);
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    (gw, addr, delegated, jti, base)
}

async fn revoke(base: &str, jti: &str) -> (u16, serde_json::Value) {
    portcullis_e2e::admin_call(
        base,
        "POST",
        &format!("/v1/tokens/{jti}/revoke"),
        Some(ADMIN),
        None,
    )
    .await
}

/// Waits up to 15 s for `path` to exist.
async fn wait_for_file(path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_delegated_token_cuts_its_ssh_session_and_kills_its_command() {
    let host = Host::start();
    let (_gw, addr, delegated, jti, base) = delegating_gateway(&host).await;

    let marker = host.path("revoked-marker");
    let command = format!("echo started; sleep 4; touch {}", marker.display());
    // Revoked once the client has seen the command run (its output can
    // still be on its way when the command has merely started).
    let mut client = spawn_ssh(&host, addr, "web-1", &delegated, &[], &command);
    let seen = first_line(&mut client).await;
    let revoked_at = std::time::Instant::now();
    let (status, answer) = revoke(&base, &jti).await;
    let out = tokio::time::timeout(Duration::from_secs(10), client.wait_with_output())
        .await
        .expect("the client ended within 10 s")
        .expect("ssh's output");
    let ran = Ran {
        stdout: seen,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    };
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sessions_closed"], 1, "{answer}");
    assert!(
        revoked_at.elapsed() < Duration::from_millis(2500),
        "the client was not cut soon after the revocation ({:?})",
        revoked_at.elapsed()
    );
    assert_eq!(ran.stdout, "started\n", "{}", ran.stderr);
    assert!(ran.stderr.contains("access revoked"), "{}", ran.stderr);
    // Past the moment the command would have finished: it never did.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(revoked_at.elapsed())).await;
    assert!(
        !marker.exists(),
        "the revoked session's command kept running on the host"
    );
    let again = ssh(&host, addr, "web-1", &delegated, &[], "true").await;
    refused(&again, "revoked");
}

/// Reads an OpenSSH client's standard output up to its first line's end
/// (within 15 s); the rest of its output is not read.
async fn first_line(client: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut stdout = client.stdout.take().expect("ssh's stdout");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 64];
        while !seen.ends_with(b"\n") {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the command's first line within 15 s");
    String::from_utf8_lossy(&seen).into_owned()
}

/// The host dies mid-command (every sshd process killed, as in a crash):
/// the client is told so at once and exits 255, the command's event and
/// recording are closed, and the session's end says the host ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_dies_mid_command_ends_the_session_clearly_and_closes_its_record() {
    let mut host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway(&host, &known).await;
    let token = gw.token("alice@example.com");
    let mut client = spawn_ssh(&host, addr, "web-1", &token, &[], "echo started; sleep 60");
    assert_eq!(first_line(&mut client).await, "started\n");
    let died_at = std::time::Instant::now();
    host.die();
    let out = tokio::time::timeout(Duration::from_secs(10), client.wait_with_output())
        .await
        .expect("the client ended within 10 s of the host's death")
        .expect("ssh's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("the host closed the connection"),
        "the client is told what happened: {stderr}"
    );
    assert!(
        died_at.elapsed() < Duration::from_secs(5),
        "the client learnt late ({:?})",
        died_at.elapsed()
    );

    let sessions = ended_ssh_sessions(&gw, 1).await;
    assert_eq!(
        sessions[0].end_reason.as_deref(),
        Some("the target (database or host) closed the session")
    );
    let store = gw.gateway.context.core.audit.store().clone();
    let events = store.events(sessions[0].id).expect("events");
    assert_eq!(events.len(), 1, "{events:#?}");
    let command = &events[0];
    assert_eq!(&*command.sql, "echo started; sleep 60");
    assert_eq!(command.status, EventStatus::Error, "{command:#?}");
    assert_eq!(
        command.error.as_deref(),
        Some("the connection to the host ended before the command finished")
    );
    let cast = store
        .recording(sessions[0].id, command.seq)
        .expect("store")
        .expect("the command's recording, closed with the session");
    assert!(cast.contains("started"), "{cast}");
}

/// A person's interactive shell, driven through a real terminal (tmux):
/// what they type runs on the host, its output reaches their screen and
/// the recording; revoking their token cuts the live shell with a message
/// on the screen, and what the shell was running never goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_shell_in_a_terminal_runs_what_is_typed_until_revoked() {
    let host = Host::start();
    let (gw, addr, delegated, jti, base) = delegating_gateway(&host).await;
    let script = ssh_script(&host, addr, "web-1", &delegated);
    let term = Terminal::start(host.dir.path(), &script, 100, 30);
    // The shell's prompt, at the start of a line (tmux drops its space).
    term.wait_for("\n$", Duration::from_secs(20)).await;
    // Only the remote shell turns the typed `$((6*7))` into 42.
    term.type_line("echo typed-$((6*7))");
    term.wait_for("typed-42", Duration::from_secs(10)).await;

    let marker = host.path("shell-marker");
    // Revoked once the line runs (only the shell prints `started-5`).
    term.type_line(&format!(
        "echo started-$((2+3)); sleep 4; touch {}",
        marker.display()
    ));
    term.wait_for("started-5", Duration::from_secs(10)).await;
    let revoked_at = std::time::Instant::now();
    let (status, answer) = revoke(&base, &jti).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sessions_closed"], 1, "{answer}");
    let screen = term
        .wait_for("access revoked", Duration::from_secs(10))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = term.exited() {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssh still runs:\n{screen}\n{}",
            term.diagnose()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 255, "{screen}");
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(revoked_at.elapsed())).await;
    assert!(
        !marker.exists(),
        "the revoked shell went on running what was typed"
    );

    let sessions = ended_ssh_sessions(&gw, 1).await;
    let reason = sessions[0].end_reason.clone().unwrap_or_default();
    assert!(reason.starts_with("revoked"), "{reason}");
    let store = gw.gateway.context.core.audit.store().clone();
    let events = store.events(sessions[0].id).expect("events");
    let shell = events
        .iter()
        .find(|e| e.action == Action::Command)
        .expect("the shell's event");
    assert_eq!(&*shell.protocol, "shell");
    // The shell's event is closed, not left `started`.
    assert_eq!(shell.status, EventStatus::Error, "{shell:#?}");
    let cast = store
        .recording(sessions[0].id, shell.seq)
        .expect("store")
        .unwrap_or_else(|| panic!("the shell's recording: {events:#?}"));
    let of_kind = |kind: &str| -> String {
        cast.lines()
            .skip(1)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v[1] == kind)
            .filter_map(|v| v[2].as_str().map(str::to_string))
            .collect()
    };
    assert!(of_kind("i").contains("echo typed-$((6*7))"), "{cast}");
    assert!(of_kind("o").contains("typed-42"), "{cast}");
}

/// A client that stops reading while its command floods output: once its
/// token is revoked, the command is still killed on the host. (It fails
/// without the kill; it did not fail on this machine without the relay
/// dropping what a stopping session's client no longer takes, so it does
/// not prove that path — the stall needs more than this flood.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_whose_client_stopped_reading_is_still_killed() {
    let host = Host::start();
    let (_gw, addr, delegated, jti, base) = delegating_gateway(&host).await;
    let running = host.path("flood-running");
    let tag = format!("portcullis-flood-{}", std::process::id());
    // A flood that outlives a closed connection: SIGPIPE ignored, write
    // errors ignored (plain `yes` would die of the broken pipe and prove
    // nothing).
    let command = format!(
        "trap '' PIPE; touch {}; while :; do echo {tag} 2>/dev/null; done",
        running.display()
    );
    // Standard output is piped and never read: the client stops taking
    // data once the pipe is full.
    let mut client = spawn_ssh(&host, addr, "web-1", &delegated, &[], &command);
    wait_for_file(&running).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flooding = |tag: &str| {
        std::process::Command::new("pgrep")
            .args(["-f", tag])
            .output()
            .map(|o| o.status.success())
            .expect("pgrep")
    };
    assert!(flooding(&tag), "the flood did not start on the host");
    let (status, answer) = revoke(&base, &jti).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sessions_closed"], 1, "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flooding(&tag) {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked session's command still runs on the host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client.kill().await;
}

/// Waits until the gateway has recorded the end of every SSH session it
/// served, and returns them (newest first).
async fn ended_ssh_sessions(
    gw: &TestGateway,
    count: usize,
) -> Vec<portcullis::store::SessionRecord> {
    let store = gw.gateway.context.core.audit.store().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        gw.gateway.context.core.audit.flush().await;
        let sessions: Vec<_> = store
            .sessions(&SessionQuery::default())
            .expect("sessions")
            .into_iter()
            .filter(|s| s.protocol == "ssh" && s.ended_at.is_some())
            .collect();
        if sessions.len() >= count {
            return sessions;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} SSH sessions did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exec_and_shell_is_recorded_as_a_cast_asciinema_plays_back() {
    const ADMIN: &str = "ssh-recording-admin-token-0123456789";
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let token_file = portcullis_e2e::secret_file("ssh-recording-admin", ADMIN);
    let admin = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    let (gw, addr) = gateway_with(&host, &known, &admin).await;
    let token = gw.token("alice@example.com");

    // An exec that reads its standard input and prints characters of
    // several bytes.
    let mut child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        "cat; printf 'd\\303\\251j\\303\\240 \\342\\230\\203\\n'",
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"typed input\n").await.expect("stdin");
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ssh finished")
        .expect("ssh output");
    let exec_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(exec_stdout, "typed input\ndéjà ☃\n");
    // A shell, its commands on standard input.
    let shell = ssh(&host, addr, "web-1", &token, &[], "").await;
    assert_eq!(shell.stdout, "from-the-shell\n", "{}", shell.stderr);

    let sessions = ended_ssh_sessions(&gw, 2).await;
    let store = gw.gateway.context.core.audit.store().clone();
    let dir = portcullis_e2e::ScratchDir::new("ssh-casts");
    for (session, expected, input) in [
        (&sessions[1], exec_stdout.as_str(), "typed input\n"),
        (
            &sessions[0],
            "from-the-shell\n",
            "echo from-the-shell\nexit 4\n",
        ),
    ] {
        let events = store.events(session.id).expect("events");
        let command = events
            .iter()
            .find(|e| e.action == Action::Command)
            .expect("the command's event");
        let cast = store
            .recording(session.id, command.seq)
            .expect("store")
            .expect("a recording of the command");
        // What the client typed is in it, as input events.
        let typed: String = cast
            .lines()
            .skip(1)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v[1] == "i")
            .filter_map(|v| v[2].as_str().map(str::to_string))
            .collect();
        assert_eq!(typed, input);
        // asciinema reads it and prints what the client saw. The same
        // recording comes out of the admin API through the CLI.
        let file = dir.path().join(format!("{}.cast", session.id));
        let cli = std::process::Command::new(portcullis_e2e::portcullis_bin())
            .args([
                "sessions",
                "cast",
                &session.id.to_string(),
                &command.seq.to_string(),
            ])
            .args([
                "--api",
                &format!("http://{}", gw.gateway.admin_address.expect("admin")),
            ])
            .env("PORTCULLIS_TOKEN", ADMIN)
            .output()
            .expect("portcullis sessions cast");
        assert!(
            cli.status.success(),
            "{}",
            String::from_utf8_lossy(&cli.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&cli.stdout), cast);
        std::fs::write(&file, &cli.stdout).expect("cast file");
        // `asciinema cat` opens /dev/tty: `script` gives it a terminal.
        let played = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("asciinema cat {}", file.display()),
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) and asciinema (installed by scripts/setup)");
        assert!(
            played.status.success(),
            "{}",
            String::from_utf8_lossy(&played.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&played.stdout).replace("\r\n", "\n"),
            expected
        );
    }
}

/// Runs `portcullis ssh login` against the admin API at `base` with
/// `token`, writing into `dir`; panics if it fails.
fn ssh_login(base: &str, token: &str, dir: &Path) {
    let token_file = dir.with_extension("token");
    std::fs::write(&token_file, token).expect("token file");
    let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
        .args(["ssh", "login", "--token-file"])
        .arg(&token_file)
        .arg("--dir")
        .arg(dir)
        .args(["--api", base])
        .output()
        .expect("portcullis ssh login");
    assert!(
        out.status.success(),
        "ssh login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Connect with: ssh -F"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs `ssh -F DIR/config web-1@portcullis COMMAND` with nothing but the
/// certificate to log in with.
fn ssh_with_certificate(dir: &Path, command: &str) -> Ran {
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(dir.join("config"))
        .args([
            "-T",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "web-1@portcullis",
            command,
        ])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_minted_certificate_logs_in_until_its_token_is_revoked() {
    let host = Host::start();
    let (gw, _addr, delegated, jti, base) = delegating_gateway(&host).await;
    let dir = host.path("person-login");
    let person = gw.token("alice@example.com");
    ssh_login(&base, &person, &dir);
    let ran = ssh_with_certificate(&dir, "echo via-certificate");
    assert_eq!(
        (ran.stdout.as_str(), ran.code),
        ("via-certificate\n", Some(0)),
        "{}",
        ran.stderr
    );
    let sessions = ended_ssh_sessions(&gw, 1).await;
    assert_eq!(sessions[0].identity.user, "alice@example.com");
    assert_eq!(sessions[0].identity.groups, vec!["testers".to_string()]);

    // A certificate of the same key, signed by another CA with the real
    // one's serial, key id and principal, is refused.
    let forged = dir.join("id_ed25519-cert.pub");
    let listing = std::process::Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&forged)
        .output()
        .expect("ssh-keygen -L");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let field = |name: &str| {
        listing
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} in {listing}"))
    };
    let (serial, key_id) = (field("Serial:"), field("Key ID:"));
    keygen(&host.path("other_ca"));
    std::fs::remove_file(&forged).expect("remove the real certificate");
    portcullis_e2e::ssh::run(
        "ssh-keygen",
        &[
            "-q",
            "-s",
            &host.path("other_ca").display().to_string(),
            "-I",
            &key_id,
            "-z",
            &serial,
            "-n",
            "alice@example.com",
            "-V",
            "-5m:+1h",
            &dir.join("id_ed25519.pub").display().to_string(),
        ],
    );
    assert!(forged.exists(), "ssh-keygen wrote the forged certificate");
    let marker = host.path("forged-ran");
    let ran = ssh_with_certificate(&dir, &format!("touch {}", marker.display()));
    assert_eq!(ran.code, Some(255), "{}", ran.stderr);
    assert!(ran.stderr.contains("Permission denied"), "{}", ran.stderr);
    assert!(!marker.exists(), "a forged certificate ran a command");

    // An agent's certificate, from a delegated token, works until that
    // token is revoked.
    let agent_dir = host.path("agent-login");
    ssh_login(&base, &delegated, &agent_dir);
    let ran = ssh_with_certificate(&agent_dir, "echo agent");
    assert_eq!(ran.stdout, "agent\n", "{}", ran.stderr);
    let (status, body) = revoke(&base, &jti).await;
    assert_eq!(status, 200, "{body}");
    let revoked_marker = host.path("revoked-ran");
    let ran = ssh_with_certificate(&agent_dir, &format!("touch {}", revoked_marker.display()));
    assert_eq!(ran.code, Some(255), "{}", ran.stderr);
    assert!(ran.stderr.contains("Permission denied"), "{}", ran.stderr);
    assert!(
        !revoked_marker.exists(),
        "a revoked token's certificate ran a command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_logs_in_upstream_with_a_short_certificate_naming_the_person() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    // The host's authorized_keys does not list the gateway's key for this
    // gateway: only the CA the host trusts lets it in.
    let credential = format!(
        "upstream_ca_key_file = {:?}",
        host.path("upstream_ca").display().to_string()
    );
    let (gw, addr) =
        portcullis_e2e::ssh::try_gateway_logging_in_with(&host, &known, &credential, "")
            .await
            .expect("the gateway starts");
    let token = gw.token("alice@example.com");
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        "echo via-upstream-certificate",
    )
    .await;
    assert_eq!(
        (ran.stdout.as_str(), ran.code),
        ("via-upstream-certificate\n", Some(0)),
        "{}",
        ran.stderr
    );
    // The host's own log names the person behind the gateway's login.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(host.path("sshd.log")).unwrap_or_default();
        if log.contains("Accepted publickey") && log.contains("for alice@example.com") {
            assert!(log.contains("ED25519-CERT"), "{log}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host's log does not name the person: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);

    // One key as both the users' CA and the hosts' would let a user's
    // certificate past the gateway: the configuration is refused.
    let shared = format!(
        "upstream_ca_key_file = {:?}",
        host.path("gateway_user_ca").display().to_string()
    );
    match portcullis_e2e::ssh::try_gateway_logging_in_with(&host, &known, &shared, "").await {
        Ok(_) => panic!("a gateway started with one CA for users and hosts"),
        Err(why) => assert!(why.contains("use two keys"), "{why}"),
    }

    // A gateway whose CA the host does not trust gets in nowhere.
    keygen(&host.path("untrusted_ca"));
    let credential = format!(
        "upstream_ca_key_file = {:?}",
        host.path("untrusted_ca").display().to_string()
    );
    let (gw, addr) =
        portcullis_e2e::ssh::try_gateway_logging_in_with(&host, &known, &credential, "")
            .await
            .expect("the gateway starts");
    let marker = host.path("untrusted-ran");
    let token = gw.token("alice@example.com");
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("touch {}", marker.display()),
    )
    .await;
    assert_eq!(ran.code, Some(255), "{}", ran.stderr);
    assert!(!marker.exists());
}

/// A read-only delegated token cannot be held to reading on a host: it
/// opens no SSH session, and its command never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_delegated_token_runs_nothing_on_a_host() {
    let host = Host::start();
    let (gw, addr, _, _, _) = delegating_gateway(&host).await;
    let person = gw.token("alice@example.com");
    let (status, answer) =
        portcullis_e2e::exchange_child(&gw, &person, "agent:reader", &[("read_only", "true")])
            .await;
    assert_eq!(status, 200, "{answer}");
    let reader = answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let marker = host.path("read-only-marker");
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &reader,
        &[],
        &format!("touch {}", marker.display()),
    )
    .await;
    refused(&ran, "read-only");
    assert!(
        !marker.exists(),
        "a read-only token ran a command on the host"
    );
}
