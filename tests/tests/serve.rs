//! `portcullis serve` as operators run it: the binary reloads its plugins when
//! a plugin file changes (no signal needed), refuses a broken file while the
//! old version keeps serving, and shuts down cleanly on SIGTERM.

use std::time::Duration;

use portcullis_e2e::{cluster, db_error, plugin_wasm, ServedGateway, DB};

const USER: &str = "ops@example.com";

/// Rows left in the probe table.
fn probe_rows() -> String {
    cluster()
        .cluster
        .psql(DB, "SELECT count(*) FROM serve_probe")
        .expect("count")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_plugins_when_their_file_changes() {
    cluster()
        .cluster
        .psql(
            DB,
            "DROP TABLE IF EXISTS serve_probe; CREATE TABLE serve_probe (id int); INSERT INTO serve_probe SELECT generate_series(1, 3)",
        )
        .expect("probe table");
    let dir = cluster().dir.join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_wasm("block"), dir.join("block.wasm")).unwrap();
    let tail = format!(
        "[[plugins]]\nname = \"block\"\npath = \"block.wasm\"\ncall_timeout_ms = 1000\n{}",
        portcullis::demo::BLOCK_RULES
    );
    let mut gw = ServedGateway::start(&dir, "plugins = [\"block\"]", &tail).await;
    // block refuses an unbounded DELETE; the rows stay.
    let refused = |client: tokio_postgres::Client| async move {
        let err = client
            .simple_query("DELETE FROM serve_probe")
            .await
            .expect_err("block refuses an unbounded DELETE");
        assert_eq!(db_error(&err).0, "42501", "{err:?}");
        assert_eq!(probe_rows(), "3", "the refused DELETE ran");
        client
    };
    let first = refused(gw.connect(USER).await).await;

    // A broken file: refused, the old version keeps serving everyone.
    std::fs::write(dir.join("block.wasm"), b"\0asm\x01\0\0\0broken").unwrap();
    gw.wait_for_log("reload refused").await;
    let first = refused(first).await;
    let _ = refused(gw.connect(USER).await).await;

    // Another plugin under the same name (one that refuses only DROP):
    // reloaded without any signal. The session that started on block
    // keeps block; a new session gets the new plugin, and its DELETE runs.
    std::fs::copy(plugin_wasm("prior_contract"), dir.join("block.wasm")).unwrap();
    gw.wait_for_log("plugins reloaded").await;
    let first = refused(first).await;
    let started = std::time::Instant::now();
    loop {
        let fresh = gw.connect(USER).await;
        match fresh.simple_query("DELETE FROM serve_probe").await {
            Ok(_) => break,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the new plugin never served a new session: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(probe_rows(), "0", "the new plugin let the DELETE run");
    drop(first);

    // SIGTERM: a clean exit.
    gw.signal("TERM");
    let exit = tokio::time::timeout(Duration::from_secs(15), gw.child.wait())
        .await
        .expect("gateway exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
