//! The event bus over the admin API: put events (CloudEvents 1.0, structured or
//! binary HTTP mode, single or batched), the rules with their delivery counts,
//! replay from the archive, and the app's schedules with their next runs.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Request};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use nimbus_core::bus::limits;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::DataError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data_api::{Api, Reply, fail, read_json, read_limited};

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/apps/{app}/events", post(put_events))
        .route("/v1/apps/{app}/events/replay", post(replay))
        .route("/v1/apps/{app}/bus/rules", get(rules))
        .route("/v1/apps/{app}/schedules", get(schedules))
}

fn invalid(message: impl Into<String>) -> axum::response::Response {
    fail(DataError::Invalid(message.into()))
}

/// The events of a request body: binary mode (`ce-*` headers, the body as the
/// data), one structured event (an object), a batch (an array), or
/// `{"entries": [...]}`. A structured event that does not parse fails alone.
fn events_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Result<CloudEvent, String>>, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if headers.contains_key("ce-id") || headers.contains_key("ce-type") {
        let mut attrs = serde_json::Map::new();
        for (name, value) in headers {
            if let Some(attr) = name.as_str().strip_prefix("ce-") {
                let value = value
                    .to_str()
                    .map_err(|_| format!("header `{name}` is not text"))?;
                attrs.insert(attr.to_string(), Value::String(value.to_string()));
            }
        }
        let mut event = CloudEvent::from_json(&Value::Object(attrs))?;
        event.datacontenttype = header("content-type");
        if !body.is_empty() {
            event.data = Some(body.to_vec());
        }
        return Ok(vec![Ok(event)]);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) if map.contains_key("entries") => match map.remove("entries") {
            Some(Value::Array(items)) => items,
            _ => return Err("`entries` is a list of CloudEvents".into()),
        },
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err("the body is a CloudEvent, a list of them, or {\"entries\": [...]}".into());
        }
    };
    Ok(items.iter().map(CloudEvent::from_json).collect())
}

async fn put_events(api: Api, Path(app): Path<String>, request: Request) -> Reply {
    let headers = request.headers().clone();
    let body = read_limited(
        request.into_body(),
        limits::MAX_BATCH * limits::MAX_EVENT_BYTES + (64 << 10),
        "the events",
    )
    .await?;
    let parsed = events_of(&headers, &body).map_err(invalid)?;
    // Parse failures keep their place in the results.
    let mut results: Vec<Option<Value>> = vec![None; parsed.len()];
    let mut valid = Vec::new();
    let mut places = Vec::new();
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(event) => {
                places.push(i);
                valid.push(event);
            }
            Err(e) => results[i] = Some(json!({"error": {"code": "invalid", "message": e}})),
        }
    }
    if results.len() > limits::MAX_BATCH {
        return Err(invalid(format!(
            "a put takes at most {} events, not {}",
            limits::MAX_BATCH,
            results.len()
        )));
    }
    if !valid.is_empty() {
        let put = api.bus.put_events(&app, valid).await.map_err(fail)?;
        for (place, r) in places.into_iter().zip(put) {
            results[place] = Some(match r {
                Ok(ok) => serde_json::to_value(ok).unwrap_or_default(),
                Err(e) => {
                    let (_, code) = e.status();
                    json!({"error": {"code": code, "message": e.to_string()}})
                }
            });
        }
    }
    let results: Vec<Value> = results.into_iter().flatten().collect();
    let failed = results.iter().filter(|r| r.get("error").is_some()).count();
    Ok(Json(json!({ "results": results, "failed": failed })).into_response())
}

async fn schedules(api: Api, Path(app): Path<String>) -> Reply {
    let schedules = api.schedules.schedules(&app).await.map_err(fail)?;
    Ok(Json(json!({ "schedules": schedules })).into_response())
}

async fn rules(api: Api, Path(app): Path<String>) -> Reply {
    let rules = api.bus.rules(&app).await.map_err(fail)?;
    Ok(Json(json!({ "rules": rules })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// RFC 3339, Unix milliseconds, or a duration meaning that long ago (`1h`).
    from: Value,
    /// As `from`; default now.
    #[serde(default)]
    to: Option<Value>,
}

/// A point in time: RFC 3339 text, Unix milliseconds, or a duration ago.
pub(crate) fn parse_time(value: &Value, now: SystemTime) -> Result<u64, String> {
    let ms = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("`{n}` is not Unix milliseconds")),
        Value::String(s) => {
            if let Ok(t) = humantime::parse_rfc3339_weak(s) {
                return Ok(ms(t));
            }
            let ago = nimbus_core::duration::parse(s).map_err(|_| {
                format!("`{s}` is neither RFC 3339 time nor a duration such as `1h`")
            })?;
            Ok(ms(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)))
        }
        _ => Err("a time is RFC 3339 text, Unix milliseconds, or a duration ago".into()),
    }
}

async fn replay(api: Api, Path(app): Path<String>, body: axum::body::Body) -> Reply {
    let req: Replay = read_json(body, 64 << 10).await?;
    let now = SystemTime::now();
    let from = parse_time(&req.from, now).map_err(invalid)?;
    let to = match &req.to {
        Some(t) => parse_time(t, now).map_err(invalid)?,
        None => now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let replayed = api.bus.replay(&app, from, to).await.map_err(fail)?;
    Ok(Json(json!({ "replayed": replayed, "from_ms": from, "to_ms": to })).into_response())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_milliseconds_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_time(&json!(1234), now), Ok(1234));
        assert_eq!(parse_time(&json!("1970-01-01T00:00:01Z"), now), Ok(1000));
        assert_eq!(
            parse_time(&json!("1970-01-01T00:00:01.500Z"), now),
            Ok(1500)
        );
        assert_eq!(parse_time(&json!("10s"), now), Ok(9_990_000));
        assert!(parse_time(&json!("yesterday"), now).is_err());
        assert!(parse_time(&json!(true), now).is_err());
    }
}
