//! Host bindings of the Nimbus event-function world (`wit/event.wit`).

use nimbus_core::cloudevent::CloudEvent;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "nimbus:function/event-function",
        exports: { default: async },
    });
}

pub use bindings::EventFunction;
pub use bindings::EventFunctionIndices;
use bindings::nimbus::function::types::CloudEvent as WitEvent;

pub fn to_wit(event: CloudEvent) -> WitEvent {
    WitEvent {
        id: event.id,
        source: event.source,
        specversion: event.specversion,
        type_: event.ty,
        subject: event.subject,
        time: event.time,
        datacontenttype: event.datacontenttype,
        data: event.data,
        extensions: event.extensions.into_iter().collect(),
    }
}
