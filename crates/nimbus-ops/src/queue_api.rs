//! The queue routes under `/v1/apps/{app}/queues/{queue}`: send (one or a batch),
//! receive with long polling, delete (one or a batch), change visibility, purge,
//! redrive and stats, over the [`QueueService`](nimbus_core::queue::QueueService)
//! port. A send answers once the message is durable.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, Request};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use bytes::Bytes;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataError, StoreRef};
use nimbus_core::queue::{ReceiveOptions, SendOptions, limits};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data_api::{
    Api, ItemPath, Reply, StorePath, fail, parse_duration, read_json, read_limited,
};

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/apps/{app}/queues/{queue}", get(stats))
        .route(
            "/v1/apps/{app}/queues/{queue}/messages",
            post(send).get(receive),
        )
        .route(
            "/v1/apps/{app}/queues/{queue}/messages/batch",
            post(send_batch),
        )
        .route(
            "/v1/apps/{app}/queues/{queue}/messages/delete",
            post(delete_batch),
        )
        .route(
            "/v1/apps/{app}/queues/{queue}/messages/{receipt}",
            axum::routing::delete(delete),
        )
        .route(
            "/v1/apps/{app}/queues/{queue}/messages/{receipt}/visibility",
            put(change_visibility),
        )
        .route("/v1/apps/{app}/queues/{queue}/purge", post(purge))
        .route("/v1/apps/{app}/queues/{queue}/redrive", post(redrive))
        .route(
            "/v1/apps/{app}/functions/{function}/invocations",
            post(invoke_async),
        )
        .route("/v1/invocations/{id}", get(invocation))
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    /// The CloudEvent type (default `nimbus.invoke`).
    #[serde(rename = "type")]
    ty: Option<String>,
}

/// Accepts an async invocation: the body is the event's data. 202 once the
/// invocation is durably queued.
async fn invoke_async(
    api: Api,
    Path((app, function)): StorePath,
    Query(q): Query<EventQuery>,
    request: Request,
) -> Reply {
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let data = read_limited(request.into_body(), 6 << 20, "the event").await?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| fail(DataError::storage(e)))?;
    let event = CloudEvent::new(
        format!("evt-{}", hex_id(&id)),
        format!("nimbus/{app}/api"),
        q.ty.unwrap_or_else(|| "nimbus.invoke".into()),
    )
    .with_data(content_type, data.to_vec());
    let id = api
        .invocations
        .submit(&app, &function, event)
        .await
        .map_err(fail)?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "invocation_id": id })),
    )
        .into_response())
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn invocation(api: Api, Path(id): Path<String>) -> Reply {
    match api.invocations.get(&id).await.map_err(fail)? {
        Some(inv) => Ok(Json(inv).into_response()),
        None => Err(fail(DataError::NotFound(format!(
            "no invocation `{id}` (records are kept 24 hours after they end)"
        )))),
    }
}

/// Send options from the query (`delay`, `group_id`, `dedup_id`) and
/// `x-nimbus-attr-NAME` headers.
#[derive(Debug, Default, Deserialize)]
struct SendQuery {
    delay: Option<String>,
    group_id: Option<String>,
    dedup_id: Option<String>,
}

fn send_options(q: SendQuery, headers: &HeaderMap) -> Result<SendOptions, DataError> {
    let mut attributes = BTreeMap::new();
    for (name, value) in headers {
        if let Some(attr) = name.as_str().strip_prefix("x-nimbus-attr-") {
            let value = value
                .to_str()
                .map_err(|_| DataError::Invalid(format!("attribute `{attr}` is not text")))?;
            attributes.insert(attr.to_string(), value.to_string());
        }
    }
    Ok(SendOptions {
        delay: q.delay.as_deref().map(parse_delay).transpose()?,
        attributes,
        group_id: q.group_id,
        dedup_id: q.dedup_id,
    })
}

/// A delay may be zero, unlike other durations.
fn parse_delay(text: &str) -> Result<Duration, DataError> {
    if text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        == "0"
    {
        return Ok(Duration::ZERO);
    }
    parse_duration("delay", text)
}

async fn send(
    api: Api,
    Path((app, queue)): StorePath,
    Query(q): Query<SendQuery>,
    request: Request,
) -> Reply {
    let options = send_options(q, request.headers()).map_err(fail)?;
    // Read one byte over the ceiling, so the queue's own limit decides the error.
    let body = read_limited(
        request.into_body(),
        limits::MAX_MESSAGE_BYTES_CEILING + 1,
        "the message",
    )
    .await?;
    let sent = api
        .queues
        .send(StoreRef::new(&app, &queue), body, options)
        .await
        .map_err(fail)?;
    Ok(Json(sent).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEntry {
    body: String,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    dedup_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SendBatch {
    entries: Vec<BatchEntry>,
}

/// One result of a batch: the value, or the error with its code.
fn entry_result<T: serde::Serialize>(result: Result<T, DataError>) -> Value {
    match result {
        Ok(value) => serde_json::to_value(value).unwrap_or(Value::Null),
        Err(err) => {
            let (_, code) = err.status();
            json!({"error": {"code": code, "message": err.to_string()}})
        }
    }
}

async fn send_batch(api: Api, Path((app, queue)): StorePath, body: AxumBody) -> Reply {
    let req: SendBatch = read_json(body, 16 << 20).await?;
    if req.entries.len() > limits::MAX_BATCH {
        return Err(fail(DataError::Invalid(format!(
            "a batch holds at most {} messages",
            limits::MAX_BATCH
        ))));
    }
    let mut entries = Vec::with_capacity(req.entries.len());
    for e in req.entries {
        let delay = e
            .delay
            .as_deref()
            .map(parse_delay)
            .transpose()
            .map_err(fail)?;
        let options = SendOptions {
            delay,
            attributes: e.attributes,
            group_id: e.group_id,
            dedup_id: e.dedup_id,
        };
        entries.push((Bytes::from(e.body), options));
    }
    let results = api
        .queues
        .send_batch(StoreRef::new(&app, &queue), entries)
        .await
        .map_err(fail)?;
    let results: Vec<Value> = results.into_iter().map(entry_result).collect();
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Debug, Deserialize)]
struct ReceiveQuery {
    #[serde(default)]
    max: Option<usize>,
    /// Long polling, e.g. `20s`.
    #[serde(default)]
    wait: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
}

async fn receive(api: Api, Path((app, queue)): StorePath, Query(q): Query<ReceiveQuery>) -> Reply {
    let wait = q
        .wait
        .as_deref()
        .map(parse_delay)
        .transpose()
        .map_err(fail)?;
    let visibility = q
        .visibility
        .as_deref()
        .map(parse_delay)
        .transpose()
        .map_err(fail)?;
    let options = ReceiveOptions {
        max: q.max.unwrap_or(1),
        wait: wait.unwrap_or_default(),
        visibility,
    };
    let messages = api
        .queues
        .receive(StoreRef::new(&app, &queue), options)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn delete(api: Api, Path((app, queue, receipt)): ItemPath) -> Reply {
    let deleted = api
        .queues
        .delete(StoreRef::new(&app, &queue), &receipt)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Debug, Deserialize)]
struct Receipts {
    receipts: Vec<String>,
}

async fn delete_batch(api: Api, Path((app, queue)): StorePath, body: AxumBody) -> Reply {
    let req: Receipts = read_json(body, 1 << 20).await?;
    let results = api
        .queues
        .delete_batch(StoreRef::new(&app, &queue), req.receipts)
        .await
        .map_err(fail)?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| entry_result(r.map(|deleted| json!({ "deleted": deleted }))))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Debug, Deserialize)]
struct Visibility {
    /// e.g. `30s`; `0s` makes the message visible now.
    timeout: String,
}

async fn change_visibility(
    api: Api,
    Path((app, queue, receipt)): ItemPath,
    body: AxumBody,
) -> Reply {
    let req: Visibility = read_json(body, 64 << 10).await?;
    let timeout = parse_delay(&req.timeout).map_err(fail)?;
    api.queues
        .change_visibility(StoreRef::new(&app, &queue), &receipt, timeout)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "receipt": receipt })).into_response())
}

async fn purge(api: Api, Path((app, queue)): StorePath) -> Reply {
    let n = api
        .queues
        .purge(StoreRef::new(&app, &queue))
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "purged": n })).into_response())
}

async fn redrive(api: Api, Path((app, queue)): StorePath) -> Reply {
    let n = api
        .queues
        .redrive(StoreRef::new(&app, &queue))
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "moved": n })).into_response())
}

async fn stats(api: Api, Path((app, queue)): StorePath) -> Reply {
    let stats = api
        .queues
        .stats(StoreRef::new(&app, &queue))
        .await
        .map_err(fail)?;
    Ok(Json(stats).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_may_be_zero() {
        assert_eq!(parse_delay("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_delay("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_delay("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_delay("soon").is_err());
    }
}
