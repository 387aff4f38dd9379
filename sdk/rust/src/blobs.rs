//! Buckets (`[buckets.NAME]`): objects with content types, metadata and ETags.
//! Bodies cross into the function whole (or as ranges); keep large objects
//! moving through the API, the CLI or signed URLs instead.

use crate::Result;
use crate::bindings::nimbus::data::blobs as wit;

pub use wit::ObjectMeta;

/// A bucket the function is granted (`"bucket:NAME"`).
pub struct Bucket {
    name: String,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ObjectPage {
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter: the "folders" under the prefix.
    pub common_prefixes: Vec<String>,
    pub cursor: Option<String>,
}

impl Bucket {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// Stores `body` under `key`, atomically replacing any object there.
    pub fn put(&self, key: &str, body: &[u8], content_type: Option<&str>) -> Result<ObjectMeta> {
        Ok(wit::put(&self.name, key, body, content_type, &[])?)
    }

    /// Like [`Bucket::put`], with user metadata.
    pub fn put_with_metadata(
        &self,
        key: &str,
        body: &[u8],
        content_type: Option<&str>,
        metadata: &[(String, String)],
    ) -> Result<ObjectMeta> {
        Ok(wit::put(&self.name, key, body, content_type, metadata)?)
    }

    pub fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        Ok(wit::get(&self.name, key)?)
    }

    /// `length` bytes from `offset` (fewer at the end of the object).
    pub fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Option<Vec<u8>>> {
        Ok(wit::get_range(&self.name, key, offset, length)?)
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(wit::head(&self.name, key)?)
    }

    /// Returns whether the object existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        Ok(wit::delete(&self.name, key)?)
    }

    /// Copies object `key` to `to_key` in bucket `to` (of the same app).
    pub fn copy_to(&self, key: &str, to: &Bucket, to_key: &str) -> Result<ObjectMeta> {
        Ok(wit::copy(&self.name, key, &to.name, to_key)?)
    }

    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage> {
        let page = wit::list_objects(&self.name, prefix, delimiter, cursor, limit)?;
        Ok(ObjectPage {
            objects: page.objects,
            common_prefixes: page.common_prefixes,
            cursor: page.cursor,
        })
    }
}
