//! Delivering one event or topic message to one sink: a queue, an async
//! function invocation, a topic, a bus, or a signed webhook.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use nimbus_core::app::{Input, RuleTarget, Sink};
use nimbus_core::bus::{EventBus as _, hops};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::StoreRef;
use nimbus_core::queue::SendOptions;
use nimbus_core::topic::{Publish, SIGNATURE_HEADER};
use serde_json::Value;
use sha2::Sha256;

use super::{Bus, Inner};

/// A webhook receiver gets this long to answer.
pub(super) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery failed; a permanent failure is not retried.
pub(super) struct Failure {
    pub message: String,
    pub permanent: bool,
}

impl Failure {
    fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }
}

/// The signature header value of a webhook delivery of `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Delivers `payload` (a CloudEvent's JSON, or the envelope of a message of
/// `topic`) to `target`.
pub(super) async fn deliver(
    inner: &std::sync::Arc<Inner>,
    app: &str,
    topic: Option<&str>,
    target: &RuleTarget,
    payload: &Value,
) -> Result<(), Failure> {
    let input = target
        .input
        .apply(payload)
        .map_err(|e| Failure::retry(e.to_string()))?;
    let text = match &input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bus = Bus {
        inner: inner.clone(),
    };
    let hops = hops::of_json(payload);
    // Passing it on to a topic or a bus is a hop; a loop ends at the last one.
    let next_hop = || {
        hops::next(hops).map_err(|message| Failure {
            message,
            permanent: true,
        })
    };
    match &target.destination {
        Sink::Queue(queue) => inner
            .queues
            .send(
                StoreRef::new(app, queue),
                Bytes::from(text),
                SendOptions::default(),
            )
            .await
            .map(drop)
            .map_err(|e| Failure::retry(e.to_string())),
        Sink::Function(function) => {
            let event = match topic {
                Some(topic) => CloudEvent::new(
                    payload["id"].as_str().unwrap_or_default(),
                    format!("nimbus/{app}/topics/{topic}"),
                    "nimbus.topic.message",
                )
                .with_data("application/json", payload.to_string().into_bytes()),
                None => {
                    let mut event = CloudEvent::from_json(payload)
                        .map_err(|e| Failure::retry(format!("bad event: {e}")))?;
                    if target.input != Input::Event {
                        let (content_type, data) = match input {
                            Value::String(s) => ("text/plain", s.into_bytes()),
                            other => ("application/json", other.to_string().into_bytes()),
                        };
                        event = event.with_data(content_type, data);
                    }
                    event
                }
            };
            let mut event = event;
            hops::set(&mut event, hops);
            inner
                .invocations
                .submit(app, function, event)
                .await
                .map(drop)
                .map_err(|e| Failure::retry(e.to_string()))
        }
        Sink::Topic(to) => {
            let publish = Publish {
                message: text,
                hops: next_hop()?,
                ..Publish::default()
            };
            let mut results = bus
                .publish_messages(app, to, vec![publish])
                .await
                .map_err(|e| Failure::retry(e.to_string()))?;
            results
                .pop()
                .expect("one result per message")
                .map(drop)
                .map_err(|e| Failure::retry(e.to_string()))
        }
        Sink::Bus(to) => {
            let event = match topic {
                Some(topic) => serde_json::json!({
                    "specversion": "1.0",
                    "id": payload["id"],
                    "source": format!("nimbus/{app}/topics/{topic}"),
                    "type": "nimbus.topic.message",
                    "datacontenttype": "application/json",
                    "data": payload,
                }),
                None => input,
            };
            let mut event = CloudEvent::from_json(&event).map_err(|e| Failure {
                message: format!("not a CloudEvent: {e}"),
                permanent: true,
            })?;
            hops::set(&mut event, next_hop()?);
            let mut results = bus
                .put_events(to, vec![event])
                .await
                .map_err(|e| Failure::retry(e.to_string()))?;
            results
                .pop()
                .expect("one result per event")
                .map(drop)
                .map_err(|e| Failure::retry(e.to_string()))
        }
        Sink::Webhook { url, secret } => webhook(inner, url, secret, payload).await,
    }
}

async fn webhook(inner: &Inner, url: &str, secret: &str, payload: &Value) -> Result<(), Failure> {
    let body = payload.to_string();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let response = inner
        .http
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-nimbus-message-id",
            payload["id"].as_str().unwrap_or_default(),
        )
        .header("x-nimbus-timestamp", timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature(secret, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::retry(format!("POST {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        // 5xx and 429 are worth retrying; another 4xx will not change.
        Err(Failure {
            message: format!("POST {url}: {status}"),
            permanent: status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // What a receiver computes, here in Python:
        // hmac.new(b"hook-secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("hook-secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=2ca9484d0c409cd2998fd115eb688d50af3c4591f30a5124d6262b43877ed809"
        );
        assert_ne!(
            signature("other", 1_700_000_000, br#"{"a":1}"#),
            signature("hook-secret", 1_700_000_000, br#"{"a":1}"#)
        );
    }
}
