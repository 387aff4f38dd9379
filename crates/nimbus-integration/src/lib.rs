//! The integration layer: how functions and apps talk to each other
//! asynchronously. It owns the embedded backend of message queues
//! ([`Queues`], implementing [`nimbus_core::queue::QueueService`]) and their
//! tables in the node's database; topics, the event bus and triggers will live
//! here too. It also runs async invocations ([`Invocations`], implementing
//! [`nimbus_core::invocation::AsyncInvoker`]): durably queued events tried
//! with retries and sent to their destinations.

pub mod invocations;
pub mod queue;

pub use invocations::Invocations;
pub use queue::Queues;
pub mod triggers;

pub use triggers::Triggers;
