//! Buckets: the embedded object store behind [`BlobStore`].
//!
//! Object bytes live in immutable files ([`files`]); SQLite holds which file is
//! each key's current one, with its metadata. A write streams its body to a new
//! file, makes it durable, and only then switches the key's row to it and
//! appends the change event, in one transaction. So a reader sees the old object
//! or the new one, the feed holds exactly the committed writes, and a crash at
//! any point leaves at worst an unreferenced file, which [`Blobs::open`] removes.
//!
//! The database is one connection behind a mutex: it is held only for the short
//! statements, never while bytes move.

mod files;
mod list;
mod multipart;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine as _;
use nimbus_core::app::StoreKind;
use nimbus_core::data::{
    BlobStore, ByteRange, DataError, DataResult, ListObjects, ObjectMeta, ObjectPage, ObjectRead,
    PartInfo, PutOptions, StoreRef, limits, validate_object_key,
};
use nimbus_core::ports::Body;
use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::json;

use crate::catalog::{append_change, now_ms, store_exists};
use crate::{Catalog, Database, StoreInfo};
use files::Layout;

const MIGRATIONS: &[&str] = &["CREATE TABLE blob_objects (
        store_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        content_type TEXT,
        metadata TEXT NOT NULL,
        last_modified INTEGER NOT NULL,
        PRIMARY KEY (store_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE blob_uploads (
        id TEXT PRIMARY KEY,
        store_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        content_type TEXT,
        metadata TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX blob_uploads_by_store ON blob_uploads (store_id);
    CREATE INDEX blob_uploads_by_age ON blob_uploads (created_at);
    CREATE TABLE blob_parts (
        upload_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        md5 TEXT NOT NULL,
        PRIMARY KEY (upload_id, number)
    ) WITHOUT ROWID;"];

/// The columns [`meta_from_row`] reads, in its order.
const OBJECT_COLUMNS: &str = "key, size, etag, content_type, metadata, last_modified";

const CREATED: &str = "nimbus.blob.created";
const DELETED: &str = "nimbus.blob.deleted";

/// The embedded bucket backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Blobs {
    catalog: Catalog,
    db: Database,
    layout: Layout,
}

impl Blobs {
    /// `dir` is DATA_DIR/blobs. Runs migrations (owner "data.blobs"), removes temp files and
    /// files no row references (left by a crash between writing a file and committing its row),
    /// and expired multipart uploads.
    pub fn open(catalog: Catalog, dir: PathBuf) -> Result<Self, DataError> {
        let db = catalog.db().clone();
        db.migrate("data.blobs", MIGRATIONS)
            .map_err(DataError::storage)?;
        std::fs::create_dir_all(&dir).map_err(DataError::storage)?;
        let blobs = Self {
            catalog,
            db: db.clone(),
            layout: Layout::new(dir),
        };
        let cutoff = multipart::expiry_cutoff();
        let (expired, _) = db
            .call_blocking(|conn| Ok(multipart::take_expired(conn, cutoff)))
            .map_err(DataError::storage)??;
        // The expired uploads' part files are now unreferenced: the sweep takes them.
        let referenced = db
            .call_blocking(|conn| Ok(referenced_files(conn)))
            .map_err(DataError::storage)??;
        let removed = blobs
            .layout
            .sweep(&referenced)
            .map_err(DataError::storage)?;
        if expired > 0 || removed > 0 {
            tracing::info!(
                expired_uploads = expired,
                removed_files = removed,
                "bucket recovery"
            );
        }
        Ok(blobs)
    }

    /// Deletes every object, upload and change event of the store, and the store itself
    /// (Catalog::remove_in in the same transaction, then files, then catalog.forget).
    pub async fn drop_store(&self, store: &StoreInfo) -> DataResult<()> {
        let info = store.clone();
        self.with_db(move |conn| {
            let tx = conn.transaction().or_storage()?;
            tx.execute(
                "DELETE FROM blob_parts WHERE upload_id IN
                 (SELECT id FROM blob_uploads WHERE store_id = ?1)",
                [info.id],
            )
            .or_storage()?;
            tx.execute("DELETE FROM blob_uploads WHERE store_id = ?1", [info.id])
                .or_storage()?;
            tx.execute("DELETE FROM blob_objects WHERE store_id = ?1", [info.id])
                .or_storage()?;
            Catalog::remove_in(&tx, &info).or_storage()?;
            tx.commit().or_storage()
        })
        .await?;
        let dir = self.layout.store_dir(store.id);
        let removed = files::blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        })
        .await;
        if let Err(err) = removed {
            // The rows are gone, so the next start's sweep removes what is left.
            tracing::warn!(store = %store.source(), "cannot remove the bucket's files: {err}");
        }
        self.catalog.forget(store);
        Ok(())
    }

    /// (objects, total bytes) of a store.
    pub async fn stats(&self, store: &StoreInfo) -> DataResult<(u64, u64)> {
        let id = store.id;
        self.with_db(move |conn| {
            conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blob_objects WHERE store_id = ?1",
                [id],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            )
            .or_storage()
        })
        .await
    }

    /// Removes multipart uploads older than MULTIPART_EXPIRY with their part files; returns how many.
    pub async fn expire_uploads(&self) -> DataResult<usize> {
        let cutoff = multipart::expiry_cutoff();
        let (count, parts) = self
            .with_db(move |conn| multipart::take_expired(conn, cutoff))
            .await?;
        let paths = parts
            .iter()
            .map(|(store, name)| self.layout.file(*store, name))
            .collect();
        self.remove_files(paths).await;
        Ok(count)
    }

    fn bucket(&self, store: StoreRef<'_>) -> DataResult<StoreInfo> {
        self.catalog.lookup(StoreKind::Buckets, store)
    }

    /// Runs `f` on the database thread; `f` returns the operation's own errors.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> DataResult<T> + Send + 'static,
    ) -> DataResult<T> {
        self.db
            .call(move |conn| Ok(f(conn)))
            .await
            .map_err(DataError::storage)?
    }

    async fn find(&self, store: &StoreInfo, key: &str) -> DataResult<Option<(ObjectMeta, String)>> {
        let (id, key) = (store.id, key.to_string());
        self.with_db(move |conn| find(conn, id, &key)).await
    }

    /// Switches `meta.key` to the installed file `file` and records the change;
    /// then removes the file it replaced. If the commit fails, removes `file`.
    async fn commit(
        &self,
        store: &StoreInfo,
        meta: ObjectMeta,
        file: String,
    ) -> DataResult<ObjectMeta> {
        let (info, m, f) = (store.clone(), meta.clone(), file.clone());
        // Group commit: concurrent puts share one transaction and one fsync.
        let result = self
            .db
            .write(move |conn| commit_object(conn, &info, &m, &f).map(|old| (old, None)))
            .await;
        match result {
            Ok(old) => {
                if let Some(old) = old {
                    self.remove_files(vec![self.layout.file(store.id, &old)])
                        .await;
                }
                Ok(meta)
            }
            Err(err) => {
                self.remove_files(vec![self.layout.file(store.id, &file)])
                    .await;
                Err(err)
            }
        }
    }

    async fn remove_files(&self, paths: Vec<PathBuf>) {
        if !paths.is_empty() {
            let _ = tokio::task::spawn_blocking(move || files::remove_all(&paths)).await;
        }
    }
}

#[async_trait]
impl BlobStore for Blobs {
    async fn put(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
        body: Body,
    ) -> DataResult<ObjectMeta> {
        let info = self.bucket(store)?;
        validate_object_key(key)?;
        check_options(&options)?;
        let received =
            files::receive(body, self.layout.temp(info.id)?, limits::MAX_OBJECT_BYTES).await?;
        check_digest(options.content_md5, &received.md5)?;
        let name = files::random_hex(16)?;
        let target = self.layout.file(info.id, &name);
        let temp = received.temp;
        files::blocking(move || temp.install(&target)).await?;
        let meta = ObjectMeta {
            key: key.to_string(),
            size: received.size,
            etag: hex::encode(received.md5),
            content_type: options.content_type,
            metadata: options.metadata,
            last_modified: now_ms(),
        };
        self.commit(&info, meta, name).await
    }

    async fn head(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<ObjectMeta>> {
        let info = self.bucket(store)?;
        validate_object_key(key)?;
        Ok(self.find(&info, key).await?.map(|(meta, _)| meta))
    }

    async fn get(
        &self,
        store: StoreRef<'_>,
        key: &str,
        range: Option<ByteRange>,
    ) -> DataResult<Option<ObjectRead>> {
        let info = self.bucket(store)?;
        validate_object_key(key)?;
        let mut retried = false;
        loop {
            let Some((meta, file)) = self.find(&info, key).await? else {
                return Ok(None);
            };
            let range = range.map(|r| r.resolve(meta.size)).transpose()?;
            let (first, len) = match range {
                Some((first, last)) => (first, last - first + 1),
                None => (0, meta.size),
            };
            match files::send(&self.layout.file(info.id, &file), first, len).await {
                Ok(body) => return Ok(Some(ObjectRead { meta, range, body })),
                // An overwrite or delete committed between reading the row and
                // opening its file: the row now names the current object.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !retried => {
                    retried = true;
                }
                Err(err) => return Err(DataError::storage(err)),
            }
        }
    }

    async fn delete(&self, store: StoreRef<'_>, key: &str) -> DataResult<bool> {
        let info = self.bucket(store)?;
        validate_object_key(key)?;
        let (s, k) = (info.clone(), key.to_string());
        let old = self
            .with_db(move |conn| {
                let tx = conn.transaction().or_storage()?;
                let old: Option<String> = tx
                    .query_row(
                        "SELECT file FROM blob_objects WHERE store_id = ?1 AND key = ?2",
                        (s.id, &k),
                        |row| row.get(0),
                    )
                    .optional()
                    .or_storage()?;
                if old.is_some() {
                    tx.execute(
                        "DELETE FROM blob_objects WHERE store_id = ?1 AND key = ?2",
                        (s.id, &k),
                    )
                    .or_storage()?;
                    append_change(&tx, &s, DELETED, &k, &json!({ "key": k })).or_storage()?;
                    tx.commit().or_storage()?;
                }
                Ok(old)
            })
            .await?;
        let Some(old) = old else { return Ok(false) };
        self.remove_files(vec![self.layout.file(info.id, &old)])
            .await;
        Ok(true)
    }

    async fn copy(
        &self,
        from: StoreRef<'_>,
        from_key: &str,
        to: StoreRef<'_>,
        to_key: &str,
    ) -> DataResult<ObjectMeta> {
        if from.app != to.app {
            return Err(DataError::Invalid(
                "objects can be copied only between buckets of the same app".into(),
            ));
        }
        let source = self.bucket(from)?;
        let target = self.bucket(to)?;
        validate_object_key(from_key)?;
        validate_object_key(to_key)?;
        let mut retried = false;
        let (meta, name) = loop {
            let Some((meta, file)) = self.find(&source, from_key).await? else {
                return Err(DataError::NotFound(format!(
                    "object `{from_key}` does not exist in bucket `{}`",
                    from.name
                )));
            };
            let name = files::random_hex(16)?;
            let src = self.layout.file(source.id, &file);
            let dst = self.layout.file(target.id, &name);
            let temp = self.layout.temp(target.id)?;
            let linked =
                tokio::task::spawn_blocking(move || files::link_or_copy(&src, &dst, &temp))
                    .await
                    .map_err(DataError::storage)?;
            match linked {
                Ok(()) => break (meta, name),
                // Replaced between reading the row and linking: read it again.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !retried => {
                    retried = true;
                }
                Err(err) => return Err(DataError::storage(err)),
            }
        };
        let meta = ObjectMeta {
            key: to_key.to_string(),
            last_modified: now_ms(),
            ..meta
        };
        self.commit(&target, meta, name).await
    }

    async fn list(&self, store: StoreRef<'_>, request: ListObjects) -> DataResult<ObjectPage> {
        let info = self.bucket(store)?;
        self.with_db(move |conn| list::list(conn, info.id, &request))
            .await
    }

    async fn create_multipart(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
    ) -> DataResult<String> {
        let info = self.bucket(store)?;
        validate_object_key(key)?;
        check_options(&options)?;
        self.create_upload(&info, key, options).await
    }

    async fn upload_part(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        part_number: u32,
        content_md5: Option<[u8; 16]>,
        body: Body,
    ) -> DataResult<PartInfo> {
        let info = self.bucket(store)?;
        self.store_part(&info, upload_id, part_number, content_md5, body)
            .await
    }

    async fn complete_multipart(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> DataResult<ObjectMeta> {
        let info = self.bucket(store)?;
        self.complete_upload(&info, upload_id, parts).await
    }

    async fn abort_multipart(&self, store: StoreRef<'_>, upload_id: &str) -> DataResult<()> {
        let info = self.bucket(store)?;
        self.abort_upload(&info, upload_id).await
    }
}

/// Upserts the object row and appends its change event, inside `tx`; returns
/// the file of the object it replaced.
fn commit_object(
    tx: &Connection,
    store: &StoreInfo,
    meta: &ObjectMeta,
    file: &str,
) -> DataResult<Option<String>> {
    // The store may have been dropped while the body streamed.
    if !store_exists(tx, store.id).or_storage()? {
        return Err(no_such_store(store));
    }
    let old: Option<String> = tx
        .query_row(
            "SELECT file FROM blob_objects WHERE store_id = ?1 AND key = ?2",
            (store.id, &meta.key),
            |row| row.get(0),
        )
        .optional()
        .or_storage()?;
    let metadata = serde_json::to_string(&meta.metadata).or_storage()?;
    tx.execute(
        "INSERT INTO blob_objects
           (store_id, key, file, size, etag, content_type, metadata, last_modified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (store_id, key) DO UPDATE SET
           file = excluded.file, size = excluded.size, etag = excluded.etag,
           content_type = excluded.content_type, metadata = excluded.metadata,
           last_modified = excluded.last_modified",
        rusqlite::params![
            store.id,
            meta.key,
            file,
            meta.size as i64,
            meta.etag,
            meta.content_type,
            metadata,
            meta.last_modified as i64,
        ],
    )
    .or_storage()?;
    let data = json!({
        "key": meta.key,
        "size": meta.size,
        "etag": meta.etag,
        "content_type": meta.content_type,
    });
    append_change(tx, store, CREATED, &meta.key, &data).or_storage()?;
    Ok(old)
}

fn find(conn: &Connection, store_id: i64, key: &str) -> DataResult<Option<(ObjectMeta, String)>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS}, file FROM blob_objects WHERE store_id = ?1 AND key = ?2"
        ))
        .or_storage()?;
    stmt.query_row((store_id, key), |row| {
        Ok((meta_from_row(row)?, row.get::<_, String>(6)?))
    })
    .optional()
    .or_storage()
}

/// An object's metadata from a row that starts with [`OBJECT_COLUMNS`].
fn meta_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectMeta> {
    let metadata: String = row.get(4)?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ObjectMeta {
        key: row.get(0)?,
        size: row.get::<_, i64>(1)? as u64,
        etag: row.get(2)?,
        content_type: row.get(3)?,
        metadata,
        last_modified: row.get::<_, i64>(5)? as u64,
    })
}

/// Every file a row refers to, as `(store id, name)`.
fn referenced_files(conn: &Connection) -> DataResult<HashSet<(i64, String)>> {
    let mut stmt = conn
        .prepare(
            "SELECT store_id, file FROM blob_objects
             UNION ALL
             SELECT u.store_id, p.file FROM blob_parts p JOIN blob_uploads u ON u.id = p.upload_id",
        )
        .or_storage()?;
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .or_storage()?
        .collect::<Result<_, _>>()
        .or_storage()
}

/// Content type and metadata travel as HTTP headers: bounded and printable.
fn check_options(options: &PutOptions) -> DataResult<()> {
    if let Some(ct) = &options.content_type
        && (ct.len() > 256 || ct.chars().any(char::is_control))
    {
        return Err(DataError::Invalid(format!(
            "content type {ct:?} is longer than 256 bytes or contains a control character"
        )));
    }
    let mut bytes = 0;
    for (name, value) in &options.metadata {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(DataError::Invalid(format!(
                "metadata name {name:?} is empty or contains a space or control character"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(DataError::Invalid(format!(
                "metadata `{name}` contains a control character"
            )));
        }
        bytes += name.len() + value.len();
    }
    if bytes > limits::MAX_METADATA_BYTES {
        return Err(DataError::TooLarge(format!(
            "metadata is {bytes} bytes; the limit is {}",
            limits::MAX_METADATA_BYTES
        )));
    }
    Ok(())
}

fn check_digest(expected: Option<[u8; 16]>, actual: &[u8; 16]) -> DataResult<()> {
    match expected {
        Some(expected) if &expected != actual => {
            let b64 = base64::engine::general_purpose::STANDARD;
            Err(DataError::BadDigest(format!(
                "the Content-MD5 `{}` does not match the body's MD5 `{}`",
                b64.encode(expected),
                b64.encode(actual)
            )))
        }
        _ => Ok(()),
    }
}

fn no_such_store(store: &StoreInfo) -> DataError {
    DataError::NoSuchStore {
        kind: store.kind,
        app: store.app.to_string(),
        name: store.name.to_string(),
    }
}

/// `?` for SQLite and I/O results: their errors are storage failures.
trait OrStorage<T> {
    fn or_storage(self) -> DataResult<T>;
}

impl<T, E: std::fmt::Display> OrStorage<T> for Result<T, E> {
    fn or_storage(self) -> DataResult<T> {
        self.map_err(DataError::storage)
    }
}
