//! End-to-end tests: the real `nimbus` binary on free loopback ports.

mod async_invoke;
mod bus;
mod changes;
mod data;
mod deploy;
mod diagram;
mod events;
mod gateway;
mod hello_example;
mod limits;
mod logs;
mod manifest_errors;
mod metrics;
mod queues;
mod schedules;
mod shop_example;
mod support;
mod topics;
mod triggers;
mod usage;
