//! `portcullis demo`: the gateway's main job on embedded defaults.
//!
//! One command starts a development OIDC issuer (`issuer`), a self-signed
//! certificate (`cert`), an upstream — `DATABASE_URL` or a throwaway cluster
//! seeded with a small shop schema (`cluster`) — and the gateway in front of
//! it, then prints a token and a ready-to-paste `psql` line. When OpenSSH's
//! server is installed it also starts a throwaway `sshd` (`sshd`) as the
//! SSH target `web-1`, reached with a gateway-minted certificate. When the `block`
//! and `mask` plugins have been built (see [`plugin_dir`]) they guard the
//! target with [`BLOCK_RULES`] and [`MASK_RULES`]. The issuer's key and address are kept in a state
//! directory so `portcullis demo token` can mint tokens for other users while
//! the demo runs. Tests reuse these parts.

pub mod cert;
pub mod cluster;
pub mod database_url;
pub mod issuer;
pub mod sshd;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use issuer::{DevIssuer, DevKey, TokenSpec};

/// User the demo mints its first token for.
pub const DEFAULT_USER: &str = "alice@example.com";
/// Audience of demo tokens.
pub const AUDIENCE: &str = "portcullis";
/// Name of the demo target (what clients put in `dbname`).
pub const TARGET: &str = "shop";

/// Sample schema that later guardrails (masking, blocking, approvals) show off.
pub const SEED_SQL: &str = r#"
CREATE TABLE customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  card_number text NOT NULL,
  national_id text NOT NULL
);
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  product text NOT NULL,
  amount numeric(10,2) NOT NULL,
  status text NOT NULL DEFAULT 'new',
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, card_number, national_id) VALUES
  ('Ada Lovelace',   'ada@example.com',   '4111 1111 1111 1111', '123-45-6789'),
  ('Alan Turing',    'alan@example.com',  '5500 0000 0000 0004', '987-65-4321'),
  ('Grace Hopper',   'grace@example.com', '3400 0000 0000 009',  '111-22-3333'),
  ('Edsger Dijkstra','edsger@example.com','6011 0000 0000 0004', '444-55-6666');
INSERT INTO orders (customer_id, product, amount, status) VALUES
  (1, 'Analytical Engine', 1200.00, 'shipped'),
  (2, 'Bombe',              800.50, 'new'),
  (3, 'COBOL manual',        29.99, 'new'),
  (4, 'Semaphore',           15.00, 'cancelled');
-- The backstop: analysts' sessions run as this role upstream, so whatever
-- statement analysis misses still meets PostgreSQL's own privileges.
CREATE ROLE shop_analyst NOLOGIN;
GRANT USAGE ON SCHEMA public TO shop_analyst;
GRANT SELECT ON customers, orders TO shop_analyst;
GRANT INSERT, UPDATE, DELETE ON orders TO shop_analyst;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO shop_analyst;
"#;

/// The demo target's group-to-role mapping (embedded cluster only: the
/// role exists there).
pub const ROLE_MAPPING: &str = r#"
[[targets.roles]]
groups = ["analysts"]
role = "shop_analyst"
"#;

/// Rules of the demo's `block` plugin over the shop schema.
pub const BLOCK_RULES: &str = r#"
[plugins.config]
search_path = ["public"]

[[plugins.config.rules]]
name = "no-unbounded-writes"
unbounded_writes = true

[[plugins.config.rules]]
name = "no-destructive-ddl"
kinds = ["drop", "truncate", "alter-system", "do"]

[[plugins.config.rules]]
name = "no-server-files"
server_files = true
functions = ["lo_*", "dblink*"]

[[plugins.config.rules]]
name = "no-new-code"
creates_code = true

[[plugins.config.rules]]
name = "no-unreadable-code"
unknown_effects = true

[[plugins.config.rules]]
name = "no-role-switching"
role_switching = true

[[plugins.config.rules]]
name = "no-destructive-commands"
commands = ["rm *", "shred *", "dd *", "mkfs*", "truncate *"]

[[plugins.config.rules]]
name = "agents-read-plainly"
groups = ["agents"]
opaque_commands = true
"#;

/// Rules of the demo's `mask` plugin over the shop schema.
pub const MASK_RULES: &str = r#"
[plugins.config]
# Demo only: a real deployment puts its own secret here (and keeps the
# configuration file private).
hash_key = "portcullis-demo-hash-key-not-secret"

[[plugins.config.rules]]
column = "public.customers.card_number"
action = "partial"
keep = 4

[[plugins.config.rules]]
column = "public.customers.national_id"
action = "redact"
except_groups = ["auditors"]

[[plugins.config.rules]]
column = "public.customers.email"
action = "hash"
"#;

/// Rules of the demo's `approve` plugin: changing or deleting an order
/// needs one approver (deleting counts: a delete and an insert would
/// otherwise change an order without one).
pub const APPROVE_RULES: &str = r#"
[plugins.config]
search_path = ["public"]

[[plugins.config.rules]]
name = "orders-changes"
actions = ["update", "delete"]
tables = ["public.orders"]
reason = "changing an order needs one approval from the approvers group"
mode = "wait"
min_approvals = 1
timeout_secs = 300

[[plugins.config.rules]]
name = "privileged-commands"
commands = ["sudo *", "systemctl restart *", "systemctl stop *", "kill *", "reboot *"]
mode = "wait"
timeout_secs = 300
"#;

/// Settings of the demo's `record` plugin: every statement, with the first
/// five rows of each result (as the client saw them, masked).
pub const RECORD_RULES: &str = r#"
[plugins.config]
statements = "all"
sample_rows = 5
"#;

/// The demo's plugins in chain order, with their configuration.
pub const PLUGINS: [(&str, &str); 4] = [
    ("block", BLOCK_RULES),
    ("approve", APPROVE_RULES),
    ("mask", MASK_RULES),
    ("record", RECORD_RULES),
];

/// Where first-party plugin components are: `$PORTCULLIS_PLUGIN_DIR`, or the
/// `wasm32-wasip2/plugin` directory next to the binary's cargo profile
/// directory (`target/release/portcullis` → `target/wasm32-wasip2/plugin`).
pub fn plugin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTCULLIS_PLUGIN_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?;
    let candidate = profile_dir.parent()?.join("wasm32-wasip2").join("plugin");
    candidate.is_dir().then_some(candidate)
}

/// Where the running demo keeps its issuer key and address.
pub fn state_dir() -> PathBuf {
    std::env::temp_dir().join("portcullis-demo")
}

/// Mints a token from the running demo's issuer (for `portcullis demo token`).
pub fn mint_from_running(user: &str, groups: &[String], ttl_secs: u64) -> anyhow::Result<String> {
    let dir = state_dir();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).with_context(|| {
            format!(
                "no running demo found ({} is missing); start one with: portcullis demo",
                dir.display()
            )
        })?)?;
    let pem = std::fs::read_to_string(dir.join("issuer-key.pem"))?;
    let kid = state["kid"].as_str().unwrap_or_default();
    let key = DevKey::from_es256_pem(&pem, kid)?;
    let now = issuer::now();
    let groups: Vec<String> = if groups.is_empty() {
        vec!["analysts".into()]
    } else {
        groups.to_vec()
    };
    Ok(key.sign(&json!({
        "iss": state["issuer"], "aud": AUDIENCE, "sub": user, "preferred_username": user,
        "groups": groups, "iat": now, "nbf": now, "exp": now + ttl_secs,
    })))
}

/// The upstream the demo fronts.
enum Upstream {
    Cluster(cluster::TempCluster),
    External(database_url::DatabaseUrl),
}

/// A running demo: gateway, issuer and upstream.
pub struct Demo {
    /// The gateway.
    pub gateway: crate::server::RunningGateway,
    /// The development issuer.
    pub issuer: DevIssuer,
    /// A token for [`DEFAULT_USER`] in group `analysts`, valid 1 hour.
    pub token: String,
    /// First-party plugins the target loaded.
    pub plugins: Vec<String>,
    /// The state directory (configuration, keys, certificate).
    pub dir: PathBuf,
    /// The throwaway SSH server behind target `web-1`, when `sshd` is
    /// installed.
    pub sshd: Option<sshd::TempSshd>,
    upstream: Upstream,
}

impl Demo {
    /// The throwaway cluster behind the demo, when it started one (not with
    /// `DATABASE_URL`): direct access for checks, past the gateway.
    pub fn cluster(&self) -> Option<&cluster::TempCluster> {
        match &self.upstream {
            Upstream::Cluster(c) => Some(c),
            Upstream::External(_) => None,
        }
    }

    /// The gateway's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.gateway.addresses[0]
    }

    /// Stops everything and removes what the demo created.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway
            .shutdown(std::time::Duration::from_secs(1))
            .await;
        drop(self.gateway);
        drop(self.issuer);
        drop(self.sshd);
        if let Upstream::Cluster(mut c) = self.upstream {
            tokio::task::spawn_blocking(move || c.stop()).await?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Name of the demo's SSH target (the login name: `ssh web-1@...`).
pub const SSH_TARGET: &str = "web-1";

/// The first-party plugins that guard the SSH target (those built):
/// `record` lists the lines typed in its shells as the session's events.
fn plugins_for_ssh() -> Vec<&'static str> {
    ["block", "approve", "record"]
        .into_iter()
        .filter(|name| plugin_dir().is_some_and(|d| d.join(format!("{name}.wasm")).is_file()))
        .collect()
}

/// The configuration of the SSH listener and target `web-1` for `sshd`:
/// the listener's host key and user CA, and the CA the host trusts, made
/// fresh in `dir`.
/// The listener is on 127.0.0.1:2222 when `usual_port` and it is free.
fn ssh_config(
    dir: &std::path::Path,
    s: &sshd::TempSshd,
    plugins: &[&str],
    usual_port: bool,
) -> anyhow::Result<String> {
    let write = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        sshd::write_key(&path)?;
        Ok(path)
    };
    let host_key = write("ssh-host-key")?;
    let user_ca = write("ssh-user-ca")?;
    let ssh_port = if usual_port && std::net::TcpListener::bind("127.0.0.1:2222").is_ok() {
        2222
    } else {
        cluster::free_port()?
    };
    Ok(format!(
        r#"
[[listeners]]
protocol = "ssh"
address = "127.0.0.1:{ssh_port}"
host_key_file = {host_key:?}
user_ca_key_file = {user_ca:?}

[[targets]]
protocol = "ssh"
name = "{SSH_TARGET}"
host = "127.0.0.1"
port = {port}
user = {user:?}
upstream_ca_key_file = {upstream_ca:?}
known_hosts_file = {known:?}
allow_groups = ["analysts", "approvers", "admins", "agents"]
plugins = {plugins:?}
"#,
        host_key = host_key.display().to_string(),
        user_ca = user_ca.display().to_string(),
        port = s.port,
        user = s.user,
        upstream_ca = s.upstream_ca.display().to_string(),
        known = s.known_hosts.display().to_string(),
    ))
}

/// Runs the demo until Ctrl-C.
pub async fn run(port: Option<u16>) -> anyhow::Result<()> {
    let demo = start(port, state_dir()).await?;
    let addr = demo.addr();
    let loaded = |name: &str| demo.plugins.iter().any(|n| n == name);
    println!();
    println!(
        "Portcullis demo is running: gateway on {addr}, target \"{TARGET}\", development issuer {}",
        demo.issuer.url()
    );
    println!(
        "Configuration: {}",
        demo.dir.join("portcullis.toml").display()
    );
    println!();
    println!("A token for {DEFAULT_USER} (group analysts, valid 1 hour). Connect with:");
    println!();
    println!(
        "PGPASSWORD={} psql \"host=127.0.0.1 port={} dbname={TARGET} user={DEFAULT_USER} sslmode=require\"",
        demo.token,
        addr.port()
    );
    println!();
    if loaded("mask") {
        println!("The mask plugin masks customers' card numbers, national ids and e-mails:");
        println!("  SELECT name, card_number, national_id FROM customers;  -- **** **** **** 1111");
        println!("  SELECT reverse(card_number) FROM customers;  -- [redacted]: computed from a masked column");
    }
    if loaded("block") {
        println!("The block plugin refuses risky statements:");
        println!("  DELETE FROM orders;                  -- refused: rule \"no-unbounded-writes\"");
        println!("  SELECT pg_read_file('/etc/passwd');  -- refused: rule \"no-server-files\"");
    }
    if matches!(demo.upstream, Upstream::Cluster(_)) {
        println!(
            "Analysts run as role shop_analyst upstream, so PostgreSQL itself backs the rules:"
        );
        println!(
            "  DELETE FROM customers WHERE id = 4;  -- refused by PostgreSQL: permission denied"
        );
    }
    if loaded("approve") {
        println!(
            "The approve plugin holds updates and deletes of orders until an approver agrees:"
        );
        println!("  UPDATE orders SET status = 'shipped' WHERE id = 2;  -- waits; the notice names the request");
    }
    if demo.plugins.len() < PLUGINS.len() {
        println!(
            "(Plugins missing: build them with `cargo build --target wasm32-wasip2 --profile plugin -p block -p mask -p approve -p record`, or set PORTCULLIS_PLUGIN_DIR.)"
        );
    }
    if let (Some(api), Some(_)) = (demo.gateway.admin_address, &demo.sshd) {
        let token_file = demo.dir.join("alice.jwt");
        std::fs::write(&token_file, &demo.token)?;
        cert::restrict(&token_file);
        let login_dir = demo.dir.join("ssh-login");
        println!();
        println!(
            "SSH target \"{SSH_TARGET}\" (a throwaway OpenSSH server on loopback): trade the token for a certificate, then ssh in:"
        );
        println!(
            "  portcullis ssh login --token-file {} --dir {} --api http://{api}",
            token_file.display(),
            login_dir.display()
        );
        println!(
            "  ssh -F {} {SSH_TARGET}@portcullis 'uptime; ls /'",
            login_dir.join("config").display()
        );
        if loaded("block") {
            println!("  ssh -F {} {SSH_TARGET}@portcullis 'rm -rf /tmp/x'   -- refused: rule \"no-destructive-commands\"", login_dir.join("config").display());
        }
        if loaded("approve") {
            println!(
                "  ssh -F {} {SSH_TARGET}@portcullis 'sudo -n true'   -- waits for an approver",
                login_dir.join("config").display()
            );
        }
        println!(
            "  every exec and shell is recorded: portcullis sessions play <id> --token-file {} --api http://{api}",
            demo.dir.join("admin-token").display()
        );
    }
    if let Some(api) = demo.gateway.admin_address {
        let api_flag = if api.port() == 9187 {
            String::new()
        } else {
            format!(" --api http://{api}")
        };
        println!();
        println!("The admin API is on http://{api}. As an approver, in another terminal:");
        println!("  portcullis demo token --user bob@example.com --group approvers > bob.jwt");
        println!("  portcullis approvals list --token-file bob.jwt{api_flag}");
        println!("  portcullis approvals approve <id> --token-file bob.jwt{api_flag}");
        println!("An agent's child gets a narrower token (see docs/delegation.md):");
        println!(
            "  portcullis token exchange --subject-token-file alice.jwt --actor agent:report-writer --ttl 10m{api_flag}"
        );
        println!("What everyone did (every statement is recorded):");
        println!(
            "  portcullis sessions list --token-file {}{api_flag}",
            demo.dir.join("admin-token").display()
        );
        println!(
            "  portcullis sessions show <id> --token-file {}{api_flag}",
            demo.dir.join("admin-token").display()
        );
    }
    println!();
    println!(
        "Tokens for other people: portcullis demo token --user bob@example.com --group approvers"
    );
    println!("Press Ctrl-C to stop; the demo removes everything it created.");
    crate::server::shutdown_signal().await;
    eprintln!("stopping...");
    demo.stop().await
}

/// Starts the demo with its state in `dir` (emptied first): upstream,
/// issuer, configuration with the first-party plugins that are built, and
/// the gateway on `port` (default 6432 when free).
pub async fn start(port: Option<u16>, dir: PathBuf) -> anyhow::Result<Demo> {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    cert::restrict(&dir);

    let upstream = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            Upstream::External(database_url::DatabaseUrl::parse(&url).context("DATABASE_URL")?)
        }
        _ => {
            eprintln!("starting a throwaway PostgreSQL cluster...");
            let c = tokio::task::spawn_blocking(cluster::TempCluster::start)
                .await?
                .context("cannot start a throwaway PostgreSQL cluster")?;
            c.psql("postgres", "CREATE DATABASE shop")?;
            c.psql("shop", SEED_SQL)?;
            Upstream::Cluster(c)
        }
    };
    let (host, uport, database, user, password, tls) = match &upstream {
        Upstream::Cluster(c) => (
            "127.0.0.1".to_string(),
            c.port(),
            "shop".to_string(),
            "postgres".to_string(),
            Some(c.password().to_string()),
            "disable",
        ),
        Upstream::External(u) => (
            u.host.clone(),
            u.port,
            u.database.clone(),
            u.user.clone(),
            u.password.clone(),
            u.tls_mode(),
        ),
    };
    let password_line = match password {
        Some(p) => {
            let f = dir.join("upstream-password");
            std::fs::write(&f, p)?;
            cert::restrict(&f);
            format!("password_file = {:?}\n", f.display().to_string())
        }
        None => String::new(),
    };
    let role_mapping = match &upstream {
        Upstream::Cluster(_) => ROLE_MAPPING,
        Upstream::External(_) => "",
    };

    let key = DevKey::generate_es256()?;
    std::fs::write(dir.join("issuer-key.pem"), &key.pem)?;
    cert::restrict(&dir.join("issuer-key.pem"));
    let issuer = DevIssuer::start(key.clone(), AUDIENCE, 0).await?;
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&json!({"issuer": issuer.url(), "kid": key.kid}))?,
    )?;
    let (cert_file, key_file) = cert::write_self_signed(&dir).map_err(anyhow::Error::msg)?;
    let sshd = tokio::task::spawn_blocking({
        let d = dir.join("sshd");
        move || sshd::TempSshd::start(&d)
    })
    .await?
    .context("cannot start the throwaway OpenSSH server for target web-1")?;
    let ssh_text = match &sshd {
        Some(s) => ssh_config(&dir, s, &plugins_for_ssh(), port.is_none())?,
        None => String::new(),
    };

    let port = match port {
        Some(p) => p,
        None if std::net::TcpListener::bind("127.0.0.1:6432").is_ok() => 6432,
        None => cluster::free_port()?,
    };
    let admin_token = format!("demo-admin-{:032x}", rand::random::<u128>());
    std::fs::write(dir.join("admin-token"), &admin_token)?;
    cert::restrict(&dir.join("admin-token"));
    let admin_port = if std::net::TcpListener::bind("127.0.0.1:9187").is_ok() {
        9187
    } else {
        cluster::free_port()?
    };
    let plugins: Vec<(&str, PathBuf, &str)> = PLUGINS
        .into_iter()
        .filter_map(|(name, rules)| {
            let path = plugin_dir()?.join(format!("{name}.wasm"));
            path.is_file().then_some((name, path, rules))
        })
        .collect();
    let plugins_line = if plugins.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = plugins.iter().map(|(n, _, _)| *n).collect();
        format!("plugins = {names:?}\n")
    };
    let config_text = format!(
        r#"# Generated by `portcullis demo`.
[store]
path = {store:?}

[admin]
address = "127.0.0.1:{admin_port}"
token_file = {admin_token_file:?}

[approvals]
approver_groups = ["approvers"]

[delegation]
key_file = {signing_key:?}

[[listeners]]
address = "127.0.0.1:{port}"
tls_cert_file = {cert:?}
tls_key_file = {key:?}

[[identity_providers]]
name = "demo"
issuer = "{iss}"
insecure_loopback_issuer = true
audience = "{AUDIENCE}"
algorithms = ["ES256"]

[[targets]]
name = "{TARGET}"
host = "{host}"
port = {uport}
database = "{database}"
user = "{user}"
tls = "{tls}"
{password_line}allow_groups = ["analysts", "approvers", "admins"]
{plugins_line}{role_mapping}{ssh_text}"#,
        cert = cert_file.display().to_string(),
        key = key_file.display().to_string(),
        iss = issuer.url(),
        store = dir.join("audit.db").display().to_string(),
        admin_token_file = dir.join("admin-token").display().to_string(),
        signing_key = dir.join("signing-key.pem").display().to_string(),
    );
    let mut config_text = config_text;
    if !plugins.is_empty() {
        for (name, path, rules) in &plugins {
            config_text.push_str(&format!(
                "\n[[plugins]]\nname = {name:?}\npath = {:?}\n{rules}",
                path.display().to_string()
            ));
        }
    }
    std::fs::write(dir.join("portcullis.toml"), &config_text)?;
    let config = Config::parse(&config_text)?;
    let gateway = crate::server::start(&config, Arc::new(crate::policy::PassThrough)).await?;
    let token = issuer.mint(&TokenSpec {
        user: DEFAULT_USER.into(),
        groups: vec!["analysts".into()],
        ttl_secs: 3600,
    });
    Ok(Demo {
        gateway,
        issuer,
        token,
        plugins: plugins.iter().map(|(n, _, _)| n.to_string()).collect(),
        dir,
        sshd,
        upstream,
    })
}
