//! `wasi:keyvalue` (store, atomics, batch) and the `nimbus:data/kv` extensions,
//! over the node's [`KvStore`](nimbus_core::data::KvStore) port. A bucket handle
//! is a granted store's name; reads are synchronous calls, writes await
//! durability.

use std::sync::Arc;

use bytes::Bytes;
use nimbus_core::app::StoreKind;
use nimbus_core::data::{DataError, SetOptions, limits};
use wasmtime::component::Resource;

use super::HostState;
use super::data::bindings::nimbus::data::kv as ext;
use super::data::bindings::wasi::keyvalue::{atomics, batch, store};
use super::data::{DataCtx, WitError, to_wit};

/// An open `wasi:keyvalue` bucket: a store the function is granted.
pub struct Bucket {
    name: Arc<str>,
    /// `list-keys` cursors are numbers; they index the last keys of pages given out.
    cursors: Vec<String>,
}

type WasiResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn to_wasi(err: DataError) -> store::Error {
    match err {
        DataError::NotGranted { .. } => store::Error::AccessDenied,
        DataError::NoSuchStore { .. } => store::Error::NoSuchStore,
        other => store::Error::Other(other.to_string()),
    }
}

impl HostState {
    fn bucket_name(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<str>> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

impl DataCtx {
    async fn kv_set(
        &self,
        name: &str,
        key: &str,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<u64, DataError> {
        let store = self.granted(StoreKind::Kv, name)?;
        self.ports
            .kv
            .set(store, key, Bytes::from(value), options)
            .await
    }
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> WasiResult<Resource<Bucket>> {
        if let Err(e) = self.data.granted(StoreKind::Kv, &identifier) {
            return Ok(Err(to_wasi(e)));
        }
        let bucket = Bucket {
            name: identifier.into(),
            cursors: Vec::new(),
        };
        Ok(Ok(self.table.push(bucket)?))
    }
}

impl store::HostBucket for HostState {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> WasiResult<Option<Vec<u8>>> {
        let name = self.bucket_name(&bucket)?;
        let result = self
            .data
            .granted(StoreKind::Kv, &name)
            .and_then(|store| self.data.ports.kv.get(store, &key));
        Ok(result.map(|e| e.map(|e| e.value.to_vec())).map_err(to_wasi))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> WasiResult<()> {
        let name = self.bucket_name(&bucket)?;
        let result = self
            .data
            .kv_set(&name, &key, value, SetOptions::default())
            .await;
        Ok(result.map(drop).map_err(to_wasi))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> WasiResult<()> {
        let name = self.bucket_name(&bucket)?;
        let result = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => self.data.ports.kv.delete_many(store, vec![key]).await,
            Err(e) => Err(e),
        };
        Ok(result.map(drop).map_err(to_wasi))
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> WasiResult<bool> {
        let name = self.bucket_name(&bucket)?;
        let result = self
            .data
            .granted(StoreKind::Kv, &name)
            .and_then(|store| self.data.ports.kv.get(store, &key));
        Ok(result.map(|e| e.is_some()).map_err(to_wasi))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> WasiResult<store::KeyResponse> {
        let name = self.bucket_name(&bucket)?;
        let after = match cursor {
            None | Some(0) => None,
            Some(n) => match self.table.get(&bucket)?.cursors.get(n as usize - 1) {
                Some(key) => Some(key.clone()),
                None => {
                    return Ok(Err(store::Error::Other(format!("unknown cursor {n}"))));
                }
            },
        };
        let page = match self.data.granted(StoreKind::Kv, &name).and_then(|store| {
            self.data
                .ports
                .kv
                .list(store, "", after.as_deref(), limits::MAX_PAGE)
        }) {
            Ok(page) => page,
            Err(e) => return Ok(Err(to_wasi(e))),
        };
        let cursor = match page.cursor {
            Some(last) => {
                let cursors = &mut self.table.get_mut(&bucket)?.cursors;
                cursors.push(last);
                Some(cursors.len() as u64)
            }
            None => None,
        };
        Ok(Ok(store::KeyResponse {
            keys: page.keys,
            cursor,
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> WasiResult<u64> {
        let name = self.bucket_name(&bucket)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(store::Error::Other(format!(
                "delta {delta} is too large"
            ))));
        };
        let result = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => self.data.ports.kv.increment(store, &key, delta).await,
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok(n) if n >= 0 => Ok(n as u64),
            Ok(n) => Err(store::Error::Other(format!(
                "`{key}` is {n}; use nimbus:data/kv.increment-by for signed values"
            ))),
            Err(e) => Err(to_wasi(e)),
        })
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> WasiResult<Vec<Option<(String, Vec<u8>)>>> {
        let name = self.bucket_name(&bucket)?;
        let store = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => store,
            Err(e) => return Ok(Err(to_wasi(e))),
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.data.ports.kv.get(store, &key) {
                Ok(entry) => out.push(entry.map(|e| (key, e.value.to_vec()))),
                Err(e) => return Ok(Err(to_wasi(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> WasiResult<()> {
        let name = self.bucket_name(&bucket)?;
        let result = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => {
                let entries = key_values
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect();
                self.data.ports.kv.set_many(store, entries).await
            }
            Err(e) => Err(e),
        };
        Ok(result.map_err(to_wasi))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> WasiResult<()> {
        let name = self.bucket_name(&bucket)?;
        let result = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => self.data.ports.kv.delete_many(store, keys).await,
            Err(e) => Err(e),
        };
        Ok(result.map(drop).map_err(to_wasi))
    }
}

type ExtResult<T> = wasmtime::Result<Result<T, WitError>>;

impl ext::Host for HostState {
    fn get_entry(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> ExtResult<Option<ext::Entry>> {
        let name = self.bucket_name(&bucket)?;
        let result = self
            .data
            .granted(StoreKind::Kv, &name)
            .and_then(|store| self.data.ports.kv.get(store, &key));
        Ok(result
            .map(|e| {
                e.map(|e| ext::Entry {
                    value: e.value.to_vec(),
                    version: e.version,
                    expires_at: e.expires_at,
                })
            })
            .map_err(to_wit))
    }

    async fn set_with(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        options: ext::SetOptions,
    ) -> ExtResult<u64> {
        let name = self.bucket_name(&bucket)?;
        let options = SetOptions {
            ttl: options.ttl_ms.map(std::time::Duration::from_millis),
            if_version: options.if_version,
        };
        Ok(self
            .data
            .kv_set(&name, &key, value, options)
            .await
            .map_err(to_wit))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> ExtResult<ext::KeyPage> {
        let name = self.bucket_name(&bucket)?;
        let result = self.data.granted(StoreKind::Kv, &name).and_then(|store| {
            self.data
                .ports
                .kv
                .list(store, &prefix, cursor.as_deref(), limit as usize)
        });
        Ok(result
            .map(|p| ext::KeyPage {
                keys: p.keys,
                cursor: p.cursor,
            })
            .map_err(to_wit))
    }

    async fn increment_by(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> ExtResult<i64> {
        let name = self.bucket_name(&bucket)?;
        let result = match self.data.granted(StoreKind::Kv, &name) {
            Ok(store) => self.data.ports.kv.increment(store, &key, delta).await,
            Err(e) => Err(e),
        };
        Ok(result.map_err(to_wit))
    }
}
