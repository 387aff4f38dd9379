//! Port traits: how the layers call each other. The gateway, triggers and
//! workflows reach functions only through [`Invoker`], so they can be tested
//! without wasmtime, and compute can change without touching them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::cloudevent::CloudEvent;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP body type that crosses layer boundaries: streaming, in both directions.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Which function of which deployment an invocation is for. The deployment number
/// pins a request to the app version it was routed by, so an update never mixes
/// routes of one version with code of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub app: Arc<str>,
    pub function: Arc<str>,
    pub deployment: u64,
}

/// Why an invocation did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function `{0}` not found")]
    NotFound(String),
    #[error("function `{function}` is at its concurrency limit of {limit}")]
    Throttled { function: String, limit: u32 },
    /// Every instance slot of the node is busy; retrying later can help.
    #[error("the node is at capacity ({0}); retry shortly")]
    AtCapacity(String),
    #[error("function `{function}` timed out after {}ms", timeout.as_millis())]
    Timeout { function: String, timeout: Duration },
    /// A trap, a panic, running out of memory, or a broken response.
    #[error("function `{function}` failed: {message}")]
    Failed { function: String, message: String },
    #[error("function `{function}` does not handle {kind} invocations")]
    WrongKind {
        function: String,
        kind: &'static str,
    },
    /// An event handler returned an error of its own.
    #[error("{0}")]
    Handler(String),
    /// The app is over one of its quotas; new work waits until it is not.
    #[error("{0}")]
    Quota(#[from] crate::meter::QuotaExceeded),
}

impl InvokeError {
    /// The HTTP status and stable error code every caller reports this with.
    pub fn status(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            Self::NotFound(_) => (S::NOT_FOUND, "not_found"),
            Self::Throttled { .. } => (S::TOO_MANY_REQUESTS, "throttled"),
            Self::Quota(_) => (S::TOO_MANY_REQUESTS, "quota_exceeded"),
            Self::AtCapacity(_) => (S::SERVICE_UNAVAILABLE, "at_capacity"),
            Self::Timeout { .. } => (S::GATEWAY_TIMEOUT, "timeout"),
            Self::Handler(_) => (S::UNPROCESSABLE_ENTITY, "handler_error"),
            Self::Failed { .. } | Self::WrongKind { .. } => {
                (S::INTERNAL_SERVER_ERROR, "function_error")
            }
        }
    }

    /// The `Retry-After` seconds a retryable failure is answered with: a quota
    /// lifts at the earliest when the day's usage is recounted.
    pub fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::Quota(_) => Some("60"),
            e if e.is_retryable() => Some("1"),
            _ => None,
        }
    }

    /// Whether the same call may succeed later (answered with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::AtCapacity(_) | Self::Quota(_)
        )
    }
}

/// Runs functions.
#[async_trait]
pub trait Invoker: Send + Sync + 'static {
    /// Calls an HTTP function (`wasi:http/incoming-handler`). The response body
    /// streams while the function still runs.
    async fn invoke_http(
        &self,
        target: &Target,
        request_id: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, InvokeError>;

    /// Calls an event function with one CloudEvent; returns its output, if any.
    async fn invoke_event(
        &self,
        target: &Target,
        request_id: &str,
        event: CloudEvent,
    ) -> Result<Option<Vec<u8>>, InvokeError>;

    /// Calls an event function with a batch (`handle-batch`); returns the ids of
    /// the events it reports as failed (empty: every event succeeded).
    async fn invoke_batch(
        &self,
        target: &Target,
        request_id: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<String>, InvokeError>;
}

/// Where compute keeps compiled components between restarts, keyed by the
/// component's digest and the engine's compatibility hash.
pub trait ArtifactCache: Send + Sync + 'static {
    /// The path of a cached artifact, if present.
    fn lookup(&self, key: &str) -> Option<std::path::PathBuf>;
    /// Stores an artifact durably and returns its path.
    fn store(&self, key: &str, bytes: &[u8]) -> std::io::Result<std::path::PathBuf>;
}
