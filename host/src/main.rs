//! The `portcullis` binary: command-line parsing and the `anyhow` edge.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use portcullis::config::Config;
use portcullis::demo;

/// Identity-aware access gateway for PostgreSQL.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Work with policy plugin components.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Delegated tokens: mint one for a child agent, read one, revoke one.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// kubectl through the gateway.
    Kube {
        #[command(subcommand)]
        action: KubeAction,
    },
    /// SSH through the gateway.
    Ssh {
        #[command(subcommand)]
        action: SshAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approval requests of a running gateway (over its admin API).
    Approvals {
        #[command(subcommand)]
        action: ApprovalsAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Sessions recorded by a running gateway (over its admin API).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The audit trail of a running gateway (over its admin API).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Plugins loaded by a running gateway (over its admin API).
    Plugins {
        #[command(subcommand)]
        action: PluginsAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Start a self-contained demo: gateway, development OIDC issuer, database.
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
        /// Port for the gateway (default 6432, or a free one if taken).
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum PluginAction {
    /// Load a plugin component and print what it declares (contract, schema).
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// Its configuration as a JSON or TOML file (default: empty).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a plugin against scripted events and print each verdict.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// Its configuration as a JSON or TOML file (default: empty).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events, one JSON object per line: {"sql": "...", "user": "...", "groups": [...]}.
        #[arg(long)]
        events: PathBuf,
    },
}

/// How to reach a running gateway's admin API.
#[derive(clap::Args)]
struct ApiArgs {
    /// The admin API's address.
    #[arg(long, env = "PORTCULLIS_API", default_value = portcullis::cli::DEFAULT_API, global = true)]
    api: String,
    /// File holding the bearer token (an OIDC token of an admin or
    /// approver, or the gateway's admin token); or set PORTCULLIS_TOKEN.
    #[arg(long, env = "PORTCULLIS_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = portcullis::cli::Output::Table, global = true)]
    output: portcullis::cli::Output,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<portcullis::cli::AdminClient> {
        let token = match &self.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the token file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("PORTCULLIS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        Ok(portcullis::cli::AdminClient::new(&self.api, token)?)
    }
}

/// Where `kube login` and `kube credential` get the token.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct KubeTokenArgs {
    /// File holding the token, read each time kubectl asks.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Command (sh -c) that prints the token, run each time kubectl asks,
    /// e.g. "az account get-access-token --query accessToken -o tsv".
    #[arg(long)]
    token_command: Option<String>,
}

impl KubeTokenArgs {
    fn source(self) -> portcullis::cli::kube_login::TokenSource {
        use portcullis::cli::kube_login::TokenSource;
        match (self.token_file, self.token_command) {
            (Some(f), _) => TokenSource::File(f),
            (None, Some(c)) => TokenSource::Command(c),
            (None, None) => TokenSource::File(PathBuf::from("-")),
        }
    }
}

#[derive(Subcommand)]
enum KubeAction {
    /// Write a kubeconfig for one Kubernetes target of the gateway, whose
    /// credential is `portcullis kube credential` (kubectl gets a fresh
    /// token itself).
    Login {
        /// The target's name on the gateway.
        #[arg(long)]
        target: String,
        /// The gateway's Kubernetes listener, https://HOST:PORT.
        #[arg(long)]
        server: String,
        /// CA certificate that signed the gateway's (default: the system's).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        token: KubeTokenArgs,
        /// The kubeconfig to write (default: ~/.portcullis/kube/TARGET.kubeconfig).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Print an ExecCredential with the token (what kubectl runs).
    Credential {
        #[command(flatten)]
        token: KubeTokenArgs,
    },
}

#[derive(Subcommand)]
enum SshAction {
    /// Trade a token for an SSH certificate (valid as long as the token,
    /// at most 12 hours) and write a key, the certificate, known_hosts and
    /// an ssh config into one directory.
    Login {
        /// File holding the token (- for standard input).
        #[arg(long)]
        token_file: PathBuf,
        /// Where to write the files (default: ~/.portcullis/ssh).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Certify this private key instead of making a fresh one.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// Sessions, newest first.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this target.
        #[arg(long)]
        target: Option<String>,
        /// Only sessions still open.
        #[arg(long)]
        active: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One session replayed as a timeline of its statements.
    Show {
        /// Session id.
        id: u64,
    },
    /// Plays a session's terminal recordings (SSH exec and shell) in this
    /// terminal, with their timing.
    Play {
        /// Session id.
        id: u64,
        /// Only the recording of this event (its number in `sessions show`).
        #[arg(long)]
        event: Option<u64>,
        /// Playing speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// The longest pause played, in seconds.
        #[arg(long, default_value_t = 2.0)]
        max_idle: f64,
    },
    /// Writes one terminal recording (asciicast v2) to standard output, for
    /// `asciinema play` or `asciinema cat`.
    Cast {
        /// Session id.
        id: u64,
        /// The command's event number (see `sessions show`).
        event: u64,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Mint a narrower, shorter-lived token for a child agent (RFC 8693
    /// token exchange at the gateway) and print it.
    Exchange {
        /// File holding the parent token (- for standard input).
        #[arg(long)]
        subject_token_file: PathBuf,
        /// The child's label, e.g. agent:report-writer.
        #[arg(long)]
        actor: String,
        /// A target the child may use (repeatable; default: the parent's).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// A group the child keeps (repeatable; default: the parent's).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Only statements that cannot write.
        #[arg(long)]
        read_only: bool,
        /// Lifetime: 90s, 10m, 2h (never beyond the parent's).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Show a token's principal, actor chain and scope (decoded, not verified).
    Inspect {
        /// File holding the token (- for standard input).
        file: PathBuf,
    },
    /// Revoke a delegated token and every token minted from it (admin).
    Revoke {
        /// The token id (its jti, tok_...).
        jti: String,
    },
}

/// Reads a token from a file, or standard input for `-`.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
    };
    Ok(text.trim().to_string())
}

#[derive(Subcommand)]
enum ApprovalsAction {
    /// Approval requests, newest first.
    List {
        /// Only requests with this status (pending, approved, denied, expired, cancelled).
        #[arg(long)]
        status: Option<String>,
    },
    /// One request with its decisions.
    Show {
        /// Request id (apr_...).
        id: String,
    },
    /// Approve a request (with your own approver token).
    Approve {
        /// Request id (apr_...).
        id: String,
        /// Why, kept with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a request (with your own approver token).
    Deny {
        /// Request id (apr_...).
        id: String,
        /// Why, kept with the decision and shown to the requester.
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Statement events as JSON lines on standard output.
    Export {
        /// From this time (e.g. 2026-11-30T00:00:00Z or 2026-11-30), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Up to this time, exclusive (default: now).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginsAction {
    /// The plugins serving new sessions.
    List,
    /// Reload plugins from the gateway's configuration file (like SIGHUP).
    Reload,
}

#[derive(Subcommand)]
enum DemoAction {
    /// Mint a token from the running demo's development issuer.
    Token {
        /// User name (the token's preferred_username).
        #[arg(long, default_value = demo::DEFAULT_USER)]
        user: String,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)
                .with_context(|| format!("{} is not valid", config.display()))?;
            print!("{}", cfg.summary());
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = Config::load(&config)
                .with_context(|| format!("{} is not valid", config.display()))?;
            portcullis::logging::init(&cfg.logging);
            runtime()?.block_on(serve(cfg, config))
        }
        Command::Plugin { action } => {
            portcullis::logging::init(&Default::default());
            match action {
                PluginAction::Check { file, config } => {
                    let report = portcullis::plugins::tool::check(&file, config.as_deref())?;
                    print!("{report}");
                    Ok(())
                }
                PluginAction::Test {
                    file,
                    config,
                    events,
                } => {
                    let ok = portcullis::plugins::tool::test(
                        &file,
                        config.as_deref(),
                        &events,
                        &mut std::io::stdout(),
                    )?;
                    if ok {
                        Ok(())
                    } else {
                        anyhow::bail!("some events did not get the expected verdict")
                    }
                }
            }
        }
        Command::Kube { action } => {
            use portcullis::cli::kube_login;
            let mut out = std::io::stdout().lock();
            match action {
                KubeAction::Login {
                    target,
                    server,
                    ca_file,
                    token,
                    kubeconfig,
                } => {
                    let args = kube_login::LoginArgs {
                        kubeconfig: kubeconfig
                            .unwrap_or_else(|| kube_login::default_kubeconfig(&target)),
                        target,
                        server,
                        ca_file,
                        source: token.source(),
                    };
                    kube_login::login(&args, &mut out)?;
                }
                KubeAction::Credential { token } => {
                    let token = kube_login::token(&token.source())?;
                    std::io::Write::write_all(
                        &mut out,
                        format!("{}\n", kube_login::exec_credential(&token)).as_bytes(),
                    )?;
                }
            }
            Ok(())
        }
        Command::Ssh {
            action:
                SshAction::Login {
                    token_file,
                    dir,
                    key,
                },
            api,
        } => {
            let args = portcullis::cli::ssh_login::LoginArgs {
                token: read_token(&token_file)?,
                dir: dir.unwrap_or_else(portcullis::cli::ssh_login::default_dir),
                key,
                api: api.api.clone(),
            };
            let mut out = std::io::stdout().lock();
            runtime()?.block_on(portcullis::cli::ssh_login::login(&args, &mut out))?;
            Ok(())
        }
        Command::Token { action, api } => {
            use portcullis::cli::token;
            let mut out = std::io::stdout().lock();
            match action {
                TokenAction::Exchange {
                    subject_token_file,
                    actor,
                    targets,
                    groups,
                    read_only,
                    ttl,
                } => {
                    let ttl_secs = match ttl {
                        Some(t) => Some(token::parse_ttl(&t).with_context(|| {
                            format!("--ttl {t:?}: use a duration such as 90s, 10m or 2h")
                        })?),
                        None => None,
                    };
                    let args = token::ExchangeArgs {
                        subject_token: read_token(&subject_token_file)?,
                        actor,
                        targets,
                        groups,
                        read_only,
                        ttl_secs,
                    };
                    let client = portcullis::cli::AdminClient::new(&api.api, None)?;
                    runtime()?.block_on(token::exchange(&client, &args, &mut out))?;
                }
                TokenAction::Inspect { file } => {
                    let now = portcullis::demo::issuer::now();
                    std::io::Write::write_all(
                        &mut out,
                        token::inspect(&read_token(&file)?, now)?.as_bytes(),
                    )?;
                }
                TokenAction::Revoke { jti } => {
                    let client = api.client()?;
                    runtime()?.block_on(token::revoke(&client, &jti, &mut out))?;
                }
            }
            Ok(())
        }
        Command::Approvals { action, api } => {
            use portcullis::cli::approvals;
            let client = api.client()?;
            let mut out = std::io::stdout().lock();
            let o = api.output;
            runtime()?.block_on(async {
                match action {
                    ApprovalsAction::List { status } => {
                        approvals::list(&client, status.as_deref(), o, &mut out).await
                    }
                    ApprovalsAction::Show { id } => {
                        approvals::show(&client, &id, o, &mut out).await
                    }
                    ApprovalsAction::Approve { id, comment } => {
                        approvals::decide(&client, &id, true, comment.as_deref(), o, &mut out).await
                    }
                    ApprovalsAction::Deny { id, comment } => {
                        approvals::decide(&client, &id, false, comment.as_deref(), o, &mut out)
                            .await
                    }
                }
            })?;
            Ok(())
        }
        Command::Sessions { action, api } => {
            let client = api.client()?;
            let mut out = std::io::stdout().lock();
            runtime()?.block_on(async {
                match action {
                    SessionsAction::List {
                        user,
                        target,
                        active,
                        limit,
                    } => {
                        let filter = portcullis::cli::sessions::ListFilter {
                            user,
                            target,
                            active,
                            limit,
                        };
                        portcullis::cli::sessions::list(&client, &filter, api.output, &mut out)
                            .await
                    }
                    SessionsAction::Show { id } => {
                        portcullis::cli::sessions::show(&client, id, api.output, &mut out).await
                    }
                    SessionsAction::Play {
                        id,
                        event,
                        speed,
                        max_idle,
                    } => {
                        let pace = portcullis::cli::play::Pace { speed, max_idle };
                        let played =
                            portcullis::cli::play::play(&client, id, event, pace, &mut out).await?;
                        if played == 0 {
                            eprintln!("session {id} has no terminal recordings");
                        }
                        Ok(())
                    }
                    SessionsAction::Cast { id, event } => {
                        let cast = portcullis::cli::play::cast(&client, id, event).await?;
                        std::io::Write::write_all(&mut out, cast.as_bytes())
                            .map_err(portcullis::cli::CliError::Output)
                    }
                }
            })?;
            Ok(())
        }
        Command::Audit {
            action: AuditAction::Export { since, until },
            api,
        } => {
            let client = api.client()?;
            let mut out = std::io::stdout().lock();
            let n = runtime()?.block_on(portcullis::cli::audit::export(
                &client,
                since.as_deref(),
                until.as_deref(),
                &mut out,
            ))?;
            eprintln!("{n} events exported");
            Ok(())
        }
        Command::Plugins { action, api } => {
            let client = api.client()?;
            let mut out = std::io::stdout().lock();
            runtime()?.block_on(async {
                match action {
                    PluginsAction::List => {
                        portcullis::cli::plugins::list(&client, api.output, &mut out).await
                    }
                    PluginsAction::Reload => {
                        portcullis::cli::plugins::reload(&client, api.output, &mut out).await
                    }
                }
            })?;
            Ok(())
        }
        Command::Demo { action: None, port } => {
            portcullis::logging::init(&Default::default());
            runtime()?.block_on(demo::run(port))
        }
        Command::Demo {
            action:
                Some(DemoAction::Token {
                    user,
                    groups,
                    ttl_minutes,
                }),
            ..
        } => {
            let token = demo::mint_from_running(&user, &groups, ttl_minutes * 60)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let gateway =
        portcullis::server::start(&cfg, Arc::new(portcullis::policy::PassThrough)).await?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let shutdown = portcullis::server::shutdown_signal();
    tokio::pin!(shutdown);
    let mut watcher = portcullis::watch::Watcher::new(&path, &cfg);
    let every = std::time::Duration::from_secs(cfg.gateway.watch_interval_secs.max(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => "SIGHUP",
            _ = ticks.tick(), if cfg.gateway.watch_interval_secs > 0 => {
                if !watcher.poll() {
                    continue;
                }
                "a changed file"
            }
        };
        // Reload plugins; a bad new version is refused and the old keeps serving.
        match Config::load(&path) {
            Err(e) => {
                watcher.attempted();
                tracing::error!(error = %e, trigger = why, "reload refused: the configuration is not valid")
            }
            Ok(new) => {
                watcher.reloaded(&new);
                match gateway.reload_plugins(&new) {
                    Ok(n) => tracing::info!(
                        plugins = n,
                        trigger = why,
                        "plugins reloaded; new sessions use them"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, trigger = why, "reload refused; the previous plugins keep serving")
                    }
                }
            }
        }
    }
    let grace = std::time::Duration::from_secs(cfg.gateway.shutdown_grace_secs);
    tracing::info!(
        sessions = gateway.active_connections(),
        grace_secs = grace.as_secs(),
        "shutting down: no new connections; waiting for sessions to finish"
    );
    gateway.shutdown(grace).await;
    Ok(())
}
