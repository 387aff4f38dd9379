//! The admin API under `/v1/`: deploy (upload components, plan, apply), list,
//! get and delete apps, status, and invoking a function directly. Every route but
//! `/v1/health` needs `Authorization: Bearer TOKEN`.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::BodyExt;
use nimbus_core::api::{DeployRequest, ErrorBody};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::ports::{BoxError, InvokeError, Target};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::control::{Control, ControlError};
use crate::token::same_token;

/// Largest component upload accepted.
const MAX_COMPONENT_BYTES: usize = 256 << 20;

#[derive(Clone)]
struct AdminState {
    control: Arc<Control>,
    token: Arc<str>,
}

/// The admin API's routes.
pub fn router(
    control: Arc<Control>,
    token: String,
    data: crate::DataApi,
    logs: Arc<crate::logs::LogStore>,
    meters: Arc<nimbus_core::meter::Meters>,
    usage: Arc<crate::usage::Usage>,
) -> axum::Router {
    let metrics = crate::metrics::MetricsState {
        control: control.clone(),
        meters,
    };
    let state = AdminState {
        control,
        token: token.into(),
    };
    let authed = axum::Router::new()
        .route(
            "/v1/components/{digest}",
            put(upload_component)
                .get(component_exists)
                .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/v1/apps", get(list_apps))
        .route(
            "/v1/apps/{name}",
            get(get_app).put(deploy).delete(delete_app),
        )
        .route("/v1/apps/{name}/plan", post(plan))
        .route("/v1/apps/{name}/diagram", get(diagram))
        .route(
            "/v1/apps/{app}/functions/{function}/invoke",
            post(invoke).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/v1/status", get(status))
        .route("/v1/apps/{app}/triggers", get(list_triggers))
        .route(
            "/v1/apps/{app}/triggers/{trigger}/{action}",
            post(switch_trigger),
        )
        .merge(crate::data_api::routes(data))
        .merge(crate::logs::api::routes(logs))
        .merge(crate::usage::api::routes(usage))
        .merge(
            axum::Router::new()
                .route("/metrics", get(crate::metrics::metrics))
                .with_state(metrics),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    axum::Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .merge(authed)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint") })
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn authenticate(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same_token(token.trim(), &state.token) => next.run(request).await,
        Some(_) => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer TOKEN`; the token is in the node's data dir (admin-token)",
        ),
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ControlError::InvalidManifest(_) => (StatusCode::BAD_REQUEST, "invalid_manifest"),
            ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ControlError::Activation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "activation_failed"),
            ControlError::ConfirmationRequired(_) => {
                (StatusCode::CONFLICT, "confirmation_required")
            }
            ControlError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        };
        if status.is_server_error() {
            tracing::error!("admin request failed: {self}");
        }
        error(status, code, &self.to_string())
    }
}

async fn upload_component(
    State(state): State<AdminState>,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let uploaded = state.control.upload(&digest, &body).await?;
    Ok(Json(uploaded).into_response())
}

async fn component_exists(State(state): State<AdminState>, Path(digest): Path<String>) -> Response {
    if state.control.has_component(&digest) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("component {digest} not uploaded"),
        )
    }
}

async fn list_apps(State(state): State<AdminState>) -> Response {
    Json(state.control.list().await).into_response()
}

async fn get_app(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ControlError> {
    Ok(Json(state.control.get(&name).await?).into_response())
}

#[derive(Deserialize)]
struct DiagramParams {
    #[serde(default = "default_format")]
    format: String,
}

fn default_format() -> String {
    "svg".into()
}

/// `GET /v1/apps/{name}/diagram?format=svg|mermaid|dot`: the deployed app drawn.
async fn diagram(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(p): Query<DiagramParams>,
) -> Result<Response, ControlError> {
    let detail = state.control.get(&name).await?;
    let d = crate::diagram::Diagram::of(&detail.app);
    let (content_type, text) = match p.format.as_str() {
        "svg" => ("image/svg+xml", d.svg()),
        "mermaid" => ("text/vnd.mermaid; charset=utf-8", d.mermaid()),
        "dot" => ("text/vnd.graphviz; charset=utf-8", d.dot()),
        other => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("`format`: `{other}` is not one of svg, mermaid, dot"),
            ));
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

async fn plan(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(request): Json<DeployRequest>,
) -> Result<Response, ControlError> {
    Ok(Json(state.control.plan(&name, &request).await?).into_response())
}

/// `?confirm=true`: allow a deploy or delete that deletes stored data.
#[derive(Debug, Default, Deserialize)]
struct Confirm {
    #[serde(default)]
    confirm: bool,
}

async fn deploy(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(confirm): Query<Confirm>,
    Json(request): Json<DeployRequest>,
) -> Result<Response, ControlError> {
    let response = state
        .control
        .deploy(&name, &request, confirm.confirm)
        .await?;
    Ok(Json(response).into_response())
}

async fn delete_app(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(confirm): Query<Confirm>,
) -> Result<Response, ControlError> {
    Ok(Json(state.control.delete(&name, confirm.confirm).await?).into_response())
}

async fn list_triggers(
    State(state): State<AdminState>,
    Path(app): Path<String>,
) -> Result<Response, ControlError> {
    if state.control.app(&app).await.is_none() {
        return Err(ControlError::NotFound(format!(
            "app `{app}` is not deployed"
        )));
    }
    Ok(Json(state.control.platform().trigger_status(&app)).into_response())
}

/// `POST /v1/apps/{app}/triggers/{trigger}/enable|disable`.
async fn switch_trigger(
    State(state): State<AdminState>,
    Path((app, trigger, action)): Path<(String, String, String)>,
) -> Response {
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no trigger action `{other}` (use enable or disable)"),
            );
        }
    };
    match state
        .control
        .platform()
        .set_trigger(&app, &trigger, enabled)
        .await
    {
        Ok(()) => Json(serde_json::json!({"trigger": trigger, "enabled": enabled})).into_response(),
        Err(err) => crate::data_api::data_error(err),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    Json(state.control.status().await).into_response()
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    /// HTTP functions: the request's method and path (with query).
    method: Option<String>,
    path: Option<String>,
    /// Event functions: the CloudEvent `type`.
    #[serde(rename = "type")]
    ty: Option<String>,
}

/// Calls a function directly, bypassing routes: HTTP functions get a request
/// built from `method`, `path`, the headers and body; event functions get the
/// body as a CloudEvent's data.
async fn invoke(
    State(state): State<AdminState>,
    Path((app, function)): Path<(String, String)>,
    Query(query): Query<InvokeQuery>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let Some(deployment) = state.control.has_function(&app, &function).await else {
        return invoke_failure(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("function `{app}/{function}` is not deployed"),
        );
    };
    let platform = state.control.platform();
    let Some((http, event)) = platform.function_kind(&app, &function) else {
        return invoke_failure(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("function `{app}/{function}` is not deployed"),
        );
    };
    let target = Target {
        app: app.as_str().into(),
        function: function.as_str().into(),
        deployment,
    };
    let request_id = invocation_id();
    let invoker = platform.invoker();
    let wants_event = query.ty.is_some() || !http;
    if wants_event && event {
        let data = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                return invoke_failure(StatusCode::BAD_REQUEST, "bad_request", &err.to_string());
            }
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let mut cloud_event = CloudEvent::new(
            request_id.clone(),
            format!("nimbus/{app}/invoke"),
            query.ty.unwrap_or_else(|| "nimbus.invoke".into()),
        );
        if !data.is_empty() {
            cloud_event = cloud_event.with_data(content_type, data.to_vec());
        }
        return match invoker
            .invoke_event(&target, &request_id, cloud_event)
            .await
        {
            Ok(Some(output)) => with_request_id(output.into_response(), &request_id),
            Ok(None) => with_request_id(StatusCode::NO_CONTENT.into_response(), &request_id),
            Err(err) => with_request_id(invoke_error(&err), &request_id),
        };
    }
    if !http {
        return invoke_failure(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("function `{function}` handles neither"),
        );
    }
    let method = query.method.as_deref().unwrap_or("GET");
    let path = query.path.as_deref().unwrap_or("/");
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("{app}.localhost"));
    for (name, value) in &headers {
        if name != header::AUTHORIZATION && name != header::HOST {
            builder = builder.header(name, value);
        }
    }
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    let request = match builder.body(body) {
        Ok(r) => r,
        Err(err) => {
            return invoke_failure(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("invalid request: {err}"),
            );
        }
    };
    match invoker.invoke_http(&target, &request_id, request).await {
        Ok(response) => with_request_id(response.map(AxumBody::new).into_response(), &request_id),
        Err(err) => with_request_id(invoke_error(&err), &request_id),
    }
}

fn invoke_error(err: &InvokeError) -> Response {
    let (status, code) = err.status();
    let mut response = invoke_failure(status, code, &err.to_string());
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    response
}

/// An error of the platform (not a response of the function): marked with
/// `x-nimbus-error` so clients can tell the two apart.
fn invoke_failure(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = error(status, code, message);
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-nimbus-error", v);
    }
    response
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn invocation_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("system randomness");
    format!(
        "inv-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
