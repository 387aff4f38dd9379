//! The Nimbus guest SDK: what a function reaches in the node's data layer.
//!
//! - [`kv`]: key-value stores over the standard `wasi:keyvalue` interfaces, with
//!   Nimbus's versions, compare-and-swap, TTLs and prefix listing.
//! - [`docs`]: document stores: JSON documents with revisions and queries.
//! - [`blobs`]: buckets of objects.
//! - [`queues`]: message queues (send, receive with long polling, delete).
//! - [`events`]: topics (publish) and the event bus (put events).
//!
//! A function may touch only the stores its manifest entry names in `uses`:
//!
//! ```toml
//! [functions.api]
//! source = "target/wasm32-wasip2/release/api.wasm"
//! uses = ["kv:carts", "docs:orders", "bucket:images", "queue:orders"]
//! ```
//!
//! Any other store answers [`Error::NotGranted`].
//!
//! ```no_run
//! use nimbus_sdk::{kv, docs};
//! # fn main() -> Result<(), nimbus_sdk::Error> {
//! let carts = kv::Store::open("carts")?;
//! carts.set("cart-1", b"{\"items\": 2}")?;
//! let count = carts.increment("visits", 1)?;
//!
//! let orders = docs::Collection::new("orders");
//! orders.put("o-1", &serde_json::json!({"status": "paid", "total": 120}))?;
//! let paid = orders
//!     .query()
//!     .filter(serde_json::json!({"status": "paid"}))
//!     .order_by("-total")
//!     .limit(10)
//!     .run()?;
//! # let _ = (count, paid);
//! # Ok(())
//! # }
//! ```

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "nimbus:function/platform",
        generate_all,
    });
}

pub mod blobs;
pub mod docs;
mod error;
pub mod events;
pub mod kv;
pub mod queues;

pub use error::Error;

/// The result of every SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
