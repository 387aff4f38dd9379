//! The per-instance host state: WASI context (env from the manifest, no
//! filesystem, no sockets), wasi:http with the outbound allow-list, memory limits,
//! and guest stdout/stderr routed to the node's log.

mod blobs;
mod data;
mod docs;
mod events;
mod kv;
mod log;
mod outbound;
mod queues;

use std::sync::Arc;

use nimbus_core::app::{Function, Grant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use data::{DataCtx, DataPorts};
use log::GuestLog;
pub use log::{LineBudget, LogTag};
use outbound::Outbound;

pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: Outbound,
    data: DataCtx,
    pub limit: crate::pool::MemoryLimit,
}

impl HostState {
    pub fn new(
        app: &Arc<str>,
        function: &Function,
        grants: &Arc<[Grant]>,
        ports: &DataPorts,
        tag: LogTag,
    ) -> Self {
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
                app: app.to_string(),
                function: function.name.clone(),
                tag: tag.clone(),
            },
            data: DataCtx::new(ports.clone(), app.clone(), grants.clone(), tag),
            limit: crate::pool::MemoryLimit {
                max_bytes: (function.memory_mb as usize) << 20,
                exceeded: false,
            },
        }
    }
}

/// Adds the data layer's interfaces (`wasi:keyvalue`, `nimbus:data`) to a linker.
pub fn add_data_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    data::bindings::Platform::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |state| state,
    )
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
