//! Strict durability against a crash: the gateway binary is killed with
//! SIGKILL in the middle of a load of INSERTs; after a restart, every row
//! that exists upstream has its audit event (recorded before the INSERT was
//! forwarded), and the gateway serves again on the same store.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use portcullis::store::{sqlite::SqliteStore, Store};
use portcullis_e2e::{cluster, plugin_wasm, ServedGateway, DB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_row_upstream_has_its_audit_event() {
    let c = cluster();
    let table = format!("crash_{}", std::process::id());
    c.cluster
        .psql(DB, &format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .expect("create table");
    let dir = c.dir.join(format!("crash-{}", std::process::id()));
    let tail = format!(
        "[store]\npath = \"audit.db\"\n\n[[plugins]]\nname = \"record\"\npath = {:?}\ncall_timeout_ms = 1000\n[plugins.config]\nstatements = \"writes\"\n",
        plugin_wasm("record").display().to_string()
    );
    let mut gw = ServedGateway::start(
        &dir,
        "plugins = [\"record\"]\ndurability = \"strict\"",
        &tail,
    )
    .await;

    // Four writers insert until the gateway dies under them.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = gw.connect(&format!("writer{w}@example.com")).await;
        let table = table.clone();
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut done = 0u32;
            for i in 0..100_000 {
                if Instant::now() > deadline {
                    break;
                }
                let id = w * 100_000 + i;
                if client
                    .simple_query(&format!("INSERT INTO {table} VALUES ({id})"))
                    .await
                    .is_err()
                {
                    break;
                }
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.signal("KILL");
    let _ = gw.child.wait().await;
    let mut acknowledged = 0;
    for w in writers {
        acknowledged += w.await.expect("writer");
    }
    assert!(
        acknowledged > 20,
        "too few inserts before the kill: {acknowledged}"
    );

    let rows: HashSet<String> = c
        .cluster
        .psql(DB, &format!("SELECT id FROM {table}"))
        .expect("rows")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(rows.len() >= acknowledged as usize);

    // The restarted gateway opens the store the crash left, and serves.
    gw.restart();
    let client = gw.connect("after@example.com").await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("serves after the crash");
    drop(client);

    let store = SqliteStore::open(&dir.join("audit.db")).expect("store after the crash");
    let mut recorded = HashSet::new();
    store
        .export_events(0, i64::MAX, &mut |e| {
            if let Some(id) = e.sql.strip_prefix(&format!("INSERT INTO {table} VALUES (")) {
                recorded.insert(id.trim_end_matches(')').to_string());
            }
            Ok(())
        })
        .expect("export");
    let missing: Vec<&String> = rows.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} rows upstream have no audit event, e.g. {:?}",
        missing.len(),
        rows.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    println!(
        "crash: {} rows upstream, {} insert events recorded, {acknowledged} acknowledged",
        rows.len(),
        recorded.len()
    );
    gw.signal("TERM");
    let _ = tokio::time::timeout(Duration::from_secs(15), gw.child.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
