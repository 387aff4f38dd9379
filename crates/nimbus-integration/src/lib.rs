//! The integration layer: how functions and apps talk to each other
//! asynchronously. It owns the embedded backend of message queues
//! ([`Queues`], implementing [`nimbus_core::queue::QueueService`]) and their
//! tables in the node's database; topics, the event bus and triggers will live
//! here too.

pub mod queue;

pub use queue::Queues;
pub mod triggers;

pub use triggers::Triggers;
