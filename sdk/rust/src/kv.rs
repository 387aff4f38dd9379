//! Key-value stores (`[kv.NAME]`). The basic calls are `wasi:keyvalue`'s, so code
//! written for other wasi:keyvalue hosts works unchanged; versions, TTLs,
//! compare-and-swap and prefix listing are Nimbus extensions.

use std::time::Duration;

use crate::Result;
use crate::bindings::nimbus::data::kv as ext;
use crate::bindings::wasi::keyvalue::{atomics, batch, store};

/// A key-value store the function is granted.
pub struct Store {
    bucket: store::Bucket,
}

/// A value with its version (1 for a new key, +1 per write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
    /// Unix milliseconds after which the entry is gone.
    pub expires_at: Option<u64>,
}

/// A key with its value.
pub type KeyValue = (String, Vec<u8>);

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Pass to [`Store::list`] for the next page; `None` on the last page.
    pub cursor: Option<String>,
}

impl Store {
    /// Opens store `name` (declared as `[kv.NAME]`, granted as `"kv:NAME"`).
    pub fn open(name: &str) -> Result<Self> {
        Ok(Self {
            bucket: store::open(name)?,
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // Through the Nimbus call (same result as `wasi:keyvalue` `get`), whose
        // errors say what kind they are.
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// The value with its version and expiry.
    pub fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(ext::get_entry(&self.bucket, key)?.map(|e| Entry {
            value: e.value,
            version: e.version,
            expires_at: e.expires_at,
        }))
    }

    /// Sets a value; returns its new version.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<u64> {
        let options = ext::SetOptions {
            ttl_ms: None,
            if_version: None,
        };
        Ok(ext::set_with(&self.bucket, key, value.as_ref(), options)?)
    }

    /// The handle of the standard `wasi:keyvalue` interfaces, for code written
    /// against them.
    pub fn wasi_bucket(&self) -> &store::Bucket {
        &self.bucket
    }

    /// Sets a value that expires after `ttl`; returns its version.
    pub fn set_with_ttl(&self, key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<u64> {
        let options = ext::SetOptions {
            ttl_ms: Some(ttl.as_millis() as u64),
            if_version: None,
        };
        Ok(ext::set_with(&self.bucket, key, value.as_ref(), options)?)
    }

    /// Compare-and-swap: writes only if the key is at `version` (0: only if it does
    /// not exist), else [`crate::Error::Conflict`]. Returns the new version.
    pub fn set_if_version(&self, key: &str, value: impl AsRef<[u8]>, version: u64) -> Result<u64> {
        let options = ext::SetOptions {
            ttl_ms: None,
            if_version: Some(version),
        };
        Ok(ext::set_with(&self.bucket, key, value.as_ref(), options)?)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        Ok(self.bucket.delete(key)?)
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.bucket.exists(key)?)
    }

    /// Keys starting with `prefix`, in byte order, at most `limit` (1 to 1000).
    pub fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KeyPage> {
        let page = ext::list_keys(&self.bucket, prefix, cursor, limit)?;
        Ok(KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    /// Every key starting with `prefix`.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(prefix, cursor.as_deref(), 1000)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the decimal integer at `key` (absent = 0); returns the sum.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        // Nimbus's signed form; `wasi:keyvalue/atomics.increment` takes only
        // unsigned deltas and reports errors without their kind.
        Ok(ext::increment_by(&self.bucket, key, delta)?)
    }

    /// The standard `wasi:keyvalue/atomics.increment`.
    pub fn increment_unsigned(&self, key: &str, delta: u64) -> Result<u64> {
        Ok(atomics::increment(&self.bucket, key, delta)?)
    }

    /// The values of `keys`, in order (`None` for absent keys).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>> {
        Ok(batch::get_many(&self.bucket, keys)?)
    }

    /// Sets several values in one durable write.
    pub fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<()> {
        Ok(batch::set_many(&self.bucket, entries)?)
    }

    pub fn delete_many(&self, keys: &[String]) -> Result<()> {
        Ok(batch::delete_many(&self.bucket, keys)?)
    }
}
