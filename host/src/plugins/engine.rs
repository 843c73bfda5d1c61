//! The one wasmtime engine of the gateway: component model, epoch-based
//! deadlines (a background thread advances the epoch every millisecond), and
//! a pooling instance allocator so a session's instances come from
//! pre-reserved slots in microseconds.

use std::sync::Arc;
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
    let weak = Arc::new(engine.weak());
    std::thread::Builder::new()
        .name("portcullis-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })
        .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;
    Ok(engine)
}
