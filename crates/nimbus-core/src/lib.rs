//! The Nimbus core model: the manifest (`nimbus.toml`) and its resolution into a
//! locked [`app::App`], CloudEvents, the admin API's wire types, deployment plans,
//! and the port traits that the layers call each other through.
//!
//! This crate does no I/O and starts no runtime: every other crate may depend on it,
//! and it depends on none of them.

pub mod api;
pub mod app;
pub mod bus;
pub mod cloudevent;
pub mod cron;
pub mod data;
pub mod duration;
pub mod invocation;
pub mod manifest;
pub mod meter;
pub mod pattern;
pub mod plan;
pub mod ports;
pub mod queue;
pub mod schedule;
pub mod topic;
pub mod transform;
