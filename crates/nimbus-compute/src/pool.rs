//! A function's instances: its `InstancePre`, the warm instances waiting for a
//! request, the concurrency permits, and the figures `nimbus status` shows; it
//! books each invocation in the function's meter.
//!
//! An instance serves one request at a time. After a clean request it goes back
//! to the pool (unless `reuse = false` or it served `max_reuse` requests); after a
//! trap or a timeout it is dropped, so a failure never leaks into another request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_core::api::FunctionStatus;
use nimbus_core::app::{Function, Grant};
use nimbus_core::meter::{AppMeters, Ended, FunctionMeter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyIndices};

use crate::compile::{Compiled, ComponentKind};
use crate::engine::ticks_for;
use crate::event::{EventFunction, EventFunctionIndices};
use crate::host::{DataPorts, HostState, LineBudget, LogTag};

pub struct FunctionPool {
    pub app: Arc<str>,
    pub name: Arc<str>,
    pub config: Function,
    grants: Arc<[Grant]>,
    ports: DataPorts,
    pub kind: ComponentKind,
    engine: Engine,
    pre: InstancePre<HostState>,
    proxy_indices: Option<ProxyIndices>,
    event_indices: Option<EventFunctionIndices>,
    idle: Mutex<Vec<Warm>>,
    permits: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    /// The app's and this function's meters (kept across deploys, by name).
    pub app_meter: Arc<AppMeters>,
    pub meter: Arc<FunctionMeter>,
    pub deadline_ticks: u64,
    /// Output lines per second, shared by the instances.
    budget: Arc<LineBudget>,
}

/// An instantiated function, ready for one request.
pub struct Warm {
    pub store: Store<HostState>,
    pub proxy: Option<Proxy>,
    pub event: Option<EventFunction>,
    pub tag: LogTag,
    /// How long instantiating took, if this instance is new (a cold start);
    /// taken by the first invocation.
    pub cold: Option<Duration>,
    uses: u64,
    last_used: Instant,
    stats: Arc<Stats>,
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Memory limit that remembers whether it refused a growth, so the error says so.
pub struct MemoryLimit {
    pub max_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.exceeded |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// How one invocation ended.
#[derive(Clone)]
pub enum Outcome {
    Ok,
    Timeout,
    Failed(String),
}

/// What the pools of one app share: its name, the data ports, the output
/// budget per function and the app's meters.
pub struct AppContext<'a> {
    pub app: &'a str,
    pub ports: &'a DataPorts,
    pub lines_per_second: u32,
    pub meters: &'a Arc<AppMeters>,
}

impl FunctionPool {
    pub fn new(
        engine: &Engine,
        linker: &Linker<HostState>,
        cx: &AppContext<'_>,
        config: Function,
        compiled: &Compiled,
    ) -> wasmtime::Result<Self> {
        let pre = linker
            .instantiate_pre(&compiled.component)
            .with_context(|| {
                format!(
                    "function `{}` imports something Nimbus does not provide",
                    config.name
                )
            })?;
        let proxy_indices = compiled
            .kind
            .http
            .then(|| ProxyIndices::new(&pre))
            .transpose()?;
        let event_indices = compiled
            .kind
            .event
            .then(|| EventFunctionIndices::new(&pre))
            .transpose()?;
        Ok(Self {
            app: cx.app.into(),
            name: config.name.as_str().into(),
            kind: compiled.kind,
            engine: engine.clone(),
            pre,
            proxy_indices,
            event_indices,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.concurrency as usize)),
            stats: Arc::new(Stats::default()),
            meter: cx.meters.function(&config.name),
            app_meter: cx.meters.clone(),
            deadline_ticks: ticks_for(config.timeout),
            budget: LineBudget::new(cx.lines_per_second),
            grants: config.uses.clone().into(),
            ports: cx.ports.clone(),
            config,
        })
    }

    /// A concurrency permit, or `None` when the function is at its limit.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.meter.throttles.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// A warm instance, or a new one (a cold start).
    pub async fn checkout(&self) -> wasmtime::Result<Warm> {
        let idle = self.idle.lock().unwrap().pop();
        if let Some(warm) = idle {
            return Ok(warm);
        }
        let started = Instant::now();
        let mut warm = self.instantiate().await?;
        let took = started.elapsed();
        self.meter.cold_starts.fetch_add(1, Ordering::Relaxed);
        self.stats.record_cold(took);
        warm.cold = Some(took);
        Ok(warm)
    }

    async fn instantiate(&self) -> wasmtime::Result<Warm> {
        let tag = LogTag::new(self.app.clone(), self.name.clone(), self.budget.clone());
        let state = HostState::new(
            &self.app,
            &self.config,
            &self.grants,
            &self.ports,
            tag.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limit as &mut dyn ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let proxy = match &self.proxy_indices {
            Some(i) => Some(i.load(&mut store, &instance)?),
            None => None,
        };
        let event = match &self.event_indices {
            Some(i) => Some(i.load(&mut store, &instance)?),
            None => None,
        };
        self.stats.live.fetch_add(1, Ordering::Relaxed);
        Ok(Warm {
            store,
            proxy,
            event,
            tag,
            cold: None,
            uses: 0,
            last_used: Instant::now(),
            stats: self.stats.clone(),
        })
    }

    /// Books an invocation's end and returns the instance to the pool if it may
    /// serve again.
    pub fn finish(&self, mut warm: Warm, outcome: &Outcome, request_id: &str, elapsed: Duration) {
        let ended = match outcome {
            Outcome::Ok => Ended::Ok,
            Outcome::Timeout => Ended::Timeout,
            Outcome::Failed(_) => Ended::Error,
        };
        self.meter
            .record(&self.app_meter, elapsed, self.config.memory_mb, ended);
        self.stats.record(elapsed);
        warm.tag.report_dropped();
        match outcome {
            Outcome::Ok => {
                warm.uses += 1;
                warm.last_used = Instant::now();
                if self.config.reuse && warm.uses < self.config.max_reuse {
                    self.idle.lock().unwrap().push(warm);
                }
            }
            Outcome::Timeout => {
                tracing::warn!(
                    app = %self.app, function = %self.name, request_id,
                    "invocation timed out after {}ms; instance discarded",
                    self.config.timeout.as_millis()
                );
            }
            Outcome::Failed(message) => {
                tracing::warn!(
                    app = %self.app, function = %self.name, request_id,
                    "invocation failed; instance discarded: {message}"
                );
            }
        }
    }

    /// Drops warm instances idle for longer than `idle_timeout`, keeping
    /// `min_instances` (the oldest go first).
    pub fn reap(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap();
        let keep = self.config.min_instances as usize;
        let mut kept = Vec::with_capacity(idle.len());
        let mut drained: VecDeque<Warm> = idle.drain(..).collect();
        // The vector is a stack: the front holds the least recently used.
        while let Some(warm) = drained.pop_front() {
            let expired = now.duration_since(warm.last_used) >= self.config.idle_timeout;
            if expired && drained.len() + kept.len() >= keep {
                drop(warm);
            } else {
                kept.push(warm);
            }
        }
        *idle = kept;
    }

    /// When this function's least recently used idle instance was last used, if
    /// it has one above `min_instances`.
    pub fn oldest_idle(&self) -> Option<Instant> {
        let idle = self.idle.lock().unwrap();
        (idle.len() > self.config.min_instances as usize)
            .then(|| idle.first().map(|w| w.last_used))
            .flatten()
    }

    /// Drops the least recently used idle instance, freeing its slot for another
    /// function. Returns whether one was dropped.
    pub fn evict_oldest(&self) -> bool {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() <= self.config.min_instances as usize || idle.is_empty() {
            return false;
        }
        drop(idle.remove(0));
        true
    }

    /// Instantiates warm instances up to `min_instances`.
    pub async fn fill_min(&self) -> wasmtime::Result<()> {
        loop {
            let live = self.stats.live.load(Ordering::Relaxed);
            if live >= u64::from(self.config.min_instances) {
                return Ok(());
            }
            let warm = self.instantiate().await?;
            self.idle.lock().unwrap().insert(0, warm);
        }
    }

    pub fn status(&self) -> FunctionStatus {
        let s = &self.stats;
        let busy = self.config.concurrency as u64 - self.permits.available_permits() as u64;
        let (p50, p99) = s.durations.lock().unwrap().percentiles();
        let (cold50, _) = s.cold.lock().unwrap().percentiles();
        let counts = self.meter.snapshot();
        FunctionStatus {
            name: self.name.to_string(),
            kind: self.kind.to_string(),
            digest: self.config.digest.clone(),
            live_instances: s.live.load(Ordering::Relaxed),
            busy_instances: busy,
            invocations: counts.invocations,
            errors: counts.errors,
            throttles: counts.throttles,
            cold_starts: counts.cold_starts,
            p50_ms: p50,
            p99_ms: p99,
            cold_start_p50_ms: cold50,
        }
    }
}

/// Live instances and recent durations of one function's pool (its counters
/// are in its [`FunctionMeter`]).
#[derive(Default)]
pub struct Stats {
    pub live: AtomicU64,
    durations: Mutex<Recent>,
    cold: Mutex<Recent>,
}

impl Stats {
    fn record(&self, d: Duration) {
        self.durations.lock().unwrap().push(d);
    }

    fn record_cold(&self, d: Duration) {
        self.cold.lock().unwrap().push(d);
    }
}

/// The last [`Recent::CAPACITY`] durations, in microseconds.
#[derive(Default)]
struct Recent {
    samples: Vec<u32>,
    next: usize,
}

impl Recent {
    const CAPACITY: usize = 4096;

    fn push(&mut self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        if self.samples.len() < Self::CAPACITY {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
            self.next = (self.next + 1) % Self::CAPACITY;
        }
    }

    /// (p50, p99) in milliseconds; zero when empty.
    fn percentiles(&self) -> (f64, f64) {
        if self.samples.is_empty() {
            return (0.0, 0.0);
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[i]) / 1000.0
        };
        (at(0.50), at(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recent_samples() {
        let mut r = Recent::default();
        for ms in 1..=100 {
            r.push(Duration::from_millis(ms));
        }
        assert_eq!(r.percentiles(), (50.0, 99.0));
    }

    #[test]
    fn recent_keeps_a_bounded_window() {
        let mut r = Recent::default();
        for _ in 0..Recent::CAPACITY {
            r.push(Duration::from_millis(100));
        }
        for _ in 0..Recent::CAPACITY {
            r.push(Duration::from_millis(1));
        }
        assert_eq!(r.samples.len(), Recent::CAPACITY);
        assert_eq!(r.percentiles(), (1.0, 1.0));
    }
}
