//! The integration layer: how functions and apps talk to each other
//! asynchronously, on the data layer's engine (its own tables in the node's
//! database). It owns message queues ([`Queues`], implementing
//! [`nimbus_core::queue::QueueService`]), queue triggers ([`Triggers`]: pollers
//! that deliver batches to functions), and async invocations ([`Invocations`],
//! implementing [`nimbus_core::invocation::AsyncInvoker`]: durably queued events
//! tried with retries and sent to their destinations), and the event bus
//! ([`Bus`], implementing [`nimbus_core::bus::EventBus`]: rules matched by
//! pattern, deliveries to queues and functions through an outbox), and change
//! data capture ([`Changes`]: store change feeds into the bus and to change
//! triggers). Topics and streams will live here too.

pub mod bus;
pub mod changes;
pub mod invocations;
pub mod queue;
pub mod triggers;

pub use bus::Bus;
pub use changes::Changes;
pub use invocations::Invocations;
pub use queue::Queues;
pub use triggers::Triggers;
