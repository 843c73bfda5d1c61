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
            runtime()?.block_on(serve(cfg))
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

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _gateway =
        portcullis::server::start(&cfg, Arc::new(portcullis::policy::PassThrough)).await?;
    portcullis::server::shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}
