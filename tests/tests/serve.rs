//! `portcullis serve` as operators run it: the binary reloads its plugins when
//! a plugin file changes (no signal needed), refuses a broken file while the
//! old version keeps serving, and shuts down cleanly on SIGTERM.

use std::time::Duration;

use portcullis_e2e::{cluster, db_error, plugin_wasm, ServedGateway};

const USER: &str = "ops@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_plugins_when_their_file_changes() {
    let dir = cluster().dir.join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_wasm("block"), dir.join("block.wasm")).unwrap();
    let tail = format!(
        "[[plugins]]\nname = \"block\"\npath = \"block.wasm\"\ncall_timeout_ms = 1000\n{}",
        portcullis::demo::BLOCK_RULES
    );
    let mut gw = ServedGateway::start(&dir, "plugins = [\"block\"]", &tail).await;
    let refused = |client: tokio_postgres::Client| async move {
        let err = client
            .simple_query("DELETE FROM items")
            .await
            .expect_err("block refuses an unbounded DELETE");
        assert!(db_error(&err).1.contains("no-unbounded-writes"), "{err:?}");
        client
    };
    let first = refused(gw.connect(USER).await).await;

    // A broken file: refused, the old version keeps serving everyone.
    std::fs::write(dir.join("block.wasm"), b"\0asm\x01\0\0\0broken").unwrap();
    gw.wait_for_log("reload refused").await;
    let first = refused(first).await;
    let _ = refused(gw.connect(USER).await).await;

    // A good file again: reloaded without any signal.
    std::fs::copy(plugin_wasm("block"), dir.join("block.wasm")).unwrap();
    let text = gw.wait_for_log("plugins reloaded").await;
    assert!(text.contains("a changed file"), "{text}");
    let _ = refused(gw.connect(USER).await).await;
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
