//! `nimbus:data/blobs` over the node's [`BlobStore`](nimbus_core::data::BlobStore)
//! port. Guests pass whole bodies (or ranges); the port streams them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use nimbus_core::app::StoreKind;
use nimbus_core::data::{ByteRange, DataError, ListObjects, ObjectMeta, PutOptions, limits};
use nimbus_core::ports::Body;

use super::HostState;
use super::data::bindings::nimbus::data::blobs as wit;
use super::data::{WitError, to_wit};

type BlobResult<T> = wasmtime::Result<Result<T, WitError>>;

fn to_wit_meta(meta: ObjectMeta) -> wit::ObjectMeta {
    wit::ObjectMeta {
        key: meta.key,
        size: meta.size,
        etag: meta.etag,
        content_type: meta.content_type,
        metadata: meta.metadata.into_iter().collect(),
        last_modified: meta.last_modified,
    }
}

async fn collect(body: Body) -> Result<Vec<u8>, DataError> {
    let bytes = body
        .collect()
        .await
        .map_err(|e| DataError::Storage(format!("reading the object failed: {e}")))?
        .to_bytes();
    Ok(bytes.to_vec())
}

impl wit::Host for HostState {
    async fn put(
        &mut self,
        bucket: String,
        key: String,
        body: Vec<u8>,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> BlobResult<wit::ObjectMeta> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            let options = PutOptions {
                content_type,
                metadata: metadata.into_iter().collect(),
                content_md5: None,
            };
            let body: Body = Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync();
            data.ports.blobs.put(store, &key, options, body).await
        }
        .await;
        Ok(result.map(to_wit_meta).map_err(to_wit))
    }

    async fn get(
        &mut self,
        bucket: String,
        key: String,
    ) -> BlobResult<Option<(wit::ObjectMeta, Vec<u8>)>> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            match data.ports.blobs.get(store, &key, None).await? {
                None => Ok(None),
                Some(read) => Ok(Some((to_wit_meta(read.meta), collect(read.body).await?))),
            }
        }
        .await;
        Ok(result.map_err(to_wit))
    }

    async fn get_range(
        &mut self,
        bucket: String,
        key: String,
        offset: u64,
        length: u64,
    ) -> BlobResult<Option<Vec<u8>>> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            if length == 0 {
                return Ok(data
                    .ports
                    .blobs
                    .head(store, &key)
                    .await?
                    .map(|_| Vec::new()));
            }
            let range = ByteRange::From {
                start: offset,
                end: Some(offset.saturating_add(length - 1)),
            };
            match data.ports.blobs.get(store, &key, Some(range)).await? {
                None => Ok(None),
                Some(read) => Ok(Some(collect(read.body).await?)),
            }
        }
        .await;
        Ok(result.map_err(to_wit))
    }

    async fn head(&mut self, bucket: String, key: String) -> BlobResult<Option<wit::ObjectMeta>> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            data.ports.blobs.head(store, &key).await
        }
        .await;
        Ok(result.map(|m| m.map(to_wit_meta)).map_err(to_wit))
    }

    async fn delete(&mut self, bucket: String, key: String) -> BlobResult<bool> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            data.ports.blobs.delete(store, &key).await
        }
        .await;
        Ok(result.map_err(to_wit))
    }

    async fn copy(
        &mut self,
        from_bucket: String,
        from_key: String,
        to_bucket: String,
        to_key: String,
    ) -> BlobResult<wit::ObjectMeta> {
        let data = &self.data;
        let result = async {
            let from = data.granted(StoreKind::Buckets, &from_bucket)?;
            let to = data.granted(StoreKind::Buckets, &to_bucket)?;
            data.ports.blobs.copy(from, &from_key, to, &to_key).await
        }
        .await;
        Ok(result.map(to_wit_meta).map_err(to_wit))
    }

    async fn list_objects(
        &mut self,
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> BlobResult<wit::ObjectPage> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Buckets, &bucket)?;
            let request = ListObjects {
                prefix,
                delimiter,
                cursor,
                limit: Some((limit as usize).min(limits::MAX_PAGE)),
            };
            data.ports.blobs.list(store, request).await
        }
        .await;
        Ok(result
            .map(|page| wit::ObjectPage {
                objects: page.objects.into_iter().map(to_wit_meta).collect(),
                common_prefixes: page.common_prefixes,
                cursor: page.cursor,
            })
            .map_err(to_wit))
    }
}
