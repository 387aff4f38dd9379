//! Request handling: app selection, routing, limits, request ids, and mapping
//! invocation failures to HTTP statuses with a stable JSON error body.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use nimbus_core::app::App;
use nimbus_core::data::{
    BlobStore, DataError, SIGNED_PREFIX, SignedObject, StoreRef, UrlSigner, serve_object,
};
use nimbus_core::meter::Meters;
use nimbus_core::ports::{Body, BoxError, InvokeError, Invoker};

use crate::body::{CountedBody, LimitedBody};
use crate::routes::{AppRoutes, Match, Table};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// The app that serves requests whose host selects no app.
    pub default_app: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 << 20,
            default_app: None,
        }
    }
}

/// How the gateway reaches objects: public buckets and signed URLs.
#[derive(Clone)]
pub struct ObjectAccess {
    pub blobs: Arc<dyn BlobStore>,
    pub signer: UrlSigner,
}

pub struct Gateway {
    invoker: Arc<dyn Invoker>,
    meters: Arc<Meters>,
    objects: Option<ObjectAccess>,
    table: ArcSwap<Table>,
    config: GatewayConfig,
    id_prefix: String,
    next_id: AtomicU64,
}

impl Gateway {
    pub fn new(
        invoker: Arc<dyn Invoker>,
        meters: Arc<Meters>,
        objects: Option<ObjectAccess>,
        config: GatewayConfig,
    ) -> Arc<Self> {
        let mut seed = [0u8; 4];
        getrandom::fill(&mut seed).expect("system randomness");
        let table = Table {
            default_app: config.default_app.as_deref().map(Into::into),
            ..Table::default()
        };
        Arc::new(Self {
            invoker,
            meters,
            objects,
            table: ArcSwap::from_pointee(table),
            config,
            id_prefix: format!("{:08x}", u32::from_le_bytes(seed)),
            next_id: AtomicU64::new(1),
        })
    }

    /// A fresh request id, unique on this node.
    pub fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:010x}", self.id_prefix)
    }

    /// Serves `deployment` of `app` from now on (an atomic swap).
    pub fn set_app(&self, app: &App, deployment: u64) {
        let routes = Arc::new(AppRoutes::new(app, deployment, self.meters.app(&app.name)));
        let hosts = app.all_hosts();
        self.table.rcu(|old| {
            let mut table = old.without(&app.name);
            for host in &hosts {
                table.hosts.insert(host.clone(), routes.name.clone());
            }
            table.apps.insert(routes.name.clone(), routes.clone());
            table
        });
    }

    pub fn remove_app(&self, name: &str) {
        self.table.rcu(|old| old.without(name));
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let request_id = self.request_id();
        let id_header = HeaderValue::from_str(&request_id).expect("ids are ASCII");
        let mut response = self.route(request, &request_id, &id_header).await;
        response.headers_mut().insert(REQUEST_ID, id_header);
        response
    }

    async fn route<B>(
        &self,
        request: Request<B>,
        request_id: &str,
        id_header: &HeaderValue,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if request.uri().path().starts_with(SIGNED_PREFIX) {
            return self.signed(request).await;
        }
        let table = self.table.load();
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host());
        let Some(app) = table.select(host) else {
            let message = if table.apps.is_empty() {
                "no app is deployed on this node".to_string()
            } else {
                format!(
                    "no app serves host `{}`; use `Host: APP.localhost` or start the node with --default-app",
                    host.unwrap_or_default()
                )
            };
            return error(StatusCode::NOT_FOUND, "not_found", &message);
        };
        let meters = app.meters.clone();
        meters.requests.fetch_add(1, Ordering::Relaxed);
        self.serve_app(app, request, request_id, id_header)
            .await
            .map(|body| CountedBody::new(body, meters).boxed_unsync())
    }

    /// Serves a request that selected `app`: a public object or a route.
    async fn serve_app<B>(
        &self,
        app: &AppRoutes,
        request: Request<B>,
        request_id: &str,
        id_header: &HeaderValue,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some((bucket, key)) = app.public_object(request.method(), request.uri().path())
            && let Some(objects) = &self.objects
        {
            let store = StoreRef::new(&app.name, &bucket.bucket);
            let head = request.method() == http::Method::HEAD;
            return match serve_object(&*objects.blobs, store, &key, request.headers(), head).await {
                Ok(Some(response)) => response,
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no object `{key}` in bucket `{}`", bucket.bucket),
                ),
                Err(err) => data_error(&err),
            };
        }
        let (route, params) = match app.lookup(request.method(), request.uri().path()) {
            Match::Found { route, params } => (route, params),
            Match::MethodNotAllowed(allowed) => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!(
                        "{} is not allowed on {}; allowed: {}",
                        request.method(),
                        request.uri().path(),
                        allowed.join(", ")
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers_mut().insert(ALLOW, v);
                }
                return response;
            }
            Match::NotFound => {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!(
                        "no route for {} {} in app `{}`",
                        request.method(),
                        request.uri().path(),
                        app.name
                    ),
                );
            }
        };
        route.function.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .invoke(&route.target, request, params, request_id, id_header)
            .await;
        route.meter.record(response.status().as_u16());
        response
    }

    /// Passes a routed request to its function, within the body size limit.
    async fn invoke<B>(
        &self,
        target: &nimbus_core::ports::Target,
        request: Request<B>,
        params: Vec<(String, String)>,
        request_id: &str,
        id_header: &HeaderValue,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.max_body_bytes) {
            return too_large(self.config.max_body_bytes);
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = request.into_parts();
        for (name, value) in params {
            let header = HeaderName::from_bytes(format!("x-nimbus-param-{name}").as_bytes());
            if let (Ok(header), Ok(value)) = (header, HeaderValue::from_str(&value)) {
                parts.headers.insert(header, value);
            }
        }
        parts.headers.insert(REQUEST_ID, id_header.clone());
        let body =
            LimitedBody::new(body, self.config.max_body_bytes, exceeded.clone()).boxed_unsync();
        let request = Request::from_parts(parts, body);
        let result = self.invoker.invoke_http(target, request_id, request).await;
        if exceeded.load(Ordering::Relaxed)
            && !result.as_ref().is_ok_and(|r| r.status().is_success())
        {
            return too_large(self.config.max_body_bytes);
        }
        match result {
            Ok(response) => response,
            Err(err) => invoke_error(&err, request_id),
        }
    }
}

impl Gateway {
    /// `/_nimbus/buckets/APP/BUCKET/KEY?method=&expires=&signature=`: one object,
    /// for anyone holding the URL until it expires (browsers included: CORS is open).
    async fn signed<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut response = self.signed_inner(request).await;
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, HEAD, PUT"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("*"),
        );
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("etag, content-length, content-range"),
        );
        response
    }

    async fn signed_inner<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(objects) = &self.objects else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this node serves no objects",
            );
        };
        if request.method() == http::Method::OPTIONS {
            // A CORS preflight: the headers are added by `signed`.
            let mut response = Response::new(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = StatusCode::NO_CONTENT;
            return response;
        }
        let forbidden = |why: &str| error(StatusCode::FORBIDDEN, "forbidden", why);
        let uri = request.uri().clone();
        let rest = &uri.path()[SIGNED_PREFIX.len()..];
        let mut parts = rest.splitn(3, '/');
        let (Some(app), Some(bucket), Some(raw_key)) = (parts.next(), parts.next(), parts.next())
        else {
            return forbidden("a signed URL names an app, a bucket and a key");
        };
        let Ok(key) = percent_encoding::percent_decode_str(raw_key).decode_utf8() else {
            return forbidden("the key is not UTF-8");
        };
        let mut method = None;
        let mut expires = None;
        let mut signature = None;
        for pair in uri.query().unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("method", v)) => method = Some(v),
                Some(("expires", v)) => expires = v.parse::<u64>().ok(),
                Some(("signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let (Some(method), Some(expires), Some(signature)) = (method, expires, signature) else {
            return forbidden("the URL lacks `method`, `expires` or `signature`");
        };
        let allowed = match method {
            "GET" => {
                request.method() == http::Method::GET || request.method() == http::Method::HEAD
            }
            "PUT" => request.method() == http::Method::PUT,
            _ => false,
        };
        if !allowed {
            return forbidden(&format!(
                "this URL is signed for {method}, not {}",
                request.method()
            ));
        }
        let signed = SignedObject {
            method,
            app,
            bucket,
            key: &key,
            expires,
        };
        if let Err(why) = objects
            .signer
            .verify(&signed, signature, nimbus_core::data::unix_now())
        {
            return forbidden(why);
        }
        let store = StoreRef::new(app, bucket);
        if method == "PUT" {
            let options = match nimbus_core::data::put_options(request.headers()) {
                Ok(o) => o,
                Err(err) => return data_error(&err),
            };
            let body = request.into_body().map_err(Into::into).boxed_unsync();
            return match objects.blobs.put(store, &key, options, body).await {
                Ok(meta) => json_response(StatusCode::OK, &meta),
                Err(err) => data_error(&err),
            };
        }
        let head = request.method() == http::Method::HEAD;
        match serve_object(&*objects.blobs, store, &key, request.headers(), head).await {
            Ok(Some(response)) => response,
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no object `{key}`"),
            ),
            Err(err) => data_error(&err),
        }
    }
}

fn data_error(err: &DataError) -> Response<Body> {
    let (status, code) = err.status();
    error(status, code, &err.to_string())
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn too_large(limit: u64) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// The response for a failed invocation. 5xx bodies name the function and the
/// request id, never internals: the details are in the node's log.
pub fn invoke_error(err: &InvokeError, request_id: &str) -> Response<Body> {
    let (status, code) = err.status();
    let message = match err {
        InvokeError::Failed { function, .. } => {
            format!("function `{function}` failed; see the node log for request {request_id}")
        }
        other => other.to_string(),
    };
    let mut response = error(status, code, &message);
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(secs));
    }
    response
}

/// A JSON error response: `{"code": "...", "message": "..."}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({ "code": code, "message": message }),
    )
}
