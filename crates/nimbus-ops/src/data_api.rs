//! The data API under `/v1/apps/{app}/`: key-value stores (`kv/`), document
//! stores (`docs/`), buckets (`buckets/`), each store's change feed, and signed
//! object URLs. Object bodies stream in both directions; every write answers
//! only once it is durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use nimbus_core::app::StoreKind;
use nimbus_core::data::{
    BlobStore, DataError, DocQuery, DocStore, Filter, KvStore, ListObjects, OrderBy, PutOptions,
    SetOptions, SignedObject, StoreCatalog, StoreRef, UrlSigner, limits, put_options, serve_object,
};
use nimbus_core::duration;
use nimbus_core::invocation::AsyncInvoker;
use nimbus_core::ports::{Body, BoxError};
use nimbus_core::queue::QueueService;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::error;

/// The data services the API serves.
#[derive(Clone)]
pub struct DataApi {
    pub kv: Arc<dyn KvStore>,
    pub docs: Arc<dyn DocStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub catalog: Arc<dyn StoreCatalog>,
    pub queues: Arc<dyn QueueService>,
    pub invocations: Arc<dyn AsyncInvoker>,
    pub bus: Arc<dyn nimbus_core::bus::EventBus>,
    pub topics: Arc<dyn nimbus_core::topic::TopicService>,
    pub schedules: Arc<dyn nimbus_core::schedule::ScheduleService>,
    pub signer: UrlSigner,
    /// Base URL of the gateway, for signed URLs.
    pub gateway_url: String,
}

/// The data routes, to be merged into the authenticated admin router.
pub fn routes<S: Clone + Send + Sync + 'static>(api: DataApi) -> axum::Router<S> {
    let api = Arc::new(api);
    axum::Router::new()
        .route("/v1/apps/{app}/stores", get(list_stores))
        .route("/v1/apps/{app}/kv/{store}/keys", get(kv_list))
        .route(
            "/v1/apps/{app}/kv/{store}/keys/{*key}",
            get(kv_get).put(kv_set).delete(kv_delete),
        )
        .route("/v1/apps/{app}/kv/{store}/increment", post(kv_increment))
        .route("/v1/apps/{app}/kv/{store}/batch/get", post(kv_batch_get))
        .route("/v1/apps/{app}/kv/{store}/batch/set", post(kv_batch_set))
        .route(
            "/v1/apps/{app}/kv/{store}/batch/delete",
            post(kv_batch_delete),
        )
        .route("/v1/apps/{app}/docs/{store}/documents", post(doc_create))
        .route(
            "/v1/apps/{app}/docs/{store}/documents/{id}",
            get(doc_get)
                .put(doc_put)
                .patch(doc_patch)
                .delete(doc_delete),
        )
        .route("/v1/apps/{app}/docs/{store}/query", post(doc_query))
        .route("/v1/apps/{app}/docs/{store}/explain", post(doc_explain))
        .route("/v1/apps/{app}/buckets/{store}/objects", get(blob_list))
        .route(
            "/v1/apps/{app}/buckets/{store}/objects/{*key}",
            put(blob_put)
                .get(blob_get)
                .head(blob_head)
                .delete(blob_delete),
        )
        .route("/v1/apps/{app}/buckets/{store}/copy", post(blob_copy))
        .route(
            "/v1/apps/{app}/buckets/{store}/uploads",
            post(upload_create),
        )
        .route(
            "/v1/apps/{app}/buckets/{store}/uploads/{upload}",
            axum::routing::delete(upload_abort),
        )
        .route(
            "/v1/apps/{app}/buckets/{store}/uploads/{upload}/parts/{number}",
            put(upload_part),
        )
        .route(
            "/v1/apps/{app}/buckets/{store}/uploads/{upload}/complete",
            post(upload_complete),
        )
        .route("/v1/apps/{app}/buckets/{store}/sign", post(blob_sign))
        .route("/v1/apps/{app}/kv/{store}/changes", get(changes_kv))
        .route("/v1/apps/{app}/docs/{store}/changes", get(changes_docs))
        .route(
            "/v1/apps/{app}/buckets/{store}/changes",
            get(changes_buckets),
        )
        .merge(crate::queue_api::routes())
        .merge(crate::events_api::routes())
        .merge(crate::topics_api::routes())
        .layer(axum::Extension(api))
}

pub(crate) type Api = axum::Extension<Arc<DataApi>>;
pub(crate) type StorePath = Path<(String, String)>;
pub(crate) type ItemPath = Path<(String, String, String)>;

/// A data error as an API response.
pub fn data_error(err: DataError) -> Response {
    let (status, code) = err.status();
    if status.is_server_error() {
        tracing::error!("data request failed: {err}");
    }
    error(status, code, &err.to_string())
}

pub(crate) type Reply = Result<Response, Response>;

pub(crate) fn fail(err: DataError) -> Response {
    data_error(err)
}

fn invalid(message: impl Into<String>) -> Response {
    data_error(DataError::Invalid(message.into()))
}

/// Reads a whole request body of at most `limit` bytes.
pub(crate) async fn read_limited(
    body: AxumBody,
    limit: usize,
    what: &str,
) -> Result<Bytes, Response> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(fail(DataError::TooLarge(
            format!("{what} is larger than the limit of {limit} bytes"),
        ))),
        Err(err) => Err(invalid(format!("cannot read the request body: {err}"))),
    }
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    body: AxumBody,
    limit: usize,
) -> Result<T, Response> {
    let bytes = read_limited(body, limit, "the request body").await?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("invalid JSON body: {e}")))
}

fn streaming(body: AxumBody) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

async fn list_stores(api: Api, Path(app): Path<String>) -> Reply {
    let stores = api.catalog.stores(&app).await.map_err(fail)?;
    Ok(Json(stores).into_response())
}

// --- key-value ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn kv_list(api: Api, Path((app, store)): StorePath, Query(q): Query<ListQuery>) -> Reply {
    let page = api
        .kv
        .list(
            StoreRef::new(&app, &store),
            &q.prefix,
            q.cursor.as_deref(),
            q.limit.unwrap_or(limits::MAX_PAGE),
        )
        .map_err(fail)?;
    Ok(Json(page).into_response())
}

async fn kv_get(api: Api, Path((app, store, key)): ItemPath) -> Reply {
    let entry = api
        .kv
        .get(StoreRef::new(&app, &store), &key)
        .map_err(fail)?
        .ok_or_else(|| fail(DataError::NotFound(format!("key `{key}` does not exist"))))?;
    let mut response = entry.value.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-nimbus-version", HeaderValue::from(entry.version));
    if let Some(t) = entry.expires_at {
        headers.insert("x-nimbus-expires-at", HeaderValue::from(t));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct SetQuery {
    /// A duration such as `30s` or `1h`.
    ttl: Option<String>,
    /// Compare-and-swap: the version the key must be at (0: absent).
    if_version: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Written {
    key: String,
    version: u64,
}

async fn kv_set(
    api: Api,
    Path((app, store, key)): ItemPath,
    Query(q): Query<SetQuery>,
    body: AxumBody,
) -> Reply {
    let ttl = match &q.ttl {
        Some(text) => Some(parse_duration("ttl", text).map_err(fail)?),
        None => None,
    };
    let value = read_limited(body, limits::MAX_VALUE_BYTES, "the value").await?;
    let options = SetOptions {
        ttl,
        if_version: q.if_version,
    };
    let version = api
        .kv
        .set(StoreRef::new(&app, &store), &key, value, options)
        .await
        .map_err(fail)?;
    Ok(Json(Written { key, version }).into_response())
}

pub(crate) fn parse_duration(what: &str, text: &str) -> Result<Duration, DataError> {
    match duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(DataError::Invalid(format!(
            "`{what}` must be greater than zero"
        ))),
        Err(msg) => Err(DataError::Invalid(format!("`{what}`: {msg}"))),
    }
}

async fn kv_delete(api: Api, Path((app, store, key)): ItemPath) -> Reply {
    let n = api
        .kv
        .delete_many(StoreRef::new(&app, &store), vec![key])
        .await
        .map_err(fail)?;
    Ok(Json(json!({"deleted": n == 1})).into_response())
}

#[derive(Debug, Deserialize)]
struct Increment {
    key: String,
    #[serde(default = "one")]
    delta: i64,
}

fn one() -> i64 {
    1
}

async fn kv_increment(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: Increment = read_json(body, 64 << 10).await?;
    let value = api
        .kv
        .increment(StoreRef::new(&app, &store), &req.key, req.delta)
        .await
        .map_err(fail)?;
    Ok(Json(json!({"key": req.key, "value": value})).into_response())
}

/// A value in JSON: text when it is UTF-8, else base64.
#[derive(Debug, Serialize, Deserialize)]
struct JsonValue {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

impl JsonValue {
    fn bytes(self) -> Result<(String, Bytes), DataError> {
        match (self.value, self.value_base64) {
            (Some(text), None) => Ok((self.key, Bytes::from(text))),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|v| (self.key.clone(), Bytes::from(v)))
                .map_err(|e| DataError::Invalid(format!("`value_base64` of `{}`: {e}", self.key))),
            _ => Err(DataError::Invalid(format!(
                "entry `{}` needs exactly one of `value` and `value_base64`",
                self.key
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Keys {
    keys: Vec<String>,
}

async fn kv_batch_get(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: Keys = read_json(body, 4 << 20).await?;
    if req.keys.len() > limits::MAX_PAGE {
        return Err(invalid(format!(
            "a batch holds at most {} keys",
            limits::MAX_PAGE
        )));
    }
    let store = StoreRef::new(&app, &store);
    let mut out = Vec::with_capacity(req.keys.len());
    for key in req.keys {
        let entry = api.kv.get(store, &key).map_err(fail)?;
        out.push(entry.map(|e| {
            let (value, value_base64) = match String::from_utf8(e.value.to_vec()) {
                Ok(text) => (Some(text), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&e.value)),
                ),
            };
            JsonValue {
                key,
                value,
                value_base64,
                version: Some(e.version),
            }
        }));
    }
    Ok(Json(json!({ "entries": out })).into_response())
}

#[derive(Debug, Deserialize)]
struct Entries {
    entries: Vec<JsonValue>,
}

async fn kv_batch_set(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: Entries = read_json(body, 64 << 20).await?;
    let entries = req
        .entries
        .into_iter()
        .map(JsonValue::bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let n = entries.len();
    api.kv
        .set_many(StoreRef::new(&app, &store), entries)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "written": n })).into_response())
}

async fn kv_batch_delete(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: Keys = read_json(body, 4 << 20).await?;
    let n = api
        .kv
        .delete_many(StoreRef::new(&app, &store), req.keys)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "deleted": n })).into_response())
}

// --- documents -----------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RevQuery {
    /// The revision the document must be at (0: absent).
    if_rev: Option<u64>,
}

async fn doc_get(api: Api, Path((app, store, id)): ItemPath) -> Reply {
    let doc = api
        .docs
        .get(StoreRef::new(&app, &store), &id)
        .await
        .map_err(fail)?
        .ok_or_else(|| {
            fail(DataError::NotFound(format!(
                "document `{id}` does not exist"
            )))
        })?;
    Ok(Json(doc).into_response())
}

async fn doc_body(body: AxumBody) -> Result<Value, Response> {
    read_json(body, limits::MAX_DOC_BYTES).await
}

async fn doc_put(
    api: Api,
    Path((app, store, id)): ItemPath,
    Query(q): Query<RevQuery>,
    body: AxumBody,
) -> Reply {
    let body = doc_body(body).await?;
    let doc = api
        .docs
        .put(StoreRef::new(&app, &store), &id, body, q.if_rev)
        .await
        .map_err(fail)?;
    Ok(Json(doc).into_response())
}

async fn doc_create(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let body = doc_body(body).await?;
    let id = random_id();
    let doc = api
        .docs
        .put(StoreRef::new(&app, &store), &id, body, Some(0))
        .await
        .map_err(fail)?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

async fn doc_patch(
    api: Api,
    Path((app, store, id)): ItemPath,
    Query(q): Query<RevQuery>,
    body: AxumBody,
) -> Reply {
    let patch = doc_body(body).await?;
    let doc = api
        .docs
        .patch(StoreRef::new(&app, &store), &id, patch, q.if_rev)
        .await
        .map_err(fail)?;
    Ok(Json(doc).into_response())
}

async fn doc_delete(
    api: Api,
    Path((app, store, id)): ItemPath,
    Query(q): Query<RevQuery>,
) -> Reply {
    let deleted = api
        .docs
        .delete(StoreRef::new(&app, &store), &id, q.if_rev)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

/// The JSON form of a query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    #[serde(default)]
    pub filter: Option<Value>,
    /// Field paths; `-path` sorts descending.
    #[serde(default)]
    pub order_by: Vec<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl QueryBody {
    pub fn into_query(self) -> Result<DocQuery, DataError> {
        Ok(DocQuery {
            filter: self.filter.as_ref().map(Filter::from_json).transpose()?,
            order_by: self
                .order_by
                .iter()
                .map(|o| OrderBy::parse(o))
                .collect::<Result<_, _>>()?,
            limit: self.limit,
            cursor: self.cursor,
        })
    }
}

async fn doc_query(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let query: QueryBody = read_json(body, 1 << 20).await?;
    let query = query.into_query().map_err(fail)?;
    let page = api
        .docs
        .query(StoreRef::new(&app, &store), query)
        .await
        .map_err(fail)?;
    Ok(Json(page).into_response())
}

async fn doc_explain(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let query: QueryBody = read_json(body, 1 << 20).await?;
    let query = query.into_query().map_err(fail)?;
    let plan = api
        .docs
        .explain(StoreRef::new(&app, &store), query)
        .await
        .map_err(fail)?;
    Ok(Json(plan).into_response())
}

// --- objects -------------------------------------------------------------------

async fn blob_put(api: Api, Path((app, store, key)): ItemPath, request: Request) -> Reply {
    let options = put_options(request.headers()).map_err(fail)?;
    let body = streaming(request.into_body());
    let meta = api
        .blobs
        .put(StoreRef::new(&app, &store), &key, options, body)
        .await
        .map_err(fail)?;
    Ok(Json(meta).into_response())
}

async fn blob_get(api: Api, Path((app, store, key)): ItemPath, headers: HeaderMap) -> Reply {
    serve_object(
        &*api.blobs,
        StoreRef::new(&app, &store),
        &key,
        &headers,
        false,
    )
    .await
    .map_err(fail)?
    .map(|r| r.map(AxumBody::new))
    .ok_or_else(|| {
        fail(DataError::NotFound(format!(
            "object `{key}` does not exist"
        )))
    })
}

async fn blob_head(api: Api, Path((app, store, key)): ItemPath, headers: HeaderMap) -> Reply {
    serve_object(
        &*api.blobs,
        StoreRef::new(&app, &store),
        &key,
        &headers,
        true,
    )
    .await
    .map_err(fail)?
    .map(|r| r.map(AxumBody::new))
    .ok_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn blob_delete(api: Api, Path((app, store, key)): ItemPath) -> Reply {
    let deleted = api
        .blobs
        .delete(StoreRef::new(&app, &store), &key)
        .await
        .map_err(fail)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Debug, Deserialize)]
struct ObjectListQuery {
    #[serde(default)]
    prefix: String,
    delimiter: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn blob_list(
    api: Api,
    Path((app, store)): StorePath,
    Query(q): Query<ObjectListQuery>,
) -> Reply {
    let request = ListObjects {
        prefix: q.prefix,
        delimiter: q.delimiter.filter(|d| !d.is_empty()),
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = api
        .blobs
        .list(StoreRef::new(&app, &store), request)
        .await
        .map_err(fail)?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize)]
struct CopyBody {
    /// Source bucket of the same app (default: this one).
    from_bucket: Option<String>,
    from_key: String,
    to_key: String,
}

async fn blob_copy(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: CopyBody = read_json(body, 64 << 10).await?;
    let from_bucket = req.from_bucket.unwrap_or_else(|| store.clone());
    let meta = api
        .blobs
        .copy(
            StoreRef::new(&app, &from_bucket),
            &req.from_key,
            StoreRef::new(&app, &store),
            &req.to_key,
        )
        .await
        .map_err(fail)?;
    Ok(Json(meta).into_response())
}

#[derive(Debug, Deserialize)]
struct CreateUpload {
    key: String,
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

async fn upload_create(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: CreateUpload = read_json(body, 64 << 10).await?;
    let options = PutOptions {
        content_type: req.content_type,
        metadata: req.metadata,
        content_md5: None,
    };
    let upload_id = api
        .blobs
        .create_multipart(StoreRef::new(&app, &store), &req.key, options)
        .await
        .map_err(fail)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"upload_id": upload_id, "key": req.key})),
    )
        .into_response())
}

async fn upload_part(
    api: Api,
    Path((app, store, upload, number)): Path<(String, String, String, u32)>,
    request: Request,
) -> Reply {
    let md5 = put_options(request.headers()).map_err(fail)?.content_md5;
    let body = streaming(request.into_body());
    let part = api
        .blobs
        .upload_part(StoreRef::new(&app, &store), &upload, number, md5, body)
        .await
        .map_err(fail)?;
    Ok(Json(part).into_response())
}

#[derive(Debug, Deserialize)]
struct CompleteBody {
    parts: Vec<CompletePart>,
}

#[derive(Debug, Deserialize)]
struct CompletePart {
    part_number: u32,
    etag: String,
}

async fn upload_complete(api: Api, Path((app, store, upload)): ItemPath, body: AxumBody) -> Reply {
    let req: CompleteBody = read_json(body, 4 << 20).await?;
    let parts = req
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let meta = api
        .blobs
        .complete_multipart(StoreRef::new(&app, &store), &upload, parts)
        .await
        .map_err(fail)?;
    Ok(Json(meta).into_response())
}

async fn upload_abort(api: Api, Path((app, store, upload)): ItemPath) -> Reply {
    api.blobs
        .abort_multipart(StoreRef::new(&app, &store), &upload)
        .await
        .map_err(fail)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct SignBody {
    key: String,
    /// `GET` (default) or `PUT`.
    #[serde(default)]
    method: Option<String>,
    /// How long the URL works, e.g. `15m` (default 1h, at most 7 days).
    #[serde(default)]
    expires_in: Option<String>,
}

async fn blob_sign(api: Api, Path((app, store)): StorePath, body: AxumBody) -> Reply {
    let req: SignBody = read_json(body, 64 << 10).await?;
    nimbus_core::data::validate_object_key(&req.key).map_err(fail)?;
    // The bucket must exist: a URL for nothing would only fail later, in a browser.
    api.blobs
        .list(
            StoreRef::new(&app, &store),
            ListObjects {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .map_err(fail)?;
    let method = req.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    if method != "GET" && method != "PUT" {
        return Err(invalid(format!(
            "cannot sign method `{method}`: use GET or PUT"
        )));
    }
    let ttl = match &req.expires_in {
        Some(text) => parse_duration("expires_in", text).map_err(fail)?,
        None => Duration::from_secs(3600),
    };
    if ttl > Duration::from_secs(7 * 24 * 3600) {
        return Err(invalid("`expires_in` is at most 7 days"));
    }
    let expires = nimbus_core::data::unix_now() + ttl.as_secs();
    let path = api.signer.signed_path(&SignedObject {
        method: &method,
        app: &app,
        bucket: &store,
        key: &req.key,
        expires,
    });
    let url = format!("{}{path}", api.gateway_url.trim_end_matches('/'));
    Ok(Json(json!({"url": url, "method": method, "expires": expires})).into_response())
}

// --- change feeds ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn changes(api: Api, kind: StoreKind, app: String, store: String, q: ChangesQuery) -> Reply {
    let limit = q.limit.unwrap_or(100).clamp(1, limits::MAX_PAGE);
    let records = api
        .catalog
        .changes(&app, kind, &store, q.after, limit)
        .await
        .map_err(fail)?;
    let cursor = records.last().map_or(q.after, |r| r.seq);
    let changes: Vec<Value> = records
        .into_iter()
        .map(|r| json!({"seq": r.seq, "event": r.event.to_json()}))
        .collect();
    Ok(Json(json!({"changes": changes, "cursor": cursor})).into_response())
}

async fn changes_kv(
    api: Api,
    Path((app, store)): StorePath,
    Query(q): Query<ChangesQuery>,
) -> Reply {
    changes(api, StoreKind::Kv, app, store, q).await
}

async fn changes_docs(
    api: Api,
    Path((app, store)): StorePath,
    Query(q): Query<ChangesQuery>,
) -> Reply {
    changes(api, StoreKind::Docs, app, store, q).await
}

async fn changes_buckets(
    api: Api,
    Path((app, store)): StorePath,
    Query(q): Query<ChangesQuery>,
) -> Reply {
    changes(api, StoreKind::Buckets, app, store, q).await
}

fn random_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("system randomness");
    hex_string(&bytes)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
