//! The one wasmtime engine of the gateway: component model, epoch-based
//! deadlines, and a pooling instance allocator so a session's instances come
//! from pre-reserved slots in microseconds.
//!
//! Deadlines: one process-wide ticker thread advances every engine's epoch
//! each millisecond — but only while some plugin code is running. Every call
//! into a plugin holds a [`Running`] guard; the ticker parks when none is
//! held and the first call to start wakes it, so an idle gateway (or one
//! whose statements are answered from reused verdicts) has no timer waking
//! up a thousand times a second.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Length of one epoch tick; call deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bytes of a released linear memory kept resident for the next instance in
/// its slot (a plugin's stack and heap start-up pages fit).
const KEEP_RESIDENT: usize = 2 << 20;

/// Sizing of the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Plugin instances alive at once (sessions × plugins per chain).
    pub instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory_bytes: usize,
}

impl Default for PoolSize {
    fn default() -> Self {
        Self {
            instances: 1000,
            max_memory_bytes: 64 << 20,
        }
    }
}

/// Builds the engine and starts its epoch ticker (a thread that lives as long
/// as the engine does).
pub fn build(pool: PoolSize) -> Result<Engine, wasmtime::Error> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling.total_component_instances(pool.instances);
    pooling.total_core_instances(pool.instances.saturating_mul(4));
    pooling.total_memories(pool.instances.saturating_mul(2));
    pooling.total_tables(pool.instances.saturating_mul(4));
    pooling.max_memory_size(pool.max_memory_bytes);
    // Reuse the pages a released instance touched instead of handing them
    // back to the kernel: the next session's instance in that slot then
    // starts without page faults. With Linux's PAGEMAP_SCAN (6.7+) only the
    // dirty pages are reset; elsewhere the low KEEP_RESIDENT bytes are.
    pooling.linear_memory_keep_resident(KEEP_RESIDENT);
    pooling.table_keep_resident(64 << 10);
    pooling.pagemap_scan(wasmtime::Enabled::Auto);
    cfg.memory_reservation(pool.max_memory_bytes as u64);
    cfg.memory_guard_size(64 << 10);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&cfg)?;
    register(&engine)
        .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;
    Ok(engine)
}

/// The process's epoch ticker.
struct Ticker {
    /// Calls into plugin code running now (all engines).
    running: AtomicUsize,
    /// The engines whose epochs it advances (dropped ones are pruned).
    engines: Mutex<Vec<wasmtime::EngineWeak>>,
    /// Its thread, once started.
    thread: OnceLock<std::thread::Thread>,
}

static TICKER: Ticker = Ticker {
    running: AtomicUsize::new(0),
    engines: Mutex::new(Vec::new()),
    thread: OnceLock::new(),
};

/// Adds `engine` to the ticker, starting its thread on first use.
fn register(engine: &Engine) -> std::io::Result<()> {
    let mut engines = TICKER.engines.lock().unwrap_or_else(|p| p.into_inner());
    engines.push(engine.weak());
    if TICKER.thread.get().is_none() {
        let handle = std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(tick)?;
        let _ = TICKER.thread.set(handle.thread().clone());
    }
    Ok(())
}

/// The ticker thread: parks while no plugin code runs, else advances every
/// live engine's epoch once per tick.
fn tick() {
    loop {
        if TICKER.running.load(Ordering::SeqCst) == 0 {
            // `Running::start` unparks; a wake-up that raced ahead of this
            // park leaves a token, so none is lost.
            std::thread::park();
            continue;
        }
        std::thread::sleep(EPOCH_TICK);
        let mut engines = TICKER.engines.lock().unwrap_or_else(|p| p.into_inner());
        engines.retain(|weak| match weak.upgrade() {
            Some(engine) => {
                engine.increment_epoch();
                true
            }
            None => false,
        });
    }
}

/// Held for as long as plugin code runs, so its deadline can fire.
pub struct Running(());

impl Running {
    /// Marks the start of a call into plugin code; wakes the ticker if it
    /// was idle.
    pub fn start() -> Self {
        if TICKER.running.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(thread) = TICKER.thread.get() {
                thread.unpark();
            }
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        TICKER.running.fetch_sub(1, Ordering::SeqCst);
    }
}
