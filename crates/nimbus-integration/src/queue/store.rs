//! The queue tables and the statements on them. Every function here runs on a
//! connection the caller holds (inside a [`nimbus_data::Database::write`] for
//! changes), so a whole receive or batch is one transaction.

use std::collections::BTreeMap;

use bytes::Bytes;
use nimbus_core::queue::Message;
use rusqlite::{Connection, OptionalExtension};

/// Schema of `integration.queues`. Append-only.
///
/// - `queue_registry`: one row per declared queue; AUTOINCREMENT so a dropped
///   queue's id is never reused and a write in flight for it cannot land in a
///   newer queue.
/// - `queue_messages`: `id` is the send order (FIFO order, tie-break of equal
///   `visible_at`). `receipt` is the token of the current delivery (NULL before
///   the first). `source_queue` is set while a message sits in a dead-letter
///   queue, for redrive.
/// - `queue_messages_ready` serves receive, long-poll wake-ups and stats;
///   `queue_messages_fifo` (partial: only messages with a group id) serves the
///   FIFO scan in send order, so standard queues do not pay for it.
/// - `queue_dedup`: deduplication ids of FIFO queues until they expire.
pub(super) const MIGRATIONS: &[&str] = &["CREATE TABLE queue_registry (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (app, name)
    );
    CREATE TABLE queue_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        body BLOB NOT NULL,
        attributes TEXT,
        group_id TEXT,
        sent_at INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt TEXT,
        source_queue INTEGER
    );
    CREATE INDEX queue_messages_ready ON queue_messages (queue_id, visible_at, id);
    CREATE INDEX queue_messages_fifo ON queue_messages (queue_id, id) WHERE group_id IS NOT NULL;
    CREATE TABLE queue_dedup (
        queue_id INTEGER NOT NULL,
        dedup_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue_id, dedup_id)
    ) WITHOUT ROWID;
    CREATE INDEX queue_dedup_expiry ON queue_dedup (expires_at);"];

/// A registry row: (id, app, name, config JSON).
pub(super) type RegistryRow = (i64, String, String, String);

pub(super) fn registry(conn: &Connection) -> rusqlite::Result<Vec<RegistryRow>> {
    let mut stmt = conn.prepare("SELECT id, app, name, config FROM queue_registry")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

/// Creates or updates a queue's row; returns its id.
pub(super) fn upsert_queue(
    conn: &Connection,
    app: &str,
    name: &str,
    config: &str,
    now: u64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO queue_registry (app, name, config, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app, name) DO UPDATE SET config = ?3
         RETURNING id",
    )?
    .query_row((app, name, config, now as i64), |r| r.get(0))
}

pub(super) fn queue_exists(conn: &Connection, queue_id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM queue_registry WHERE id = ?1)")?
        .query_row([queue_id], |r| r.get(0))
}

/// Deletes a queue with its messages and deduplication ids.
pub(super) fn drop_queue(conn: &Connection, queue_id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM queue_messages WHERE queue_id = ?1", [queue_id])?;
    conn.execute("DELETE FROM queue_dedup WHERE queue_id = ?1", [queue_id])?;
    conn.execute("DELETE FROM queue_registry WHERE id = ?1", [queue_id])?;
    Ok(())
}

/// A message to enqueue.
pub(super) struct NewMessage<'a> {
    pub message_id: &'a str,
    pub body: &'a [u8],
    pub attributes: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub sent_at: u64,
    pub visible_at: u64,
}

pub(super) fn insert(conn: &Connection, queue_id: i64, m: &NewMessage<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO queue_messages (queue_id, message_id, body, attributes, group_id, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        queue_id,
        m.message_id,
        m.body,
        m.attributes,
        m.group_id,
        m.sent_at as i64,
        m.visible_at as i64,
    ))?;
    Ok(())
}

/// The message id sent earlier with `dedup_id`, if still within its window.
pub(super) fn dedup_lookup(
    conn: &Connection,
    queue_id: i64,
    dedup_id: &str,
    now: u64,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT message_id FROM queue_dedup WHERE queue_id = ?1 AND dedup_id = ?2 AND expires_at > ?3",
    )?
    .query_row((queue_id, dedup_id, now as i64), |r| r.get(0))
    .optional()
}

pub(super) fn dedup_remember(
    conn: &Connection,
    queue_id: i64,
    dedup_id: &str,
    message_id: &str,
    expires_at: u64,
) -> rusqlite::Result<()> {
    // REPLACE: an expired row not yet swept by `expire` is simply overwritten.
    conn.prepare_cached(
        "INSERT OR REPLACE INTO queue_dedup (queue_id, dedup_id, message_id, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((queue_id, dedup_id, message_id, expires_at as i64))?;
    Ok(())
}

/// A message that receive may deliver.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub id: i64,
    pub receive_count: u32,
}

/// Up to `limit` visible messages of a standard queue, oldest visibility first,
/// skipping `skip` (rows this receive already delivered with a zero timeout).
pub(super) fn visible(
    conn: &Connection,
    queue_id: i64,
    now: u64,
    limit: usize,
    skip: &[i64],
) -> rusqlite::Result<Vec<Candidate>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, receive_count FROM queue_messages
         WHERE queue_id = ?1 AND visible_at <= ?2
         ORDER BY visible_at, id LIMIT ?3",
    )?;
    let rows = stmt.query_map((queue_id, now as i64, (limit + skip.len()) as i64), |r| {
        Ok(Candidate {
            id: r.get(0)?,
            receive_count: r.get(1)?,
        })
    })?;
    let mut out = Vec::with_capacity(limit);
    for row in rows {
        let c = row?;
        if !skip.contains(&c.id) && out.len() < limit {
            out.push(c);
        }
    }
    Ok(out)
}

/// Marks message `id` delivered with `receipt` until `visible_at`; returns it.
pub(super) fn deliver(
    conn: &Connection,
    id: i64,
    visible_at: u64,
    token: &str,
) -> rusqlite::Result<Message> {
    conn.prepare_cached(
        "UPDATE queue_messages
         SET visible_at = ?2, receive_count = receive_count + 1, receipt = ?3
         WHERE id = ?1
         RETURNING message_id, body, attributes, receive_count, sent_at, group_id",
    )?
    .query_row((id, visible_at as i64, token), |r| {
        let attributes: Option<String> = r.get(2)?;
        Ok(Message {
            message_id: r.get(0)?,
            receipt: receipt(id, token),
            body: Bytes::from(r.get::<_, Vec<u8>>(1)?),
            attributes: attributes
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
            receive_count: r.get(3)?,
            sent_at: r.get::<_, i64>(4)? as u64,
            group_id: r.get(5)?,
        })
    })
}

/// Moves message `id` to dead-letter queue `dlq`, remembering `source`.
pub(super) fn move_to_dead_letter(
    conn: &Connection,
    id: i64,
    dlq: i64,
    source: i64,
    now: u64,
) -> rusqlite::Result<()> {
    // In place: the body is not copied, and `sent_at` keeps counting retention
    // from the original send, as SQS does.
    conn.prepare_cached(
        "UPDATE queue_messages
         SET queue_id = ?2, source_queue = ?3, receive_count = 0, receipt = NULL, visible_at = ?4
         WHERE id = ?1",
    )?
    .execute((id, dlq, source, now as i64))?;
    Ok(())
}

/// Moves every message of `dlq` back to its source queue (if that still exists);
/// returns the source queue ids with how many each got.
pub(super) fn redrive(
    conn: &Connection,
    dlq: i64,
    now: u64,
) -> rusqlite::Result<BTreeMap<i64, u64>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE queue_messages
         SET queue_id = source_queue, source_queue = NULL, receive_count = 0, receipt = NULL,
             visible_at = ?2
         WHERE queue_id = ?1 AND source_queue IN (SELECT id FROM queue_registry)
         RETURNING queue_id",
    )?;
    let mut moved = BTreeMap::new();
    let mut rows = stmt.query((dlq, now as i64))?;
    while let Some(row) = rows.next()? {
        *moved.entry(row.get::<_, i64>(0)?).or_default() += 1;
    }
    Ok(moved)
}

/// The earliest `visible_at` after `now`: when a long poll should look again.
pub(super) fn next_visible_at(
    conn: &Connection,
    queue_id: i64,
    now: u64,
) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT MIN(visible_at) FROM queue_messages WHERE queue_id = ?1 AND visible_at > ?2",
    )?
    .query_row((queue_id, now as i64), |r| {
        Ok(r.get::<_, Option<i64>>(0)?.map(|t| t as u64))
    })
}

/// Deletes the delivery `token` of message `id`; whether it was current.
pub(super) fn delete(
    conn: &Connection,
    queue_id: i64,
    id: i64,
    token: &str,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "DELETE FROM queue_messages WHERE id = ?1 AND queue_id = ?2 AND receipt = ?3",
        )?
        .execute((id, queue_id, token))?;
    Ok(n > 0)
}

/// Sets the visibility of delivery `token` of message `id`; whether it was current.
pub(super) fn set_visible_at(
    conn: &Connection,
    queue_id: i64,
    id: i64,
    token: &str,
    visible_at: u64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE queue_messages SET visible_at = ?4 WHERE id = ?1 AND queue_id = ?2 AND receipt = ?3",
        )?
        .execute((id, queue_id, token, visible_at as i64))?;
    Ok(n > 0)
}

pub(super) fn purge(conn: &Connection, queue_id: i64) -> rusqlite::Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM queue_messages WHERE queue_id = ?1")?
        .execute([queue_id])?;
    Ok(n as u64)
}

/// (visible, in flight, delayed, oldest sent_at).
pub(super) fn stats(
    conn: &Connection,
    queue_id: i64,
    now: u64,
) -> rusqlite::Result<(u64, u64, u64, Option<u64>)> {
    conn.prepare_cached(
        "SELECT
            COUNT(*) FILTER (WHERE visible_at <= ?2),
            COUNT(*) FILTER (WHERE visible_at > ?2 AND receive_count > 0),
            COUNT(*) FILTER (WHERE visible_at > ?2 AND receive_count = 0),
            MIN(sent_at)
         FROM queue_messages WHERE queue_id = ?1",
    )?
    .query_row((queue_id, now as i64), |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
        ))
    })
}

/// Deletes the messages of `queue_id` sent before `cutoff`; returns how many.
pub(super) fn expire(conn: &Connection, queue_id: i64, cutoff: u64) -> rusqlite::Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM queue_messages WHERE queue_id = ?1 AND sent_at < ?2")?
        .execute((queue_id, cutoff as i64))?;
    Ok(n as u64)
}

pub(super) fn expire_dedup(conn: &Connection, now: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM queue_dedup WHERE expires_at <= ?1")?
        .execute([now as i64])?;
    Ok(())
}

/// A receipt as callers see it: the row id (so delete finds the row by primary
/// key) and the delivery's random token (so only the current delivery matches).
pub(super) fn receipt(id: i64, token: &str) -> String {
    format!("{id:x}-{token}")
}

/// The (row id, token) of a receipt, or `None` if it is not one of ours.
pub(super) fn parse_receipt(receipt: &str) -> Option<(i64, &str)> {
    let (id, token) = receipt.split_once('-')?;
    let id = i64::from_str_radix(id, 16).ok()?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, token))
}
