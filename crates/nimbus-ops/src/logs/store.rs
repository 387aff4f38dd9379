//! `logs.db`: the table of records, its writer loop (batched inserts, trimming
//! by age and size) and the query behind `nimbus logs`.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Dropped, Level, LogConfig, LogPage, LogQuery, LogRecord};

#[derive(Debug, thiserror::Error)]
#[error("log store: {0}")]
pub struct LogError(pub String);

impl From<rusqlite::Error> for LogError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// Most records in one insert transaction.
const BATCH: usize = 4096;
/// How often age and size are checked.
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Most records one query returns.
pub const MAX_PAGE: usize = 1000;

pub(super) fn open(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Logs are not acknowledged data: a crash may lose the last moments of them,
    // never corrupt the file (WAL), and no insert waits for an fsync.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS logs (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             time INTEGER NOT NULL,
             app TEXT NOT NULL,
             function TEXT NOT NULL,
             invocation TEXT NOT NULL,
             trace TEXT NOT NULL,
             level INTEGER NOT NULL,
             stream TEXT NOT NULL,
             message TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS logs_app ON logs (app, function, seq);
         CREATE INDEX IF NOT EXISTS logs_time ON logs (time);
         CREATE INDEX IF NOT EXISTS logs_invocation ON logs (invocation) WHERE invocation <> '';",
    )?;
    Ok(conn)
}

pub(super) fn last_seq(conn: &Connection) -> Result<u64, LogError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'logs'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

fn insert(conn: &mut Connection, records: &[LogRecord]) -> Result<u64, LogError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO logs (time, app, function, invocation, trace, level, stream, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in records {
            stmt.execute(params![
                r.time as i64,
                r.app,
                r.function,
                r.invocation,
                r.trace,
                r.level as i64,
                r.stream,
                r.message
            ])?;
        }
    }
    let last = tx.last_insert_rowid();
    tx.commit()?;
    Ok(last as u64)
}

/// Deletes records older than the retention, then the oldest ones while the
/// database's live pages exceed the size limit.
fn trim(conn: &Connection, config: &LogConfig, now: u64) -> Result<u64, LogError> {
    let cutoff = now.saturating_sub(config.retention.as_millis() as u64);
    let mut deleted = conn.execute("DELETE FROM logs WHERE time < ?1", [cutoff as i64])? as u64;
    loop {
        let used: i64 = conn.query_row(
            "SELECT (page_count - freelist_count) * page_size
             FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
            [],
            |r| r.get(0),
        )?;
        if (used as u64) <= config.max_bytes {
            break;
        }
        // The share of the records that makes up the excess, and a few more.
        let count: i64 = conn.query_row("SELECT count(*) FROM logs", [], |r| r.get(0))?;
        let excess = used as u64 - config.max_bytes;
        let share = (count as u64 * excess).div_ceil(used as u64) + 16;
        let n = conn.execute(
            "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs ORDER BY seq LIMIT ?1)",
            [share as i64],
        )?;
        if n == 0 {
            break;
        }
        deleted += n as u64;
    }
    Ok(deleted)
}

/// The writer thread: inserts what arrives in batches, reports dropped records,
/// trims; ends when the store is dropped.
pub(super) fn write_loop(
    mut conn: Connection,
    receiver: mpsc::Receiver<LogRecord>,
    written: tokio::sync::watch::Sender<u64>,
    dropped: Dropped,
    config: LogConfig,
) {
    let mut last_trim = Instant::now() - TRIM_EVERY;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match receiver.recv_timeout(TRIM_EVERY) {
            Ok(record) => batch.push(record),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        let now = nimbus_data::catalog::now_ms();
        let lost = std::mem::take(&mut *dropped.lock().unwrap_or_else(|e| e.into_inner()));
        for ((app, function), n) in lost {
            batch.push(LogRecord {
                seq: 0,
                time: now,
                app,
                function,
                invocation: String::new(),
                trace: String::new(),
                level: Level::Warn,
                stream: "platform".into(),
                message: format!("dropped {n} log records: the log writer was behind"),
            });
        }
        if !batch.is_empty() {
            match insert(&mut conn, &batch) {
                Ok(seq) => {
                    written.send_replace(seq);
                }
                Err(e) => eprintln!("nimbus: cannot write {} log records: {e}", batch.len()),
            }
            batch.clear();
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            if let Err(e) = trim(&conn, &config, now) {
                eprintln!("nimbus: cannot trim the log: {e}");
            }
        }
    }
}

pub(super) fn query(conn: &Connection, q: &LogQuery) -> Result<LogPage, LogError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let tail = q.tail && q.after.is_none();
    let sql = format!(
        "SELECT seq, time, app, function, invocation, trace, level, stream, message FROM logs
         WHERE app = ?1 AND (?2 IS NULL OR function = ?2) AND seq > ?3 AND time >= ?4
           AND level >= ?5 AND (?6 IS NULL OR instr(message, ?6) > 0)
           AND (?7 IS NULL OR invocation = ?7)
         ORDER BY seq {} LIMIT ?8",
        if tail { "DESC" } else { "ASC" }
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut records = stmt
        .query_map(
            params![
                q.app,
                q.function,
                q.after.unwrap_or(0) as i64,
                q.since.unwrap_or(0) as i64,
                q.level.unwrap_or(Level::Trace) as i64,
                q.grep,
                q.invocation,
                limit as i64
            ],
            |r| {
                Ok(LogRecord {
                    seq: r.get::<_, i64>(0)? as u64,
                    time: r.get::<_, i64>(1)? as u64,
                    app: r.get(2)?,
                    function: r.get(3)?,
                    invocation: r.get(4)?,
                    trace: r.get(5)?,
                    level: Level::from_i64(r.get(6)?),
                    stream: r.get(7)?,
                    message: r.get(8)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    if tail {
        records.reverse();
    }
    // With nothing newer matching, a follower continues after the last record
    // written, so it does not scan the same non-matching rows again.
    let next = match records.last() {
        Some(r) => r.seq,
        None if tail || q.after.is_none() => last_seq(conn)?,
        None => q.after.unwrap_or(0),
    };
    Ok(LogPage { records, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, function: &str, level: Level, time: u64, message: &str) -> LogRecord {
        LogRecord {
            seq: 0,
            time,
            app: app.into(),
            function: function.into(),
            invocation: format!("inv-{}", &message[..message.len().min(8)]),
            trace: String::new(),
            level,
            stream: "stdout".into(),
            message: message.into(),
        }
    }

    fn query(app: &str) -> LogQuery {
        LogQuery {
            app: app.into(),
            limit: 100,
            ..LogQuery::default()
        }
    }

    fn messages(page: &LogPage) -> Vec<&str> {
        page.records.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn each_filter_selects_its_records_and_cursors_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("logs.db")).unwrap();
        insert(
            &mut conn,
            &[
                record("shop", "api", Level::Info, 1_000, "hello"),
                record("shop", "api", Level::Warn, 2_000, "slow disk"),
                record("shop", "worker", Level::Error, 3_000, "boom"),
                record("other", "api", Level::Error, 3_000, "elsewhere"),
                record("shop", "api", Level::Info, 4_000, "bye"),
            ],
        )
        .unwrap();
        let all = super::query(&conn, &query("shop")).unwrap();
        assert_eq!(messages(&all), ["hello", "slow disk", "boom", "bye"]);
        let q = |f: &dyn Fn(&mut LogQuery)| {
            let mut q = query("shop");
            f(&mut q);
            super::query(&conn, &q).unwrap()
        };
        assert_eq!(
            messages(&q(&|q| q.function = Some("worker".into()))),
            ["boom"]
        );
        assert_eq!(
            messages(&q(&|q| q.level = Some(Level::Warn))),
            ["slow disk", "boom"]
        );
        assert_eq!(messages(&q(&|q| q.since = Some(3_000))), ["boom", "bye"]);
        assert_eq!(
            messages(&q(&|q| q.grep = Some("disk".into()))),
            ["slow disk"]
        );
        assert!(q(&|q| q.grep = Some("DISK".into())).records.is_empty());
        assert_eq!(
            messages(&q(&|q| q.invocation = Some("inv-bye".into()))),
            ["bye"]
        );
        let tail = q(&|q| {
            q.tail = true;
            q.limit = 2;
        });
        assert_eq!(messages(&tail), ["boom", "bye"]);
        let first = q(&|q| q.limit = 2);
        assert_eq!(messages(&first), ["hello", "slow disk"]);
        let rest = q(&|q| q.after = Some(first.next));
        assert_eq!(messages(&rest), ["boom", "bye"]);
        let none = q(&|q| q.after = Some(rest.next));
        assert!(none.records.is_empty());
        assert_eq!(none.next, rest.next);
    }

    #[test]
    fn trimming_drops_old_records_then_the_oldest_over_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("logs.db")).unwrap();
        let day = 24 * 3600 * 1000;
        let config = LogConfig {
            retention: Duration::from_millis(day),
            max_bytes: 1 << 20,
        };
        insert(
            &mut conn,
            &[record("shop", "api", Level::Info, 1, "ancient")],
        )
        .unwrap();
        let now = 10 * day;
        let line = "x".repeat(1000);
        let many: Vec<LogRecord> = (0..5000)
            .map(|i| record("shop", "api", Level::Info, now - 5000 + i, &line))
            .collect();
        insert(&mut conn, &many).unwrap();
        trim(&conn, &config, now).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM logs", [], |r| r.get(0))
            .unwrap();
        assert!(left > 700 && left < 1000, "{left} records left");
        let oldest: i64 = conn
            .query_row("SELECT min(time) FROM logs", [], |r| r.get(0))
            .unwrap();
        assert!(oldest > (now - 5000) as i64, "the oldest went first");
        // The cursor keeps counting up after the trim.
        let seq = insert(&mut conn, &[record("shop", "api", Level::Info, now, "new")]).unwrap();
        assert_eq!(seq, 5002);
    }
}
