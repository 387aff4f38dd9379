//! The integration layer: how functions and apps talk to each other
//! asynchronously, on the data layer's engine (its own tables in the node's
//! database). It owns message queues ([`Queues`], implementing
//! [`nimbus_core::queue::QueueService`]), queue triggers ([`Triggers`]: pollers
//! that deliver batches to functions), and async invocations ([`Invocations`],
//! implementing [`nimbus_core::invocation::AsyncInvoker`]: durably queued events
//! tried with retries and sent to their destinations), and the event bus
//! ([`Bus`], implementing [`nimbus_core::bus::EventBus`]: rules matched by
//! pattern, deliveries to queues and functions through an outbox). Topics and
//! streams will live here too.

pub mod bus;
pub mod invocations;
pub mod queue;
pub mod triggers;

pub use bus::Bus;
pub use invocations::Invocations;
pub use queue::Queues;
pub use triggers::Triggers;
