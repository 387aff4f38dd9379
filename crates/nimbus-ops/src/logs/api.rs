//! `GET /v1/apps/{app}/logs`: an app's log records, oldest first, filtered by
//! function, time, level, text and invocation, cursor-paginated with `after`;
//! `wait=SECONDS` long-polls until a record matches (what `nimbus logs -f` does).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use nimbus_core::data::DataError;
use serde::Deserialize;

use super::{Level, LogQuery, LogStore};
use crate::data_api::fail;

/// The longest a follow request waits for a record.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

pub(crate) fn routes<S: Clone + Send + Sync + 'static>(store: Arc<LogStore>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/apps/{app}/logs", get(logs))
        .layer(Extension(store))
}

#[derive(Deserialize)]
struct Params {
    function: Option<String>,
    after: Option<u64>,
    /// RFC 3339 time, Unix milliseconds, or a duration ago (`10m`).
    since: Option<String>,
    level: Option<String>,
    grep: Option<String>,
    invocation: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    /// Return the newest `limit` matches (without `after`).
    #[serde(default)]
    tail: bool,
    /// Seconds to wait for a matching record when there is none yet.
    #[serde(default)]
    wait: f64,
}

fn default_limit() -> usize {
    100
}

fn invalid(message: String) -> Response {
    fail(DataError::Invalid(message))
}

async fn logs(
    Extension(store): Extension<Arc<LogStore>>,
    Path(app): Path<String>,
    Query(p): Query<Params>,
) -> Result<Response, Response> {
    let since = match &p.since {
        None => None,
        Some(text) => {
            let value = match text.parse::<u64>() {
                Ok(ms) => ms.into(),
                Err(_) => serde_json::Value::String(text.clone()),
            };
            Some(
                crate::events_api::parse_time(&value, SystemTime::now())
                    .map_err(|e| invalid(format!("`since`: {e}")))?,
            )
        }
    };
    let level = match &p.level {
        None => None,
        Some(text) => Some(Level::parse(text).ok_or_else(|| {
            invalid(format!(
                "`level`: `{text}` is not one of trace, debug, info, warn, error"
            ))
        })?),
    };
    if !(0.0..=MAX_WAIT.as_secs_f64()).contains(&p.wait) {
        return Err(invalid(format!(
            "`wait` is 0 to {} seconds",
            MAX_WAIT.as_secs()
        )));
    }
    let query = LogQuery {
        app,
        function: p.function.filter(|f| !f.is_empty()),
        after: p.after,
        since,
        level,
        grep: p.grep.filter(|g| !g.is_empty()),
        invocation: p.invocation.filter(|i| !i.is_empty()),
        limit: p.limit,
        tail: p.tail,
    };
    let page = store
        .follow(query, Duration::from_secs_f64(p.wait))
        .await
        .map_err(|e| fail(DataError::Storage(e.to_string())))?;
    Ok(Json(page).into_response())
}
