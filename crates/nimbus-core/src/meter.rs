//! Meters: the counters every layer records into as work happens — per function,
//! per route, per resource and per app — and the per-app quotas checked against
//! them. Ops reads them for `/metrics`, `nimbus metrics`, usage and cost.
//!
//! Recording is a few relaxed atomic adds on a meter the recorder resolved once
//! (a pool holds its function's meter, a route table its routes' meters), so
//! observability costs the hot path next to nothing. Meters are keyed by name,
//! not by deployment: a redeploy keeps counting where the last one stopped, and
//! entries are never removed while the node runs (counters stay monotonic).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::StoreKind;

/// Upper bounds of the duration histogram's buckets, in milliseconds (the last
/// bucket, `+Inf`, is implied).
pub const DURATION_BUCKETS_MS: [f64; 20] = [
    0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
    5000.0, 10000.0, 20000.0, 60000.0, 300000.0,
];

/// Every app's meters.
#[derive(Default)]
pub struct Meters {
    apps: Named<AppMeters>,
}

impl Meters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The meters of `app`, created on first use.
    pub fn app(&self, app: &str) -> Arc<AppMeters> {
        self.apps.get(app)
    }

    /// Every app with meters, by name.
    pub fn apps(&self) -> Vec<(Arc<str>, Arc<AppMeters>)> {
        self.apps.all()
    }
}

/// One app's meters and quotas.
#[derive(Default)]
pub struct AppMeters {
    functions: Named<FunctionMeter>,
    routes: Named<RouteMeter>,
    /// One map per kind (indexed as [`StoreKind::ALL`]), so counting an
    /// operation needs no key to be built.
    resources: [Named<ResourceMeter>; 6],
    /// Requests the gateway answered for this app, and the body bytes it sent.
    pub requests: AtomicU64,
    pub transfer_out_bytes: AtomicU64,
    quota: RwLock<QuotaState>,
    /// Whether an invocation quota is set: invocations skip the quota lock without one.
    limited: AtomicBool,
}

fn kind_index(kind: StoreKind) -> usize {
    StoreKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("ALL lists every kind")
}

impl AppMeters {
    pub fn function(&self, name: &str) -> Arc<FunctionMeter> {
        self.functions.get(name)
    }

    pub fn functions(&self) -> Vec<(Arc<str>, Arc<FunctionMeter>)> {
        self.functions.all()
    }

    /// The meter of a route, named like `GET /orders/{id}`.
    pub fn route(&self, name: &str) -> Arc<RouteMeter> {
        self.routes.get(name)
    }

    pub fn routes(&self) -> Vec<(Arc<str>, Arc<RouteMeter>)> {
        self.routes.all()
    }

    /// The meter of a store, queue, topic or the bus.
    pub fn resource(&self, kind: StoreKind, name: &str) -> Arc<ResourceMeter> {
        self.resources[kind_index(kind)].get(name)
    }

    /// Every resource meter as (kind, name, meter).
    pub fn resources(&self) -> Vec<(StoreKind, String, Arc<ResourceMeter>)> {
        StoreKind::ALL
            .into_iter()
            .flat_map(|kind| {
                self.resources[kind_index(kind)]
                    .all()
                    .into_iter()
                    .map(move |(name, meter)| (kind, name.to_string(), meter))
            })
            .collect()
    }

    /// Sets the app's quotas (from its manifest); `None` fields are unlimited.
    pub fn set_quotas(&self, quotas: Quotas) {
        let limited = quotas.invocations_per_day.is_some() || quotas.gb_seconds_per_day.is_some();
        self.quota.write().unwrap().limits = quotas;
        self.limited.store(limited, Ordering::Relaxed);
    }

    /// What the app used today (from the durable meters), so a quota holds
    /// across restarts; the usage recorder sets it at start and each UTC midnight,
    /// and finished invocations add to it.
    pub fn set_usage_today(&self, today: UsageToday) {
        self.quota.write().unwrap().today = today;
    }

    /// The bytes in the app's stores, as last measured.
    pub fn set_stored_bytes(&self, bytes: u64) {
        self.quota.write().unwrap().today.stored_bytes = bytes;
    }

    pub fn usage_today(&self) -> UsageToday {
        self.quota.read().unwrap().today.clone()
    }

    pub fn quotas(&self) -> Quotas {
        self.quota.read().unwrap().limits.clone()
    }

    /// Why new work of this app is refused now, if it is over a quota.
    pub fn over_quota(&self) -> Option<QuotaExceeded> {
        if !self.has_quotas() {
            return None;
        }
        let state = self.quota.read().unwrap();
        let limits = &state.limits;
        let today = &state.today;
        if let Some(max) = limits.invocations_per_day
            && today.invocations >= max
        {
            return Some(QuotaExceeded::Invocations { max });
        }
        if let Some(max) = limits.gb_seconds_per_day
            && today.mb_ms as f64 / MB_MS_PER_GB_SECOND >= max as f64
        {
            return Some(QuotaExceeded::GbSeconds { max });
        }
        None
    }

    /// Why a write that adds data is refused now, if the app's stores already
    /// hold its stored-bytes quota (as last measured, once a minute).
    pub fn over_storage(&self) -> Option<QuotaExceeded> {
        let state = self.quota.read().unwrap();
        let max = state.limits.stored_bytes?;
        (state.today.stored_bytes >= max).then_some(QuotaExceeded::StoredBytes { max })
    }

    /// Counts a finished invocation toward today's quota figures.
    fn add_today(&self, mb_ms: u64) {
        let mut state = self.quota.write().unwrap();
        state.today.invocations += 1;
        state.today.mb_ms += mb_ms;
    }

    /// Whether any quota is set (recording skips the quota lock otherwise).
    fn has_quotas(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }
}

/// MB-milliseconds in one GB-second (1 GB = 1024 MB, as Lambda bills).
pub const MB_MS_PER_GB_SECOND: f64 = 1024.0 * 1000.0;

/// Per-app limits, declared in the manifest's `[quotas]` table. A day is a UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb_seconds_per_day: Option<u64>,
    /// Bytes in all the app's stores together (kv, documents, buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
}

impl Quotas {
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

/// Today's (UTC) totals a quota is checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageToday {
    pub invocations: u64,
    pub mb_ms: u64,
    /// Bytes in the app's stores at the last measurement.
    pub stored_bytes: u64,
}

#[derive(Default)]
struct QuotaState {
    limits: Quotas,
    today: UsageToday,
}

/// A quota the app reached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("the app reached its quota of {max} invocations per day (UTC)")]
    Invocations { max: u64 },
    #[error("the app reached its quota of {max} GB-seconds per day (UTC)")]
    GbSeconds { max: u64 },
    #[error("the app's stores hold its quota of {max} bytes; delete data or raise `stored_bytes`")]
    StoredBytes { max: u64 },
}

/// One function's counters.
#[derive(Default)]
pub struct FunctionMeter {
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    pub throttles: AtomicU64,
    pub timeouts: AtomicU64,
    pub cold_starts: AtomicU64,
    /// Billed duration (rounded up to 1 ms) times the function's `memory_mb`.
    pub mb_ms: AtomicU64,
    pub duration: Histogram,
    /// HTTP requests routed to the function by the gateway.
    pub requests: AtomicU64,
}

/// How an invocation ended, for the meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Ok,
    Error,
    Timeout,
}

impl FunctionMeter {
    /// Books one finished invocation of `app`'s function.
    pub fn record(&self, app: &AppMeters, took: Duration, memory_mb: u64, ended: Ended) {
        let billed_ms = billed_ms(took);
        let mb_ms = billed_ms * memory_mb;
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.mb_ms.fetch_add(mb_ms, Ordering::Relaxed);
        self.duration.record(took);
        match ended {
            Ended::Ok => {}
            Ended::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ended::Timeout => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        if app.has_quotas() {
            app.add_today(mb_ms);
        }
    }

    pub fn snapshot(&self) -> FunctionCounts {
        FunctionCounts {
            invocations: self.invocations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            mb_ms: self.mb_ms.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            duration: self.duration.snapshot(),
        }
    }
}

/// Milliseconds billed for a run: rounded up to the next whole millisecond.
pub fn billed_ms(took: Duration) -> u64 {
    let us = took.as_micros() as u64;
    us.div_ceil(1000).max(1)
}

/// A point-in-time copy of a [`FunctionMeter`]; subtracting two gives what
/// happened between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCounts {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub timeouts: u64,
    pub cold_starts: u64,
    pub mb_ms: u64,
    pub requests: u64,
    pub duration: HistogramCounts,
}

impl FunctionCounts {
    /// What was counted since `before`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            invocations: self.invocations - before.invocations,
            errors: self.errors - before.errors,
            throttles: self.throttles - before.throttles,
            timeouts: self.timeouts - before.timeouts,
            cold_starts: self.cold_starts - before.cold_starts,
            mb_ms: self.mb_ms - before.mb_ms,
            requests: self.requests - before.requests,
            duration: self.duration.since(&before.duration),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other` (e.g. the next minute's counts) to these.
    pub fn add(&mut self, other: &Self) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.timeouts += other.timeouts;
        self.cold_starts += other.cold_starts;
        self.mb_ms += other.mb_ms;
        self.requests += other.requests;
        self.duration.add(&other.duration);
    }
}

/// Durations in fixed buckets ([`DURATION_BUCKETS_MS`]), plus their sum.
pub struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let i = DURATION_BUCKETS_MS.partition_point(|&bound| bound < ms);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramCounts {
        HistogramCounts {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Counts per bucket (not cumulative; the last one is `+Inf`) and the sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramCounts {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl Default for HistogramCounts {
    fn default() -> Self {
        Self {
            buckets: vec![0; DURATION_BUCKETS_MS.len() + 1],
            sum_us: 0,
        }
    }
}

impl HistogramCounts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|(a, b)| a - b)
                .collect(),
            sum_us: self.sum_us - before.sum_us,
        }
    }

    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The `q` quantile in milliseconds, interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    DURATION_BUCKETS_MS[i - 1]
                };
                let Some(&upper) = DURATION_BUCKETS_MS.get(i) else {
                    // In `+Inf`: the highest finite bound is all that is known.
                    return Some(lower);
                };
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
        }
        DURATION_BUCKETS_MS.last().copied()
    }
}

/// Responses of one route by status code.
#[derive(Default)]
pub struct RouteMeter {
    statuses: RwLock<BTreeMap<u16, Arc<AtomicU64>>>,
}

impl RouteMeter {
    pub fn record(&self, status: u16) {
        if let Some(n) = self.statuses.read().unwrap().get(&status) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.statuses
            .write()
            .unwrap()
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// (status, responses), by status.
    pub fn snapshot(&self) -> Vec<(u16, u64)> {
        self.statuses
            .read()
            .unwrap()
            .iter()
            .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What an operation on a resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Delete,
}

impl Op {
    pub const ALL: [Self; 3] = [Self::Read, Self::Write, Self::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

/// Operations on one store, queue, topic or bus. A write of a queue is a sent
/// message, of a topic a published one, of the bus a put event: usage bills those.
#[derive(Default)]
pub struct ResourceMeter {
    ops: [AtomicU64; 3],
}

impl ResourceMeter {
    pub fn record(&self, op: Op, n: u64) {
        self.ops[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn count(&self, op: Op) -> u64 {
        self.ops[op as usize].load(Ordering::Relaxed)
    }
}

/// Meters by name, created on first use and never removed.
struct Named<T>(RwLock<BTreeMap<Arc<str>, Arc<T>>>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<T: Default> Named<T> {
    fn get(&self, name: &str) -> Arc<T> {
        if let Some(meter) = self.0.read().unwrap().get(name) {
            return meter.clone();
        }
        self.0
            .write()
            .unwrap()
            .entry(name.into())
            .or_default()
            .clone()
    }

    fn all(&self) -> Vec<(Arc<str>, Arc<T>)> {
        self.0
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_rounds_up_to_a_millisecond() {
        assert_eq!(billed_ms(Duration::from_micros(1)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1000)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1001)), 2);
        assert_eq!(billed_ms(Duration::ZERO), 1);
    }

    #[test]
    fn a_function_meter_counts_and_bills() {
        let app = AppMeters::default();
        let f = app.function("api");
        f.record(&app, Duration::from_micros(2500), 128, Ended::Ok);
        f.record(&app, Duration::from_millis(40), 128, Ended::Timeout);
        let c = f.snapshot();
        assert_eq!((c.invocations, c.errors, c.timeouts), (2, 1, 1));
        assert_eq!(c.mb_ms, (3 + 40) * 128);
        assert_eq!(c.duration.count(), 2);
        assert_eq!(c.duration.sum_us, 42_500);
        // The same meter comes back by name.
        assert_eq!(app.function("api").snapshot().invocations, 2);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.record(Duration::from_micros(1500)); // in (1, 2] ms
        }
        let c = h.snapshot();
        let p50 = c.quantile(0.5).unwrap();
        assert!((p50 - 1.5).abs() < 1e-9, "{p50}");
        assert_eq!(c.quantile(1.0), Some(2.0));
        assert_eq!(HistogramCounts::default().quantile(0.5), None);
    }

    #[test]
    fn quotas_refuse_once_reached() {
        let app = AppMeters::default();
        app.set_quotas(Quotas {
            invocations_per_day: Some(2),
            ..Quotas::default()
        });
        let f = app.function("f");
        f.record(&app, Duration::from_millis(1), 128, Ended::Ok);
        assert_eq!(app.over_quota(), None);
        f.record(&app, Duration::from_millis(1), 128, Ended::Error);
        assert_eq!(
            app.over_quota(),
            Some(QuotaExceeded::Invocations { max: 2 })
        );
        // A new day starts from what the durable meters hold.
        app.set_usage_today(UsageToday::default());
        assert_eq!(app.over_quota(), None);
        assert_eq!(app.over_storage(), None);
        app.set_quotas(Quotas {
            stored_bytes: Some(100),
            ..Quotas::default()
        });
        app.set_stored_bytes(99);
        assert_eq!(app.over_storage(), None);
        app.set_stored_bytes(100);
        assert!(app.over_storage().is_some());
        // Stored bytes never refuse invocations.
        assert_eq!(app.over_quota(), None);
    }

    #[test]
    fn route_meters_count_by_status() {
        let r = RouteMeter::default();
        r.record(200);
        r.record(200);
        r.record(404);
        assert_eq!(r.snapshot(), vec![(200, 2), (404, 1)]);
    }
}
