//! WebAssembly policy plugins: loading components, running one instance per
//! session, and chaining plugins at the policy seam.
//!
//! - `engine`: the wasmtime engine (component model, epoch deadlines whose
//!   ticker runs only while plugin code does, pooling allocator);
//! - `loaded`: a plugin file checked (sha256 pin), compiled, linked against
//!   the contract (`InstancePre`), described and configured;
//! - `cache`: compiled plugins on disk, in an owner-only directory, each
//!   entry authenticated (HMAC under a key only the gateway holds) before it
//!   is deserialized;
//! - `instance`: one sandboxed instance (empty WASI context, memory cap,
//!   per-call deadline) and its calls;
//! - `chain`: a target's plugins as a [`crate::policy::Policy`]: first deny
//!   wins, approvals are collected, row edits compose in chain order, a
//!   verdict a plugin declared reusable answers later statements of the same
//!   shape, and a failing plugin is handled by its failure policy;
//! - `executor`: where plugin code runs: data-path calls inline on the
//!   session's thread (host panics caught per call), loading on plain threads;
//! - `schema`: the subset of JSON Schema used to check plugin configurations;
//! - [`tool`]: `portcullis plugin check` / `plugin test`, the author's harness.
//!
//! Why one instance per session: per-session state then lives in the plugin's
//! own memory with no handles to manage, a misbehaving session cannot corrupt
//! another's state, and the pooling allocator makes instantiation cost a few
//! microseconds.

mod bindings;
mod cache;
mod chain;
mod engine;
mod executor;
mod instance;
mod loaded;
mod schema;
pub mod tool;

use std::path::PathBuf;
use std::sync::Arc;

pub use chain::PluginChain;

/// The contract version this host speaks (`wit/policy.wit`): plugins built
/// for another minor version of 0.x are refused at load.
pub const CONTRACT: &str = "portcullis:policy@0.2";
pub use cache::Origin;
pub use engine::PoolSize;
pub use loaded::{sha256_hex, LoadedPlugin, PluginError};

use crate::config::PluginConfig;
use crate::protocols::postgres::sql::SummaryCache;

/// Loads plugins and creates chains; one per gateway.
pub struct PluginRuntime {
    engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<instance::StoreState>,
    cache_dir: Option<PathBuf>,
    summaries: Arc<SummaryCache>,
    executor: Arc<executor::Executor>,
}

impl PluginRuntime {
    /// The runtime with its engine; compiled plugins are cached in `cache_dir`
    /// when it can be trusted (see `cache`).
    pub fn new(pool: PoolSize, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let engine = engine::build(pool).map_err(|e| PluginError::Engine(e.to_string()))?;
        let linker = instance::linker(&engine).map_err(|e| PluginError::Engine(e.to_string()))?;
        // Loads run one at a time (start-up and reload): one thread suffices.
        let executor =
            executor::Executor::new(1).map_err(|e| PluginError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            cache_dir,
            summaries: Arc::new(SummaryCache::default()),
            executor,
        })
    }

    /// Reads, verifies, compiles, links and configures one plugin.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Arc<LoadedPlugin>, PluginError> {
        let (engine, linker, cache, cfg2) = (
            self.engine.clone(),
            self.linker.clone(),
            self.cache_dir.clone(),
            cfg.clone(),
        );
        self.executor
            .run(move || loaded::load(&engine, &linker, cache.as_deref(), &cfg2))
            .map_err(|message| PluginError::Config {
                name: cfg.name.clone(),
                message,
            })?
            .map(Arc::new)
    }

    /// A policy running `plugins` in order.
    pub fn chain(&self, plugins: Vec<Arc<LoadedPlugin>>) -> PluginChain {
        PluginChain::new(plugins, self.summaries.clone())
    }
}

/// The default directory for compiled plugins: `$XDG_CACHE_HOME/portcullis`
/// or `~/.cache/portcullis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("portcullis").join("plugins"))
}
