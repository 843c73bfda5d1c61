//! A plugin ready to instantiate: its file checked against the sha256 pin,
//! compiled once (cached on disk by [`super::cache`], which authenticates
//! every entry), linked against the contract, described, and its
//! configuration validated and accepted by a probe instance.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::Engine;

use super::bindings::types;
use super::cache::{self, Origin};
use super::engine::EPOCH_TICK;
use super::instance::{describe_failure, Linked, PluginInstance, StoreState};
use super::schema;
use crate::config::{FailurePolicy, PluginConfig};

/// Why a plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be created.
    #[error("WebAssembly engine: {0}")]
    Engine(String),
    /// The file could not be read.
    #[error("plugin {name}: cannot read {path}: {message}")]
    Read {
        /// Plugin name.
        name: String,
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The file does not match its pin.
    #[error("plugin {name}: {path} has sha256 {actual}, but the configuration pins {expected}; refusing it")]
    Pin {
        /// Plugin name.
        name: String,
        /// File.
        path: String,
        /// Configured hash.
        expected: String,
        /// Hash of the file.
        actual: String,
    },
    /// Not a valid component.
    #[error("plugin {name}: {path} is not a valid WebAssembly component: {message}")]
    Compile {
        /// Plugin name.
        name: String,
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The component does not implement the contract this host speaks.
    #[error("plugin {name}: does not implement {contract} (built for another contract version, or not a Portcullis plugin): {message}", contract = super::CONTRACT)]
    Contract {
        /// Plugin name.
        name: String,
        /// Cause.
        message: String,
    },
    /// The configuration was refused.
    #[error("plugin {name}: {message}")]
    Config {
        /// Plugin name.
        name: String,
        /// Cause.
        message: String,
    },
}

/// A loaded plugin; shared by every session that uses it.
pub struct LoadedPlugin {
    /// Configured name.
    pub name: Arc<str>,
    /// File it came from.
    pub path: String,
    /// SHA-256 of the file (hex).
    pub sha256: String,
    /// The name the plugin declares for itself.
    pub declared_name: String,
    /// What the plugin says about itself.
    pub version: String,
    /// Whether it wants result rows at all.
    pub wants_rows: bool,
    /// Statement kinds it judges (empty: every query).
    pub query_kinds: Vec<String>,
    /// Whether a `pass` result plan may be reused for the same description.
    pub stable_result_plans: bool,
    /// Failure policy.
    pub failure: FailurePolicy,
    /// Call deadline in milliseconds.
    pub timeout_ms: u64,
    /// Latency of its calls, for `/metrics`.
    pub calls: Arc<crate::metrics::Histogram>,
    /// Whether its compiled code came from the cache or was compiled now.
    pub origin: Origin,
    config_json: String,
    memory_limit: usize,
    engine: Engine,
    linked: Linked,
}

impl LoadedPlugin {
    /// Whether the plugin exports the SSH hooks (`ssh-plugin`, contract
    /// 0.2.6 and later).
    pub fn guards_ssh(&self) -> bool {
        self.linked.ssh.is_some()
    }

    /// Whether the plugin exports the HTTP hooks (`http-plugin`, contract
    /// 0.2.8 and later).
    pub fn guards_http(&self) -> bool {
        self.linked.http.is_some()
    }

    /// Whether the plugin exports `http-response` (contract 0.2.8 and
    /// later).
    pub fn watches_responses(&self) -> bool {
        self.linked.response.is_some()
    }

    /// Whether the plugin exports `ssh-output` (contract 0.2.7 and later).
    pub fn watches_output(&self) -> bool {
        self.linked.output.is_some()
    }

    /// The call deadline in epoch ticks.
    fn deadline_ticks(&self) -> u64 {
        (self.timeout_ms * 1000 / EPOCH_TICK.as_micros() as u64).max(1)
    }

    /// A fresh, configured instance for one session.
    pub fn instantiate(&self) -> Result<PluginInstance, String> {
        let mut inst = PluginInstance::new(
            &self.engine,
            &self.linked,
            self.name.clone(),
            self.memory_limit,
            self.deadline_ticks(),
        )
        .map_err(|e| {
            format!(
                "cannot instantiate: {}",
                describe_failure(&e, self.timeout_ms)
            )
        })?;
        match inst.configure(&self.config_json) {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(msg)) => Err(format!("refused its configuration: {msg}")),
            Err(e) => Err(format!(
                "failed while configuring: {}",
                describe_failure(&e, self.timeout_ms)
            )),
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads one plugin as configured.
pub fn load(
    engine: &Engine,
    linker: &Linker<StoreState>,
    cache: Option<&Path>,
    cfg: &PluginConfig,
) -> Result<LoadedPlugin, PluginError> {
    let name = cfg.name.clone();
    let bytes = std::fs::read(&cfg.path).map_err(|e| PluginError::Read {
        name: name.clone(),
        path: cfg.path.clone(),
        message: e.to_string(),
    })?;
    let sha256 = sha256_hex(&bytes);
    if let Some(expected) = &cfg.sha256 {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(PluginError::Pin {
                name,
                path: cfg.path.clone(),
                expected: expected.to_lowercase(),
                actual: sha256,
            });
        }
    }
    let (component, origin) =
        cache::compile(engine, &bytes, &sha256, cache).map_err(|e| PluginError::Compile {
            name: name.clone(),
            path: cfg.path.clone(),
            message: format!("{e:#}"),
        })?;
    let contract = |e: wasmtime::Error| PluginError::Contract {
        name: name.clone(),
        message: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(&component).map_err(contract)?;
    let linked = Linked::new(pre).map_err(contract)?;
    let config = serde_json::to_value(&cfg.config).map_err(|e| PluginError::Config {
        name: name.clone(),
        message: format!("configuration is not representable as JSON: {e}"),
    })?;
    let mut plugin = LoadedPlugin {
        name: Arc::from(name.as_str()),
        path: cfg.path.clone(),
        sha256,
        declared_name: String::new(),
        version: String::new(),
        wants_rows: false,
        query_kinds: Vec::new(),
        stable_result_plans: false,
        failure: cfg.failure,
        timeout_ms: cfg.call_timeout_ms,
        calls: crate::metrics::global().plugin_histogram(&name),
        origin,
        config_json: config.to_string(),
        memory_limit: cfg.memory_limit_mib << 20,
        engine: engine.clone(),
        linked,
    };
    // Probe: describe, check the configuration against the published schema,
    // and let the plugin accept it.
    let mut probe = PluginInstance::new(
        engine,
        &plugin.linked,
        plugin.name.clone(),
        plugin.memory_limit,
        plugin.deadline_ticks(),
    )
    .map_err(contract)?;
    let meta: types::Metadata = probe.describe().map_err(|e| PluginError::Config {
        name: name.clone(),
        message: format!(
            "describe failed: {}",
            describe_failure(&e, plugin.timeout_ms)
        ),
    })?;
    let schema: serde_json::Value =
        serde_json::from_str(&meta.config_schema).map_err(|e| PluginError::Config {
            name: name.clone(),
            message: format!("the plugin publishes an invalid config schema: {e}"),
        })?;
    schema::validate(&config, &schema).map_err(|m| PluginError::Config {
        name: name.clone(),
        message: format!("[plugins.config] {m}"),
    })?;
    drop(probe);
    plugin.version = meta.version;
    plugin.declared_name = meta.name;
    plugin.wants_rows = meta.wants_rows;
    plugin.query_kinds = meta.query_kinds;
    plugin.stable_result_plans = meta.stable_result_plans;
    plugin
        .instantiate()
        .map_err(|message| PluginError::Config { name, message })?;
    Ok(plugin)
}
