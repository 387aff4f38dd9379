//! `GET /v1/usage`: usage and cost per app, function, resource or day; and
//! `GET /v1/apps/{app}/functions/{function}/metrics`: one function's figures per
//! time window (counts and duration percentiles) from the per-minute meters.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use nimbus_core::data::DataError;
use nimbus_core::meter::{FunctionCounts, MB_MS_PER_GB_SECOND};
use serde::{Deserialize, Serialize};

use super::{GroupBy, Usage, UsageLine};
use crate::data_api::fail;

pub(crate) fn routes<S: Clone + Send + Sync + 'static>(usage: Arc<Usage>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/usage", get(usage_report))
        .route(
            "/v1/apps/{app}/functions/{function}/metrics",
            get(function_metrics),
        )
        .layer(Extension(usage))
}

/// The answer of `GET /v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    pub currency: String,
    /// Unix seconds of the first hour counted.
    pub since: u64,
    pub by: GroupBy,
    pub lines: Vec<UsageLine>,
    pub total: UsageLine,
}

#[derive(Deserialize)]
struct UsageParams {
    app: Option<String>,
    /// RFC 3339 time, Unix milliseconds, or a duration ago (`30d`); default 30 days.
    since: Option<String>,
    #[serde(default)]
    by: GroupBy,
}

/// Unix seconds of a `since` parameter (default: `default_ago` seconds ago).
fn since_of(text: Option<&str>, default_ago: u64) -> Result<u64, DataError> {
    let Some(text) = text else {
        return Ok(nimbus_core::data::unix_now().saturating_sub(default_ago));
    };
    let value = match text.parse::<u64>() {
        Ok(ms) => ms.into(),
        Err(_) => serde_json::Value::String(text.to_string()),
    };
    crate::events_api::parse_time(&value, SystemTime::now())
        .map(|ms| ms / 1000)
        .map_err(|e| DataError::Invalid(format!("`since`: {e}")))
}

async fn usage_report(
    Extension(usage): Extension<Arc<Usage>>,
    Query(p): Query<UsageParams>,
) -> Result<Response, Response> {
    let since = since_of(p.since.as_deref(), 30 * 86_400).map_err(fail)?;
    let lines = usage
        .query(p.app.filter(|a| !a.is_empty()), since, p.by)
        .await
        .map_err(fail)?;
    let mut total = UsageLine {
        key: "total".into(),
        ..UsageLine::default()
    };
    lines.iter().for_each(|l| total.absorb(l));
    Ok(Json(UsageReport {
        currency: usage.prices().currency.clone(),
        since: since / 3600 * 3600,
        by: p.by,
        lines,
        total,
    })
    .into_response())
}

/// One window of a function's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsWindow {
    /// Unix seconds of the window's start.
    pub start: u64,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub timeouts: u64,
    pub cold_starts: u64,
    pub gb_seconds: f64,
    /// Duration percentiles in milliseconds, estimated from the histogram
    /// buckets (`null` without invocations).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionMetrics {
    pub app: String,
    pub function: String,
    pub window_seconds: u64,
    pub windows: Vec<MetricsWindow>,
    /// The whole range as one window.
    pub total: MetricsWindow,
}

#[derive(Deserialize)]
struct MetricsParams {
    /// Default 1 hour ago.
    since: Option<String>,
    /// Window length (`5m`); default: the range in 12 windows, at least a minute.
    window: Option<String>,
}

fn window_of(start: u64, c: &FunctionCounts) -> MetricsWindow {
    MetricsWindow {
        start,
        invocations: c.invocations,
        errors: c.errors,
        throttles: c.throttles,
        timeouts: c.timeouts,
        cold_starts: c.cold_starts,
        gb_seconds: c.mb_ms as f64 / MB_MS_PER_GB_SECOND,
        p50_ms: c.duration.quantile(0.50),
        p90_ms: c.duration.quantile(0.90),
        p99_ms: c.duration.quantile(0.99),
    }
}

async fn function_metrics(
    Extension(usage): Extension<Arc<Usage>>,
    Path((app, function)): Path<(String, String)>,
    Query(p): Query<MetricsParams>,
) -> Result<Response, Response> {
    let since = since_of(p.since.as_deref(), 3600).map_err(fail)? / 60 * 60;
    let now = nimbus_core::data::unix_now();
    let window = match p.window.as_deref() {
        Some(text) => nimbus_core::duration::parse(text)
            .map_err(|e| fail(DataError::Invalid(format!("`window`: {e}"))))?
            .as_secs(),
        None => (now.saturating_sub(since) / 12).max(60),
    };
    // Whole minutes: the meters are per minute.
    let window = (window / 60).max(1) * 60;
    let rows = usage
        .minutes(app.clone(), function.clone(), since)
        .await
        .map_err(fail)?;
    let mut windows: Vec<(u64, FunctionCounts)> = Vec::new();
    let mut start = since;
    while start <= now {
        windows.push((start, FunctionCounts::default()));
        start += window;
    }
    let mut total = FunctionCounts::default();
    for row in rows {
        let i = (row.minute.saturating_sub(since) / window) as usize;
        if let Some((_, counts)) = windows.get_mut(i) {
            counts.add(&row.counts);
        }
        total.add(&row.counts);
    }
    Ok(Json(FunctionMetrics {
        app,
        function,
        window_seconds: window,
        windows: windows.iter().map(|(s, c)| window_of(*s, c)).collect(),
        total: window_of(since, &total),
    })
    .into_response())
}
