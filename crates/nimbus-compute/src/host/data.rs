//! The platform services as guests see them: bindings of the `platform` world
//! (`wasi:keyvalue`, `nimbus:data`, `nimbus:integration`; `wit/`), the
//! per-instance grants, and the mapping of data errors into the interfaces' error
//! types. Each interface's calls live in its own module (`kv`, `docs`, `blobs`,
//! `queues`, `events`); every one checks the grant before touching a port.

use std::sync::Arc;

use nimbus_core::app::{Grant, StoreKind};
use nimbus_core::data::{BlobStore, DataError, DocStore, KvStore, StoreRef};
use nimbus_core::queue::QueueService;

use super::LogTag;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "nimbus:function/platform",
        imports: {
            "wasi:keyvalue/store.[method]bucket.get": trappable,
            "wasi:keyvalue/store.[method]bucket.exists": trappable,
            "wasi:keyvalue/store.[method]bucket.list-keys": trappable,
            "wasi:keyvalue/store.open": trappable,
            "wasi:keyvalue/batch.get-many": trappable,
            "nimbus:data/kv.get-entry": trappable,
            "nimbus:data/kv.list-keys": trappable,
            default: async | trappable,
        },
        with: {
            "wasi:keyvalue/store.bucket": crate::host::kv::Bucket,
        },
    });
}

pub(crate) use bindings::nimbus::data::types::Error as WitError;

/// The data services a node gives its functions.
#[derive(Clone)]
pub struct DataPorts {
    pub kv: Arc<dyn KvStore>,
    pub docs: Arc<dyn DocStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queues: Arc<dyn QueueService>,
    pub topics: Arc<dyn nimbus_core::topic::TopicService>,
    pub bus: Arc<dyn nimbus_core::bus::EventBus>,
}

/// What one instance may touch, and through which ports.
pub struct DataCtx {
    pub(crate) ports: DataPorts,
    pub(crate) app: Arc<str>,
    grants: Arc<[Grant]>,
    pub(crate) tag: LogTag,
}

impl DataCtx {
    pub fn new(ports: DataPorts, app: Arc<str>, grants: Arc<[Grant]>, tag: LogTag) -> Self {
        Self {
            ports,
            app,
            grants,
            tag,
        }
    }

    /// The store if the function's `uses` grants it; otherwise the denial, which
    /// also goes to the function's log so the owner sees why a call failed.
    pub(crate) fn granted<'a>(
        &'a self,
        kind: StoreKind,
        name: &'a str,
    ) -> Result<StoreRef<'a>, DataError> {
        if self.grants.iter().any(|g| g.kind == kind && g.name == name) {
            return Ok(StoreRef::new(&self.app, name));
        }
        let err = DataError::NotGranted {
            kind,
            name: name.to_string(),
            function: self.tag.function().to_string(),
        };
        tracing::warn!(
            target: "guest",
            app = self.tag.app(),
            function = self.tag.function(),
            request_id = %self.tag.request_id(),
            "{err}"
        );
        Err(err)
    }
}

/// A data error as the `nimbus:data` interfaces report it.
pub(crate) fn to_wit(err: DataError) -> WitError {
    let message = err.to_string();
    match err {
        DataError::NotGranted { .. } => WitError::NotGranted(message),
        DataError::NoSuchStore { .. } => WitError::NoSuchStore(message),
        DataError::NotFound(_) => WitError::NotFound(message),
        DataError::Conflict(_) => WitError::Conflict(message),
        DataError::Invalid(_) | DataError::BadDigest(_) | DataError::Range(_) => {
            WitError::Invalid(message)
        }
        // The interfaces have no quota case; the message names the quota.
        DataError::TooLarge(_) | DataError::Quota(_) => WitError::TooLarge(message),
        DataError::Storage(_) => WitError::Storage(message),
    }
}

impl bindings::nimbus::data::types::Host for super::HostState {}
