//! Plain files under the data dir, written atomically: a reader sees the old file
//! or the new one, never a part, also across `kill -9` (write to a temporary file,
//! fsync, rename, fsync the folder).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// A folder of files named by key. Keys are checked so that no path escapes it.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    extension: &'static str,
}

impl FileStore {
    /// A store in `dir` (created if needed) whose files end in `.{extension}`.
    pub fn open(dir: PathBuf, extension: &'static str) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Self { dir, extension })
    }

    /// The path a key maps to, or an error for keys that are not plain names.
    pub fn path(&self, key: &str) -> io::Result<PathBuf> {
        let plain = !key.is_empty()
            && key.len() <= 200
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid store key `{key}`"),
            ));
        }
        Ok(self.dir.join(format!("{key}.{}", self.extension)))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.path(key).is_ok_and(|p| p.is_file())
    }

    pub fn read(&self, key: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(key)?)
    }

    /// Stores `bytes` under `key` atomically; returns the file's path.
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.path(key)?;
        write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Removes `key`'s file; a missing file is not an error.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path(key)?) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Stores `bytes` under their SHA-256; returns the digest.
    pub fn put_content(&self, bytes: &[u8]) -> io::Result<String> {
        let digest = sha256_hex(bytes);
        if !self.contains(&digest) {
            self.put(&digest, bytes)?;
        }
        Ok(digest)
    }
}

impl nimbus_core::ports::ArtifactCache for FileStore {
    fn lookup(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok().filter(|p| p.is_file())
    }

    fn store(&self, key: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        self.put(key, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("s"), "bin").unwrap();
        for key in ["../x", "a/b", "", ".hidden", "a.b"] {
            assert!(store.put(key, b"x").is_err(), "{key}");
        }
    }

    #[test]
    fn content_is_addressed_by_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().to_path_buf(), "wasm").unwrap();
        let digest = store.put_content(b"hello").unwrap();
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read(&digest).unwrap(), b"hello");
    }
}
