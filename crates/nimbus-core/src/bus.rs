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

/// Routing-loop protection. Every time an event or message is passed on by the
/// platform itself — a rule's bus or topic target, a topic subscription, an async
/// invocation's destination — it carries one more hop, in the CloudEvent
/// extension [`EXTENSION`] (and a topic message's envelope field `hops`). A hop
/// past [`MAX`] is refused: a rule that feeds its own bus, or two functions whose
/// destinations name each other, stop there instead of running forever.
pub mod hops {
    use crate::cloudevent::CloudEvent;

    /// The CloudEvent extension attribute that counts hops.
    pub const EXTENSION: &str = "nimbushops";
    /// Most hops an event makes; the same depth AWS stops recursive loops at.
    pub const MAX: u32 = 16;

    /// The hops of an event in structured-mode JSON, or of a topic message's
    /// envelope (field `hops`); 0 if it has none.
    pub fn of_json(value: &serde_json::Value) -> u32 {
        [&value[EXTENSION], &value["hops"]]
            .into_iter()
            .find_map(|v| match v {
                serde_json::Value::String(s) => s.parse().ok(),
                serde_json::Value::Number(n) => n.as_u64().map(|n| n.min(u32::MAX.into()) as u32),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn of_event(event: &CloudEvent) -> u32 {
        event
            .extensions
            .get(EXTENSION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The hop count one further on from `hops`, or why not.
    pub fn next(hops: u32) -> Result<u32, String> {
        if hops >= MAX {
            Err(format!(
                "routing loop: the event has already been passed on {MAX} times \
                 (bus and topic targets, subscriptions, destinations); not passing it on again"
            ))
        } else {
            Ok(hops + 1)
        }
    }

    /// Marks `event` as `hops` hops from where it was first put.
    pub fn set(event: &mut CloudEvent, hops: u32) {
        if hops > 0 {
            event.extensions.insert(EXTENSION.into(), hops.to_string());
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hops_count_up_to_the_maximum_and_no_further() {
            let mut event = CloudEvent::new("1", "s", "t");
            assert_eq!(of_event(&event), 0);
            let mut hops = 0;
            while let Ok(next) = next(hops) {
                hops = next;
            }
            assert_eq!(hops, MAX);
            set(&mut event, hops);
            assert_eq!(of_json(&event.to_json()), MAX);
            assert!(next(of_event(&event)).unwrap_err().contains("routing loop"));
            assert_eq!(of_json(&serde_json::json!({"hops": 3})), 3);
            assert_eq!(of_json(&serde_json::json!({"nimbushops": 2})), 2);
        }
    }
}
