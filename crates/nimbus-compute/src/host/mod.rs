//! The per-instance host state: WASI context (env from the manifest, no
//! filesystem, no sockets), wasi:http with the outbound allow-list, memory limits,
//! and guest stdout/stderr routed to the node's log.

mod log;
mod outbound;

use std::sync::Arc;

use nimbus_core::app::Function;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use log::GuestLog;
pub use log::LogTag;
use outbound::Outbound;

pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: Outbound,
    pub limit: crate::pool::MemoryLimit,
}

impl HostState {
    pub fn new(app: &str, function: &Function, tag: LogTag) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestLog::new(tag.clone(), "stdout"))
            .stderr(GuestLog::new(tag.clone(), "stderr"));
        for (k, v) in &function.env {
            wasi.env(k, v);
        }
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: Outbound {
                allowed: Arc::new(function.allowed_outbound_hosts.clone()),
                app: app.into(),
                function: function.name.clone(),
                tag,
            },
            limit: crate::pool::MemoryLimit {
                max_bytes: (function.memory_mb as usize) << 20,
                exceeded: false,
            },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
