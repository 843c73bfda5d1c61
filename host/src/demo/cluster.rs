//! A throwaway PostgreSQL cluster built from the installed server binaries:
//! `initdb` into a temporary directory with SCRAM authentication, `pg_ctl`
//! start on a free loopback port, stopped and removed on drop. When run as
//! root, the binaries run as the `postgres` user (PostgreSQL refuses root).
//! A watchdog process stops the cluster if its owner dies without dropping it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries were found.
    #[error("PostgreSQL server binaries (initdb, pg_ctl) not found; install them (Debian: apt-get install postgresql) or set PG_BIN to their directory, or set DATABASE_URL to use an existing server")]
    NoBinaries,
    /// Running as root without a `postgres` user to run the server as.
    #[error("running as root, but there is no 'postgres' user to run PostgreSQL as; create one or run as an ordinary user")]
    NoPostgresUser,
    /// A command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// What was run.
        command: String,
        /// Its stderr/stdout.
        output: String,
    },
    /// File system error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running throwaway cluster.
pub struct TempCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    stopped: bool,
}

/// Directory of `initdb`/`pg_ctl`: `$PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or the `PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        let p = PathBuf::from(dir);
        if p.join("initdb").is_file() {
            return Some(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    })
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn is_root() -> bool {
    // The effective uid of /proc/self is the process's.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl TempCluster {
    /// Creates and starts a cluster; the superuser `postgres` has a random password.
    pub fn start() -> Result<Self, ClusterError> {
        Self::start_with_hba(&[])
    }

    /// Like [`Self::start`], with `pg_hba.conf` lines placed before the
    /// default SCRAM rules (e.g. `host all md5user 127.0.0.1/32 md5`).
    pub fn start_with_hba(hba_lines: &[&str]) -> Result<Self, ClusterError> {
        Self::start_with(hba_lines, None)
    }

    /// Like [`Self::start_with_hba`]; with `tls` = (certificate PEM, key PEM)
    /// the server also accepts TLS (`ssl = on`).
    pub fn start_with(hba_lines: &[&str], tls: Option<(&str, &str)>) -> Result<Self, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::NoBinaries)?;
        let run_as = if is_root() {
            Some(postgres_ids().ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        let root = std::env::temp_dir().join(format!(
            "portcullis-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&root)?;
        let password = format!("pw{:016x}", rand::random::<u64>());
        std::fs::write(root.join("pwfile"), &password)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(root.join("pwfile"), Some(uid), Some(gid))?;
        }
        let mut cluster = Self {
            root,
            bin,
            port: free_port()?,
            password,
            run_as,
            stopped: true,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                path_str(&cluster.root.join("pwfile")),
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )?;
        if !hba_lines.is_empty() {
            let hba = data.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba)?;
            std::fs::write(&hba, format!("{}\n{old}", hba_lines.join("\n")))?;
        }
        let mut ssl_opts = String::new();
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let p = data.join(name);
                std::fs::write(&p, pem)?;
                crate::demo::cert::restrict(&p);
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
                }
            }
            ssl_opts = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        }
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300{ssl_opts}",
            cluster.port,
            path_str(&cluster.root)
        );
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&cluster.root.join("server.log")),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )?;
        cluster.stopped = false;
        cluster.spawn_watchdog();
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.root);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let out = self.command(program).args(args).output()?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                command: format!("{program} {}", args.join(" ")),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(out)
    }

    /// Starts a shell that outlives this process: once it is gone, it stops
    /// the server (SIGQUIT to the postmaster: immediate shutdown) and removes
    /// the cluster's directory. It runs as this process's user, not as the
    /// cluster's: files this process wrote under the directory (certificates,
    /// keys, audit databases) are its own, and must go too.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             pm=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pm\" ]; then kill -QUIT \"$pm\" 2>/dev/null; \
               i=0; while [ -d /proc/$pm ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; fi; \
             rm -rf '{root}'",
            pid = std::process::id(),
            data = path_str(&self.data_dir()),
            root = path_str(&self.root),
        );
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Its own process group, so a Ctrl-C to the demo does not kill it first.
        c.process_group(0);
        let _ = c.spawn();
    }

    /// Loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Password of the superuser `postgres`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Directory holding the cluster's files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs SQL through `psql` as the superuser; returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                command: format!("psql -c {sql:?}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server and removes its files.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "fast", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}
