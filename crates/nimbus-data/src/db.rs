//! The embedded SQLite database: one file in the data dir, WAL journal, full sync
//! (an acknowledged write survives `kill -9` and power loss), and per-owner
//! migrations.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database `{path}`: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("migration {version} of `{owner}` failed: {source}")]
    Migration {
        owner: String,
        version: usize,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// A handle on the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) `nimbus.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        let path = data_dir.join("nimbus.db");
        let conn = Connection::open(&path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                owner TEXT NOT NULL,
                version INTEGER NOT NULL,
                PRIMARY KEY (owner, version)
            )",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Applies the steps of `owner`'s schema that have not run yet, each in a
    /// transaction. Steps are append-only: never edit one that has shipped.
    pub fn migrate(&self, owner: &str, steps: &[&str]) -> Result<(), DbError> {
        let mut conn = self.lock();
        for (i, step) in steps.iter().enumerate() {
            let version = i + 1;
            let done: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE owner = ?1 AND version = ?2)",
                (owner, version),
                |row| row.get(0),
            )?;
            if done {
                continue;
            }
            let tx = conn.transaction()?;
            let apply = tx.execute_batch(step).and_then(|()| {
                tx.execute(
                    "INSERT INTO schema_migrations (owner, version) VALUES (?1, ?2)",
                    (owner, version),
                )
                .map(drop)
            });
            apply.map_err(|source| DbError::Migration {
                owner: owner.into(),
                version,
                source,
            })?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio_block(move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
    }

    /// Runs `f` with the connection on the current thread.
    pub fn call_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        f(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn tokio_block<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let steps = [
            "CREATE TABLE t (x INTEGER)",
            "ALTER TABLE t ADD COLUMN y TEXT",
        ];
        let db = Database::open(dir.path()).unwrap();
        db.migrate("test", &steps).unwrap();
        db.call_blocking(|c| Ok(c.execute("INSERT INTO t VALUES (1, 'a')", [])?))
            .unwrap();
        drop(db);
        let db = Database::open(dir.path()).unwrap();
        db.migrate("test", &steps).unwrap();
        let n: i64 = db
            .call_blocking(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn failed_migration_names_owner_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let err = db
            .migrate("svc", &["CREATE TABLE a (x)", "NOT SQL"])
            .unwrap_err();
        assert!(
            err.to_string().starts_with("migration 2 of `svc` failed"),
            "{err}"
        );
    }
}
