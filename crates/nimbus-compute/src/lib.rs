//! Compute: WebAssembly functions on wasmtime (component model, WASI 0.2).
//!
//! One shared [`wasmtime::Engine`] with the pooling allocator and copy-on-write
//! memory images; components compiled once and cached on disk by content hash;
//! an `InstancePre` and a pool of warm instances per function (Lambda execution
//! environments: one request at a time, reused, discarded after a trap or timeout);
//! limits per function (memory, timeout by epoch interruption, concurrency, warm
//! minimum, idle scale-to-zero). [`Runtime`] implements core's `Invoker` port.

mod compile;
mod engine;
mod event;
mod host;
mod invoke;
mod pool;
mod runtime;

pub use compile::{ComponentKind, check_component_header};
pub use host::DataPorts;
pub use runtime::{Prepared, Runtime, RuntimeConfig};

/// The error type of compute operations (wasmtime's).
pub use wasmtime::Error;
