//! `portcullis demo` as the README shows it: the first-party plugins load,
//! and in psql a newcomer sees a masked card number and a refused `DELETE`.

use std::process::Command;

use portcullis_e2e::plugin_wasm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_masks_a_card_number_and_refuses_an_unbounded_delete() {
    let plugins = plugin_wasm("mask");
    std::env::set_var(
        "PORTCULLIS_PLUGIN_DIR",
        plugins.parent().expect("plugin directory"),
    );
    std::env::remove_var("DATABASE_URL");
    let dir = std::env::temp_dir().join(format!("portcullis-demo-test-{}", std::process::id()));
    let port = portcullis::demo::cluster::free_port().unwrap();
    let demo = portcullis::demo::start(Some(port), dir).await.unwrap();
    assert_eq!(demo.plugins, ["block", "mask"]);
    let psql = |sql: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} dbname={} user={} sslmode=require",
                portcullis::demo::TARGET,
                portcullis::demo::DEFAULT_USER
            ))
            .args(["-X", "-c", sql])
            .env("PGPASSWORD", &demo.token)
            .output()
            .expect("psql is installed")
    };
    let out = psql("SELECT name, card_number, national_id FROM customers");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ada = stdout
        .lines()
        .find(|l| l.contains("Ada Lovelace"))
        .unwrap_or_default();
    assert!(
        ada.ends_with("| **** **** **** 1111 | [redacted]"),
        "{stdout}"
    );
    assert!(!stdout.contains("4111"), "{stdout}");

    let out = psql("DELETE FROM orders");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blocked by portcullis rule \"no-unbounded-writes\""),
        "{stderr}"
    );
    demo.stop().await.unwrap();
}
