//! SSH requests judged by the first-party plugins, end to end: the real
//! OpenSSH client through the gateway to a real OpenSSH server. Every
//! refusal is checked by its effect — a file a refused command would have
//! removed is still there, one it would have made is not — and by what the
//! client sees (its stderr and exit status) and the audit store keeps.

use std::time::{Duration, Instant};

use portcullis::demo::issuer::TokenSpec;
use portcullis::store::{EventRecord, EventStatus, SessionQuery};
use portcullis_e2e::ssh::{
    finished, gateway_with, sftp, spawn_ssh, ssh, try_gateway_with, Host, Ran,
};
use portcullis_e2e::{admin_call, plugin_wasm, secret_file, TestGateway};

const ADMIN_TOKEN: &str = "ssh-plugins-test-admin-token-0123456789";

/// The target's plugins: `block` and `approve` with SSH rules, the admin
/// API (for approvers) and the approvals' defaults.
fn plugins_extra() -> String {
    let token_file = secret_file("ssh-plugins-admin-token", ADMIN_TOKEN);
    format!(
        r#"plugins = ["block", "approve"]

[admin]
address = "127.0.0.1:0"
token_file = {token:?}

[approvals]

[[plugins]]
name = "block"
path = {block:?}
call_timeout_ms = 1000

[[plugins.config.rules]]
name = "no-rm"
commands = ["rm *", "shred *"]

[[plugins.config.rules]]
name = "agents-read-plainly"
groups = ["agents"]
opaque_commands = true

[[plugins.config.rules]]
name = "no-sftp"
subsystems = ["sftp"]

[[plugins.config.rules]]
name = "no-secret-env"
env = ["SECRET_*"]

[[plugins.config.rules]]
name = "not-the-second-loopback"
forwards = ["127.0.0.2:*"]

[[plugins]]
name = "approve"
path = {approve:?}
call_timeout_ms = 1000

[[plugins.config.rules]]
name = "touching-needs-approval"
commands = ["touch *"]
timeout_secs = 60

[[plugins.config.rules]]
name = "tee-needs-approval"
commands = ["tee *"]
timeout_secs = 60

[[plugins.config.rules]]
name = "copies-retry"
commands = ["cp *"]
mode = "retry"
"#,
        token = token_file.display().to_string(),
        block = plugin_wasm("block").display().to_string(),
        approve = plugin_wasm("approve").display().to_string(),
    )
}

fn mint(gw: &TestGateway, user: &str, groups: &[&str]) -> String {
    gw.issuer.mint(&TokenSpec {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ttl_secs: 600,
    })
}

/// Asserts that the gateway refused the command: exit status 255 and its
/// reason on stderr.
fn refused(ran: &Ran, why: &str) {
    assert_eq!(
        ran.code,
        Some(255),
        "stdout {:?}, stderr {:?}",
        ran.stdout,
        ran.stderr
    );
    assert!(
        ran.stderr.contains("Portcullis: ") && ran.stderr.contains(why),
        "expected {why:?} in: {}",
        ran.stderr
    );
}

/// Every command event the store holds for SSH sessions so far.
async fn command_events(gw: &TestGateway) -> Vec<EventRecord> {
    gw.gateway.context.core.audit.flush().await;
    let store = gw.gateway.context.core.audit.store().clone();
    let sessions = store.sessions(&SessionQuery::default()).expect("sessions");
    sessions
        .iter()
        .filter(|s| s.protocol == "ssh")
        .flat_map(|s| store.events(s.id).expect("events"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_never_run_however_they_are_spelled() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let keep = host.marker("keep", "still here");
    let k = keep.display().to_string();

    let person = mint(&gw, "alice@example.com", &["testers"]);
    for line in [
        format!("rm -f {k}"),
        format!("'r'm -f {k}"),
        format!("r\\m -f {k}"),
        format!("\"rm\" -f {k}"),
        format!("/bin/rm -f {k}"),
        format!("true; rm -f {k}"),
        format!("ls && rm -f {k}"),
        format!("echo {k} | xargs rm -f"),
        format!("sudo -n rm -f {k}"),
        format!("(rm -f {k})"),
        format!("shred -u {k}"),
        format!("\"r\\\nm\" -f {k}"),
        format!("uptime >&1#; rm -f {k}"),
    ] {
        let ran = ssh(&host, addr, "web-1", &person, &[], &line).await;
        refused(&ran, "blocked by portcullis rule \"no-rm\"");
        assert!(keep.exists(), "{line:?} removed the file");
    }
    // An agent's rule refuses lines that hide what they run.
    let agent = mint(&gw, "agent-7@example.com", &["testers", "agents"]);
    for line in [
        format!("bash -c 'rm -f {k}'"),
        format!("echo {} | base64 -d | sh", base64_of(&format!("rm -f {k}"))),
        format!("eval \"r\"\"m -f {k}\""),
        format!("$(printf r)m -f {k}"),
        format!("X=rm; $X -f {k}"),
        format!("python3 -c 'import os; os.remove(\"{k}\")'"),
        format!("cat <<EOF\ncat '\nEOF\nrm -f {k} #'"),
        format!("command /bin/r[m] -f {k}"),
        format!("env -S 'rm -f {k}'"),
    ] {
        let ran = ssh(&host, addr, "web-1", &agent, &[], &line).await;
        refused(&ran, "cannot read whole");
        assert!(keep.exists(), "{line:?} removed the file");
    }
    // The control: an allowed command runs and reads the file.
    let ran = ssh(&host, addr, "web-1", &agent, &[], &format!("cat {k}")).await;
    assert_eq!(
        (ran.stdout.as_str(), ran.code),
        ("still here", Some(0)),
        "{}",
        ran.stderr
    );

    let events = command_events(&gw).await;
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e.status == EventStatus::Refused)
        .collect();
    assert_eq!(refusals.len(), 22, "{events:#?}");
    let first = refusals
        .iter()
        .find(|e| *e.sql == format!("rm -f {k}"))
        .expect("the plain spelling is recorded");
    assert_eq!(
        (
            first.verdict.as_str(),
            first.decided_by.as_deref(),
            first.rule.as_deref()
        ),
        ("deny", Some("block"), Some("no-rm"))
    );
    assert!(events
        .iter()
        .any(|e| e.status == EventStatus::Ok && *e.sql == format!("cat {k}")));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsystems_and_environment_variables_are_judged() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);

    let ran = ssh(&host, addr, "web-1", &token, &["-s"], "sftp").await;
    refused(&ran, "the `sftp` subsystem is not allowed");

    // A refused variable never reaches the host; an allowed one does.
    let ran = ssh(
        &host,
        addr,
        "web-1",
        &token,
        &["-o", "SetEnv=SECRET_TOKEN=hunter2 PC_COLOUR=blue"],
        "echo \"[$SECRET_TOKEN][$PC_COLOUR]\"",
    )
    .await;
    assert_eq!(ran.stdout, "[][blue]\n", "{}", ran.stderr);
    let events = command_events(&gw).await;
    let env: Vec<_> = events.iter().filter(|e| &*e.protocol == "env").collect();
    assert!(
        env.iter().any(|e| &*e.sql == "SECRET_TOKEN"
            && e.status == EventStatus::Refused
            && e.rule.as_deref() == Some("no-secret-env")),
        "{env:#?}"
    );
    assert!(
        env.iter()
            .any(|e| &*e.sql == "PC_COLOUR" && e.status == EventStatus::Ok),
        "{env:#?}"
    );
    assert!(
        !events.iter().any(|e| e.sql.contains("hunter2")),
        "an environment variable's value reached the audit store"
    );
}

/// The pending approval request whose text contains `needle`.
async fn pending(gw: &TestGateway, needle: &str) -> serde_json::Value {
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    let start = Instant::now();
    loop {
        let (status, list) = admin_call(
            &base,
            "GET",
            "/v1/approvals?status=pending",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        if let Some(a) = list.as_array().and_then(|l| {
            l.iter()
                .find(|a| a["sql"].as_str().unwrap_or("").contains(needle))
        }) {
            return a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no pending request for {needle:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `bob`, an approver, decides request `id` (`approve` or `deny`).
async fn decide(gw: &TestGateway, id: &str, verb: &str) {
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    let approver = mint(gw, "bob@example.com", &["approvers"]);
    let (status, body) = admin_call(
        &base,
        "POST",
        &format!("/v1/approvals/{id}/{verb}"),
        Some(&approver),
        None,
    )
    .await;
    assert_eq!(status, 200, "{verb} {id}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_command_runs_once_approved_and_never_when_denied() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let approved = host.path("approved");
    let denied = host.path("denied");

    // Wait mode: the client waits, told on stderr, and the command runs
    // only when an approver says so.
    let child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("touch {}; echo made", approved.display()),
    );
    let request = pending(&gw, &approved.display().to_string()).await;
    let id = request["id"].as_str().expect("request id").to_string();
    assert_eq!(
        request["sql"],
        format!("exec: touch {}; echo made", approved.display())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!approved.exists(), "the command ran before it was approved");
    decide(&gw, &id, "approve").await;
    let ran = finished(child).await;
    assert_eq!(
        (ran.stdout.as_str(), ran.code),
        ("made\n", Some(0)),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("waiting for approval {id}")),
        "{}",
        ran.stderr
    );
    assert!(approved.exists());

    let child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("touch {}", denied.display()),
    );
    let request = pending(&gw, &denied.display().to_string()).await;
    let id = request["id"].as_str().expect("request id").to_string();
    decide(&gw, &id, "deny").await;
    let ran = finished(child).await;
    refused(
        &ran,
        &format!("approval {id} was denied by bob@example.com"),
    );
    assert!(!denied.exists(), "a denied command ran");

    // What the client sends while its command is held reaches the command
    // once it runs, whole and in order.
    let teed = host.path("teed");
    let mut child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("tee {} > /dev/null", teed.display()),
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"typed while held\nsecond line\n")
            .await
            .expect("write stdin");
    }
    let request = pending(&gw, &teed.display().to_string()).await;
    let id = request["id"].as_str().expect("request id").to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!teed.exists(), "the held command ran");
    decide(&gw, &id, "approve").await;
    let ran = finished(child).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(&teed).expect("tee's file"),
        "typed while held\nsecond line\n"
    );

    let events = command_events(&gw).await;
    let ran_event = events
        .iter()
        .find(|e| e.sql.contains("approved"))
        .expect("the approved command is recorded");
    assert_eq!(ran_event.verdict, "require-approval");
    assert_eq!(ran_event.status, EventStatus::Ok);
    assert!(ran_event.approval_id.is_some());
    let denied_event = events
        .iter()
        .find(|e| e.sql.contains("denied"))
        .expect("the denied command is recorded");
    assert_eq!(denied_event.status, EventStatus::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_mode_command_runs_when_sent_again_after_approval() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let (from, to) = (host.path("from"), host.path("to"));
    std::fs::write(&from, "copied").expect("source");
    let copy = format!("cp {} {}", from.display(), to.display());

    let ran = ssh(&host, addr, "web-1", &token, &[], &copy).await;
    refused(&ran, "approval request");
    assert!(!to.exists(), "a command needing approval ran");
    let id = pending(&gw, &copy).await["id"]
        .as_str()
        .expect("request id")
        .to_string();
    assert!(ran.stderr.contains(&id), "{}", ran.stderr);
    decide(&gw, &id, "approve").await;
    // Another command is still held; the approved one runs once.
    let other = format!("cp {} {}.2", from.display(), to.display());
    refused(
        &ssh(&host, addr, "web-1", &token, &[], &other).await,
        "approval request",
    );
    let ran = ssh(&host, addr, "web-1", &token, &[], &copy).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(&to).expect("copied"), "copied");
    std::fs::remove_file(&to).expect("remove the copy");
    refused(
        &ssh(&host, addr, "web-1", &token, &[], &copy).await,
        "approval request",
    );
    assert!(!to.exists(), "a one-use grant ran twice");
}

/// A plugin built for contract 0.2.6 — SSH hooks, none for output (0.2.7)
/// — still loads on an SSH target and guards it: what it refuses never
/// runs, what it allows does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_contract_0_2_6_still_guards_ssh() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = format!(
        "plugins = [\"prior\"]\n\n[[plugins]]\nname = \"prior\"\npath = {:?}\n",
        plugin_wasm("ssh_contract_0_2_6").display().to_string()
    );
    let (gw, addr) = gateway_with(&host, &known, &extra).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let marker = host.path("prior-marker");
    let command = format!("echo forbidden-0-2-6; touch {}", marker.display());
    let ran = ssh(&host, addr, "web-1", &token, &[], &command).await;
    refused(&ran, "refused by a 0.2.6 plugin");
    assert!(!marker.exists(), "a command the 0.2.6 plugin refused ran");
    let ran = ssh(&host, addr, "web-1", &token, &[], "echo allowed").await;
    assert_eq!(ran.stdout, "allowed\n", "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_ssh_hooks_cannot_guard_an_ssh_target() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = format!(
        "plugins = [\"old\"]\n\n[[plugins]]\nname = \"old\"\npath = {:?}\n",
        plugin_wasm("prior_contract").display().to_string()
    );
    let why = match try_gateway_with(&host, &known, &extra).await {
        Ok(_) => panic!("a gateway started with a plugin that guards nothing on its SSH target"),
        Err(why) => why,
    };
    assert!(
        why.contains("\"web-1\" is an SSH target") && why.contains("no SSH hooks"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_refused_by_a_rule_writes_nothing() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let local = host.path("local-file");
    std::fs::write(&local, "payload").expect("local file");
    let put = |remote: &std::path::Path| format!("put {} {}\n", local.display(), remote.display());
    // The control: without plugins, the same upload lands.
    let (plain, addr) = portcullis_e2e::ssh::gateway(&host, &known).await;
    let landed = host.path("landed");
    let token = plain.token("alice@example.com");
    let ran = sftp(&host, addr, "web-1", &token, &put(&landed)).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(&landed).expect("uploaded"),
        "payload"
    );
    drop(plain);

    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let refused_path = host.path("refused-upload");
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let ran = sftp(&host, addr, "web-1", &token, &put(&refused_path)).await;
    assert_ne!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        !refused_path.exists(),
        "a refused sftp session wrote a file"
    );
    let events = command_events(&gw).await;
    assert!(
        events.iter().any(|e| &*e.protocol == "subsystem"
            && e.status == EventStatus::Refused
            && e.rule.as_deref() == Some("no-sftp")),
        "{events:#?}"
    );
}

/// Writes `total` bytes of `x` to `child`'s standard input, or until it
/// stops reading.
fn feed(child: &mut tokio::process::Child, total: usize) -> tokio::task::JoinHandle<()> {
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if stdin.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_sent_to_a_refused_or_held_command_never_stalls_the_connection() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let (gw, addr) = gateway_with(&host, &known, &plugins_extra()).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);

    // A refused command whose client keeps sending: it still ends.
    let mut child = spawn_ssh(&host, addr, "web-1", &token, &[], "rm -f /tmp/nothing");
    let feeding = feed(&mut child, 64 << 20);
    let ran = finished(child).await;
    refused(&ran, "blocked by portcullis rule \"no-rm\"");
    feeding.abort();

    // A held command whose client sends more than the gateway holds: the
    // command is refused (it would get cut input), and the request ends.
    let marker = host.path("overflowed");
    let mut child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("touch {}", marker.display()),
    );
    let request = pending(&gw, &marker.display().to_string()).await;
    let id = request["id"].as_str().expect("request id").to_string();
    let feeding = feed(&mut child, 4 << 20);
    let ran = finished(child).await;
    refused(
        &ran,
        "more than 1 MiB of input arrived before the command started",
    );
    feeding.abort();
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    let (_, approval) = admin_call(
        &base,
        "GET",
        &format!("/v1/approvals/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_ne!(approval["status"], "pending", "{approval}");
    assert!(!marker.exists(), "the overflowed command ran");

    // A client that gives up while its command is held withdraws the
    // request; approving it afterwards runs nothing.
    let withdrawn = host.path("withdrawn");
    let mut child = spawn_ssh(
        &host,
        addr,
        "web-1",
        &token,
        &[],
        &format!("touch {}", withdrawn.display()),
    );
    let id = pending(&gw, &withdrawn.display().to_string()).await["id"]
        .as_str()
        .expect("request id")
        .to_string();
    child.kill().await.expect("kill the client");
    let start = Instant::now();
    loop {
        let (_, approval) = admin_call(
            &base,
            "GET",
            &format!("/v1/approvals/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        if approval["status"] != "pending" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the request stayed pending after its client left: {approval}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let approver = mint(&gw, "bob@example.com", &["approvers"]);
    let _ = admin_call(
        &base,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&approver),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!withdrawn.exists(), "a withdrawn command ran");
}

/// A service behind the host: reads what each connection sends until its
/// end, answers `got:` and that, and closes; how many connected.
async fn answering_service(
    address: &str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("listener");
    let local = listener.local_addr().expect("address");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut got = Vec::new();
            let _ = tcp.read_to_end(&mut got).await;
            let _ = tcp.write_all(&[b"got:".as_slice(), &got].concat()).await;
        }
    });
    (local, count)
}

/// Local forwards (`ssh -W`, the channel `-L` opens too) on a target that
/// allows them: relayed when the rules allow, refused — nothing connects —
/// for an endpoint a rule names in any spelling of its address, and for
/// the gateway itself; each recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forwards_reach_only_what_the_target_and_its_rules_allow() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = format!("local_forwarding = true\n{}", plugins_extra());
    let (gw, addr) = gateway_with(&host, &known, &extra).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let (open, open_served) = answering_service("127.0.0.1:0").await;
    let (ruled_out, ruled_out_served) = answering_service("127.0.0.2:0").await;

    // Allowed: the data goes through the host to the service and back.
    let ran = ssh(&host, addr, "web-1", &token, &["-W", &open.to_string()], "").await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        format!("got:{}", portcullis_e2e::ssh::SHELL_SCRIPT)
    );

    // A rule names 127.0.0.2: every spelling of it is refused.
    let port = ruled_out.port();
    let spellings = [
        format!("127.0.0.2:{port}"),
        format!("127.2:{port}"),
        format!("0x7f.0.0.2:{port}"),
        format!("2130706434:{port}"),
        format!("[::ffff:127.0.0.2]:{port}"),
        format!("[::ffff:127.0.0.2%0]:{port}"),
    ];
    for endpoint in &spellings {
        let ran = ssh(&host, addr, "web-1", &token, &["-W", endpoint], "").await;
        assert_ne!(ran.code, Some(0), "{endpoint}: {}", ran.stdout);
        assert!(
            ran.stderr.contains("administratively prohibited"),
            "{endpoint}: {}",
            ran.stderr
        );
        assert!(!ran.stdout.contains("got:"), "{endpoint} was relayed");
    }

    // The gateway itself, by any name, is refused: a session inside the
    // forward would pass unseen (its banner would come back).
    for endpoint in [
        format!("127.0.0.1:{}", addr.port()),
        format!("localhost:{}", addr.port()),
    ] {
        let ran = ssh(&host, addr, "web-1", &token, &["-W", &endpoint], "").await;
        assert_ne!(ran.code, Some(0), "{endpoint}: {}", ran.stdout);
        assert!(
            !ran.stdout.contains("SSH-2.0"),
            "{endpoint} reached the gateway"
        );
    }

    // Each forward is one event: what it reached, or why not.
    let events = command_events(&gw).await;
    let forwards: Vec<_> = events
        .iter()
        .filter(|e| &*e.protocol == "direct-tcpip")
        .collect();
    assert!(
        forwards
            .iter()
            .any(|e| *e.sql == *open.to_string() && e.status == EventStatus::Ok),
        "{forwards:#?}"
    );
    for endpoint in &spellings {
        let sent = endpoint.replace(['[', ']'], "");
        assert!(
            forwards.iter().any(|e| *e.sql == *sent
                && e.status == EventStatus::Refused
                && e.rule.as_deref() == Some("not-the-second-loopback")),
            "{sent}: {forwards:#?}"
        );
    }
    let to_gateway = forwards
        .iter()
        .filter(|e| e.status == EventStatus::Refused && e.decided_by.as_deref() == Some("gateway"))
        .count();
    assert_eq!(to_gateway, 2, "{forwards:#?}");
    use std::sync::atomic::Ordering;
    assert_eq!(open_served.load(Ordering::SeqCst), 1);
    assert_eq!(
        ruled_out_served.load(Ordering::SeqCst),
        0,
        "a refused forward reached the service behind the host"
    );
}

/// `mask` watching what commands print (`ssh_output`): a secret printed
/// the ordinary way — whole, split across the host's writes, on stderr,
/// in an interactive shell — reaches neither the client nor the session's
/// recording; an exempt group sees it; a shell's prompt, which has no line
/// end, still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_command_output_never_reach_the_client_or_the_recording() {
    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const MASKED_KEY: &str = "AKIA****************";
    const CARD: &str = "4242 4242 4242 4242";
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = format!(
        r#"plugins = ["mask"]

[[plugins]]
name = "mask"
path = {mask:?}

[plugins.config.ssh_output]
detectors = ["secret", "card"]
except_groups = ["auditors"]
"#,
        mask = plugin_wasm("mask").display().to_string(),
    );
    let (gw, addr) = gateway_with(&host, &known, &extra).await;
    let alice = mint(&gw, "alice@example.com", &["testers"]);
    // The key in two writes of the host's (a pause between, shorter than
    // the 50 ms a partial line waits), the card on stderr; neither is in
    // the command line (which is recorded as sent).
    let command = format!(
        "printf 'key={}'; sleep 0.01; printf '{}\\n'; echo \"card 4242 4242 4242 $((4240+2))\" >&2; echo done",
        &KEY[..8],
        &KEY[8..]
    );
    let ran = ssh(&host, addr, "web-1", &alice, &[], &command).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, format!("key={MASKED_KEY}\ndone\n"));
    assert!(!ran.stderr.contains(CARD), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("card **** **** **** 4242"),
        "{}",
        ran.stderr
    );

    // The same command for an auditor: as the host printed it.
    let auditor = mint(&gw, "carol@example.com", &["testers", "auditors"]);
    let ran = ssh(&host, addr, "web-1", &auditor, &[], &command).await;
    assert_eq!(ran.stdout, format!("key={KEY}\ndone\n"), "{}", ran.stderr);

    // An interactive shell on a terminal: the prompt shows, the key
    // printed does not (typed in two halves, so the typing is not it).
    let script = portcullis_e2e::ssh::ssh_script(&host, addr, "web-1", &alice);
    let term = portcullis_e2e::ssh::Terminal::start(host.dir.path(), &script, 100, 30);
    term.wait_for("\n$", Duration::from_secs(20)).await;
    term.type_line(&format!(
        "printf '%s%s\\n' {} {}; echo shown-$((6*7))",
        &KEY[..8],
        &KEY[8..]
    ));
    let screen = term.wait_for("shown-42", Duration::from_secs(10)).await;
    assert!(!screen.contains(KEY), "{screen}");
    assert!(screen.contains(MASKED_KEY), "{screen}");
    term.type_line("exit");
    term.wait_for_exit(Duration::from_secs(10)).await;

    // The recordings hold what the clients saw: alice's never the key.
    let store = gw.gateway.context.core.audit.store().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let sessions = loop {
        gw.gateway.context.core.audit.flush().await;
        let ended: Vec<_> = store
            .sessions(&SessionQuery::default())
            .expect("sessions")
            .into_iter()
            .filter(|s| s.ended_at.is_some())
            .collect();
        if ended.len() >= 3 {
            break ended;
        }
        assert!(Instant::now() < deadline, "3 sessions did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut alices = 0;
    for s in &sessions {
        for e in store.events(s.id).expect("events") {
            let Some(cast) = store.recording(s.id, e.seq).expect("store") else {
                continue;
            };
            // What the client was sent, as one text.
            let shown: String = cast
                .lines()
                .skip(1)
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v[1] == "o")
                .filter_map(|v| v[2].as_str().map(str::to_string))
                .collect();
            if s.identity.user == "alice@example.com" {
                alices += 1;
                assert!(!cast.contains(&KEY[4..]), "{cast}");
                assert!(!shown.contains(KEY), "{cast}");
                assert!(!cast.contains("4242 4242 4242 4242"), "{cast}");
                assert!(shown.contains(MASKED_KEY), "{cast}");
            } else {
                assert!(shown.contains(KEY), "{cast}");
            }
        }
    }
    assert_eq!(alices, 2, "alice's exec and shell were recorded");
}

/// SFTP judged operation by operation (`on-file-operation`): writes,
/// removals and renames under a protected directory and reads of a secret
/// never happen — the files say so — while the rest of the session's
/// transfers go through; each operation is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_operations_a_rule_names_never_happen_and_the_rest_do() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = format!(
        r#"plugins = ["block"]

[[plugins]]
name = "block"
path = {block:?}

[[plugins.config.rules]]
name = "protected-stays"
file_writes = ["*/protected/*"]

[[plugins.config.rules]]
name = "no-secrets"
file_reads = ["*secret*"]
"#,
        block = plugin_wasm("block").display().to_string(),
    );
    let (gw, addr) = gateway_with(&host, &known, &extra).await;
    let token = mint(&gw, "alice@example.com", &["testers"]);
    let dir = host.path("files");
    let protected = dir.join("protected");
    let open = dir.join("open");
    for d in [&dir, &protected, &open] {
        std::fs::create_dir_all(d).expect("directory");
        portcullis_e2e::ssh::run("chmod", &["777", &d.display().to_string()]);
    }
    std::fs::write(protected.join("keep"), "kept").expect("file");
    std::fs::write(dir.join("secret.txt"), "hunter2").expect("secret");
    portcullis_e2e::ssh::run(
        "chmod",
        &["666", &protected.join("keep").display().to_string()],
    );
    portcullis_e2e::ssh::run(
        "chmod",
        &["644", &dir.join("secret.txt").display().to_string()],
    );
    let payload = host.path("payload");
    std::fs::write(&payload, "payload").expect("payload");
    let got = host.path("got-secret");
    let (d, p) = (dir.display(), payload.display());
    // `-`: go on after a refused command.
    let batch = format!(
        "-put {p} {d}/protected/new\n-rm {d}/protected/keep\n-rename {d}/protected/keep {d}/open/moved\n\
         -get {d}/secret.txt {got}\n-mkdir {d}/protected/sub\n\
         -rename {d}/secret.txt {d}/open/moved-secret\n-ln -s {d}/protected {d}/open/via\n\
         -ln {d}/protected/keep {d}/open/hard\nput {p} {d}/open/new\n",
        got = got.display()
    );
    let ran = sftp(&host, addr, "web-1", &token, &batch).await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        !protected.join("new").exists(),
        "a refused put wrote its file"
    );
    assert_eq!(
        std::fs::read_to_string(protected.join("keep"))
            .ok()
            .as_deref(),
        Some("kept")
    );
    assert!(
        !open.join("moved").exists(),
        "a refused rename moved its file"
    );
    assert!(!got.exists(), "a refused get read the secret");
    assert!(
        !protected.join("sub").exists(),
        "a refused mkdir made its directory"
    );
    // Moving a read-protected file out, or linking to what is protected,
    // is refused too.
    assert!(dir.join("secret.txt").exists());
    assert!(
        !open.join("moved-secret").exists(),
        "the secret was renamed out"
    );
    for link in ["via", "hard"] {
        assert!(
            std::fs::symlink_metadata(open.join(link)).is_err(),
            "a link to what is protected was made: {link}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(open.join("new")).ok().as_deref(),
        Some("payload"),
        "the allowed put did not arrive: {}",
        ran.stderr
    );

    let events = command_events(&gw).await;
    let sftp_events: Vec<_> = events.iter().filter(|e| &*e.protocol == "sftp").collect();
    for (text, rule) in [
        (format!("write {d}/protected/new"), "protected-stays"),
        (format!("remove {d}/protected/keep"), "protected-stays"),
        (format!("read {d}/secret.txt"), "no-secrets"),
        (format!("mkdir {d}/protected/sub"), "protected-stays"),
        (
            format!("link {d}/open/via -> {d}/protected"),
            "protected-stays",
        ),
        (
            format!("link {d}/open/hard -> {d}/protected/keep"),
            "protected-stays",
        ),
    ] {
        assert!(
            sftp_events.iter().any(|e| *e.sql == *text
                && e.status == EventStatus::Refused
                && e.rule.as_deref() == Some(rule)),
            "{text}: {sftp_events:#?}"
        );
    }
    assert!(
        sftp_events
            .iter()
            .any(|e| *e.sql == *format!("write {d}/open/new") && e.status == EventStatus::Ok),
        "{sftp_events:#?}"
    );
}

/// Lines typed in a shell (`on-command-line`), by their effect: a refused
/// `rm` never removes its file — typed on a terminal, hidden behind an
/// escape key, continued from an open quote, recalled from the shell's
/// history (read from the echo: the keys were only Up and Enter), or read
/// by a shell without a terminal from its script — while the lines around
/// it run. Refused lines are recorded; with `record`, so are the others,
/// but never the unechoed answer to a password prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_typed_line_never_runs_and_the_lines_around_it_do() {
    let host = Host::start();
    let known = host.known_hosts("known_hosts", &host.path("host_key"));
    let extra = plugins_extra().replace(
        r#"plugins = ["block", "approve"]"#,
        r#"plugins = ["block", "approve", "record"]"#,
    ) + &format!(
        "\n[[plugins]]\nname = \"record\"\npath = {:?}\n",
        plugin_wasm("record").display().to_string()
    );
    let (gw, addr) = gateway_with(&host, &known, &extra).await;
    let keep = host.marker("keep", "still here");
    let k = keep.display().to_string();
    let d = host.dir.path().display().to_string();
    let alice = mint(&gw, "alice@example.com", &["testers"]);

    let script = portcullis_e2e::ssh::ssh_script(&host, addr, "web-1", &alice);
    let term = portcullis_e2e::ssh::Terminal::start(host.dir.path(), &script, 120, 40);
    let refusals = |n: usize| {
        let term = &term;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while term.screen().matches("the line was not run").count() < n {
                assert!(
                    Instant::now() < deadline,
                    "refusal {n} did not show:\n{}",
                    term.screen()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    term.wait_for("\n$", Duration::from_secs(20)).await;
    // Typed (the account's shell is dash: the terminal's own line editing).
    term.type_line(&format!("rm -f {k}"));
    refusals(1).await;
    // An escape key before Enter does not hide the Enter.
    term.type_text(&format!("rm -f {k} #"));
    term.press("Escape");
    term.press("Enter");
    refusals(2).await;
    // A quote left open: the next line is judged with it.
    term.type_line("echo \"");
    term.wait_for("\n>", Duration::from_secs(10)).await;
    term.type_line(&format!("\"; rm -f {k}"));
    refusals(3).await;
    term.type_line(&format!("echo typed-$((6*7)) > {d}/typed"));
    // Recalled from bash's history, where `history -s` put it unrun.
    term.type_line("exec bash --norc --noprofile");
    term.wait_for("bash-", Duration::from_secs(10)).await;
    term.type_line(&format!(
        "history -s \"r\"\"m -f {k}\"; echo saved-$((2*3))"
    ));
    term.wait_for("saved-6", Duration::from_secs(10)).await;
    term.press("Up");
    term.wait_for(&format!("$ rm -f {k}"), Duration::from_secs(10))
        .await;
    term.press("Enter");
    refusals(4).await;
    // The unechoed answer to a password prompt is neither judged nor stored.
    term.type_line("read -s -p 'Password: ' pw; echo got-${#pw}");
    // The prompt itself, at a line start (the command line shows the
    // same word).
    term.wait_for("\nPassword:", Duration::from_secs(10)).await;
    term.type_line("hunter2 rm -f x");
    term.wait_for("got-15", Duration::from_secs(10)).await;
    term.type_line("exit");
    term.wait_for_exit(Duration::from_secs(10)).await;
    assert!(keep.exists(), "a refused typed line removed the file");
    assert_eq!(
        std::fs::read_to_string(host.path("typed")).ok().as_deref(),
        Some("typed-42\n"),
        "the line after the refused ones ran"
    );

    // A shell without a terminal, and an exec of `sh`, read their script:
    // a refused command is never sent, the lines around it run.
    for (command, n) in [("", 1), ("sh", 2)] {
        let mut child = spawn_ssh(&host, addr, "web-1", &alice, &[], command);
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let script = format!(
                "echo first > {d}/script-{n}a\nrm -f {k}\necho \"\n\"; rm -f {k}\nr\\\nm -f {k}\necho last > {d}/script-{n}b"
            );
            stdin.write_all(script.as_bytes()).await.expect("script");
        }
        let ran = finished(child).await;
        assert_eq!(
            ran.stderr.matches("the line was not run").count(),
            3,
            "{}",
            ran.stderr
        );
        assert!(keep.exists(), "a refused script line removed the file");
        assert!(
            host.path(&format!("script-{n}a")).exists(),
            "{}",
            ran.stderr
        );
        assert!(
            host.path(&format!("script-{n}b")).exists(),
            "{}",
            ran.stderr
        );
    }

    let lines: Vec<EventRecord> = command_events(&gw)
        .await
        .into_iter()
        .filter(|e| &*e.protocol == "command-line")
        .collect();
    let refused: Vec<_> = lines
        .iter()
        .filter(|e| e.status == EventStatus::Refused)
        .collect();
    assert_eq!(refused.len(), 10, "{lines:#?}");
    assert!(refused
        .iter()
        .all(|e| e.sql.contains(&format!("m -f {k}")) && e.rule.as_deref() == Some("no-rm")));
    assert!(lines
        .iter()
        .any(|e| e.status == EventStatus::Ok && e.sql.contains("echo typed-$((6*7))")));
    assert!(
        !lines.iter().any(|e| e.sql.contains("hunter2")),
        "{lines:#?}"
    );
}
