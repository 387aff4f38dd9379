//! The shared engine: pooling allocator, copy-on-write images, epoch interruption,
//! and the ticker thread that advances epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the resolution of function timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub fn new_engine(max_instances: u32, max_memory_mb: u64) -> wasmtime::Result<Engine> {
    // Resetting a slot for its next instance: with Linux's PAGEMAP_SCAN (6.7+)
    // wasmtime re-zeroes only the pages an instance dirtied and keeps them
    // resident, instead of madvise plus a page fault per page on the next use:
    // 2.2x more fresh instances per second here (docs/benchmarks.md). Without the
    // ioctl, resident slots would be reset by memset of the whole region, which
    // is slower than madvise, so they are kept resident only when it is there.
    match engine_with(max_instances, max_memory_mb, true) {
        Ok(engine) => Ok(engine),
        Err(err) => {
            tracing::debug!("PAGEMAP_SCAN unavailable, slots reset by madvise: {err:#}");
            engine_with(max_instances, max_memory_mb, false)
        }
    }
}

fn engine_with(
    max_instances: u32,
    max_memory_mb: u64,
    pagemap_scan: bool,
) -> wasmtime::Result<Engine> {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(4))
        .total_memories(max_instances.saturating_mul(2))
        .total_tables(max_instances.saturating_mul(2))
        .total_stacks(max_instances)
        .max_memory_size((max_memory_mb as usize) << 20);
    if pagemap_scan {
        pooling
            .pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(1 << 20);
    }
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("nimbus-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks for a timeout, rounded up, plus one so a deadline never fires early.
pub fn ticks_for(timeout: Duration) -> u64 {
    (timeout.as_micros() as u64).div_ceil(EPOCH_TICK.as_micros() as u64) + 1
}
