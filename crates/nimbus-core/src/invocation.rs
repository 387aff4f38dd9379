//! The async invocation port: an event accepted for a function is durably queued,
//! tried with retries and backoff, and its outcome sent to the function's
//! `on_success` / `on_failure` destination, as Lambda's asynchronous invocation
//! does. The embedded engine lives in `nimbus-integration`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cloudevent::CloudEvent;
use crate::data::DataResult;

/// Where an async invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationStatus {
    /// Accepted, waiting for its (next) attempt.
    Queued,
    /// An attempt is running.
    Running,
    Succeeded,
    /// Retries exhausted, or the event grew older than `max_event_age`.
    Failed,
}

/// What the API and `nimbus invoke --async` report about an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub id: String,
    pub app: String,
    pub function: String,
    pub status: InvocationStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    /// Unix milliseconds of the next attempt, while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    /// The handler's output (text; other bytes as `base64:…`), once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Accepts async invocations and reports on them.
#[async_trait]
pub trait AsyncInvoker: Send + Sync + 'static {
    /// Queues `event` for `function` of `app` durably; returns the invocation id.
    async fn submit(&self, app: &str, function: &str, event: CloudEvent) -> DataResult<String>;
    /// The invocation `id`, while its record is kept (24 hours after it ends).
    async fn get(&self, id: &str) -> DataResult<Option<Invocation>>;
}
