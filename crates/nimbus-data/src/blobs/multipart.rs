//! Multipart uploads: parts stream to their own files as they arrive, and
//! completing concatenates the chosen parts into one new object file that is
//! committed exactly like a put. An upload row owns its part rows and files
//! until it is completed, aborted or expired.

use md5::{Digest, Md5};
use nimbus_core::data::{
    DataError, DataResult, MULTIPART_EXPIRY, ObjectMeta, PartInfo, PutOptions, limits,
};
use nimbus_core::ports::Body;
use rusqlite::{Connection, OptionalExtension, Transaction};

use super::files;
use super::{Blobs, OrStorage, check_digest, commit_object, no_such_store};
use crate::StoreInfo;
use crate::catalog::{now_ms, store_exists};

/// A stored part: `(number, file, size, hex md5)`.
type PartRow = (u32, String, u64, String);

impl Blobs {
    pub(super) async fn create_upload(
        &self,
        store: &StoreInfo,
        key: &str,
        options: PutOptions,
    ) -> DataResult<String> {
        let id = files::random_hex(16)?;
        let metadata = serde_json::to_string(&options.metadata).or_storage()?;
        let (info, upload, key) = (store.clone(), id.clone(), key.to_string());
        self.with_db(move |conn| {
            if !store_exists(conn, info.id).or_storage()? {
                return Err(no_such_store(&info));
            }
            conn.execute(
                "INSERT INTO blob_uploads (id, store_id, key, content_type, metadata, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                (
                    &upload,
                    info.id,
                    &key,
                    &options.content_type,
                    &metadata,
                    now_ms() as i64,
                ),
            )
            .or_storage()?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    pub(super) async fn store_part(
        &self,
        store: &StoreInfo,
        upload_id: &str,
        number: u32,
        content_md5: Option<[u8; 16]>,
        body: Body,
    ) -> DataResult<PartInfo> {
        if !(1..=limits::MAX_PARTS).contains(&number) {
            return Err(DataError::Invalid(format!(
                "part number {number} is not between 1 and {}",
                limits::MAX_PARTS
            )));
        }
        // Fail before receiving the body when the upload does not exist.
        let (id, upload) = (store.id, upload_id.to_string());
        self.with_db(move |conn| upload_key(conn, id, &upload).map(drop))
            .await?;

        let received =
            files::receive(body, self.layout.temp(store.id)?, limits::MAX_OBJECT_BYTES).await?;
        check_digest(content_md5, &received.md5)?;
        let name = files::random_hex(16)?;
        let target = self.layout.file(store.id, &name);
        let temp = received.temp;
        files::blocking(move || temp.install(&target)).await?;

        let md5 = hex::encode(received.md5);
        let size = received.size;
        let (upload, file, etag) = (upload_id.to_string(), name.clone(), md5.clone());
        let result = self
            .with_db(move |conn| {
                let tx = conn.transaction().or_storage()?;
                upload_key(&tx, id, &upload)?;
                let old: Option<String> = tx
                    .query_row(
                        "SELECT file FROM blob_parts WHERE upload_id = ?1 AND number = ?2",
                        (&upload, number),
                        |row| row.get(0),
                    )
                    .optional()
                    .or_storage()?;
                tx.execute(
                    "INSERT INTO blob_parts (upload_id, number, file, size, md5)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (upload_id, number) DO UPDATE SET
                       file = excluded.file, size = excluded.size, md5 = excluded.md5",
                    (&upload, number, &file, size as i64, &etag),
                )
                .or_storage()?;
                tx.commit().or_storage()?;
                Ok(old)
            })
            .await;
        match result {
            Ok(old) => {
                if let Some(old) = old {
                    self.remove_files(vec![self.layout.file(store.id, &old)])
                        .await;
                }
                Ok(PartInfo {
                    part_number: number,
                    etag: md5,
                    size,
                })
            }
            Err(err) => {
                self.remove_files(vec![self.layout.file(store.id, &name)])
                    .await;
                Err(err)
            }
        }
    }

    pub(super) async fn complete_upload(
        &self,
        store: &StoreInfo,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> DataResult<ObjectMeta> {
        let (id, upload) = (store.id, upload_id.to_string());
        let (key, content_type, metadata, stored) = self
            .with_db(move |conn| {
                let (key, content_type, metadata) = upload_key(conn, id, &upload)?;
                Ok((key, content_type, metadata, part_rows(conn, &upload)?))
            })
            .await?;
        let chosen = choose_parts(&parts, &stored)?;

        // S3's multipart ETag: the MD5 of the parts' binary MD5s, and their count.
        let mut hasher = Md5::new();
        for (_, _, _, md5) in &chosen {
            hasher.update(hex::decode(md5).or_storage()?);
        }
        let etag = format!("{}-{}", hex::encode(hasher.finalize()), chosen.len());
        let size = chosen.iter().map(|(_, _, size, _)| size).sum();

        let sources: Vec<_> = chosen
            .iter()
            .map(|(_, file, _, _)| self.layout.file(store.id, file))
            .collect();
        let name = files::random_hex(16)?;
        let target = self.layout.file(store.id, &name);
        let temp = self.layout.temp(store.id)?;
        let joined =
            tokio::task::spawn_blocking(move || files::concat(&sources, temp)?.install(&target))
                .await
                .map_err(DataError::storage)?;
        match joined {
            // A part file vanished: re-sent, or the upload aborted meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::Conflict(
                    "the upload changed while it completed; complete it again".into(),
                ));
            }
            other => other.map_err(DataError::storage)?,
        }

        let meta = ObjectMeta {
            key,
            size,
            etag,
            content_type,
            metadata: serde_json::from_str(&metadata).or_storage()?,
            last_modified: now_ms(),
        };
        let (info, upload, m, file) = (
            store.clone(),
            upload_id.to_string(),
            meta.clone(),
            name.clone(),
        );
        let result = self
            .with_db(move |conn| {
                let tx = conn.transaction().or_storage()?;
                upload_key(&tx, info.id, &upload)?;
                // A part re-sent while we concatenated would make the object
                // differ from the etags the caller checked.
                let now = part_rows(&tx, &upload)?;
                for (number, file, _, _) in &chosen {
                    if !now.iter().any(|(n, f, _, _)| n == number && f == file) {
                        return Err(DataError::Conflict(format!(
                            "part {number} was replaced while the upload completed; complete it again"
                        )));
                    }
                }
                let old = commit_object(&tx, &info, &m, &file)?;
                let parts = take_upload(&tx, &upload)?;
                tx.commit().or_storage()?;
                Ok((old, parts))
            })
            .await;
        match result {
            Ok((old, parts)) => {
                let paths = old
                    .iter()
                    .chain(parts.iter())
                    .map(|f| self.layout.file(store.id, f))
                    .collect();
                self.remove_files(paths).await;
                Ok(meta)
            }
            Err(err) => {
                self.remove_files(vec![self.layout.file(store.id, &name)])
                    .await;
                Err(err)
            }
        }
    }

    pub(super) async fn abort_upload(&self, store: &StoreInfo, upload_id: &str) -> DataResult<()> {
        let (id, upload) = (store.id, upload_id.to_string());
        let parts = self
            .with_db(move |conn| {
                let tx = conn.transaction().or_storage()?;
                upload_key(&tx, id, &upload)?;
                let parts = take_upload(&tx, &upload)?;
                tx.commit().or_storage()?;
                Ok(parts)
            })
            .await?;
        let paths = parts
            .iter()
            .map(|f| self.layout.file(store.id, f))
            .collect();
        self.remove_files(paths).await;
        Ok(())
    }
}

/// The parts `requested` names, checked against what was uploaded: ascending
/// numbers, each uploaded, each with the etag it was given.
fn choose_parts(requested: &[(u32, String)], stored: &[PartRow]) -> DataResult<Vec<PartRow>> {
    if requested.is_empty() {
        return Err(DataError::Invalid(
            "completing an upload needs at least one part".into(),
        ));
    }
    let mut chosen: Vec<PartRow> = Vec::with_capacity(requested.len());
    for (number, etag) in requested {
        if let Some((prev, ..)) = chosen.last()
            && prev >= number
        {
            return Err(DataError::Invalid(format!(
                "parts must be listed in ascending order; part {number} follows part {prev}"
            )));
        }
        let Some(part) = stored.iter().find(|(n, ..)| n == number) else {
            return Err(DataError::Invalid(format!(
                "part {number} was not uploaded"
            )));
        };
        // Clients often send the etag quoted, as S3 returns it in a header.
        if !etag.trim_matches('"').eq_ignore_ascii_case(&part.3) {
            return Err(DataError::Invalid(format!(
                "part {number}: etag `{etag}` does not match the uploaded part's `{}`",
                part.3
            )));
        }
        chosen.push(part.clone());
    }
    Ok(chosen)
}

/// The upload's `(key, content_type, metadata JSON)` if it belongs to the store,
/// else [`DataError::NotFound`].
fn upload_key(
    conn: &Connection,
    store_id: i64,
    upload: &str,
) -> DataResult<(String, Option<String>, String)> {
    conn.query_row(
        "SELECT key, content_type, metadata FROM blob_uploads WHERE id = ?1 AND store_id = ?2",
        (upload, store_id),
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()
    .or_storage()?
    .ok_or_else(|| DataError::NotFound(format!("multipart upload `{upload}` does not exist")))
}

fn part_rows(conn: &Connection, upload: &str) -> DataResult<Vec<PartRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, file, size, md5 FROM blob_parts WHERE upload_id = ?1 ORDER BY number",
        )
        .or_storage()?;
    stmt.query_map([upload], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get::<_, i64>(2)? as u64,
            row.get(3)?,
        ))
    })
    .or_storage()?
    .collect::<Result<_, _>>()
    .or_storage()
}

/// Deletes the upload and its part rows; returns the part files to remove.
fn take_upload(tx: &Transaction<'_>, upload: &str) -> DataResult<Vec<String>> {
    let files = part_rows(tx, upload)?
        .into_iter()
        .map(|(_, file, _, _)| file)
        .collect();
    tx.execute("DELETE FROM blob_parts WHERE upload_id = ?1", [upload])
        .or_storage()?;
    tx.execute("DELETE FROM blob_uploads WHERE id = ?1", [upload])
        .or_storage()?;
    Ok(files)
}

/// Unix milliseconds before which an upload has expired.
pub(super) fn expiry_cutoff() -> u64 {
    now_ms().saturating_sub(MULTIPART_EXPIRY.as_millis() as u64)
}

/// Deletes the uploads created before `cutoff` with their part rows; returns how
/// many, and their part files as `(store id, name)`.
pub(super) fn take_expired(
    conn: &mut Connection,
    cutoff: u64,
) -> DataResult<(usize, Vec<(i64, String)>)> {
    let tx = conn.transaction().or_storage()?;
    let uploads: Vec<(String, i64)> = {
        let mut stmt = tx
            .prepare("SELECT id, store_id FROM blob_uploads WHERE created_at < ?1")
            .or_storage()?;
        stmt.query_map([cutoff as i64], |row| Ok((row.get(0)?, row.get(1)?)))
            .or_storage()?
            .collect::<Result<_, _>>()
            .or_storage()?
    };
    let mut files = Vec::new();
    for (upload, store_id) in &uploads {
        files.extend(
            take_upload(&tx, upload)?
                .into_iter()
                .map(|file| (*store_id, file)),
        );
    }
    tx.commit().or_storage()?;
    Ok((uploads.len(), files))
}
