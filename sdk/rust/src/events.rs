//! Topics (`[topics.NAME]`) and the event bus (`[bus.rules.NAME]`): publish a
//! message to a topic's subscriptions, put a CloudEvent into an app's bus.
//!
//! ```no_run
//! use nimbus_sdk::events::{Bus, Event, Topic};
//! # fn main() -> Result<(), nimbus_sdk::Error> {
//! // uses = ["topic:orders", "bus:shop"]
//! let id = Topic::new("orders").publish("order 17 placed", &[("kind", "vip"), ("total", "150")])?;
//! let rules = Bus::new("shop").put(
//!     Event::new("shop/checkout", "order.placed").json(&serde_json::json!({"total": 150})),
//! )?;
//! # let _ = (id, rules);
//! # Ok(())
//! # }
//! ```

use crate::Result;
use crate::bindings::nimbus::integration::events as wit;

/// A topic the function is granted (`"topic:NAME"`).
pub struct Topic {
    name: String,
}

impl Topic {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// Publishes `message` with `attributes` (values that read as numbers are
    /// numbers to filters); returns its id once its deliveries are durable.
    pub fn publish(&self, message: &str, attributes: &[(&str, &str)]) -> Result<String> {
        let attributes: Vec<(String, String)> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(wit::publish(&self.name, message, &attributes)?.message_id)
    }
}

/// An app's event bus the function is granted (`"bus:APP"`).
pub struct Bus {
    app: String,
}

/// A CloudEvent to put.
#[derive(Debug, Clone)]
pub struct Event {
    inner: wit::Event,
}

impl Event {
    pub fn new(source: &str, ty: &str) -> Self {
        Self {
            inner: wit::Event {
                id: None,
                source: source.into(),
                type_: ty.into(),
                subject: None,
                datacontenttype: None,
                data: None,
            },
        }
    }

    pub fn id(mut self, id: &str) -> Self {
        self.inner.id = Some(id.into());
        self
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.inner.subject = Some(subject.into());
        self
    }

    /// JSON data (`datacontenttype` `application/json`).
    pub fn json(mut self, data: &serde_json::Value) -> Self {
        self.inner.datacontenttype = Some("application/json".into());
        self.inner.data = Some(data.to_string().into_bytes());
        self
    }

    /// Other data, with its content type.
    pub fn data(mut self, content_type: &str, data: Vec<u8>) -> Self {
        self.inner.datacontenttype = Some(content_type.into());
        self.inner.data = Some(data);
        self
    }
}

impl Bus {
    pub fn new(app: &str) -> Self {
        Self { app: app.into() }
    }

    /// Puts `event`; returns the rules it matched once it and its deliveries
    /// are durable.
    pub fn put(&self, event: Event) -> Result<Vec<String>> {
        Ok(wit::put_event(&self.app, &event.inner)?)
    }
}
