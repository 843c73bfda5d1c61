//! Kubernetes: the API server stand-in the gateway's tests will use, checked
//! first against the real `kubectl` directly (no gateway), so that what the
//! gateway tests assert rests on a stand-in kubectl accepts.

use portcullis_e2e::kube::KubeStandIn;

/// Runs `kubectl` against `server` (no kubeconfig, a scratch cache).
async fn kubectl(server: &str, cache: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--server={server}"))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .await
        .expect("kubectl runs (it is preinstalled)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_and_changes_the_stand_in() {
    let api = KubeStandIn::start().await;
    let cache = portcullis_e2e::ScratchDir::new("portcullis-kube-cache");
    let run = |args: &'static [&'static str]| kubectl(&api.url, cache.path(), args);

    let (ok, out, err) = run(&["get", "pods", "-n", "default", "-o", "name"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/web-1");
    let (ok, out, err) = run(&[
        "get",
        "secret",
        "db",
        "-n",
        "prod",
        "-o",
        "jsonpath={.data.password}",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "aHVudGVyMg==");
    let (ok, out, err) = run(&["get", "deployments", "-A", "-o", "name"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/web");
    let (ok, _, err) = run(&["delete", "pod", "web-1", "-n", "default", "--wait=false"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["get", "pods", "-n", "default", "-o", "name"]).await;
    assert!(ok && out.trim().is_empty(), "{out}");
    let (ok, _, err) = run(&["get", "pod", "nothing", "-n", "default"]).await;
    assert!(!ok && err.contains("not found"), "{err}");
    // What it saw: every request, with its headers.
    let seen = api.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "DELETE"
                && s.uri.starts_with("/api/v1/namespaces/default/pods/web-1")),
        "{:?}",
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|s| s
        .headers
        .iter()
        .any(|(k, v)| k == "user-agent" && v.starts_with("kubectl"))));
}

/// The next line kubectl prints, within 10 s.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .expect("read")
        .expect("the watch is still open")
}

/// A watch streams: `kubectl get -w` shows a pod created after it started,
/// while the watch stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_the_stand_in_streams_what_changes() {
    use tokio::io::AsyncBufReadExt;
    let api = KubeStandIn::start().await;
    let cache = portcullis_e2e::ScratchDir::new("portcullis-kube-cache");
    let mut watching = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--server={}", api.url))
        .arg(format!("--cache-dir={}", cache.path().display()))
        .args(["get", "pods", "-n", "default", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let stdout = watching.stdout.take().expect("its output");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    assert_eq!(next_line(&mut lines).await, "pod/web-1");
    // Created once the watch is open (it asked with ?watch).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !api.seen().iter().any(|s| s.uri.contains("watch=")) {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl did not watch"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, _, err) = kubectl(
        &api.url,
        cache.path(),
        &[
            "run",
            "late",
            "--image=nginx",
            "--restart=Never",
            "-n",
            "default",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "pod/late") {
        seen.push(next_line(&mut lines).await);
    }
}

/// Waits until the gateway has recorded `count` ended Kubernetes sessions
/// and returns them with their events (newest first).
async fn ended_kube_sessions(
    gw: &portcullis_e2e::TestGateway,
    count: usize,
) -> Vec<(
    portcullis::store::SessionRecord,
    Vec<portcullis::store::EventRecord>,
)> {
    let store = gw.gateway.context.core.audit.store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        gw.gateway.context.core.audit.flush().await;
        let sessions: Vec<_> = store
            .sessions(&portcullis::store::SessionQuery::default())
            .expect("sessions")
            .into_iter()
            .filter(|s| s.protocol == "kubernetes" && s.ended_at.is_some())
            .collect();
        if sessions.len() >= count {
            return sessions
                .into_iter()
                .map(|s| {
                    let events = store.events(s.id).expect("events");
                    (s, events)
                })
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} Kubernetes sessions did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// kubectl through the gateway: it reads, creates and deletes as the
/// person its token names — the API server sees the gateway's own token
/// and `Impersonate-*` headers naming the person, never the client's
/// token nor the identity it tried to claim with `--as` — and every
/// request is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_gateway_acts_as_the_person_and_is_recorded() {
    use portcullis_e2e::kube::{gateway, kubeconfig, kubectl, GATEWAY_TOKEN};
    let api = KubeStandIn::start().await;
    let (gw, url) = gateway(&api, "").await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let token = gw.token("alice@example.com");
    let config = kubeconfig(dir.path(), &url, &token);

    let r = kubectl(&config, &["get", "pods", "-n", "default", "-o", "name"]).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "pod/web-1");
    // A client that claims another identity is still the person.
    let r = kubectl(
        &config,
        &[
            "--as=system:admin",
            "--as-group=system:masters",
            "get",
            "secret",
            "db",
            "-n",
            "prod",
            "-o",
            "jsonpath={.data.password}",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out, "aHVudGVyMg==");
    let r = kubectl(
        &config,
        &[
            "run",
            "late",
            "--image=nginx",
            "--restart=Never",
            "-n",
            "default",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    let r = kubectl(
        &config,
        &["delete", "pod", "web-1", "-n", "default", "--wait=false"],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    let r = kubectl(&config, &["get", "pods", "-n", "default", "-o", "name"]).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "pod/late");

    let seen = api.seen();
    assert!(seen.len() >= 5, "{seen:?}");
    for s in &seen {
        let values = |name: &str| -> Vec<&str> {
            s.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let what = format!("{} {}", s.method, s.uri);
        assert_eq!(
            values("authorization"),
            [format!("Bearer {GATEWAY_TOKEN}")],
            "{what}"
        );
        assert_eq!(values("impersonate-user"), ["alice@example.com"], "{what}");
        assert_eq!(values("impersonate-group"), ["testers"], "{what}");
        assert_eq!(values("impersonate-uid"), ["alice@example.com"], "{what}");
        assert!(
            s.headers
                .iter()
                .all(|(_, v)| !v.contains(&token) && !v.contains("system:")),
            "{what}: {:?}",
            s.headers
        );
    }

    drop(r);
    // kubectl has exited: its connections closed, so its sessions ended.
    let sessions = ended_kube_sessions(&gw, 5).await;
    let mut verbs: Vec<String> = Vec::new();
    for (s, events) in &sessions {
        assert_eq!(s.identity.user, "alice@example.com");
        assert_eq!(s.target, "prod");
        assert!(s
            .application_name
            .as_deref()
            .unwrap_or("")
            .starts_with("kubectl"));
        for e in events {
            assert_eq!(e.action.as_str(), "request");
            verbs.push(format!("{} {}", e.protocol, e.status.as_str()));
        }
    }
    for want in ["list ok", "get ok", "create ok", "delete ok"] {
        assert!(verbs.iter().any(|v| v == want), "{want} in {verbs:?}");
    }
}

/// Requests without a valid token, from someone outside the target's
/// groups, or to a target that does not exist never reach the API server,
/// and kubectl says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_gateway_does_not_admit_never_reaches_the_cluster() {
    use portcullis_e2e::kube::{gateway, kubeconfig, kubectl};
    let api = KubeStandIn::start().await;
    let (gw, url) = gateway(&api, "").await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let outsider = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "mallory@example.com".into(),
        groups: vec!["sales".into()],
        ttl_secs: 600,
    });
    let unknown = url.replace("/prod", "/staging");
    for (server, token, says) in [
        // kubectl shows its own words for a 401, not the Status message.
        (
            url.as_str(),
            "not-a-token",
            "You must be logged in to the server",
        ),
        (url.as_str(), outsider.as_str(), "allowed groups: testers"),
        // And for a 404 (the Status names the target; kubectl shows its
        // own words).
        (
            unknown.as_str(),
            gw.token("alice@example.com").leak() as &str,
            "could not find the requested resource",
        ),
    ] {
        let config = kubeconfig(dir.path(), server, token);
        for args in [
            &["delete", "pod", "web-1", "-n", "default", "--wait=false"][..],
            &["get", "secret", "db", "-n", "prod", "-o", "yaml"][..],
        ] {
            let r = kubectl(&config, args).await;
            assert!(!r.ok, "{args:?} with {says}: {}", r.out);
            assert!(r.err.contains(says), "{args:?}: {}", r.err);
            assert!(!r.out.contains("aHVudGVyMg=="), "{}", r.out);
        }
    }
    assert!(api.seen().is_empty(), "{:?}", api.seen());
    // The pod is still there.
    let r = kubectl_direct(
        &api,
        &["get", "pod", "web-1", "-n", "default", "-o", "name"],
    )
    .await;
    assert_eq!(r.trim(), "pod/web-1");
}

/// `kubectl` straight to the stand-in (no gateway): its standard output.
async fn kubectl_direct(api: &KubeStandIn, args: &[&str]) -> String {
    let cache = portcullis_e2e::ScratchDir::new("portcullis-kube-cache");
    let (ok, out, err) = kubectl(&api.url, cache.path(), args).await;
    assert!(ok, "{err}");
    out
}

/// A watch streams through the gateway, and revoking the delegated token
/// it runs on cuts it: kubectl's watch ends, and no later request with
/// that token reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_streams_until_its_delegated_token_is_revoked() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    use tokio::io::AsyncBufReadExt;
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let (gw, url, delegated) = delegating_gateway(&api, dir.path()).await;
    let config = kubeconfig(dir.path(), &url, &delegated);

    let mut watching = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", config.display()))
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .args(["get", "pods", "-n", "default", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let stdout = watching.stdout.take().expect("its output");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    assert_eq!(next_line(&mut lines).await, "pod/web-1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !api.seen().iter().any(|s| s.uri.contains("watch=")) {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl did not watch"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The agent itself creates a pod: the watch shows it as it happens.
    let r = kubectl(
        &config,
        &[
            "run",
            "late",
            "--image=nginx",
            "--restart=Never",
            "-n",
            "default",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    let mut shown = Vec::new();
    while !shown.iter().any(|l: &String| l == "pod/late") {
        shown.push(next_line(&mut lines).await);
    }
    // The stand-in saw the agent behind alice.
    let last = api.seen().pop().expect("requests");
    assert!(
        last.headers.iter().any(|(k, v)| k
            == portcullis::protocols::kubernetes::upstream::EXTRA_ACTOR
            && v == "agent:ops"),
        "{:?}",
        last.headers
    );

    revoke(&gw, &delegated).await;
    let seen_before = api.seen().len();
    // The watch ends (kubectl may try again; the gateway refuses that).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), watching.wait())
        .await
        .expect("the watch ended within 10 s of the revocation")
        .expect("kubectl's status");
    let _ = ended;
    let r = kubectl(
        &config,
        &["delete", "pod", "late", "-n", "default", "--wait=false"],
    )
    .await;
    assert!(!r.ok, "{}", r.out);
    assert_eq!(
        api.seen().len(),
        seen_before,
        "a revoked token reached the API server"
    );
    assert_eq!(
        kubectl_direct(&api, &["get", "pods", "-n", "default", "-o", "name"])
            .await
            .lines()
            .collect::<Vec<_>>(),
        ["pod/late", "pod/web-1"]
    );
    let sessions = ended_kube_sessions(&gw, 1).await;
    assert!(
        sessions
            .iter()
            .any(|(s, _)| s.end_reason.as_deref().unwrap_or("").starts_with("revoked")),
        "{:?}",
        sessions
            .iter()
            .map(|(s, _)| &s.end_reason)
            .collect::<Vec<_>>()
    );
}

/// The admin token of [`delegating_gateway`].
const DELEGATION_ADMIN: &str = "kube-test-admin-token-0123456789abcdef";

/// A gateway for `api` with the admin API and delegation, and a token
/// alice delegated to `agent:ops`: (gateway, server URL, delegated token).
async fn delegating_gateway(
    api: &KubeStandIn,
    dir: &std::path::Path,
) -> (portcullis_e2e::TestGateway, String, String) {
    std::fs::write(dir.join("admin_token"), DELEGATION_ADMIN).expect("admin token");
    let extra = format!(
        "\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[delegation]\nkey_file = {:?}\nmax_depth = 3\n",
        dir.join("admin_token").display().to_string(),
        dir.join("delegation.pem").display().to_string(),
    );
    let (gw, url) = portcullis_e2e::kube::gateway(api, &extra).await;
    let person = gw.token("alice@example.com");
    let (status, answer) = portcullis_e2e::exchange_child(&gw, &person, "agent:ops", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let delegated = answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    (gw, url, delegated)
}

/// Revokes `token` through the admin API of a [`delegating_gateway`].
async fn revoke(gw: &portcullis_e2e::TestGateway, token: &str) {
    let jti = portcullis_e2e::jti_of(token);
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    let (status, answer) = portcullis_e2e::admin_call(
        &base,
        "POST",
        &format!("/v1/tokens/{jti}/revoke"),
        Some(DELEGATION_ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// The `block` and `approve` plugins on a Kubernetes target.
const KUBE_RULES: &str = r#"
[[plugins]]
name = "block"
path = "BLOCK"
[plugins.config]
rules = [
  { name = "no-namespace-deletes", verbs = ["delete", "deletecollection"], resources = ["namespaces"] },
  { name = "no-exec-kube-system", resources = ["pods/exec", "pods/attach"], namespaces = ["kube-system"] },
  { name = "no-secrets-for-contractors", groups = ["contractors"], resources = ["secrets"] },
]

[[plugins]]
name = "approve"
path = "APPROVE"
[plugins.config]
rules = [
  { name = "deployment-deletes", verbs = ["delete"], resources = ["deployments.apps"], mode = "retry" },
  { name = "operator-exec", groups = ["operators"], resources = ["pods/exec", "pods/attach"], mode = "retry" },
]
"#;

/// A gateway whose target `prod` runs `block` and `approve` with
/// [`KUBE_RULES`], and the admin API: (gateway, server URL, admin URL).
async fn guarded_gateway(
    api: &KubeStandIn,
    dir: &std::path::Path,
) -> (portcullis_e2e::TestGateway, String, String) {
    std::fs::write(dir.join("admin_token"), "kube-admin-token-0123456789abcdef").expect("token");
    let extra = format!(
        "plugins = [\"block\", \"approve\"]\n\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n{}",
        dir.join("admin_token").display().to_string(),
        KUBE_RULES
            .replace("BLOCK", &portcullis_e2e::plugin_wasm("block").display().to_string())
            .replace("APPROVE", &portcullis_e2e::plugin_wasm("approve").display().to_string()),
    );
    let (gw, url) = portcullis_e2e::kube::gateway(api, &extra).await;
    let admin = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    (gw, url, admin)
}

/// Rules hold whatever spelling kubectl or a raw request uses: deleting a
/// namespace (by name, by kind/name, as a raw DELETE, as a collection
/// delete) and exec into kube-system never reach the API server; the
/// namespaces are all still there, and each refusal is recorded with its
/// rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_rules_refuse_every_spelling_of_a_kubernetes_request() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let (gw, url, _) = guarded_gateway(&api, dir.path()).await;
    let config = kubeconfig(dir.path(), &url, &gw.token("alice@example.com"));
    // An exec that ran would leave this file (the stand-in runs commands
    // on this machine, as a kubelet runs them in the pod).
    let marker = dir.path().join("exec-ran");
    let touch = format!("touch {}", marker.display());
    // `--raw` paths are sent as written, so they carry the target's prefix.
    let attempts: &[&[&str]] = &[
        &["delete", "namespace", "prod", "--wait=false"],
        &["delete", "namespace/prod", "--wait=false"],
        &["delete", "--raw", "/prod/api/v1/namespaces/prod"],
        &[
            "delete",
            "--raw",
            "/prod/api/v1/namespaces/kube-system?gracePeriodSeconds=0",
        ],
        &["delete", "--raw", "/prod/api/v1/namespaces"],
        &["delete", "namespaces", "--all", "--wait=false"],
        &[
            "exec",
            "-n",
            "kube-system",
            "coredns",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        &[
            "exec",
            "-n",
            "kube-system",
            "pod/coredns",
            "-i",
            "-t",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        &[
            "exec",
            "--namespace=kube-system",
            "coredns",
            "-c",
            "coredns",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        &["attach", "-n", "kube-system", "coredns"],
    ];
    for args in attempts {
        let r = kubectl(&config, args).await;
        assert!(!r.ok, "{args:?} ran: {}", r.out);
        assert!(
            r.err
                .contains("blocked by portcullis rule \"no-namespace-deletes\"")
                || r.err
                    .contains("blocked by portcullis rule \"no-exec-kube-system\""),
            "{args:?}: {}",
            r.err
        );
    }
    // Nothing but reads reached the API server, and the namespaces stand.
    let writes: Vec<String> = api
        .seen()
        .iter()
        .filter(|s| s.method != "GET" || s.uri.contains("/exec") || s.uri.contains("/attach"))
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(!marker.exists(), "a refused exec ran");
    assert_eq!(
        kubectl_direct(&api, &["get", "namespaces", "-o", "name"])
            .await
            .lines()
            .count(),
        3
    );
    // Reads pass. Exec elsewhere is not the rule's, but SPDY (kubectl
    // told not to use WebSockets) is never relayed, and kubectl says which
    // setting to change; over WebSocket the same exec runs.
    let r = kubectl(&config, &["get", "namespaces", "-o", "name"]).await;
    assert!(r.ok, "{}", r.err);
    let exec_default = ["exec", "-n", "default", "web-1", "--", "sh", "-c", &touch];
    let r = portcullis_e2e::kube::kubectl_with(
        &config,
        &exec_default,
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
        None,
    )
    .await;
    assert!(
        !r.ok && r.err.contains("KUBECTL_REMOTE_COMMAND_WEBSOCKETS"),
        "{}",
        r.err
    );
    assert!(!marker.exists(), "an exec over SPDY ran");
    let r = kubectl(&config, &exec_default).await;
    assert!(r.ok, "{}", r.err);
    assert!(marker.exists(), "the allowed exec did not run");
    // A contractor reads no secret, in any namespace or across them all.
    let contractor = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "carl@example.com".into(),
        groups: vec!["testers".into(), "contractors".into()],
        ttl_secs: 600,
    });
    let config = kubeconfig(dir.path(), &url, &contractor);
    for args in [
        &["get", "secret", "db", "-n", "prod", "-o", "yaml"][..],
        &["get", "secrets", "-A", "-o", "yaml"][..],
        &["get", "--raw", "/prod/api/v1/namespaces/prod/secrets/db"][..],
    ] {
        let r = kubectl(&config, args).await;
        assert!(!r.ok, "{args:?}: {}", r.out);
        assert!(!r.out.contains("aHVudGVyMg=="), "{}", r.out);
        assert!(r.err.contains("no-secrets-for-contractors"), "{}", r.err);
    }
    drop(config);
    let sessions = ended_kube_sessions(&gw, attempts.len() + 5).await;
    let refused: Vec<String> = sessions
        .iter()
        .flat_map(|(_, events)| events)
        .filter(|e| e.status.as_str() == "refused")
        .filter_map(|e| e.rule.clone())
        .collect();
    for rule in [
        "no-namespace-deletes",
        "no-exec-kube-system",
        "no-secrets-for-contractors",
    ] {
        assert!(refused.iter().any(|r| r == rule), "{rule} in {refused:?}");
    }
}

/// The approval request's id in a refusal kubectl printed.
fn approval_id(err: &str) -> String {
    err.split("approval request ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the approval request's id")
        .to_string()
}

/// bob, an approver, approves request `id` through the admin API.
async fn approve_as_bob(gw: &portcullis_e2e::TestGateway, admin: &str, id: &str) {
    let approver = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "bob@example.com".into(),
        groups: vec!["approvers".into()],
        ttl_secs: 600,
    });
    let (status, answer) = portcullis_e2e::admin_call(
        admin,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&approver),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Deleting a deployment needs approval: the first request is refused
/// with an approval request's id, nothing reaches the API server; once an
/// approver approves it, the same request runs — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_kubernetes_request_runs_when_asked_again() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let (gw, url, admin) = guarded_gateway(&api, dir.path()).await;
    let config = kubeconfig(dir.path(), &url, &gw.token("alice@example.com"));
    let delete = ["delete", "deployment", "web", "-n", "prod", "--wait=false"];
    let r = kubectl(&config, &delete).await;
    assert!(!r.ok, "{}", r.out);
    assert!(r.err.contains("needs approval"), "{}", r.err);
    let id = approval_id(&r.err);
    assert!(api.seen().iter().all(|s| s.method != "DELETE"));
    // alice may not approve her own request; bob, an approver, may.
    approve_as_bob(&gw, &admin, &id).await;
    let r = kubectl(&config, &delete).await;
    assert!(r.ok, "{}", r.err);
    assert!(
        kubectl_direct(&api, &["get", "deployments", "-A", "-o", "name"])
            .await
            .trim()
            .is_empty()
    );
    assert_eq!(
        api.seen().iter().filter(|s| s.method == "DELETE").count(),
        1
    );
    // The approval allowed one run: the same request again needs a new one.
    let r = kubectl(&config, &delete).await;
    assert!(!r.ok && r.err.contains("needs approval"), "{}", r.err);
    assert_eq!(
        api.seen().iter().filter(|s| s.method == "DELETE").count(),
        1
    );
}

/// A plugin built before the HTTP hooks (contract 0.2.6: SSH hooks only)
/// would guard nothing on a Kubernetes target: the gateway refuses to
/// start with it there, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_http_hooks_cannot_guard_a_kubernetes_target() {
    let api = KubeStandIn::start().await;
    let extra = format!(
        "plugins = [\"prior\"]\n\n[[plugins]]\nname = \"prior\"\npath = {:?}\n",
        portcullis_e2e::plugin_wasm("ssh_contract_0_2_6")
            .display()
            .to_string()
    );
    let why = match portcullis_e2e::kube::try_gateway(&api, &extra).await {
        Ok(_) => {
            panic!("a gateway started with a plugin that guards nothing on its Kubernetes target")
        }
        Err(why) => why,
    };
    assert!(
        why.contains("\"prod\" is a Kubernetes target") && why.contains("no HTTP hooks"),
        "{why}"
    );
}

/// A read-only delegated token reads and changes nothing: its deletes,
/// creates and exec are refused before the API server, which keeps every
/// object. A token whose group Kubernetes reserves (`system:masters`) is
/// never impersonated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_only_read_and_system_names_are_never_impersonated() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    std::fs::write(
        dir.path().join("admin_token"),
        "kube-admin-token-0123456789abcdef",
    )
    .expect("admin token");
    let extra = format!(
        "\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[delegation]\nkey_file = {:?}\nmax_depth = 3\n",
        dir.path().join("admin_token").display().to_string(),
        dir.path().join("delegation.pem").display().to_string(),
    );
    let (gw, url) = portcullis_e2e::kube::gateway(&api, &extra).await;
    let person = gw.token("alice@example.com");
    let (status, answer) =
        portcullis_e2e::exchange_child(&gw, &person, "agent:reader", &[("read_only", "true")])
            .await;
    assert_eq!(status, 200, "{answer}");
    let reader = answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let config = kubeconfig(dir.path(), &url, &reader);
    let r = kubectl(&config, &["get", "pods", "-A", "-o", "name"]).await;
    assert!(r.ok, "{}", r.err);
    for args in [
        &["delete", "pod", "web-1", "-n", "default", "--wait=false"][..],
        &["delete", "--raw", "/prod/api/v1/namespaces/prod/secrets/db"][..],
        &[
            "run",
            "x",
            "--image=nginx",
            "--restart=Never",
            "-n",
            "default",
        ][..],
        &["exec", "-n", "default", "web-1", "--", "ls"][..],
    ] {
        let r = kubectl(&config, args).await;
        assert!(!r.ok, "{args:?}: {}", r.out);
        assert!(r.err.contains("read-only"), "{args:?}: {}", r.err);
    }
    assert!(
        api.seen().iter().all(|s| s.method == "GET"),
        "{:?}",
        api.seen()
    );
    assert_eq!(
        kubectl_direct(&api, &["get", "pods", "-A", "-o", "name"])
            .await
            .lines()
            .count(),
        2
    );

    let masters = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "eve@example.com".into(),
        groups: vec!["testers".into(), "system:masters".into()],
        ttl_secs: 600,
    });
    let before = api.seen().len();
    let config = kubeconfig(dir.path(), &url, &masters);
    let r = kubectl(&config, &["get", "secrets", "-A", "-o", "yaml"]).await;
    assert!(!r.ok, "{}", r.out);
    assert!(r.err.contains("reserved by Kubernetes"), "{}", r.err);
    assert_eq!(
        api.seen().len(),
        before,
        "a system: group reached the API server"
    );
}

/// A Secret's value never reaches kubectl through the `mask` plugin — not
/// in YAML, JSON, jsonpath, a table, a list across namespaces, a raw get,
/// a watch, nor the copy `kubectl apply` keeps in an annotation — in any
/// encoding; the gateway asked the API server for plain JSON. An exempt
/// group sees it, so the masking is the plugin's, not a broken answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_in_every_answer_kubectl_can_ask_for() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    use tokio::io::AsyncReadExt;
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let extra = format!(
        "plugins = [\"mask\"]\n\n[[plugins]]\nname = \"mask\"\npath = {:?}\n[plugins.config]\nkubernetes_secrets = {{ except_groups = [\"auditors\"] }}\n",
        portcullis_e2e::plugin_wasm("mask").display().to_string()
    );
    let (gw, url) = portcullis_e2e::kube::gateway(&api, &extra).await;
    let config = kubeconfig(dir.path(), &url, &gw.token("alice@example.com"));
    let mut seen = String::new();
    for args in [
        &["get", "secret", "db", "-n", "prod", "-o", "yaml"][..],
        &["get", "secret", "db", "-n", "prod", "-o", "json"][..],
        &[
            "get",
            "secret",
            "db",
            "-n",
            "prod",
            "-o",
            "jsonpath={.data.password}",
        ][..],
        &["get", "secrets", "-n", "prod"][..],
        &["get", "secrets", "-A", "-o", "yaml"][..],
        &["get", "--raw", "/prod/api/v1/namespaces/prod/secrets/db"][..],
        &["get", "--raw", "/prod/api/v1/secrets"][..],
    ] {
        let r = kubectl(&config, args).await;
        assert!(r.ok, "{args:?}: {}", r.err);
        assert!(
            portcullis_e2e::find_leak(&r.out, &["hunter2"]).is_none(),
            "{args:?} leaked: {}",
            r.out
        );
        seen.push_str(&r.out);
    }
    // The entries are still there, masked.
    assert!(seen.contains("KioqKioqKio="), "{seen}");
    assert!(seen.contains("last-applied-configuration"), "{seen}");
    // A watch: each event's object is masked as it streams.
    let mut watching = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", config.display()))
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .args(["get", "secrets", "-n", "prod", "-w", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut stdout = watching.stdout.take().expect("its output");
    let mut streamed = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !streamed.contains("KioqKioqKio=") {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch showed nothing: {streamed}"
        );
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .expect("output within 10 s")
            .expect("read");
        assert!(n > 0, "the watch ended: {streamed}");
        streamed.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        portcullis_e2e::find_leak(&streamed, &["hunter2"]).is_none(),
        "{streamed}"
    );
    drop(watching);
    // Every Secret request went upstream asking for plain JSON.
    for s in api.seen().iter().filter(|s| s.uri.contains("secrets")) {
        let accept: Vec<&str> = s
            .headers
            .iter()
            .filter(|(k, _)| k == "accept")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(accept, ["application/json"], "{}", s.uri);
    }
    // An auditor (exempt) reads the value itself.
    let auditor = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "audra@example.com".into(),
        groups: vec!["testers".into(), "auditors".into()],
        ttl_secs: 600,
    });
    let config = kubeconfig(dir.path(), &url, &auditor);
    let r = kubectl(
        &config,
        &[
            "get",
            "secret",
            "db",
            "-n",
            "prod",
            "-o",
            "jsonpath={.data.password}",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out, "aHVudGVyMg==");
}

/// `portcullis kube login` writes a kubeconfig whose credential plugin is
/// `portcullis kube credential`: plain kubectl then reaches the target as
/// the token's person, from a token file or a token command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_login_writes_a_kubeconfig_kubectl_uses_as_is() {
    let api = KubeStandIn::start().await;
    let (gw, url) = portcullis_e2e::kube::gateway(&api, "").await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, gw.token("alice@example.com")).expect("token file");
    let server = url.trim_end_matches("/prod").to_string();
    let ca = portcullis_e2e::cluster().cert.display().to_string();
    for (name, source) in [
        (
            "from-file",
            vec!["--token-file".to_string(), token_file.display().to_string()],
        ),
        (
            "from-command",
            vec![
                "--token-command".to_string(),
                format!("cat {}", token_file.display()),
            ],
        ),
    ] {
        let kubeconfig = dir.path().join(format!("{name}.kubeconfig"));
        let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
            .args([
                "kube",
                "login",
                "--target",
                "prod",
                "--server",
                &server,
                "--ca-file",
                &ca,
            ])
            .args(&source)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .expect("portcullis runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&kubeconfig)
                .expect("written")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the kubeconfig is readable by others");
        let r = portcullis_e2e::kube::kubectl(
            &kubeconfig,
            &["get", "pods", "-n", "default", "-o", "name"],
        )
        .await;
        assert!(r.ok, "{name}: {}", r.err);
        assert_eq!(r.out.trim(), "pod/web-1");
    }
    let last = api.seen().pop().expect("requests");
    assert!(
        last.headers
            .iter()
            .any(|(k, v)| k == "impersonate-user" && v == "alice@example.com"),
        "{:?}",
        last.headers
    );
}

/// The official Python client (HTTP/1.1, its own request building) through
/// the gateway: it lists and reads as the person, a rule refuses its
/// delete with a 403 it can read, and Secrets reach it masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_reads_is_refused_and_sees_masked_secrets() {
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube");
    let extra = format!(
        "plugins = [\"block\", \"mask\"]\n\n[[plugins]]\nname = \"block\"\npath = {:?}\n[plugins.config]\nrules = [{{ name = \"no-namespace-deletes\", verbs = [\"delete\"], resources = [\"namespaces\"] }}, {{ name = \"no-exec-kube-system\", resources = [\"pods/exec\"], namespaces = [\"kube-system\"] }}]\n\n[[plugins]]\nname = \"mask\"\npath = {:?}\n",
        portcullis_e2e::plugin_wasm("block").display().to_string(),
        portcullis_e2e::plugin_wasm("mask").display().to_string(),
    );
    let (gw, url) = portcullis_e2e::kube::gateway(&api, &extra).await;
    let config = portcullis_e2e::kube::kubeconfig(dir.path(), &url, &gw.token("alice@example.com"));
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
print("pods", sorted(p.metadata.name for p in v1.list_pod_for_all_namespaces().items))
print("secret", v1.read_namespaced_secret("db", "prod").data["password"])
try:
    v1.delete_namespace("prod")
    print("deleted")
except ApiException as e:
    print("refused", e.status, e.reason)
    print("body", e.body)
from kubernetes.stream import stream
print("exec", stream(v1.connect_get_namespaced_pod_exec, "web-1", "default",
      command=["sh", "-c", "echo from-python"], stderr=True, stdin=False, stdout=True, tty=False).strip())
held = stream(v1.connect_get_namespaced_pod_exec, "coredns", "kube-system",
      command=["sh", "-c", "touch " + sys.argv[2]], stderr=True, stdin=False, stdout=True, tty=False,
      _preload_content=False)
held.run_forever(timeout=10)
print("exec refused", held.read_channel(3))
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&config)
        .arg(dir.path().join("python-exec-ran"))
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pods ['coredns', 'web-1']"), "{stdout}");
    assert!(stdout.contains("secret KioqKioqKio="), "{stdout}");
    assert!(
        portcullis_e2e::find_leak(&stdout, &["hunter2"]).is_none(),
        "{stdout}"
    );
    assert!(stdout.contains("refused 403"), "{stdout}");
    assert!(stdout.contains("no-namespace-deletes"), "{stdout}");
    // Exec over WebSocket from Python (websocket-client): it runs where
    // allowed; where refused, the refusal comes on the error channel and
    // the command never runs.
    assert!(stdout.contains("exec from-python"), "{stdout}");
    assert!(
        stdout.contains("exec refused") && stdout.contains("no-exec-kube-system"),
        "{stdout}"
    );
    assert!(!dir.path().join("python-exec-ran").exists());
    assert!(
        api.seen().iter().all(|s| s.method == "GET"),
        "{:?}",
        api.seen()
    );
    assert!(api.seen().iter().all(|s| s
        .headers
        .iter()
        .any(|(k, v)| k == "impersonate-user" && v == "alice@example.com")));
}

/// `kubectl exec` through the gateway runs the command as the person —
/// over WebSocket (`v5.channel.k8s.io`), the gateway's own token and the
/// person's impersonation headers upstream — with its input, output,
/// error and exit status intact; the exec is one recorded event whose
/// asciicast recording holds what was typed and shown, and `asciinema`
/// plays it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_as_the_person_and_is_recorded_as_a_cast() {
    use portcullis_e2e::kube::{gateway, kubeconfig, kubectl_with, GATEWAY_TOKEN};
    let api = KubeStandIn::start().await;
    let (gw, url) = gateway(&api, "").await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube-exec");
    let token = gw.token("alice@example.com");
    let config = kubeconfig(dir.path(), &url, &token);
    let r = kubectl_with(
        &config,
        &[
            "exec",
            "-i",
            "-n",
            "default",
            "web-1",
            "--",
            "sh",
            "-c",
            "cat; printf 'd\\303\\251j\\303\\240\\n'; echo oops >&2; exit 3",
        ],
        &[],
        Some(b"typed input\n"),
    )
    .await;
    assert_eq!(r.out, "typed input\ndéjà\n", "{}", r.err);
    assert!(r.err.contains("oops"), "{}", r.err);
    assert_eq!(r.code, Some(3), "{}", r.err);

    let exec = api
        .seen()
        .into_iter()
        .find(|s| s.uri.contains("/exec"))
        .expect("the exec reached the API server");
    let values = |name: &str| -> Vec<String> {
        exec.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(values("authorization"), [format!("Bearer {GATEWAY_TOKEN}")]);
    assert_eq!(values("impersonate-user"), ["alice@example.com"]);
    assert_eq!(values("upgrade"), ["websocket"]);
    assert!(
        exec.headers.iter().all(|(_, v)| !v.contains(&token)),
        "{:?}",
        exec.headers
    );

    let sessions = ended_kube_sessions(&gw, 1).await;
    let (session, event) = sessions
        .iter()
        .flat_map(|(s, events)| events.iter().map(move |e| (s, e)))
        .find(|(_, e)| e.sql.contains("/exec"))
        .expect("the exec's event");
    assert_eq!(&*event.protocol, "create");
    assert_eq!(event.status.as_str(), "error", "{event:?}");
    assert_eq!(
        event.error.as_deref(),
        Some("the command exited with status 3")
    );
    let store = gw.gateway.context.core.audit.store().clone();
    let cast = store
        .recording(session.id, event.seq)
        .expect("store")
        .expect("a recording of the exec");
    let events: Vec<serde_json::Value> = cast
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("an asciicast event"))
        .collect();
    let text = |code: &str| -> String {
        events
            .iter()
            .filter(|v| v[1] == code)
            .filter_map(|v| v[2].as_str())
            .collect()
    };
    assert_eq!(text("i"), "typed input\n");
    // Output and error as the client saw them (the stand-in's two pipes
    // may interleave either way).
    let shown = text("o");
    assert!(
        shown.starts_with("typed input\n")
            && shown.contains("déjà\n")
            && shown.contains("oops\n")
            && shown.len() == "typed input\ndéjà\noops\n".len(),
        "{shown:?}"
    );
    let header: serde_json::Value =
        serde_json::from_str(cast.lines().next().expect("header")).expect("header JSON");
    assert_eq!(header["version"], 2);
    assert!(
        header["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("sh -c cat;")),
        "{header}"
    );
    // asciinema (installed by scripts/setup) plays it; `script` gives it
    // the terminal it opens.
    let file = dir.path().join("exec.cast");
    std::fs::write(&file, &cast).expect("cast file");
    let played = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat {}", file.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script and asciinema");
    assert!(played.status.success(), "{played:?}");
    let shown = String::from_utf8_lossy(&played.stdout);
    assert!(shown.contains("déjà") && shown.contains("oops"), "{shown}");
}

/// An operator's exec needs approval: refused inside the stream with the
/// approval request's id (kubectl shows it, and does not retry over
/// SPDY), the command never runs; once approved, the same exec runs —
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_held_for_approval_runs_once_approved() {
    use portcullis_e2e::kube::{kubeconfig, kubectl};
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube-exec-approval");
    let (gw, url, admin) = guarded_gateway(&api, dir.path()).await;
    let operator = gw.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "olga@example.com".into(),
        groups: vec!["testers".into(), "operators".into()],
        ttl_secs: 600,
    });
    let config = kubeconfig(dir.path(), &url, &operator);
    let runs = dir.path().join("runs");
    let append = format!("echo ran >> {}", runs.display());
    let exec = ["exec", "-n", "default", "web-1", "--", "sh", "-c", &append];
    let r = kubectl(&config, &exec).await;
    assert!(!r.ok, "{}", r.out);
    assert!(r.err.contains("needs approval"), "{}", r.err);
    assert!(!r.err.contains("SPDY"), "{}", r.err);
    assert!(!runs.exists(), "the held exec ran");
    let id = approval_id(&r.err);
    approve_as_bob(&gw, &admin, &id).await;
    let r = kubectl(&config, &exec).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(std::fs::read_to_string(&runs).expect("it ran"), "ran\n");
    let r = kubectl(&config, &exec).await;
    assert!(!r.ok && r.err.contains("needs approval"), "{}", r.err);
    assert_eq!(std::fs::read_to_string(&runs).expect("it ran"), "ran\n");
}

/// A running exec of an agent is cut when its delegated token is
/// revoked: kubectl says why and stops, the command is killed, the
/// exec's event and recording are closed, and the session ends revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_is_cut_when_its_delegated_token_is_revoked() {
    use portcullis_e2e::kube::kubeconfig;
    use tokio::io::AsyncBufReadExt;
    let api = KubeStandIn::start().await;
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube-exec-revoke");
    let (gw, url, delegated) = delegating_gateway(&api, dir.path()).await;
    let config = kubeconfig(dir.path(), &url, &delegated);
    let after = dir.path().join("after-revocation");
    let script = format!("echo started; sleep 3; touch {}; sleep 30", after.display());
    let mut running = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", config.display()))
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .args(["exec", "-n", "default", "web-1", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let stdout = running.stdout.take().expect("its output");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    assert_eq!(next_line(&mut lines).await, "started");

    revoke(&gw, &delegated).await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        running.wait_with_output(),
    )
    .await
    .expect("kubectl stopped within 10 s of the revocation")
    .expect("kubectl's status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked"), "{err}");
    // The command was killed before it got on.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!after.exists(), "the command went on after the revocation");

    let sessions = ended_kube_sessions(&gw, 1).await;
    let (session, events) = sessions
        .iter()
        .find(|(_, events)| events.iter().any(|e| e.sql.contains("/exec")))
        .expect("the exec's session");
    assert!(
        session
            .end_reason
            .as_deref()
            .unwrap_or("")
            .starts_with("revoked"),
        "{:?}",
        session.end_reason
    );
    let event = events
        .iter()
        .find(|e| e.sql.contains("/exec"))
        .expect("exec");
    assert_eq!(event.status.as_str(), "error", "{event:?}");
    assert!(
        event.error.as_deref().unwrap_or("").contains("revoked"),
        "{event:?}"
    );
    let cast = gw
        .gateway
        .context
        .core
        .audit
        .store()
        .recording(session.id, event.seq)
        .expect("store")
        .expect("a recording");
    assert!(cast.contains("started"), "{cast}");
}

/// A raw WebSocket client (Python's websocket-client) speaking the older
/// `v4.channel.k8s.io` runs an exec through the gateway; the API server
/// never sees a credential the client slipped into its subprotocols
/// (`base64url.bearer.authorization.k8s.io.…`, which a real API server
/// would accept as a token), only the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v4_exec_runs_and_no_client_credential_rides_in_its_subprotocols() {
    use portcullis_e2e::kube::{gateway, GATEWAY_TOKEN};
    let api = KubeStandIn::start().await;
    let (gw, url) = gateway(&api, "").await;
    let token = gw.token("alice@example.com");
    let script = r#"
import sys, websocket
url, token, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ws = websocket.create_connection(
    url.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/web-1/exec?command=sh&command=-c&command=echo+over-v4&stdout=true&stderr=true",
    subprotocols=["base64url.bearer.authorization.k8s.io.c211Z2dsZWQtdG9rZW4", "v4.channel.k8s.io"],
    header=["Authorization: Bearer " + token], sslopt={"ca_certs": ca}, timeout=10)
print("protocol", ws.subprotocol)
out = b""
while True:
    try:
        op, data = ws.recv_data()
    except websocket.WebSocketConnectionClosedException:
        break
    if op == 8:
        break
    if data[:1] == b"\x01":
        out += data[1:]
    if data[:1] == b"\x03":
        print("status", data[1:].decode())
print("out", out.decode().strip())
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&url)
        .arg(&token)
        .arg(&portcullis_e2e::cluster().cert)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("protocol v4.channel.k8s.io"), "{stdout}");
    assert!(stdout.contains("out over-v4"), "{stdout}");
    assert!(stdout.contains(r#""status":"Success""#), "{stdout}");
    let exec = api
        .seen()
        .into_iter()
        .find(|s| s.uri.contains("/exec"))
        .expect("the exec reached the API server");
    let protocols: Vec<&str> = exec
        .headers
        .iter()
        .filter(|(k, _)| k == "sec-websocket-protocol")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(protocols, ["v4.channel.k8s.io"]);
    for (name, value) in &exec.headers {
        assert!(
            !value.contains("c211Z2dsZWQtdG9rZW4") && !value.contains(&token),
            "{name}: {value}"
        );
    }
    assert!(exec
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && *v == format!("Bearer {GATEWAY_TOKEN}")));
}

/// The same path against a real API server, when one is given:
/// `PORTCULLIS_TEST_KUBECONFIG` names a kubeconfig whose current context
/// reaches the cluster with a token allowed to impersonate (docs:
/// configuration.md, "Running the tests against a real cluster"). Without
/// it this test says so and passes: no API server can run on the build
/// machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_through_the_gateway_when_one_is_given() {
    use base64::Engine;
    use portcullis_e2e::kube::{kubeconfig, kubectl, try_gateway_to};
    let Some(real) = std::env::var_os("PORTCULLIS_TEST_KUBECONFIG") else {
        eprintln!("PORTCULLIS_TEST_KUBECONFIG is not set: no real cluster to test against");
        return;
    };
    let real = std::path::PathBuf::from(real);
    let view = |jsonpath: &str| {
        let out = std::process::Command::new("kubectl")
            .arg(format!("--kubeconfig={}", real.display()))
            .args(["config", "view", "--raw", "--minify", "-o"])
            .arg(format!("jsonpath={jsonpath}"))
            .output()
            .expect("kubectl runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let server = view("{.clusters[0].cluster.server}");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(view("{.clusters[0].cluster.certificate-authority-data}"))
        .expect("the kubeconfig holds its cluster's CA");
    let token = view("{.users[0].user.token}");
    assert!(!token.is_empty(), "the kubeconfig's user has no token");
    let authority = server
        .strip_prefix("https://")
        .expect("an https:// server")
        .trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    let dir = portcullis_e2e::ScratchDir::new("portcullis-kube-real");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("CA file");
    std::fs::write(dir.path().join("token"), &token).expect("token file");
    let extra = format!(
        "tls = \"verify-full\"\ntls_ca_file = {:?}\nplugins = [\"block\"]\n\n[[plugins]]\nname = \"block\"\npath = {:?}\n[plugins.config]\nrules = [{{ name = \"no-exec-kube-system\", resources = [\"pods/exec\"], namespaces = [\"kube-system\"] }}, {{ name = \"no-namespace-deletes\", verbs = [\"delete\"], resources = [\"namespaces\"] }}]\n",
        dir.path().join("ca.pem").display().to_string(),
        portcullis_e2e::plugin_wasm("block").display().to_string(),
    );
    let (gw, url) = try_gateway_to(
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().expect("a port"),
        &dir.path().join("token"),
        &extra,
    )
    .await
    .expect("the gateway starts");
    let config = kubeconfig(dir.path(), &url, &gw.token("alice@example.com"));
    // The cluster sees the person, not the gateway.
    let r = kubectl(
        &config,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "alice@example.com");
    let r = kubectl(&config, &["get", "namespaces", "-o", "name"]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.contains("namespace/kube-system"), "{}", r.out);
    // Refused, and still there.
    let r = kubectl(
        &config,
        &["delete", "namespace", "kube-system", "--wait=false"],
    )
    .await;
    assert!(!r.ok && r.err.contains("no-namespace-deletes"), "{}", r.err);
    let pods = kubectl(&config, &["get", "pods", "-n", "kube-system", "-o", "name"]).await;
    assert!(pods.ok, "{}", pods.err);
    if let Some(pod) = pods.out.lines().next() {
        let r = kubectl(&config, &["exec", "-n", "kube-system", pod, "--", "true"]).await;
        assert!(!r.ok && r.err.contains("no-exec-kube-system"), "{}", r.err);
    }
}
