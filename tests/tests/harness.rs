//! The test harness cleans up after itself: a test process that ends
//! (passing or not) leaves no cluster running and no directory behind —
//! not even the files it wrote itself into the cluster's directory as
//! another user than the cluster's (certificates, keys, audit databases).

use std::process::Command;
use std::time::{Duration, Instant};

use portcullis::demo::cluster::TempCluster;

const CHILD: &str = "PORTCULLIS_HARNESS_CHILD";

#[test]
fn a_finished_test_process_leaves_no_cluster_and_no_files_behind() {
    if std::env::var_os(CHILD).is_some() {
        // The child: a cluster held in a static never drops, exactly as the
        // end-to-end harness's shared cluster.
        let cluster = TempCluster::start_with_hba(&[]).expect("cluster");
        let own = cluster.root().join("e2e");
        std::fs::create_dir_all(&own).expect("dir");
        std::fs::write(own.join("gateway.key"), "private key").expect("key");
        println!("ROOT={} PORT={}", cluster.root().display(), cluster.port());
        std::mem::forget(cluster);
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_finished_test_process_leaves_no_cluster_and_no_files_behind",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ROOT="))
        .unwrap_or_else(|| {
            panic!(
                "the child started no cluster: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (root, port) = line.split_once(" PORT=").expect("root and port");
    let root = std::path::PathBuf::from(root);
    let started = Instant::now();
    while root.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !root.exists(),
        "{} is still there after its process ended",
        root.display()
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        std::net::TcpStream::connect_timeout(
            &addr.parse().expect("address"),
            Duration::from_secs(1)
        )
        .is_err(),
        "the cluster still accepts connections on {addr}"
    );
}
