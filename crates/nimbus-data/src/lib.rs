//! The storage engine: one data dir holding an embedded SQLite database (WAL) for
//! records, and plain files for large bodies (component bytes, compiled artifacts,
//! bucket objects).
//!
//! Services build their own tables on [`Database`] (each with its own migrations)
//! and their files on [`FileStore`]; no service reads another's tables.

pub mod blobs;
pub mod catalog;
mod db;
pub mod docs;
mod files;
pub mod kv;
mod prefix;
mod service;

pub use blobs::Blobs;
pub use catalog::{Catalog, StoreInfo};
pub use db::{AfterCommit, Database, DbError, Durability};
pub use files::{FileStore, sha256_hex, write_atomic};
pub use service::{DataPortSet, DataService, ports};
