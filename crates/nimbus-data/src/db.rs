//! The embedded SQLite database: one file in the data dir, WAL journal, full sync
//! by default (an acknowledged write survives `kill -9` and power loss; see
//! [`Durability`] for the faster setting that survives `kill -9` only), per-owner
//! migrations, and group commit: concurrent [`Database::write`]s share one
//! transaction and one fsync.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Runs after a write's transaction committed, before its caller hears of it
/// (e.g. to update an in-memory view in commit order).
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What a queued write does once its group's commit is known (`None`: committed).
type Finish = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Finish + Send>;

#[derive(Default)]
struct Group {
    queue: Vec<Job>,
    committing: bool,
}

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

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the node or the machine, and power loss: every commit is
    /// fsynced (SQLite `synchronous = FULL`).
    #[default]
    PowerLoss,
    /// A crash or `kill -9` of the node, not of the machine: commits reach the
    /// operating system, which writes them to disk in the background (SQLite WAL
    /// with `synchronous = NORMAL`). Much faster writes; object bodies are still
    /// fsynced.
    Crash,
}

impl From<DbError> for nimbus_core::data::DataError {
    fn from(e: DbError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// A handle on the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
    group: Arc<Mutex<Group>>,
    /// Counts committed write groups, so readers of what writes leave behind
    /// (change feeds) can wait for the next commit instead of polling.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) `nimbus.db` in `data_dir`, durable against
    /// power loss.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        Self::open_with(data_dir, Durability::PowerLoss)
    }

    /// Opens (creating if needed) `nimbus.db` in `data_dir` with `durability`.
    pub fn open_with(data_dir: &Path, durability: Durability) -> Result<Self, DbError> {
        let path = data_dir.join("nimbus.db");
        let conn = Connection::open(&path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match durability {
            Durability::PowerLoss => "FULL",
            Durability::Crash => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
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
            group: Arc::new(Mutex::new(Group::default())),
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
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

    /// A receiver that sees a new value after every committed write group.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
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

    /// Runs the write `f` in a transaction shared with the writes queued at the
    /// same time, and returns once that transaction is durable. `f` runs inside a
    /// savepoint: if it fails, its own changes roll back and the others commit.
    /// Its [`AfterCommit`] runs after the commit, in commit order.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Option<AfterCommit>), E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn: &Connection| -> Finish {
            let outcome = match conn.execute_batch("SAVEPOINT write") {
                Err(e) => Err(E::from(DbError::Sqlite(e))),
                Ok(()) => match f(conn) {
                    Ok(done) => match conn.execute_batch("RELEASE write") {
                        Ok(()) => Ok(done),
                        Err(e) => Err(E::from(DbError::Sqlite(e))),
                    },
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK TO write; RELEASE write");
                        Err(e)
                    }
                },
            };
            Box::new(move |commit_error: Option<String>| {
                let result = match (outcome, commit_error) {
                    (Ok((value, after)), None) => {
                        if let Some(after) = after {
                            after();
                        }
                        Ok(value)
                    }
                    (Ok(_), Some(err)) => {
                        Err(E::from(DbError::Task(format!("commit failed: {err}"))))
                    }
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(result);
            })
        });
        let start = {
            let mut group = self.group.lock().unwrap_or_else(|e| e.into_inner());
            group.queue.push(job);
            !std::mem::replace(&mut group.committing, true)
        };
        if start {
            let db = self.clone();
            tokio::task::spawn_blocking(move || db.commit_groups());
        }
        rx.await
            .unwrap_or_else(|_| Err(E::from(DbError::Task("the writer stopped".into()))))
    }

    /// Commits queued writes, a group at a time, until the queue is empty. Writes
    /// that arrive while a group is being fsynced form the next group.
    fn commit_groups(&self) {
        loop {
            let jobs = {
                let mut group = self.group.lock().unwrap_or_else(|e| e.into_inner());
                if group.queue.is_empty() {
                    group.committing = false;
                    return;
                }
                std::mem::take(&mut group.queue)
            };
            let conn = self.lock();
            let (finishes, error) = match conn.execute_batch("BEGIN IMMEDIATE") {
                Err(e) => (Vec::new(), Some((jobs, e.to_string()))),
                Ok(()) => {
                    let finishes: Vec<Finish> = jobs.into_iter().map(|job| job(&conn)).collect();
                    match conn.execute_batch("COMMIT") {
                        Ok(()) => (finishes, None),
                        Err(e) => {
                            let _ = conn.execute_batch("ROLLBACK");
                            let message = e.to_string();
                            for finish in finishes {
                                finish(Some(message.clone()));
                            }
                            (Vec::new(), None)
                        }
                    }
                }
            };
            drop(conn);
            let committed = !finishes.is_empty();
            for finish in finishes {
                finish(None);
            }
            if committed {
                self.commits.send_modify(|n| *n = n.wrapping_add(1));
            }
            if let Some((jobs, message)) = error {
                // Could not even begin: fail each write without running it.
                for job in jobs {
                    drop(job);
                }
                tracing::error!("cannot begin a write transaction: {message}");
            }
        }
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

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_writes_commit_together_and_a_failure_stays_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        db.migrate("test", &["CREATE TABLE t (x INTEGER)"]).unwrap();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (db, applied) = (db.clone(), applied.clone());
            tasks.push(tokio::spawn(async move {
                db.write(move |conn| -> Result<(i64, Option<AfterCommit>), DbError> {
                    conn.execute("INSERT INTO t VALUES (?1)", [i])?;
                    if i == 7 {
                        return Err(DbError::Task("write 7 fails".into()));
                    }
                    let after: AfterCommit = Box::new(move || applied.lock().unwrap().push(i));
                    Ok((i, Some(after)))
                })
                .await
            }));
        }
        let mut failed = 0;
        for task in tasks {
            if task.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        assert_eq!(applied.lock().unwrap().len(), 49);
        let (n, seven): (i64, i64) = db
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE x = 7) FROM t",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!((n, seven), (49, 0));
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
