//! Usage metering and cost: the recorder that turns the live [`Meters`] into
//! durable hourly meters per app and resource, per-minute function figures for
//! `nimbus metrics`, today's totals for the quotas, and the price sheet that
//! turns usage into cost.
//!
//! Every second the recorder takes what the meters counted since its last pass
//! and adds it to the database in one write (a restart loses at most that
//! second; a graceful stop flushes). A usage query flushes first, so it agrees
//! with the meters — and so with `/metrics` — exactly. Stored bytes are sampled
//! every minute and metered as byte-seconds.

pub mod api;
mod prices;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::app::StoreKind;
use nimbus_core::data::{DataError, StoreCatalog};
use nimbus_core::meter::{FunctionCounts, Meters, Op, UsageToday};
use nimbus_data::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use prices::Prices;
pub use store::{MinuteRow, UsageLine};

/// How often the meters are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often store sizes are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// The names of the durable meters.
pub mod meter {
    pub const REQUESTS: &str = "requests";
    pub const INVOCATIONS: &str = "invocations";
    pub const ERRORS: &str = "errors";
    pub const MB_MS: &str = "mb_ms";
    pub const MESSAGES: &str = "messages";
    pub const EVENTS: &str = "events";
    pub const TRANSFER_OUT_BYTES: &str = "transfer_out_bytes";
    pub const STORED_BYTE_SECONDS: &str = "stored_byte_seconds";
}

/// One durable increment: `value` more of `meter` for `resource` of `app` in
/// the hour starting at `hour` (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Increment {
    pub hour: u64,
    pub app: String,
    /// `app` (gateway), `function:NAME`, `queue:NAME`, `kv:NAME`, …
    pub resource: String,
    pub meter: &'static str,
    pub value: u64,
}

/// What the recorder last wrote, to take differences from.
#[derive(Default)]
struct Last {
    functions: HashMap<(String, String), FunctionCounts>,
    /// (app, resource key, meter) → total.
    totals: HashMap<(String, String, &'static str), u64>,
}

pub struct Usage {
    db: Database,
    meters: Arc<Meters>,
    prices: Prices,
    last: Mutex<Last>,
    /// The UTC day the quota totals are for.
    day: std::sync::atomic::AtomicU64,
}

impl Usage {
    pub fn open(db: Database, meters: Arc<Meters>, prices: Prices) -> Result<Arc<Self>, DataError> {
        db.migrate("ops.usage", store::MIGRATIONS)
            .map_err(DataError::storage)?;
        Ok(Arc::new(Self {
            db,
            meters,
            prices,
            last: Mutex::new(Last::default()),
            day: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Starts the recorder: meters flushed every second, store sizes sampled
    /// every minute for the apps `apps` names.
    pub fn start<F, Fut>(self: &Arc<Self>, catalog: Arc<dyn StoreCatalog>, apps: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<String>> + Send,
    {
        let usage = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            let mut sampled = tokio::time::Instant::now();
            let mut first = true;
            loop {
                tick.tick().await;
                if let Err(err) = usage.roll_day(&apps().await).await {
                    tracing::warn!("counting today's usage failed: {err}");
                }
                if first || sampled.elapsed() >= SAMPLE_EVERY {
                    let seconds = if first {
                        0
                    } else {
                        sampled.elapsed().as_secs()
                    };
                    sampled = tokio::time::Instant::now();
                    first = false;
                    if let Err(err) = usage.sample_stores(&*catalog, &apps().await, seconds).await {
                        tracing::warn!("sampling store sizes failed: {err}");
                    }
                }
                if let Err(err) = usage.flush().await {
                    tracing::warn!("writing usage meters failed: {err}");
                }
            }
        });
    }

    /// Seeds each app's quota totals from the durable meters when the UTC day
    /// changes; the node calls it once before it serves, so a quota reached
    /// before a restart holds from the first request.
    pub async fn roll_day(&self, apps: &[String]) -> Result<(), DataError> {
        let now = nimbus_core::data::unix_now();
        let today = now / 86_400;
        if self.day.load(std::sync::atomic::Ordering::Relaxed) == today {
            return Ok(());
        }
        // Make the durable meters hold everything counted so far, then read today.
        self.flush().await?;
        for app in apps {
            let totals = store::day_totals(&self.db, app, today * 86_400).await?;
            let meters = self.meters.app(app);
            let stored = meters.usage_today().stored_bytes;
            meters.set_usage_today(UsageToday {
                invocations: totals.0,
                mb_ms: totals.1,
                stored_bytes: stored,
            });
        }
        self.day.store(today, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Meters the bytes in each app's stores for the `seconds` since the last
    /// sample, and sets what the stored-bytes quotas are checked against.
    pub async fn sample_stores(
        &self,
        catalog: &dyn StoreCatalog,
        apps: &[String],
        seconds: u64,
    ) -> Result<(), DataError> {
        let hour = hour_of(nimbus_core::data::unix_now());
        let mut increments = Vec::new();
        for app in apps {
            let stores = catalog.stores(app).await?;
            let total: u64 = stores.iter().map(|s| s.bytes).sum();
            self.meters.app(app).set_stored_bytes(total);
            for s in stores.iter().filter(|s| s.bytes > 0 && seconds > 0) {
                increments.push(Increment {
                    hour,
                    app: app.clone(),
                    resource: format!("{}:{}", s.kind.grant_prefix(), s.name),
                    meter: meter::STORED_BYTE_SECONDS,
                    value: s.bytes * seconds,
                });
            }
        }
        store::add(&self.db, increments, Vec::new()).await
    }

    /// Writes what the meters counted since the last flush.
    pub async fn flush(&self) -> Result<(), DataError> {
        let mut last = self.last.lock().await;
        let now = nimbus_core::data::unix_now();
        let hour = hour_of(now);
        let minute = now / 60 * 60;
        let mut increments = Vec::new();
        let mut minutes = Vec::new();
        let mut totals = Vec::new();
        // What this pass counts up to; it becomes `last` only once it is written,
        // so a failed write is retried by the next pass instead of lost.
        let mut seen_functions = Vec::new();
        let mut seen_totals = Vec::new();
        for (app, meters) in self.meters.apps() {
            let app = app.to_string();
            for (name, f) in meters.functions() {
                let now = f.snapshot();
                let key = (app.clone(), name.to_string());
                let delta = match last.functions.get(&key) {
                    Some(before) => now.since(before),
                    None => now.clone(),
                };
                if delta.is_empty() {
                    continue;
                }
                let resource = format!("function:{name}");
                for (meter, value) in [
                    (meter::INVOCATIONS, delta.invocations),
                    (meter::ERRORS, delta.errors),
                    (meter::MB_MS, delta.mb_ms),
                    (meter::REQUESTS, delta.requests),
                ] {
                    increments.push(Increment {
                        hour,
                        app: app.clone(),
                        resource: resource.clone(),
                        meter,
                        value,
                    });
                }
                minutes.push(MinuteRow {
                    minute,
                    app: app.clone(),
                    function: name.to_string(),
                    counts: delta,
                });
                seen_functions.push((key, now));
            }
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            totals.push((
                app.clone(),
                "app".to_string(),
                meter::TRANSFER_OUT_BYTES,
                meters.transfer_out_bytes.load(relaxed),
            ));
            for (kind, name, r) in meters.resources() {
                let billed = match kind {
                    StoreKind::Queues | StoreKind::Topics => meter::MESSAGES,
                    StoreKind::Bus => meter::EVENTS,
                    _ => continue,
                };
                let resource = format!("{}:{name}", kind.grant_prefix());
                totals.push((app.clone(), resource, billed, r.count(Op::Write)));
            }
        }
        for (app, resource, meter, total) in totals {
            let key = (app, resource, meter);
            let before = last.totals.get(&key).copied().unwrap_or(0);
            if total > before {
                increments.push(Increment {
                    hour,
                    app: key.0.clone(),
                    resource: key.1.clone(),
                    meter,
                    value: total - before,
                });
                seen_totals.push((key, total));
            }
        }
        increments.retain(|i| i.value > 0);
        store::add(&self.db, increments, minutes).await?;
        last.functions.extend(seen_functions);
        last.totals.extend(seen_totals);
        Ok(())
    }

    /// Usage lines of `app` (all apps: `None`) since `since` (Unix seconds),
    /// grouped `by`; flushes first so the figures include everything counted.
    pub async fn query(
        &self,
        app: Option<String>,
        since: u64,
        by: GroupBy,
    ) -> Result<Vec<UsageLine>, DataError> {
        self.flush().await?;
        let mut lines = store::query(&self.db, app, since, by).await?;
        for line in &mut lines {
            line.cost = self.prices.cost(line);
        }
        Ok(lines)
    }

    /// One function's per-minute figures since `since` (Unix seconds).
    pub async fn minutes(
        &self,
        app: String,
        function: String,
        since: u64,
    ) -> Result<Vec<MinuteRow>, DataError> {
        self.flush().await?;
        store::minutes(&self.db, app, function, since).await
    }
}

fn hour_of(unix: u64) -> u64 {
    unix / 3600 * 3600
}

/// How usage lines are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One line per app.
    #[default]
    App,
    /// Per function (gateway and resources each on a line of their own).
    Function,
    /// Per resource: functions, stores, queues, topics, the bus, the gateway.
    Resource,
    /// Per app and UTC day.
    Day,
}
