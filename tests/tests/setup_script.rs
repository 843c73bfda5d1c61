//! `scripts/setup` installs what the tests need and nothing else: run with
//! stand-ins for `apt-get`, `python3` and `rustup` first on `PATH`, it asks
//! for pip when pip is missing (even though python3 is there) and never
//! for the benchmarks' PgBouncer.

use std::path::Path;
use std::process::Command;

/// Writes an executable shell script `name` into `dir`.
fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod stub");
}

#[test]
fn setup_asks_for_pip_when_it_is_missing_and_never_for_pgbouncer() {
    let scratch = portcullis_e2e::ScratchDir::new("portcullis-setup-test");
    let dir = scratch.path();
    let log = dir.join("apt.log");
    // python3 without psycopg and without pip; apt-get records.
    stub(dir, "python3", "exit 1");
    stub(
        dir,
        "apt-get",
        &format!("echo \"$@\" >> '{}'", log.display()),
    );
    stub(dir, "sudo", "exec \"$@\"");
    stub(dir, "rustup", "echo wasm32-wasip2");
    // Besides the stand-ins, only the few real tools the script uses: no
    // pgbouncer, whether or not this machine has one.
    for tool in ["ls", "grep", "id", "cat", "sh"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, dir.join(tool)).expect("link tool");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup");
    let path = dir.display().to_string();
    // The stand-in python3 cannot install psycopg, so the script itself
    // ends in failure; what it asked apt-get for is what is checked.
    let _ = Command::new("/bin/bash")
        .arg(&script)
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let asked = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        asked.contains("python3-pip"),
        "pip was not asked for: {asked:?}"
    );
    assert!(
        !asked.contains("pgbouncer"),
        "the tests do not need PgBouncer: {asked:?}"
    );
}
