//! The integration layer: how functions and apps talk to each other
//! asynchronously, on the data layer's engine (its own tables in the node's
//! database). It owns message queues ([`Queues`], implementing
//! [`nimbus_core::queue::QueueService`]), queue triggers ([`Triggers`]: pollers
//! that deliver batches to functions), and async invocations ([`Invocations`],
//! implementing [`nimbus_core::invocation::AsyncInvoker`]: durably queued events
//! tried with retries and sent to their destinations). Topics, the event bus and
//! streams will live here too.

pub mod invocations;
pub mod queue;
pub mod triggers;

pub use invocations::Invocations;
pub use queue::Queues;
pub use triggers::Triggers;
