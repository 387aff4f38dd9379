//! The processing layer: what runs on a clock or a state machine, on the data
//! layer's engine (its own tables in the node's database), reaching functions
//! and platform services only through core's ports. It owns schedules
//! ([`Schedules`], implementing [`nimbus_core::schedule::ScheduleService`]);
//! workflows will live here too.

pub mod schedules;

pub use schedules::{Schedules, Targets};
