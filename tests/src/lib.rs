//! End-to-end test harness: a real PostgreSQL cluster (one per test process,
//! started on first use, SCRAM upstream auth), a development OIDC issuer and a
//! gateway per test, and helpers to connect real clients through it.

pub mod fake_http;
pub mod kube;
pub mod raw;
pub mod ssh;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use portcullis::config::Config;
use portcullis::demo::cluster::TempCluster;
use portcullis::demo::issuer::{DevIssuer, DevKey, TokenSpec};
use portcullis::policy::{PassThrough, Policy};
use portcullis::server::RunningGateway;

/// Audience of test tokens.
pub const AUDIENCE: &str = "portcullis-test";
/// Database (and target) the tests use.
pub const DB: &str = "app";

/// The process-wide test cluster.
pub struct TestCluster {
    /// The cluster.
    pub cluster: TempCluster,
    /// Files shared by all tests (TLS certificate).
    pub dir: PathBuf,
    /// Self-signed certificate for the gateway listener.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// CA file for the upstream server's own TLS certificate.
    pub upstream_ca: PathBuf,
}

/// Passwords of the extra upstream roles, one per authentication method.
pub const ROLE_PASSWORD: &str = "role-secret-1";

/// Starts (once) and returns the shared cluster.
pub fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (up_cert, up_key) = portcullis::demo::cert::self_signed_pem().expect("upstream certificate");
        let cluster = TempCluster::start_with(
            &[
                "host all md5user 127.0.0.1/32 md5",
                "host all plainuser 127.0.0.1/32 password",
                "host all trustuser 127.0.0.1/32 trust",
            ],
            Some((&up_cert, &up_key)),
        )
        .expect("start a throwaway PostgreSQL cluster (is the postgresql package installed?)");
        cluster.psql("postgres", &format!("CREATE DATABASE {DB}")).expect("create database");
        cluster
            .psql(
                DB,
                &format!(
                    "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN SUPERUSER PASSWORD '{ROLE_PASSWORD}';
                     SET password_encryption = 'scram-sha-256';
                     CREATE ROLE plainuser LOGIN SUPERUSER PASSWORD '{ROLE_PASSWORD}';
                     CREATE ROLE trustuser LOGIN SUPERUSER;
                     CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, secret text);
                     INSERT INTO items SELECT g, 'item ' || g, 'secret ' || g FROM generate_series(1, 100) g;"
                ),
            )
            .expect("seed test database");
        // Inside the cluster's directory, so it is removed with the cluster.
        let dir = cluster.root().join("e2e");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = portcullis::demo::cert::write_self_signed(&dir).expect("certificate");
        let upstream_ca = dir.join("upstream-ca.pem");
        std::fs::write(&upstream_ca, up_cert).expect("upstream CA file");
        TestCluster {
            cluster,
            dir,
            cert,
            key,
            upstream_ca,
        }
    })
}

/// Options for a test gateway.
pub struct GatewayOptions {
    /// Upstream role (default `postgres`, SCRAM).
    pub upstream_user: String,
    /// Upstream password (`None` = trust).
    pub upstream_password: Option<String>,
    /// Extra TOML appended to the identity provider table.
    pub provider_extra: String,
    /// Policy at the seam.
    pub policy: Arc<dyn Policy>,
    /// Extra TOML appended to the listener tables.
    pub listener_extra: String,
    /// Extra TOML appended to the target table (e.g. upstream TLS).
    pub target_extra: String,
    /// Top-level TOML appended at the end (e.g. `[[plugins]]` tables).
    pub tail: String,
}

impl GatewayOptions {
    /// Options whose target runs the one plugin `name` from `path`, with
    /// `rest` appended to its `[[plugins]]` table (keys, then `[plugins.config]`).
    pub fn plugin(name: &str, path: &Path, rest: &str) -> Self {
        Self {
            target_extra: format!("plugins = [{name:?}]"),
            tail: format!(
                "[[plugins]]\nname = {name:?}\npath = {:?}\n{rest}\n",
                path.display().to_string()
            ),
            ..Default::default()
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            upstream_user: "postgres".into(),
            upstream_password: Some(cluster().cluster.password().to_string()),
            provider_extra: String::new(),
            policy: Arc::new(PassThrough),
            listener_extra: String::new(),
            target_extra: String::new(),
            tail: String::new(),
        }
    }
}

/// A gateway in front of the test cluster, with its own issuer.
pub struct TestGateway {
    /// The development issuer the gateway trusts.
    pub issuer: DevIssuer,
    /// The gateway.
    pub gateway: RunningGateway,
    /// TLS listener address.
    pub tls_addr: std::net::SocketAddr,
    /// Plaintext loopback (development) listener address.
    pub plain_addr: std::net::SocketAddr,
    /// The configuration the gateway was started with.
    pub config_text: String,
    _password_file: Option<tempfile_guard::Guard>,
}

mod tempfile_guard {
    /// Removes a file when dropped.
    pub struct Guard(pub std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl TestGateway {
    /// Starts a gateway with default options (ES256 issuer).
    pub async fn start() -> Self {
        Self::start_with(GatewayOptions::default()).await
    }

    /// Starts a gateway with the given options.
    pub async fn start_with(opts: GatewayOptions) -> Self {
        match Self::try_start_with(opts).await {
            Ok(gw) => gw,
            Err(e) => panic!("gateway did not start: {e}"),
        }
    }

    /// Starts a gateway, returning why it refused to start.
    pub async fn try_start_with(opts: GatewayOptions) -> Result<Self, String> {
        let c = cluster();
        let issuer = DevIssuer::start(DevKey::generate_es256().expect("key"), AUDIENCE, 0)
            .await
            .expect("issuer");
        let (password_line, guard) = match &opts.upstream_password {
            Some(p) => {
                let f = c.dir.join(format!("pw-{:016x}", rand_u64()));
                std::fs::write(&f, p).expect("password file");
                (
                    format!("password_file = {:?}", f.display().to_string()),
                    Some(tempfile_guard::Guard(f)),
                )
            }
            None => (String::new(), None),
        };
        let config_text = format!(
            r#"
[[listeners]]
address = "127.0.0.1:0"
tls_cert_file = {cert:?}
tls_key_file = {key:?}
{listener_extra}

[[listeners]]
address = "127.0.0.1:0"
plaintext_loopback_dev = true
{listener_extra}

[[identity_providers]]
name = "test"
issuer = "{iss}"
insecure_loopback_issuer = true
audience = ["other-audience", "{AUDIENCE}"]
algorithms = ["ES256", "RS256"]
jwks_min_refresh_secs = 1
{provider_extra}

[[targets]]
name = "{DB}"
host = "127.0.0.1"
port = {port}
database = "{DB}"
user = "{user}"
{password_line}
allow_groups = ["testers"]
allow_users = ["solo@example.com"]
{target_extra}

[store]
path = {store:?}
flush_interval_ms = 20

{tail}
"#,
            cert = c.cert.display().to_string(),
            key = c.key.display().to_string(),
            listener_extra = opts.listener_extra,
            iss = issuer.url(),
            provider_extra = opts.provider_extra,
            port = c.cluster.port(),
            user = opts.upstream_user,
            target_extra = opts.target_extra,
            tail = opts.tail,
            store = c
                .dir
                .join(format!("audit-{:016x}.db", rand_u64()))
                .display()
                .to_string(),
        );
        let config = Config::parse(&config_text).map_err(|e| e.to_string())?;
        let gateway = portcullis::server::start(&config, opts.policy)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            tls_addr: gateway.addresses[0],
            plain_addr: gateway.addresses[1],
            issuer,
            gateway,
            config_text,
            _password_file: guard,
        })
    }

    /// A token for `user` in group `testers`, valid 10 minutes.
    pub fn token(&self, user: &str) -> String {
        self.issuer.mint(&TokenSpec {
            user: user.into(),
            groups: vec!["testers".into()],
            ttl_secs: 600,
        })
    }

    /// tokio-postgres config for the TLS listener.
    pub fn pg_config(&self, user: &str, token: &str) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.tls_addr.port())
            .user(user)
            .password(token)
            .dbname(DB)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        cfg
    }

    /// Connects over TLS as `user` with a fresh token.
    pub async fn connect(&self, user: &str) -> tokio_postgres::Client {
        let token = self.token(user);
        self.connect_with(&self.pg_config(user, &token))
            .await
            .expect("connect through the gateway")
    }

    /// Connects with an explicit config; the connection task is spawned.
    pub async fn connect_with(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = cfg.connect(tls_connector()).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects as `user` with `token`, expecting a refusal; returns its
    /// SQLSTATE and message.
    pub async fn refused(&self, user: &str, token: &str) -> (String, String) {
        match self.connect_with(&self.pg_config(user, token)).await {
            Ok(_) => panic!("the gateway must refuse this connection"),
            Err(e) => db_error(&e),
        }
    }

    /// Runs a Python `script` that connects with psycopg to
    /// `os.environ["CONNINFO"]` using `os.environ["TOKEN"]` (as `user`);
    /// returns its standard output, failing the test if it fails.
    pub fn python(&self, user: &str, script: &str) -> String {
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .env("CONNINFO", self.conninfo(user))
            .env("TOKEN", self.token(user))
            .output()
            .expect("python3 is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a Python script twice, directly against PostgreSQL and through
    /// the gateway, and returns both outputs. The script connects with
    /// `psycopg.connect(TARGET, ...)` (libpq finds the token in
    /// `PGPASSWORD`), may run `psql` on `TARGET`, and watches the server
    /// through `ADMIN`, a direct superuser connection string; through the
    /// gateway it runs as `user`.
    pub fn direct_and_through(&self, user: &str, script: &str) -> (String, String) {
        let direct = format!(
            "host=127.0.0.1 port={} dbname={DB} user=trustuser",
            cluster().cluster.port()
        );
        let run = |target: &str, password: Option<String>| {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", script])
                .env("TARGET", target)
                .env("ADMIN", &direct)
                .env_remove("PGPASSWORD")
                .env_remove("PGCLIENTENCODING");
            if let Some(p) = password {
                cmd.env("PGPASSWORD", p);
            }
            let out = cmd.output().expect("python3 is installed");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let direct_out = run(&direct, None);
        let through = run(&self.conninfo(user), Some(self.token(user)));
        (direct_out, through)
    }

    /// A libpq connection string for the TLS listener (token via PGPASSWORD).
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={DB} user={user} sslmode=require",
            self.tls_addr.port()
        )
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// A rustls connector that trusts the test certificate.
pub fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    tls_connector_trusting(&cluster().cert)
}

/// A rustls connector that trusts the certificate in `cert` (PEM).
pub fn tls_connector_trusting(cert: &Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in portcullis::tls::load_certs(cert).expect("load test cert") {
        roots.add(cert).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Writes `contents` to a file of its own under the test cluster's directory
/// and returns its path. Every call gets a fresh name and the file appears
/// whole (written beside it, then renamed), so a gateway started by a test
/// running in parallel never reads it half-written.
pub fn secret_file(prefix: &str, contents: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = &cluster().dir;
    let path = dir.join(format!("{prefix}-{}-{n}", std::process::id()));
    let partial = dir.join(format!(".{prefix}-{}-{n}.partial", std::process::id()));
    std::fs::write(&partial, contents).expect("write secret file");
    std::fs::rename(&partial, &path).expect("rename secret file");
    path
}

/// Path of a file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The SQLSTATE and message of a failed connection or query.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => ("(none)".into(), e.to_string()),
    }
}

/// Runs `cargo build --quiet` with `args` in the workspace, into the target
/// directory the tests use; returns that directory.
fn cargo_build(args: &[&str]) -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&workspace)
        .args(["build", "--quiet"])
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(target)
}

/// What `scripts/test` builds before it runs the tests: every target of
/// the workspace but the micro-benchmarks, so the binary is built with the
/// very dependency features the tests are (a narrower `-p portcullis`
/// build resolves other features and compiles wasmtime a second time).
pub const BUILD_ARGS: &[&str] = &[
    "--workspace",
    "--exclude",
    "portcullis-bench",
    "--all-targets",
];

/// Path of the `portcullis` binary (debug build), built once per test process.
pub fn portcullis_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| cargo_build(BUILD_ARGS).map(|t| t.join("debug").join("portcullis")))
        .clone()
        .unwrap_or_else(|e| panic!("building the portcullis binary failed: {e}"))
}

/// Path of a first-party or test plugin component, built once per test
/// process with `cargo build --target wasm32-wasip2 --profile plugin`.
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            cargo_build(&[
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
                "-p",
                "block",
                "-p",
                "mask",
                "-p",
                "faulty",
                "-p",
                "old-contract",
                "-p",
                "prior-contract",
                "-p",
                "record",
                "-p",
                "approve",
            ])
            .map(|t| t.join("wasm32-wasip2").join("plugin"))
        })
        .as_ref()
        .unwrap_or_else(|e| {
            panic!("building the plugins failed (is the wasm32-wasip2 target installed?): {e}")
        });
    dir.join(format!("{name}.wasm"))
}

/// The `portcullis serve` binary running in a directory of its own, as
/// operators run it; killed when dropped.
pub struct ServedGateway {
    /// The process.
    pub child: tokio::process::Child,
    /// Its directory (configuration, log, store).
    pub dir: PathBuf,
    /// Its plaintext loopback listener port.
    pub port: u16,
    /// The issuer it trusts.
    pub issuer: DevIssuer,
}

impl ServedGateway {
    /// Writes a configuration in `dir` — one plaintext loopback listener,
    /// an issuer, and the test database as target with `target_extra` —
    /// followed by `tail`, and starts the binary on it.
    pub async fn start(dir: &Path, target_extra: &str, tail: &str) -> Self {
        let c = cluster();
        std::fs::create_dir_all(dir).expect("gateway directory");
        std::fs::write(dir.join("upstream-password"), c.cluster.password()).expect("password");
        let issuer = DevIssuer::start(DevKey::generate_es256().expect("key"), AUDIENCE, 0)
            .await
            .expect("issuer");
        let port = portcullis::demo::cluster::free_port().expect("free port");
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
{target_extra}

{tail}"#,
            iss = issuer.url(),
            upstream = c.cluster.port(),
        );
        let config_path = dir.join("portcullis.toml");
        std::fs::write(&config_path, config).expect("configuration");
        let child = Self::spawn(dir);
        Self {
            child,
            dir: dir.to_path_buf(),
            port,
            issuer,
        }
    }

    fn spawn(dir: &Path) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .expect("log file");
        tokio::process::Command::new(portcullis_bin())
            .args(["serve", "--config"])
            .arg(dir.join("portcullis.toml"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the gateway binary")
    }

    /// Starts the binary again on the same configuration (after a kill).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir);
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (up to 20 s); returns the log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let text = self.log();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "no {needle:?} in the gateway log:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A client for `user` (group `testers`), retrying while the gateway
    /// starts (up to 30 s).
    pub async fn connect(&self, user: &str) -> tokio_postgres::Client {
        let token = self.issuer.mint(&TokenSpec {
            user: user.into(),
            groups: vec!["testers".into()],
            ttl_secs: 600,
        });
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(&token)
            .dbname(DB);
        let start = std::time::Instant::now();
        loop {
            match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    return client;
                }
                Err(e) if start.elapsed() < std::time::Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("gateway did not come up: {e}\n{}", self.log()),
            }
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("gateway running");
        let ok = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} {pid} failed");
    }
}

/// Calls the admin API at `base` (`http://host:port`): returns the status
/// and the body as JSON (or as a JSON string when it is not JSON).
pub async fn admin_call(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let http = portcullis::http_client::HttpClient::new(std::time::Duration::from_secs(10))
        .expect("HTTP client");
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let method = hyper::Method::from_bytes(method.as_bytes()).expect("method");
    let body = bytes::Bytes::from(body.unwrap_or_default().to_string());
    let resp = http
        .send(
            method,
            &format!("{base}{path}"),
            &headers,
            Some(("application/json", body)),
        )
        .await
        .expect("the admin API answers");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, value)
}

/// Waits (up to 10 s) until a statement containing `marker` is running in
/// the test cluster, so a test acts while it runs, not before it starts.
pub async fn wait_until_running(marker: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let started = std::time::Instant::now();
    loop {
        let q = sql.clone();
        let running = tokio::task::spawn_blocking(move || cluster().cluster.psql(DB, &q))
            .await
            .expect("psql task")
            .expect("psql");
        if running.trim() != "0" {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no statement with {marker:?} started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The forms in which `raw` could show up in a client's output or a
/// record: itself (compared case-insensitively), its bytes in hex (also as
/// PostgreSQL's `\x` bytea text), and base64 — standard and URL-safe — at
/// each of the three alignments it can take inside a longer encoded value.
pub fn encoded_forms(raw: &str) -> Vec<String> {
    use base64::Engine;
    let bytes = raw.as_bytes();
    let mut forms = vec![raw.to_lowercase()];
    forms.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3usize {
            // `shift` bytes before `raw` in the encoded value: only the
            // groups of three bytes wholly inside `raw` encode the same way.
            let mut padded = vec![0u8; shift];
            padded.extend_from_slice(bytes);
            let encoded = engine.encode(&padded);
            let first_group = shift.div_ceil(3);
            let last_group = padded.len() / 3;
            if last_group > first_group + 1 {
                let part = &encoded[4 * first_group..4 * last_group];
                forms.push(part.to_lowercase());
            }
        }
    }
    forms
}

/// The first of `raws` found in `text` in any of its [`encoded_forms`],
/// with the form it was found in.
pub fn find_leak(text: &str, raws: &[&str]) -> Option<(String, String)> {
    let lower = text.to_lowercase();
    raws.iter().find_map(|raw| {
        encoded_forms(raw)
            .into_iter()
            .find(|form| lower.contains(form.as_str()))
            .map(|form| (raw.to_string(), form))
    })
}

/// A directory under the system's temporary directory, removed (with all
/// it holds: keys, certificates, databases) when dropped — also when the
/// test fails and unwinds.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `<tmp>/<prefix>-<pid>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&path).expect("scratch directory");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A random number from the clock (the harness has no RNG dependency).
fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Posts an RFC 8693 token exchange with `fields` to the gateway's admin
/// API; returns the status and the JSON answer.
pub async fn exchange_token(gw: &TestGateway, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let body = portcullis::http_client::form_encode(fields);
    let base = format!("http://{}", gw.gateway.admin_address.expect("admin API"));
    let http = portcullis::http_client::HttpClient::new(std::time::Duration::from_secs(10))
        .expect("client");
    let resp = http
        .send(
            hyper::Method::POST,
            &format!("{base}/oauth/token"),
            &[],
            Some((
                "application/x-www-form-urlencoded",
                bytes::Bytes::from(body),
            )),
        )
        .await
        .expect("token endpoint answers");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

/// The `jti` of a token (payload decoded without verification).
pub fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("claims");
    claims["jti"].as_str().expect("jti").to_string()
}

/// Exchanges `subject` for a child token acting as `actor` (plus `extra`
/// form fields); returns the status and the JSON answer.
pub async fn exchange_child(
    gw: &TestGateway,
    subject: &str,
    actor: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut fields = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject),
        ("actor", actor),
    ];
    fields.extend_from_slice(extra);
    exchange_token(gw, &fields).await
}
