//! Fixtures for the micro-benchmarks in `benches/micro.rs`: the first-party
//! plugins built for `wasm32-wasip2`, and a plugin chain session over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::config::Config;
use portcullis::identity::Identity;
use portcullis::plugins::{PluginRuntime, PoolSize};
use portcullis::policy::{Policy, SessionInfo, SessionPolicy};

/// Builds the first-party plugins (profile `plugin`) and returns their directory.
pub fn plugin_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
            ])
            .args(["-p", "block", "-p", "mask", "-p", "faulty"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
    assert!(status.success(), "building the plugins failed");
    target.join("wasm32-wasip2").join("plugin")
}

/// A configuration with the demo's `block` and `mask` plugins, and a plugin
/// that allows everything (the `faulty` fixture, which misbehaves only on
/// statements containing `boom`) as `noop`.
pub fn config(dir: &Path) -> Config {
    Config::parse(&format!(
        r#"
[[listeners]]
address = "127.0.0.1:6432"
plaintext_loopback_dev = true
[[identity_providers]]
name = "dev"
issuer = "http://127.0.0.1:9999"
insecure_loopback_issuer = true
audience = "portcullis"
[[targets]]
name = "shop"
host = "127.0.0.1"
database = "shop"
user = "gw"
allow_groups = ["analysts"]
plugins = ["block", "mask"]
[[plugins]]
name = "block"
path = {block:?}
{block_rules}
[[plugins]]
name = "mask"
path = {mask:?}
{mask_rules}
[[plugins]]
name = "noop"
path = {noop:?}
[plugins.config]
mode = "trap"
"#,
        block = dir.join("block.wasm").display().to_string(),
        mask = dir.join("mask.wasm").display().to_string(),
        noop = dir.join("faulty.wasm").display().to_string(),
        block_rules = portcullis::demo::BLOCK_RULES,
        mask_rules = portcullis::demo::MASK_RULES,
    ))
    .expect("benchmark configuration")
}

/// The plugin runtime and the configuration's plugins, loaded.
pub fn runtime(cfg: &Config) -> (PluginRuntime, Vec<Arc<portcullis::plugins::LoadedPlugin>>) {
    let rt = PluginRuntime::new(
        PoolSize {
            instances: 64,
            max_memory_bytes: 64 << 20,
        },
        None,
    )
    .expect("plugin runtime");
    let loaded = cfg
        .plugins
        .iter()
        .map(|p| rt.load(p).expect("plugin loads"))
        .collect();
    (rt, loaded)
}

/// Session facts for `alice@example.com` in group `analysts`.
pub fn session_info() -> SessionInfo {
    SessionInfo {
        session_id: 1,
        identity: Identity {
            subject: "alice@example.com".into(),
            user: "alice@example.com".into(),
            groups: vec!["analysts".into()],
            issuer: "http://127.0.0.1:9999".into(),
            actor_chain: Vec::new(),
            expires_at: u64::MAX,
            delegation: None,
        },
        target: "shop".into(),
        protocol: "postgres",
        client_addr: "127.0.0.1:5000".parse().expect("address"),
        application_name: None,
    }
}

/// A session of a chain of `plugins`.
pub fn session(
    rt: &PluginRuntime,
    plugins: Vec<Arc<portcullis::plugins::LoadedPlugin>>,
) -> Box<dyn SessionPolicy> {
    rt.chain(plugins)
        .start_session(&session_info())
        .unwrap_or_else(|r| panic!("session refused: {}", r.reason))
}
