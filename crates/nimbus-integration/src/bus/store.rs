//! The bus's tables: the archive of put events, the outbox of deliveries (one
//! row per event and matched target, written in the put's transaction), and
//! the counts per target.

use rusqlite::{Connection, OptionalExtension};

pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE bus_archive (
        seq INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        put_at INTEGER NOT NULL,
        event TEXT NOT NULL
    );
    CREATE INDEX bus_archive_app_time ON bus_archive (app, put_at);
    CREATE TABLE bus_deliveries (
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        rule TEXT NOT NULL,
        target INTEGER NOT NULL,
        event TEXT NOT NULL,
        put_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX bus_deliveries_due ON bus_deliveries (due_at);
    CREATE INDEX bus_deliveries_rule ON bus_deliveries (app, rule, target);
    CREATE TABLE bus_counts (
        app TEXT NOT NULL,
        rule TEXT NOT NULL,
        target INTEGER NOT NULL,
        matched INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, rule, target)
    );",
    // Topic subscriptions added over the API (those of the manifest live in the app).
    "CREATE TABLE bus_topic_subs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        topic TEXT NOT NULL,
        spec TEXT NOT NULL
    );
    CREATE INDEX bus_topic_subs_app ON bus_topic_subs (app, topic);",
];

/// Delivery targets of API subscriptions are numbered from here (those of the
/// manifest count from 0).
pub(super) const API_SUBS: usize = 1_000_000;

/// `(id, topic, subscription JSON)` of the API subscriptions of `app`.
pub(super) fn api_subs(
    conn: &Connection,
    app: &str,
) -> rusqlite::Result<Vec<(i64, String, String)>> {
    conn.prepare_cached("SELECT id, topic, spec FROM bus_topic_subs WHERE app = ?1 ORDER BY id")?
        .query_map([app], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

pub(super) fn add_sub(
    conn: &Connection,
    app: &str,
    topic: &str,
    spec: &str,
) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO bus_topic_subs (app, topic, spec) VALUES (?1, ?2, ?3)")?
        .execute((app, topic, spec))?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn remove_sub(
    conn: &Connection,
    app: &str,
    topic: &str,
    id: i64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM bus_topic_subs WHERE app = ?1 AND topic = ?2 AND id = ?3")?
        .execute((app, topic, id))?;
    let rule = format!("topic:{topic}");
    let target = API_SUBS as i64 + id;
    conn.prepare_cached("DELETE FROM bus_deliveries WHERE app = ?1 AND rule = ?2 AND target = ?3")?
        .execute((app, &rule, target))?;
    Ok(n > 0)
}

/// A count of `bus_counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Count {
    Matched,
    Delivered,
    Retried,
    Failed,
    DeadLettered,
}

impl Count {
    fn column(self) -> &'static str {
        match self {
            Count::Matched => "matched",
            Count::Delivered => "delivered",
            Count::Retried => "retried",
            Count::Failed => "failed",
            Count::DeadLettered => "dead_lettered",
        }
    }
}

pub(super) fn count(
    conn: &Connection,
    app: &str,
    rule: &str,
    target: usize,
    what: Count,
    by: u64,
) -> rusqlite::Result<()> {
    let col = what.column();
    conn.prepare_cached(&format!(
        "INSERT INTO bus_counts (app, rule, target, {col}) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app, rule, target) DO UPDATE SET {col} = {col} + ?4"
    ))?
    .execute((app, rule, target as i64, by as i64))?;
    Ok(())
}

/// Counts gathered over one transaction, written with one upsert per
/// (app, rule, target, count) instead of one per event.
#[derive(Debug, Default)]
pub(super) struct Tally(std::collections::HashMap<(String, String, usize, Count), u64>);

impl Tally {
    pub fn add(&mut self, app: &str, rule: &str, target: usize, what: Count) {
        *self
            .0
            .entry((app.to_string(), rule.to_string(), target, what))
            .or_default() += 1;
    }

    pub fn write(self, conn: &Connection) -> rusqlite::Result<()> {
        for ((app, rule, target, what), by) in self.0 {
            count(conn, &app, &rule, target, what, by)?;
        }
        Ok(())
    }
}

pub(super) fn archive(
    conn: &Connection,
    app: &str,
    put_at: u64,
    event: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO bus_archive (app, put_at, event) VALUES (?1, ?2, ?3)")?
        .execute((app, put_at as i64, event))?;
    Ok(())
}

pub(super) fn enqueue(
    conn: &Connection,
    app: &str,
    rule: &str,
    target: usize,
    event: &str,
    put_at: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO bus_deliveries (app, rule, target, event, put_at, due_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute((app, rule, target as i64, event, put_at as i64))?;
    Ok(())
}

/// A delivery due for an attempt.
#[derive(Debug, Clone)]
pub(super) struct Due {
    pub id: i64,
    pub app: String,
    pub rule: String,
    pub target: usize,
    pub event: String,
    pub put_at: u64,
    pub attempts: u32,
}

pub(super) fn due(conn: &Connection, now: u64, limit: usize) -> rusqlite::Result<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, app, rule, target, event, put_at, attempts FROM bus_deliveries
         WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
    )?;
    stmt.query_map((now as i64, limit as i64), |r| {
        Ok(Due {
            id: r.get(0)?,
            app: r.get(1)?,
            rule: r.get(2)?,
            target: r.get::<_, i64>(3)? as usize,
            event: r.get(4)?,
            put_at: r.get::<_, i64>(5)? as u64,
            attempts: r.get(6)?,
        })
    })?
    .collect()
}

/// When the next delivery is due, if any waits.
pub(super) fn next_due(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT MIN(due_at) FROM bus_deliveries")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(|v| v.map(|v| v.max(0) as u64))
}

pub(super) fn done(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM bus_deliveries WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(super) fn retry_at(
    conn: &Connection,
    id: i64,
    due_at: u64,
    error: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE bus_deliveries SET attempts = attempts + 1, due_at = ?2, last_error = ?3 WHERE id = ?1",
    )?
    .execute((id, due_at as i64, error))?;
    Ok(())
}

/// `(matched, delivered, retried, failed, dead_lettered, pending)` of a target.
pub(super) fn counts(
    conn: &Connection,
    app: &str,
    rule: &str,
    target: usize,
) -> rusqlite::Result<[u64; 6]> {
    let kept = conn
        .prepare_cached(
            "SELECT matched, delivered, retried, failed, dead_lettered FROM bus_counts
             WHERE app = ?1 AND rule = ?2 AND target = ?3",
        )?
        .query_row((app, rule, target as i64), |r| {
            Ok([
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
            ])
        })
        .optional()?
        .unwrap_or_default();
    let pending: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM bus_deliveries WHERE app = ?1 AND rule = ?2 AND target = ?3",
        )?
        .query_row((app, rule, target as i64), |r| r.get(0))?;
    Ok([kept[0], kept[1], kept[2], kept[3], kept[4], pending as u64])
}

/// Archived events of `app` put between `from` and `to` (inclusive), oldest first.
pub(super) fn archived(
    conn: &Connection,
    app: &str,
    from: u64,
    to: u64,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event FROM bus_archive WHERE app = ?1 AND put_at BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    stmt.query_map((app, from as i64, to as i64), |r| r.get(0))?
        .collect()
}

/// Drops archived events of `app` put before `before`; returns how many.
pub(super) fn expire_archive(conn: &Connection, app: &str, before: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("DELETE FROM bus_archive WHERE app = ?1 AND put_at < ?2")?
        .execute((app, before as i64))
        .map(|n| n as u64)
}

/// Forgets everything of `app`'s bus (the app was deleted).
pub(super) fn drop_app(conn: &Connection, app: &str) -> rusqlite::Result<()> {
    for table in [
        "bus_archive",
        "bus_deliveries",
        "bus_counts",
        "bus_topic_subs",
    ] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE app = ?1"))?
            .execute([app])?;
    }
    Ok(())
}

/// Deliveries and counts of rules `app` no longer has (removed by a deploy).
pub(super) fn drop_rules_except(
    conn: &Connection,
    app: &str,
    keep: &[String],
) -> rusqlite::Result<u64> {
    let mut gone = 0;
    let rules: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT rule FROM bus_counts WHERE app = ?1
             UNION SELECT DISTINCT rule FROM bus_deliveries WHERE app = ?1",
        )?
        .query_map([app], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for rule in rules.iter().filter(|r| !keep.contains(r)) {
        gone += conn
            .prepare_cached("DELETE FROM bus_deliveries WHERE app = ?1 AND rule = ?2")?
            .execute((app, rule))? as u64;
        conn.prepare_cached("DELETE FROM bus_counts WHERE app = ?1 AND rule = ?2")?
            .execute((app, rule))?;
    }
    Ok(gone)
}
