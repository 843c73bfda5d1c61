//! A throwaway OpenSSH server on loopback for the demo's SSH target
//! `web-1`: the distribution's `sshd` (installed by `scripts/setup`) with
//! its own host key and configuration in the demo's directory, trusting
//! only the CA the gateway signs its own five-minute certificates with.
//! Stopped (killed) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::protocols::ssh::certs::{self, fresh_key};
use anyhow::Context;

/// Where the distribution installs the server.
const SSHD: &str = "/usr/sbin/sshd";

/// A running throwaway `sshd`.
pub struct TempSshd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The account the gateway logs in as.
    pub user: String,
    /// The CA key it trusts (the gateway's `upstream_ca_key_file`).
    pub upstream_ca: PathBuf,
    /// A known_hosts file pinning its host key.
    pub known_hosts: PathBuf,
}

/// Writes a fresh ed25519 private key to `path` (owner-only), returning
/// its public line.
pub fn write_key(path: &Path) -> anyhow::Result<String> {
    let key = fresh_key();
    certs::write_key(path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key.public_key().to_openssh()?)
}

/// The account the host runs commands as: the unprivileged
/// `portcullis-ssh` (made by scripts/setup) when running as root — OpenSSH
/// ignores the gateway's signal requests for root logins — and otherwise
/// whoever runs the demo (an unprivileged sshd can log in only as itself).
fn account() -> anyhow::Result<String> {
    let id = |args: &[&str]| -> Option<String> {
        let out = Command::new("id").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let me = id(&["-un"]).context("cannot tell which user runs the demo (id -un)")?;
    if me == "root" && id(&["portcullis-ssh"]).is_some() {
        return Ok("portcullis-ssh".into());
    }
    Ok(me)
}

impl TempSshd {
    /// Starts one with its files in `dir`; `None` when `sshd` is not
    /// installed (the demo then has no SSH target).
    pub fn start(dir: &Path) -> anyhow::Result<Option<Self>> {
        if !Path::new(SSHD).is_file() {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let host_public = write_key(&dir.join("host_key"))?;
        let ca = dir.join("upstream_ca");
        let ca_public = write_key(&ca)?;
        std::fs::write(dir.join("upstream_ca.pub"), format!("{ca_public}\n"))?;
        let port = super::cluster::free_port()?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile none\nTrustedUserCAKeys {d}/upstream_ca.pub\nStrictModes no\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        // Privilege separation needs its directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .arg("-E")
            .arg(dir.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {SSHD}"))?;
        let mut sshd = Self {
            child,
            port,
            user: account()?,
            upstream_ca: ca,
            known_hosts: dir.join("known_hosts"),
        };
        std::fs::write(
            &sshd.known_hosts,
            format!("[127.0.0.1]:{port} {host_public}\n"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                anyhow::bail!("sshd exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                anyhow::bail!("sshd did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(sshd))
    }
}

impl Drop for TempSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
