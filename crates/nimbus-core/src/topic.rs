//! The notification topic port: publish a message with attributes; each
//! subscription whose filter passes gets it (a function, a queue or a signed
//! webhook), delivered at least once through an outbox, never blocking the
//! publisher. The embedded backend lives in `nimbus-integration` (with the bus).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::app::Subscription;
use crate::bus::TargetStatus;
use crate::data::DataResult;

/// Limits of topics, documented in `docs/events.md`.
pub mod limits {
    /// Most messages in one batch publish.
    pub const MAX_BATCH: usize = 10;
    /// Largest message, with its attributes.
    pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
}

/// The header of a webhook delivery's signature: `t=UNIX_SECONDS,v1=HEX`, with
/// HEX the HMAC-SHA256 of `UNIX_SECONDS.BODY` under the subscription's secret.
pub const SIGNATURE_HEADER: &str = "x-nimbus-signature";

/// An attribute given as text (a header, a CLI `--attr`, a guest's string), as
/// filters see it: a number if it reads as one, so numeric filters work.
pub fn attribute_value(text: &str) -> serde_json::Value {
    text.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map_or_else(
            || serde_json::Value::String(text.to_string()),
            serde_json::Value::Number,
        )
}

/// One message to publish.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub message: String,
    /// String or number values; filters match them.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Times the platform has passed this message on ([`crate::bus::hops`]); not
    /// part of the API.
    #[serde(skip)]
    pub hops: u32,
}

/// The outcome of one publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub message_id: String,
    /// Subscriptions whose filter passed (their deliveries are queued).
    pub deliveries: usize,
}

/// A subscription as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStatus {
    /// `m0`, `m1`, … for those of the manifest; `s1`, `s2`, … for those added over the API.
    pub id: String,
    pub subscription: Subscription,
    pub counts: TargetStatus,
}

#[async_trait]
pub trait TopicService: Send + Sync + 'static {
    /// Publishes up to [`limits::MAX_BATCH`] messages in one durable write; one
    /// result per message, in order.
    async fn publish(
        &self,
        app: &str,
        topic: &str,
        messages: Vec<Publish>,
    ) -> DataResult<Vec<DataResult<Published>>>;
    async fn subscriptions(&self, app: &str, topic: &str) -> DataResult<Vec<SubscriptionStatus>>;
    /// Adds a subscription (kept across restarts and deploys); returns its id.
    async fn subscribe(
        &self,
        app: &str,
        topic: &str,
        subscription: Subscription,
    ) -> DataResult<String>;
    /// Removes a subscription added over the API; returns whether it existed.
    async fn unsubscribe(&self, app: &str, topic: &str, id: &str) -> DataResult<bool>;
}
