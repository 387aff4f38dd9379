//! Notification topics over the admin API: publish (one message as the body
//! with `x-nimbus-attr-NAME` headers, or a batch), and the subscriptions with
//! their delivery counts, added and removed at run time.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Request};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use nimbus_core::app::Subscription;
use nimbus_core::data::DataError;
use nimbus_core::topic::{Publish, attribute_value, limits};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data_api::{Api, ItemPath, Reply, StorePath, fail, read_json, read_limited};

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/apps/{app}/topics/{topic}/messages", post(publish))
        .route(
            "/v1/apps/{app}/topics/{topic}/messages/batch",
            post(publish_batch),
        )
        .route(
            "/v1/apps/{app}/topics/{topic}/subscriptions",
            get(subscriptions).post(subscribe),
        )
        .route(
            "/v1/apps/{app}/topics/{topic}/subscriptions/{id}",
            delete(unsubscribe),
        )
}

fn results(put: Vec<Result<nimbus_core::topic::Published, DataError>>) -> Vec<Value> {
    put.into_iter()
        .map(|r| match r {
            Ok(ok) => serde_json::to_value(ok).unwrap_or_default(),
            Err(e) => {
                let (_, code) = e.status();
                json!({"error": {"code": code, "message": e.to_string()}})
            }
        })
        .collect()
}

async fn publish(api: Api, Path((app, topic)): StorePath, request: Request) -> Reply {
    let mut attributes = BTreeMap::new();
    for (name, value) in request.headers() {
        if let Some(attr) = name.as_str().strip_prefix("x-nimbus-attr-") {
            let value = value.to_str().map_err(|_| {
                fail(DataError::Invalid(format!(
                    "attribute `{attr}` is not text"
                )))
            })?;
            attributes.insert(attr.to_string(), attribute_value(value));
        }
    }
    let body = read_limited(
        request.into_body(),
        limits::MAX_MESSAGE_BYTES + 1,
        "the message",
    )
    .await?;
    let message = String::from_utf8(body.to_vec())
        .map_err(|_| fail(DataError::Invalid("a topic message is UTF-8 text".into())))?;
    let mut put = api
        .topics
        .publish(
            &app,
            &topic,
            vec![Publish {
                message,
                attributes,
                hops: 0,
            }],
        )
        .await
        .map_err(fail)?;
    let published = put.pop().expect("one result").map_err(fail)?;
    Ok(Json(published).into_response())
}

#[derive(Debug, Deserialize)]
struct Batch {
    entries: Vec<Publish>,
}

async fn publish_batch(api: Api, Path((app, topic)): StorePath, body: axum::body::Body) -> Reply {
    let req: Batch = read_json(
        body,
        limits::MAX_BATCH * limits::MAX_MESSAGE_BYTES + (64 << 10),
    )
    .await?;
    let put = api
        .topics
        .publish(&app, &topic, req.entries)
        .await
        .map_err(fail)?;
    let results = results(put);
    let failed = results.iter().filter(|r| r.get("error").is_some()).count();
    Ok(Json(json!({ "results": results, "failed": failed })).into_response())
}

async fn subscriptions(api: Api, Path((app, topic)): StorePath) -> Reply {
    let subs = api.topics.subscriptions(&app, &topic).await.map_err(fail)?;
    Ok(Json(json!({ "subscriptions": subs })).into_response())
}

async fn subscribe(api: Api, Path((app, topic)): StorePath, body: axum::body::Body) -> Reply {
    let sub: Subscription = read_json(body, 64 << 10).await?;
    let id = api
        .topics
        .subscribe(&app, &topic, sub)
        .await
        .map_err(fail)?;
    Ok((axum::http::StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

async fn unsubscribe(api: Api, Path((app, topic, id)): ItemPath) -> Reply {
    if api
        .topics
        .unsubscribe(&app, &topic, &id)
        .await
        .map_err(fail)?
    {
        Ok(Json(json!({ "removed": id })).into_response())
    } else {
        Err(fail(DataError::NotFound(format!(
            "topic `{topic}` has no subscription `{id}`"
        ))))
    }
}
