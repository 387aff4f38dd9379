//! Queues (`[queues.NAME]`): at-least-once messages with visibility timeouts,
//! dead-letter queues and FIFO ordering per group.

use std::time::Duration;

use crate::Result;
use crate::bindings::nimbus::integration::queues as wit;

pub use wit::Message;

/// A queue the function is granted (`"queue:NAME"`).
pub struct Queue {
    name: String,
}

/// Options of [`Queue::send_with`].
#[derive(Debug, Clone, Default)]
pub struct Send {
    pub delay: Option<Duration>,
    pub attributes: Vec<(String, String)>,
    /// FIFO queues: required.
    pub group_id: Option<String>,
    /// FIFO queues: drops a repeat within five minutes.
    pub dedup_id: Option<String>,
}

impl Queue {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// Sends a message; returns its id once it is durable.
    pub fn send(&self, body: &[u8]) -> Result<String> {
        self.send_with(body, Send::default())
    }

    pub fn send_with(&self, body: &[u8], options: Send) -> Result<String> {
        let options = wit::SendOptions {
            delay_ms: options.delay.map(|d| d.as_millis() as u64),
            attributes: options.attributes,
            group_id: options.group_id,
            dedup_id: options.dedup_id,
        };
        Ok(wit::send(&self.name, body, &options)?.message_id)
    }

    /// Up to `max` (1 to 10) messages, waiting up to `wait` (at most 20 s) for the
    /// first. Each stays invisible for the queue's visibility timeout; delete it
    /// when done, or it is delivered again.
    pub fn receive(&self, max: u32, wait: Duration) -> Result<Vec<Message>> {
        Ok(wit::receive(
            &self.name,
            max,
            wait.as_millis() as u64,
            None,
        )?)
    }

    /// Deletes a received message; `false` if the receipt is no longer current.
    pub fn delete(&self, receipt: &str) -> Result<bool> {
        Ok(wit::delete(&self.name, receipt)?)
    }

    /// Keeps a received message invisible for `timeout` more (zero: visible now).
    pub fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        Ok(wit::change_visibility(
            &self.name,
            receipt,
            timeout.as_millis() as u64,
        )?)
    }
}
