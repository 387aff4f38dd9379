//! Edge: the HTTP API gateway. It selects an app by host name, routes by method
//! and path (parameters and a trailing wildcard), enforces the body limit, stamps
//! every response with an `x-request-id`, and hands the request to a function
//! through core's `Invoker` port, streaming bodies both ways.

mod body;
mod gateway;
mod routes;
mod server;

pub use gateway::{Gateway, GatewayConfig, ObjectAccess};
pub use server::serve;
