//! Management & Ops: the admin API (`/v1/`, bearer token), the app registry
//! (deployments stored durably in the node's database) and node status.
//!
//! Ops decides *what* runs (validated manifests and component digests); it asks
//! the node, through the [`Platform`] trait, to make it run.

mod admin;
mod control;
mod registry;
mod token;

pub use admin::{router, serve};
pub use control::{Control, ControlError, Platform};
pub use token::load_or_create_token;
