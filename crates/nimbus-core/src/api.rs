//! Wire types of the admin API (`/v1/`), shared by the node and the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// `PUT /v1/apps/{name}` and `POST /v1/apps/{name}/plan`: the manifest and the
/// digests of the function components, uploaded before with
/// `PUT /v1/components/{sha256}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// File name for diagnostics, e.g. `nimbus.toml`.
    pub manifest_file: String,
    pub manifest: String,
    /// Function name -> SHA-256 (hex) of its component.
    pub components: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployResponse {
    pub plan: Plan,
    /// The deployment number now serving the app.
    pub deployment: u64,
    pub applied: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentUploaded {
    pub digest: String,
    /// `http`, `event` or `http+event`.
    pub kind: String,
    pub compile_ms: u64,
    pub cached: bool,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_manifest`, `not_found`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub gateway: String,
    pub apps: Vec<AppStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub deployment: u64,
    pub hosts: Vec<String>,
    pub functions: Vec<FunctionStatus>,
    pub routes: Vec<RouteStatus>,
    #[serde(default)]
    pub stores: Vec<crate::data::StoreStatus>,
    #[serde(default)]
    pub queues: Vec<crate::queue::QueueStats>,
    #[serde(default)]
    pub triggers: Vec<TriggerStatus>,
    /// Bus rules with per-target counts.
    #[serde(default)]
    pub rules: Vec<crate::bus::RuleStatus>,
}

/// A queue trigger as `nimbus trigger ls` and `nimbus status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerStatus {
    pub name: String,
    /// The queue of a queue trigger (empty for a trigger on store changes).
    pub queue: String,
    /// What feeds it: `queue orders`, `bucket images`, `kv carts`, `docs orders`.
    #[serde(default)]
    pub source: String,
    pub function: String,
    pub enabled: bool,
    /// Pollers running now.
    pub pollers: u32,
    /// Batches delivered since the node started, and messages in them.
    pub batches: u64,
    pub messages: u64,
    /// Messages the function failed (reported, or the whole batch failed).
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    pub method: String,
    pub path: String,
    pub function: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionStatus {
    pub name: String,
    pub kind: String,
    pub digest: String,
    /// Instantiated instances, busy or warm.
    pub live_instances: u64,
    pub busy_instances: u64,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    /// Median and 99th percentile of recent invocation durations, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Median recent cold start (instantiation) time, milliseconds.
    pub cold_start_p50_ms: f64,
}

/// A short listing of a deployed app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub deployment: u64,
    pub functions: Vec<String>,
    pub routes: usize,
    pub deployed_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppDetail {
    pub name: String,
    pub deployment: u64,
    pub deployed_at: String,
    pub manifest_file: String,
    pub manifest: String,
    pub app: crate::app::App,
}
