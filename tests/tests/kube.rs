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
