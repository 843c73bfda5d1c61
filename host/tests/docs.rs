//! The documentation's complete configuration example is accepted by
//! `portcullis check-config`, and broken variants are refused with the key.

use std::path::Path;
use std::process::Command;

fn example() -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("end of block");
    doc[start..end].to_string()
}

fn check(dir: &Path, text: &str) -> std::process::Output {
    let file = dir.join("portcullis.toml");
    std::fs::write(&file, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap()
}

/// A scratch directory, removed when the test ends, passed or not.
struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("portcullis-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for f in [
        "certs/gateway.crt",
        "certs/gateway.key",
        "certs/db-ca.pem",
        "secrets/reporting.password",
    ] {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "placeholder").unwrap();
    }
    Scratch(dir)
}

#[test]
fn documented_example_passes_check_config() {
    let dir = scratch("ok");
    let out = check(&dir, &example());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listeners: 2"), "{stdout}");
    assert!(stdout.contains("identity providers: 2"), "{stdout}");
    assert!(
        stdout.contains("orders (postgres) -> orders-db.internal:5432/orders"),
        "{stdout}"
    );
    assert!(!stdout.contains("placeholder"));
}

#[test]
fn errors_name_the_key_and_line() {
    let dir = scratch("bad");
    let bad = example().replace(
        "tls_ca_file = \"certs/db-ca.pem\"",
        "tls_ca_file = \"certs/missing.pem\"",
    );
    let out = check(&dir, &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("targets[0].tls_ca_file (line"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
    );
}
