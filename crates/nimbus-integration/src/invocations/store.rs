//! The invocation table and the statements on it. Every function here runs on a
//! connection the caller holds (inside a [`nimbus_data::Database::write`] for
//! changes).

use nimbus_core::invocation::{Invocation, InvocationStatus};
use rusqlite::{Connection, OptionalExtension};

/// Schema of `integration.invocations`. Append-only.
///
/// - `event` is the CloudEvent as JSON (its serde form).
/// - `next_attempt_at` is set while `queued` and due; NULL while `queued` means
///   parked: its app or function is not deployed on this node (set again by the
///   next deployment of the app, or at start).
/// - `ended_at` is set once `succeeded` or `failed`; records are deleted 24 h
///   after it.
/// - `invocations_due` (partial: queued rows only) serves the dispatcher;
///   `invocations_ended` serves expiry.
pub(super) const MIGRATIONS: &[&str] = &["CREATE TABLE invocations (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        function TEXT NOT NULL,
        event TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_attempt_at INTEGER,
        ended_at INTEGER,
        output TEXT,
        error TEXT
    ) WITHOUT ROWID;
    CREATE INDEX invocations_due ON invocations (next_attempt_at) WHERE status = 'queued';
    CREATE INDEX invocations_ended ON invocations (ended_at) WHERE ended_at IS NOT NULL;"];

pub(super) fn status_str(status: InvocationStatus) -> &'static str {
    match status {
        InvocationStatus::Queued => "queued",
        InvocationStatus::Running => "running",
        InvocationStatus::Succeeded => "succeeded",
        InvocationStatus::Failed => "failed",
    }
}

fn parse_status(text: &str) -> InvocationStatus {
    match text {
        "running" => InvocationStatus::Running,
        "succeeded" => InvocationStatus::Succeeded,
        "failed" => InvocationStatus::Failed,
        _ => InvocationStatus::Queued,
    }
}

pub(super) struct NewInvocation<'a> {
    pub id: &'a str,
    pub app: &'a str,
    pub function: &'a str,
    pub event: &'a str,
    pub now: u64,
}

pub(super) fn insert(conn: &Connection, new: &NewInvocation<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO invocations (id, app, function, event, status, attempts, created_at,
             updated_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?5, ?5)",
    )?
    .execute((new.id, new.app, new.function, new.event, new.now as i64))?;
    Ok(())
}

/// A queued invocation the dispatcher took.
#[derive(Debug, Clone)]
pub(super) struct Due {
    pub id: String,
    pub app: String,
    pub function: String,
    pub event: String,
    pub attempts: u32,
    pub created_at: u64,
}

/// Up to `max` queued invocations due at `now`, earliest first.
pub(super) fn due(conn: &Connection, now: u64, max: usize) -> rusqlite::Result<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, app, function, event, attempts, created_at FROM invocations
         WHERE status = 'queued' AND next_attempt_at <= ?1
         ORDER BY next_attempt_at LIMIT ?2",
    )?;
    let rows = stmt.query_map((now as i64, max as i64), |r| {
        Ok(Due {
            id: r.get(0)?,
            app: r.get(1)?,
            function: r.get(2)?,
            event: r.get(3)?,
            attempts: r.get(4)?,
            created_at: r.get::<_, i64>(5)? as u64,
        })
    })?;
    rows.collect()
}

pub(super) fn mark_running(conn: &Connection, id: &str, now: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE invocations SET status = 'running', next_attempt_at = NULL, updated_at = ?2
         WHERE id = ?1",
    )?
    .execute((id, now as i64))?;
    Ok(())
}

/// Parks a queued invocation whose function is not deployed.
pub(super) fn park(conn: &Connection, id: &str, error: &str, now: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE invocations SET next_attempt_at = NULL, error = ?2, updated_at = ?3
         WHERE id = ?1 AND status = 'queued'",
    )?
    .execute((id, error, now as i64))?;
    Ok(())
}

/// Makes every parked invocation due at `now`; returns how many.
pub(super) fn unpark(conn: &Connection, now: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE invocations SET next_attempt_at = ?1, updated_at = ?1
         WHERE status = 'queued' AND next_attempt_at IS NULL",
    )?
    .execute([now as i64])
}

/// Queues again the invocations left `running` (by a crash); returns how many.
pub(super) fn requeue_running(conn: &Connection, now: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE invocations SET status = 'queued', next_attempt_at = ?1, updated_at = ?1
         WHERE status = 'running'",
    )?
    .execute([now as i64])
}

/// The earliest `next_attempt_at` of a queued invocation.
pub(super) fn next_due(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT MIN(next_attempt_at) FROM invocations
         WHERE status = 'queued' AND next_attempt_at IS NOT NULL",
    )?
    .query_row([], |r| r.get::<_, Option<i64>>(0))
    .map(|t| t.map(|t| t as u64))
}

/// Puts a running invocation back in the queue for `at`.
pub(super) fn requeue(
    conn: &Connection,
    id: &str,
    attempts: u32,
    error: &str,
    at: u64,
    now: u64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE invocations SET status = 'queued', attempts = ?2, error = ?3,
                 next_attempt_at = ?4, updated_at = ?5
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute((id, attempts, error, at as i64, now as i64))?;
    Ok(n == 1)
}

/// Ends a running invocation (a success clears the error of earlier attempts).
pub(super) struct End<'a> {
    pub status: InvocationStatus,
    pub attempts: u32,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub(super) fn end(conn: &Connection, id: &str, end: &End<'_>, now: u64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE invocations SET status = ?2, attempts = ?3, output = ?4,
                 error = ?5, next_attempt_at = NULL, updated_at = ?6,
                 ended_at = ?6
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute((
            id,
            status_str(end.status),
            end.attempts,
            end.output,
            end.error,
            now as i64,
        ))?;
    Ok(n == 1)
}

pub(super) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Invocation>> {
    conn.prepare_cached(
        "SELECT id, app, function, status, attempts, created_at, updated_at,
             next_attempt_at, output, error
         FROM invocations WHERE id = ?1",
    )?
    .query_row([id], |r| {
        let status = parse_status(&r.get::<_, String>(3)?);
        let next: Option<i64> = r.get(7)?;
        Ok(Invocation {
            id: r.get(0)?,
            app: r.get(1)?,
            function: r.get(2)?,
            status,
            attempts: r.get(4)?,
            created_at: r.get::<_, i64>(5)? as u64,
            updated_at: r.get::<_, i64>(6)? as u64,
            next_attempt_at: next
                .filter(|_| status == InvocationStatus::Queued)
                .map(|t| t as u64),
            output: r.get(8)?,
            error: r.get(9)?,
        })
    })
    .optional()
}

/// Deletes records that ended before `cut`, and parked ones created before it;
/// returns how many.
pub(super) fn expire(conn: &Connection, cut: u64) -> rusqlite::Result<u64> {
    let ended = conn
        .prepare_cached("DELETE FROM invocations WHERE ended_at IS NOT NULL AND ended_at < ?1")?
        .execute([cut as i64])?;
    let parked = conn
        .prepare_cached(
            "DELETE FROM invocations
             WHERE status = 'queued' AND next_attempt_at IS NULL AND created_at < ?1",
        )?
        .execute([cut as i64])?;
    Ok((ended + parked) as u64)
}
