//! The event bus port: every app has one bus; put events are matched against
//! its rules (`[bus.rules.NAME]`, patterns in [`crate::pattern`]) and delivered
//! to each matching rule's targets. The embedded backend lives in
//! `nimbus-integration`.
//!
//! Semantics (what users rely on): a put returns once the event and its
//! deliveries are durable; each delivery reaches its target at least once, or,
//! after the target's retries or maximum event age, its dead-letter queue.
//! Events are kept in the archive for `[bus] archive` and can be replayed into
//! the bus's current rules for a time range.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cloudevent::CloudEvent;
use crate::data::DataResult;

/// Limits of the bus, documented in `docs/events.md`.
pub mod limits {
    /// Most events in one put.
    pub const MAX_BATCH: usize = 10;
    /// Largest event, as structured-mode JSON.
    pub const MAX_EVENT_BYTES: usize = 256 << 10;
}

/// The outcome of one put event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub id: String,
    /// The rules it matched (their deliveries are queued).
    pub matched_rules: Vec<String>,
}

/// A rule with its delivery counts (since the rule was deployed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub name: String,
    pub pattern: serde_json::Value,
    pub enabled: bool,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// `function NAME` or `queue NAME`.
    pub target: String,
    /// Events that matched the rule (deliveries queued for this target).
    pub matched: u64,
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Deliveries given up (after retries or max event age).
    pub failed: u64,
    /// Of those, sent to the target's dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries waiting (due now or at a retry's time).
    pub pending: u64,
}

/// The bus of every app.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Puts up to [`limits::MAX_BATCH`] events into `app`'s bus in one durable
    /// write; one result per event, in order (an invalid event fails alone).
    async fn put_events(
        &self,
        app: &str,
        events: Vec<CloudEvent>,
    ) -> DataResult<Vec<DataResult<PutResult>>>;
    /// The rules of `app`, in name order, with their counts.
    async fn rules(&self, app: &str) -> DataResult<Vec<RuleStatus>>;
    /// Puts the archived events of `app` put between `from_ms` and `to_ms` (Unix
    /// milliseconds, inclusive) through the current rules again; returns how
    /// many were replayed. Replayed events carry the extension `replayof` (the
    /// replay's id).
    async fn replay(&self, app: &str, from_ms: u64, to_ms: u64) -> DataResult<u64>;
}
