//! The bucket files on disk: where an object or part file lives, how a body
//! streams into one (hashing as it goes) and out of one (in chunks, limited to a
//! range), and the crash-recovery sweep.
//!
//! Layout: `DIR/STORE_ID/ab/abcdef…` where the name is 32 random hex digits, and
//! temporary files `DIR/STORE_ID/.tmp-…`. A file is never changed once it has its
//! final name; a write always makes a new name and the database row says which
//! name is current. That is what makes puts atomic: the row switches in one
//! transaction, and a reader that opened the old file keeps reading it.

use std::collections::HashSet;
use std::fs;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use md5::{Digest, Md5};
use nimbus_core::data::{DataError, DataResult};
use nimbus_core::ports::{Body, BoxError};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Size of the frames a read streams.
/// Reads of an object body: large enough that a stream costs few blocking-pool
/// round trips (each read is one), small enough to stay cheap per stream.
const CHUNK: u64 = 512 * 1024;
const TEMP_PREFIX: &str = ".tmp-";

/// The root of the bucket files.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn store_dir(&self, store_id: i64) -> PathBuf {
        self.root.join(store_id.to_string())
    }

    /// The path of a stored file, by the name its row records.
    pub fn file(&self, store_id: i64, name: &str) -> PathBuf {
        // Fan out by two hex digits so no directory grows past a few thousand entries.
        let fan = name.get(..2).unwrap_or("00");
        self.store_dir(store_id).join(fan).join(name)
    }

    /// A fresh temporary path in the store's directory (same file system as the
    /// final name, so the rename is atomic).
    pub fn temp(&self, store_id: i64) -> DataResult<PathBuf> {
        Ok(self
            .store_dir(store_id)
            .join(format!("{TEMP_PREFIX}{}", random_hex(12)?)))
    }

    /// Removes temporary files, and files no row references: what a crash
    /// between writing a file and committing (or after committing, before
    /// removing a replaced file) leaves behind. Returns how many were removed.
    pub fn sweep(&self, referenced: &HashSet<(i64, String)>) -> io::Result<usize> {
        let mut removed = 0;
        let stores = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        for store in stores {
            let store = store?;
            let Some(id) = store
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if !store.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(store.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TEMP_PREFIX) {
                    remove_quietly(&entry.path());
                    removed += 1;
                } else if entry.file_type()?.is_dir() {
                    for file in fs::read_dir(entry.path())? {
                        let file = file?;
                        let keep = file
                            .file_name()
                            .to_str()
                            .is_some_and(|n| referenced.contains(&(id, n.to_string())));
                        if !keep {
                            remove_quietly(&file.path());
                            removed += 1;
                        }
                    }
                    // Only succeeds when empty, which is all we want.
                    let _ = fs::remove_dir(entry.path());
                }
            }
            let _ = fs::remove_dir(store.path());
        }
        Ok(removed)
    }
}

/// `bytes` random bytes as hex: file names and upload ids.
pub(super) fn random_hex(bytes: usize) -> DataResult<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(DataError::storage)?;
    Ok(hex::encode(buf))
}

/// A file that is removed when dropped unless it was kept: a failed or
/// cancelled write leaves nothing behind.
pub(super) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Renames the file to `target` durably: fsync of the file happened when it
    /// was written; here the rename and the directory entry are made to last.
    pub fn install(mut self, target: &Path) -> io::Result<()> {
        if let Some(dir) = target.parent() {
            ensure_dir(dir)?;
        }
        fs::rename(&self.path, target)?;
        self.armed = false;
        sync_dir(parent_of(target))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            remove_quietly(&self.path);
        }
    }
}

/// A body written to a temporary file.
pub(super) struct Received {
    pub temp: TempFile,
    pub size: u64,
    pub md5: [u8; 16],
}

/// Streams `body` into a new file at `path`, hashing it, and fsyncs it. More
/// than `max` bytes fail with [`DataError::TooLarge`]; on any failure the file
/// is gone.
pub(super) async fn receive(mut body: Body, path: PathBuf, max: u64) -> DataResult<Received> {
    if let Some(dir) = path.parent() {
        let dir = dir.to_path_buf();
        blocking(move || ensure_dir(&dir)).await?;
    }
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(DataError::storage)?;
    let temp = TempFile { path, armed: true };
    let mut hasher = Md5::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| DataError::Invalid(format!("reading the request body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        size += data.len() as u64;
        if size > max {
            return Err(DataError::TooLarge(format!(
                "the body is larger than the limit of {max} bytes"
            )));
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(DataError::storage)?;
    }
    file.flush().await.map_err(DataError::storage)?;
    file.sync_all().await.map_err(DataError::storage)?;
    Ok(Received {
        temp,
        size,
        md5: hasher.finalize().into(),
    })
}

/// A streaming body of `len` bytes of the file at `path` from position `first`.
/// Fails with `NotFound` if the file is gone (replaced since its row was read).
pub(super) async fn send(path: &Path, first: u64, len: u64) -> io::Result<Body> {
    let mut file = tokio::fs::File::open(path).await?;
    if first > 0 {
        file.seek(SeekFrom::Start(first)).await?;
    }
    let chunks = futures::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left) as usize];
        match file.read(&mut buf).await {
            Ok(0) => {
                let err: BoxError = Box::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object file is shorter than its recorded size",
                ));
                Some((Err(err), (file, 0)))
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (file, left - n as u64)))
            }
            Err(err) => Some((Err(BoxError::from(err)), (file, 0))),
        }
    });
    Ok(StreamBody::new(chunks).boxed_unsync())
}

/// Gives `target` the content of `source`: a hard link (files never change, so
/// sharing the inode is safe) or, where links are not possible, a durable copy.
/// Fails with `NotFound` if `source` is gone.
pub(super) fn link_or_copy(source: &Path, target: &Path, temp: &Path) -> io::Result<()> {
    if let Some(dir) = target.parent() {
        ensure_dir(dir)?;
    }
    match fs::hard_link(source, target) {
        Ok(()) => sync_dir(parent_of(target)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(err),
        Err(_) => {
            let guard = TempFile {
                path: temp.to_path_buf(),
                armed: true,
            };
            fs::copy(source, temp)?;
            fs::File::open(temp)?.sync_all()?;
            guard.install(target)
        }
    }
}

/// Writes the files of `parts`, in order, into one new file at `temp`; fsynced.
pub(super) fn concat(parts: &[PathBuf], temp: PathBuf) -> io::Result<TempFile> {
    let mut out = fs::File::create(&temp)?;
    let guard = TempFile {
        path: temp,
        armed: true,
    };
    for part in parts {
        // Streams (copy_file_range where available); no part is held in memory.
        io::copy(&mut fs::File::open(part)?, &mut out)?;
    }
    out.sync_all()?;
    Ok(guard)
}

/// Removes files whose rows are gone; a missing file is fine.
pub(super) fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        remove_quietly(path);
    }
}

fn remove_quietly(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        // Not fatal: the next start's sweep removes unreferenced files.
        tracing::warn!(path = %path.display(), "cannot remove a bucket file: {err}");
    }
}

/// Creates `dir` (and its parents) so that the new entries survive a crash.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
        _ => {}
    }
    sync_dir(parent_of(dir))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Runs blocking file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> DataResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(DataError::storage)?
        .map_err(DataError::storage)
}
