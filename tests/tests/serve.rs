//! `portcullis serve` as operators run it: the binary reloads its plugins when
//! a plugin file changes (no signal needed), refuses a broken file while the
//! old version keeps serving, and shuts down cleanly on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use portcullis::demo::issuer::{DevIssuer, DevKey, TokenSpec};
use portcullis_e2e::{cluster, db_error, plugin_wasm, portcullis_bin, AUDIENCE, DB};

const USER: &str = "ops@example.com";

/// Waits until `log` contains `needle` (up to 20 s); returns the log.
async fn wait_for_log(log: &std::path::Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {needle:?} in the gateway log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_plugins_when_their_file_changes() {
    let c = cluster();
    let dir = c.dir.join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_wasm("block"), dir.join("block.wasm")).unwrap();
    std::fs::write(dir.join("upstream-password"), c.cluster.password()).unwrap();
    let issuer = DevIssuer::start(DevKey::generate_es256().unwrap(), AUDIENCE, 0)
        .await
        .unwrap();
    let port = portcullis::demo::cluster::free_port().unwrap();
    let config = format!(
        r#"[gateway]
watch_interval_secs = 1
shutdown_grace_secs = 1

[[listeners]]
address = "127.0.0.1:{port}"
plaintext_loopback_dev = true

[[identity_providers]]
name = "test"
issuer = "{iss}"
insecure_loopback_issuer = true
audience = "{AUDIENCE}"
algorithms = ["ES256"]

[[targets]]
name = "{DB}"
host = "127.0.0.1"
port = {upstream}
database = "{DB}"
user = "postgres"
password_file = "upstream-password"
allow_groups = ["testers"]
plugins = ["block"]

[[plugins]]
name = "block"
path = "block.wasm"
call_timeout_ms = 1000
{rules}"#,
        iss = issuer.url(),
        upstream = c.cluster.port(),
        rules = portcullis::demo::BLOCK_RULES,
    );
    let config_path = dir.join("portcullis.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("gateway.log");
    let mut child = tokio::process::Command::new(portcullis_bin())
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let token = issuer.mint(&TokenSpec {
        user: USER.into(),
        groups: vec!["testers".into()],
        ttl_secs: 600,
    });
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(USER)
        .password(&token)
        .dbname(DB);
    let connect = || async {
        let start = Instant::now();
        loop {
            match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    return client;
                }
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("gateway did not come up: {e}"),
            }
        }
    };
    let refused = |client: tokio_postgres::Client| async move {
        let err = client
            .simple_query("DELETE FROM items")
            .await
            .expect_err("block refuses an unbounded DELETE");
        assert!(db_error(&err).1.contains("no-unbounded-writes"), "{err:?}");
        client
    };
    let first = refused(connect().await).await;

    // A broken file: refused, the old version keeps serving everyone.
    std::fs::write(dir.join("block.wasm"), b"\0asm\x01\0\0\0broken").unwrap();
    wait_for_log(&log, "reload refused").await;
    let first = refused(first).await;
    let _ = refused(connect().await).await;

    // A good file again: reloaded without any signal.
    std::fs::copy(plugin_wasm("block"), dir.join("block.wasm")).unwrap();
    let text = wait_for_log(&log, "plugins reloaded").await;
    assert!(text.contains("a changed file"), "{text}");
    let _ = refused(connect().await).await;
    drop(first);

    // SIGTERM: a clean exit.
    let pid = child.id().expect("running") as i32;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("gateway exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
