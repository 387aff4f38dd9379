//! Management & Ops: the admin API (`/v1/`, bearer token) with the data API
//! (`/v1/apps/{app}/kv|docs|buckets/…`), the app registry
//! (deployments stored durably in the node's database), node status, and the
//! function logs ([`logs`]), the Prometheus exposition ([`metrics`]), and
//! durable usage meters with the cost report ([`usage`]).
//!
//! Ops decides *what* runs (validated manifests and component digests); it asks
//! the node, through the [`Platform`] trait, to make it run.

mod admin;
mod control;
pub mod data_api;
pub mod diagram;
mod events_api;
pub mod logs;
pub mod metered;
pub mod metrics;
mod queue_api;
mod registry;
mod token;
mod topics_api;
pub mod usage;

pub use admin::{router, serve};
pub use control::{Control, ControlError, Platform};
pub use data_api::DataApi;
pub use token::{URL_KEY_FILE, load_or_create_secret, load_or_create_token};
