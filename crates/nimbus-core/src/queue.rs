//! The queue port: SQS-style queues as compute's host bindings, the admin API,
//! the triggers and async invocation use them. The embedded backend lives in
//! `nimbus-integration`.
//!
//! Semantics (what users rely on): at-least-once delivery; a received message is
//! invisible until its visibility timeout ends, then delivered again with its
//! receive count incremented; past `dead_letter.max_receives` receives it moves to
//! the dead-letter queue; FIFO queues deliver in order per group id, never two
//! in-flight messages of one group, and drop a send whose deduplication id was
//! seen within the deduplication window. A send returns once the message is
//! durable.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::data::{DataResult, StoreRef};

/// Limits of queues, documented in `docs/queues.md`.
pub mod limits {
    use std::time::Duration;

    /// Largest message body (default of `max_message_size`, and its ceiling).
    pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
    pub const MAX_MESSAGE_BYTES_CEILING: usize = 1 << 20;
    /// Most messages one receive returns.
    pub const MAX_RECEIVE: usize = 10;
    /// Most entries in one batch send or delete.
    pub const MAX_BATCH: usize = 10;
    /// Longest long poll.
    pub const MAX_WAIT: Duration = Duration::from_secs(20);
    /// Longest visibility timeout.
    pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
    /// Longest send delay.
    pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
    /// How long a FIFO deduplication id is remembered.
    pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);
    /// Message attributes, names and values together.
    pub const MAX_ATTRIBUTE_BYTES: usize = 4096;
}

/// Options of a send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// The message becomes visible this long after the send (standard queues).
    pub delay: Option<Duration>,
    pub attributes: BTreeMap<String, String>,
    /// FIFO queues: required; order and exclusivity hold per group.
    pub group_id: Option<String>,
    /// FIFO queues: a send with an id seen within [`limits::DEDUP_WINDOW`] is
    /// accepted but not enqueued again.
    pub dedup_id: Option<String>,
}

/// The result of a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub message_id: String,
    /// The send matched an earlier deduplication id; no new message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
}

/// Options of a receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// 1 to [`limits::MAX_RECEIVE`] (default 1).
    pub max: usize,
    /// Long polling: wait up to this long for a first message (at most
    /// [`limits::MAX_WAIT`]); returns as soon as one arrives.
    pub wait: Duration,
    /// Overrides the queue's visibility timeout for these messages.
    pub visibility: Option<Duration>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: String,
    /// Deletes or extends this delivery; a new one comes with each receive.
    pub receipt: String,
    #[serde(with = "body_text")]
    pub body: Bytes,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// Unix milliseconds of the send.
    pub sent_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// Depth and age of a queue, as `nimbus status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub name: String,
    /// Messages ready to be received.
    pub visible: u64,
    /// Received and not yet deleted or visible again.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
    /// Age of the oldest message, milliseconds (0 when empty).
    pub oldest_age_ms: u64,
}

/// Queues of every app.
#[async_trait]
pub trait QueueService: Send + Sync + 'static {
    async fn send(
        &self,
        queue: StoreRef<'_>,
        body: Bytes,
        options: SendOptions,
    ) -> DataResult<Sent>;
    /// Sends up to [`limits::MAX_BATCH`] messages in one durable write; one result
    /// per entry, in order (an invalid entry fails alone).
    async fn send_batch(
        &self,
        queue: StoreRef<'_>,
        entries: Vec<(Bytes, SendOptions)>,
    ) -> DataResult<Vec<DataResult<Sent>>>;
    async fn receive(
        &self,
        queue: StoreRef<'_>,
        options: ReceiveOptions,
    ) -> DataResult<Vec<Message>>;
    /// Deletes the delivery `receipt`; returns whether it was current (a stale
    /// receipt deletes nothing).
    async fn delete(&self, queue: StoreRef<'_>, receipt: &str) -> DataResult<bool>;
    async fn delete_batch(
        &self,
        queue: StoreRef<'_>,
        receipts: Vec<String>,
    ) -> DataResult<Vec<DataResult<bool>>>;
    /// Makes an in-flight message visible again after `timeout` (zero: now).
    async fn change_visibility(
        &self,
        queue: StoreRef<'_>,
        receipt: &str,
        timeout: Duration,
    ) -> DataResult<()>;
    /// Deletes every message; returns how many.
    async fn purge(&self, queue: StoreRef<'_>) -> DataResult<u64>;
    /// Moves every message of dead-letter queue `dlq` back to the queue it came
    /// from, with its receive count reset; returns how many.
    async fn redrive(&self, dlq: StoreRef<'_>) -> DataResult<u64>;
    async fn stats(&self, queue: StoreRef<'_>) -> DataResult<QueueStats>;
    /// Creates the queues `app` declares and applies their settings.
    async fn ensure(&self, app: &App) -> DataResult<()>;
    /// Deletes a queue with its messages.
    async fn drop_queue(&self, app: &str, name: &str) -> DataResult<()>;
}

/// Message bodies in JSON: text when UTF-8 (the common case), else base64
/// prefixed with `base64:`.
mod body_text {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) if !text.starts_with("base64:") => s.serialize_str(text),
            _ => s.serialize_str(&format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_prefix("base64:") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom),
            None => Ok(Bytes::from(text)),
        }
    }
}
