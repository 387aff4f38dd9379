//! The embedded key-value backend: every store's entries live in SQLite
//! (`kv_entries`) and, for reads, in an in-memory ordered map per store, loaded at
//! open. Reads never touch SQLite. A write checks its preconditions against the
//! rows (which include the not yet committed writes of its group), writes the row
//! and its change event through [`Database::write`] (group commit), and updates
//! the map once the group is durable, in commit order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::app::StoreKind;
use nimbus_core::data::{
    DataError, DataResult, KeyPage, KvEntry, KvStore, SetOptions, StoreRef, limits, validate_kv_key,
};
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;

use crate::catalog::{Catalog, StoreInfo, append_change, now_ms};
use crate::db::AfterCommit;

const MIGRATIONS: &[&str] = &["CREATE TABLE kv_entries (
        store_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (store_id, key)
    );"];

/// Values up to this size (and valid UTF-8) ride along in change events.
const EVENT_VALUE_BYTES: usize = 4096;

type Map = BTreeMap<String, KvEntry>;

/// One store's entries in memory.
#[derive(Default)]
struct Shard {
    entries: RwLock<Map>,
    /// `(expires_at, key)` of the entries with a TTL, so the sweeper finds due
    /// keys without scanning the store.
    expiring: std::sync::Mutex<std::collections::BTreeSet<(u64, String)>>,
}

impl Shard {
    /// Applies committed edits to the map and the expiry index.
    fn apply(&self, edits: Vec<MapEdit>) {
        let mut map = self.write();
        let mut expiring = self.expiring.lock().unwrap_or_else(|e| e.into_inner());
        for edit in edits {
            let (key, old) = match edit {
                MapEdit::Put(key, entry) => {
                    if let Some(t) = entry.expires_at {
                        expiring.insert((t, key.clone()));
                    }
                    let old = map.insert(key.clone(), entry);
                    (key, old)
                }
                MapEdit::Remove(key) => {
                    let old = map.remove(&key);
                    (key, old)
                }
            };
            if let Some(t) = old.and_then(|e| e.expires_at) {
                let current = map.get(&key).and_then(|e| e.expires_at);
                if current != Some(t) {
                    expiring.remove(&(t, key));
                }
            }
        }
    }

    /// Keys whose TTL has passed at `now`, oldest first, at most `limit`.
    fn due(&self, now: u64, limit: usize) -> Vec<String> {
        let expiring = self.expiring.lock().unwrap_or_else(|e| e.into_inner());
        expiring
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry at `key` (expired entries count as absent).
    fn live(&self, key: &str, now: u64) -> Option<KvEntry> {
        self.read().get(key).filter(|e| !expired(e, now)).cloned()
    }
}

fn expired(entry: &KvEntry, now: u64) -> bool {
    entry.expires_at.is_some_and(|t| t <= now)
}

/// Key-value stores. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    catalog: Catalog,
    shards: Arc<RwLock<HashMap<i64, Arc<Shard>>>>,
}

impl Kv {
    /// Loads every key-value store's live entries into memory.
    pub fn open(catalog: Catalog) -> Result<Self, DataError> {
        let db = catalog.db().clone();
        db.migrate("data.kv", MIGRATIONS)
            .map_err(DataError::storage)?;
        let now = now_ms();
        let mut shards: HashMap<i64, Arc<Shard>> = HashMap::new();
        db.call_blocking(|conn| {
            let mut stmt = conn.prepare(
                "SELECT store_id, key, value, version, expires_at FROM kv_entries
                 WHERE expires_at IS NULL OR expires_at > ?1",
            )?;
            let mut rows = stmt.query([now as i64])?;
            while let Some(row) = rows.next()? {
                let store: i64 = row.get(0)?;
                let entry = KvEntry {
                    value: Bytes::from(row.get::<_, Vec<u8>>(2)?),
                    version: row.get::<_, i64>(3)? as u64,
                    expires_at: row.get::<_, Option<i64>>(4)?.map(|t| t as u64),
                };
                shards
                    .entry(store)
                    .or_default()
                    .apply(vec![MapEdit::Put(row.get(1)?, entry)]);
            }
            Ok(())
        })
        .map_err(DataError::storage)?;
        Ok(Self {
            catalog,
            shards: Arc::new(RwLock::new(shards)),
        })
    }

    fn store(&self, store: StoreRef<'_>) -> DataResult<(StoreInfo, Arc<Shard>)> {
        let info = self.catalog.lookup(StoreKind::Kv, store)?;
        let shard = self.shard(info.id);
        Ok((info, shard))
    }

    fn shard(&self, id: i64) -> Arc<Shard> {
        if let Some(shard) = self
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return shard.clone();
        }
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Runs a write in the database's group commit: `f` checks the rows and
    /// writes rows and events; its map edits apply once the group is durable.
    async fn write<T: Send + 'static>(
        &self,
        store: StoreRef<'_>,
        f: impl FnOnce(&Connection, &StoreInfo, u64) -> DataResult<(T, Vec<MapEdit>)> + Send + 'static,
    ) -> DataResult<T> {
        let (info, shard) = self.store(store)?;
        self.catalog
            .db()
            .write(move |conn| {
                let (out, edits) = f(conn, &info, now_ms())?;
                let apply: AfterCommit = Box::new(move || shard.apply(edits));
                Ok((out, Some(apply)))
            })
            .await
    }

    /// Deletes expired entries (with a `nimbus.kv.expired` event each); returns
    /// how many. The node calls this periodically.
    pub async fn sweep_expired(&self) -> DataResult<usize> {
        let now = now_ms();
        let shards: Vec<(i64, Arc<Shard>)> = self
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut total = 0;
        for (id, shard) in shards {
            let keys = shard.due(now, limits::MAX_PAGE);
            if keys.is_empty() {
                continue;
            }
            let Some(info) = self.catalog.by_id(id) else {
                continue;
            };
            let store = StoreRef::new(&info.app, &info.name);
            total += self
                .write(store, move |conn, info, now| {
                    let mut edits = Vec::new();
                    for key in keys {
                        // Re-check the row: the key may have been rewritten since.
                        let Some(entry) = current(conn, info, &key, 0)? else {
                            continue;
                        };
                        if !expired(&entry, now) {
                            continue;
                        }
                        sql(delete_row(conn, info, &key))?;
                        sql(append_change(
                            conn,
                            info,
                            "nimbus.kv.expired",
                            &key,
                            &json!({"key": key, "version": entry.version}),
                        ))?;
                        edits.push(MapEdit::Remove(key));
                    }
                    Ok((edits.len(), edits))
                })
                .await?;
        }
        Ok(total)
    }

    /// Deletes every entry and change event of the store, and the store.
    pub async fn drop_store(&self, store: &StoreInfo) -> DataResult<()> {
        let info = store.clone();
        self.catalog
            .db()
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute("DELETE FROM kv_entries WHERE store_id = ?1", [info.id])?;
                Catalog::remove_in(&tx, &info)?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(DataError::storage)?;
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&store.id);
        self.catalog.forget(store);
        Ok(())
    }

    /// (live keys, bytes of keys and values) of a store.
    pub fn stats(&self, store: &StoreInfo) -> (u64, u64) {
        let now = now_ms();
        let shard = self.shard(store.id);
        let map = shard.read();
        map.iter()
            .filter(|(_, e)| !expired(e, now))
            .fold((0, 0), |(n, bytes), (k, e)| {
                (n + 1, bytes + (k.len() + e.value.len()) as u64)
            })
    }
}

enum MapEdit {
    Put(String, KvEntry),
    Remove(String),
}

fn sql<T>(result: rusqlite::Result<T>) -> DataResult<T> {
    result.map_err(DataError::storage)
}

fn check_value(value: &[u8]) -> DataResult<()> {
    if value.len() > limits::MAX_VALUE_BYTES {
        return Err(DataError::TooLarge(format!(
            "the value is {} bytes; the limit is {} bytes",
            value.len(),
            limits::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

/// The entry at `key` as the transaction sees it (including earlier writes of
/// its group); entries expired at `now` count as absent (`now` = 0: never).
fn current(
    conn: &Connection,
    store: &StoreInfo,
    key: &str,
    now: u64,
) -> DataResult<Option<KvEntry>> {
    let mut stmt = sql(conn.prepare_cached(
        "SELECT value, version, expires_at FROM kv_entries WHERE store_id = ?1 AND key = ?2",
    ))?;
    let row = sql(stmt
        .query_row((store.id, key), |row| {
            Ok(KvEntry {
                value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
                version: row.get::<_, i64>(1)? as u64,
                expires_at: row.get::<_, Option<i64>>(2)?.map(|t| t as u64),
            })
        })
        .optional())?;
    Ok(row.filter(|e| now == 0 || !expired(e, now)))
}

fn delete_row(conn: &Connection, store: &StoreInfo, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM kv_entries WHERE store_id = ?1 AND key = ?2")?
        .execute((store.id, key))?;
    Ok(())
}

/// Writes `key` = `value` with the next version, and its change event.
fn put_row(
    conn: &Connection,
    store: &StoreInfo,
    now: u64,
    key: &str,
    value: Bytes,
    options: SetOptions,
) -> DataResult<(u64, MapEdit)> {
    let current = current(conn, store, key, now)?.map_or(0, |e| e.version);
    if let Some(expected) = options.if_version
        && expected != current
    {
        return Err(DataError::Conflict(match current {
            0 => format!("key `{key}` does not exist (expected version {expected})"),
            v => format!("key `{key}` is at version {v}, not {expected}"),
        }));
    }
    let version = current + 1;
    let expires_at = options.ttl.map(|ttl| now + ttl.as_millis() as u64);
    // The map keeps the value for as long as the key lives: an owned copy, never a
    // slice that pins a larger buffer (such as the HTTP request it arrived in).
    let value = Bytes::copy_from_slice(&value);
    sql(conn
        .prepare_cached(
            "INSERT INTO kv_entries (store_id, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (store_id, key) DO UPDATE SET value = ?3, version = ?4, expires_at = ?5",
        )
        .and_then(|mut stmt| {
            stmt.execute((
                store.id,
                key,
                value.as_ref(),
                version as i64,
                expires_at.map(|t| t as i64),
            ))
        }))?;
    let mut data = json!({"key": key, "version": version, "size": value.len()});
    if let Some(t) = expires_at {
        data["expires_at"] = json!(t);
    }
    if value.len() <= EVENT_VALUE_BYTES
        && let Ok(text) = std::str::from_utf8(&value)
    {
        data["value"] = json!(text);
    }
    sql(append_change(conn, store, "nimbus.kv.set", key, &data))?;
    Ok((
        version,
        MapEdit::Put(
            key.to_string(),
            KvEntry {
                value,
                version,
                expires_at,
            },
        ),
    ))
}

#[async_trait]
impl KvStore for Kv {
    fn get(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<KvEntry>> {
        validate_kv_key(key)?;
        let (_, shard) = self.store(store)?;
        Ok(shard.live(key, now_ms()))
    }

    fn list(
        &self,
        store: StoreRef<'_>,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> DataResult<KeyPage> {
        if limit == 0 || limit > limits::MAX_PAGE {
            return Err(DataError::Invalid(format!(
                "limit must be between 1 and {}",
                limits::MAX_PAGE
            )));
        }
        let (_, shard) = self.store(store)?;
        let now = now_ms();
        let map = shard.read();
        // A cursor is the last key of the previous page; one before the prefix
        // (from another listing) starts at the prefix.
        let start = match cursor {
            Some(c) if c >= prefix => Bound::Excluded(c),
            _ => Bound::Included(prefix),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for (key, entry) in map.range::<str, _>((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if expired(entry, now) {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(key.clone());
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn set(
        &self,
        store: StoreRef<'_>,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> DataResult<u64> {
        validate_kv_key(key)?;
        check_value(&value)?;
        let key = key.to_string();
        self.write(store, move |conn, info, now| {
            let (version, edit) = put_row(conn, info, now, &key, value, options)?;
            Ok((version, vec![edit]))
        })
        .await
    }

    async fn set_many(&self, store: StoreRef<'_>, entries: Vec<(String, Bytes)>) -> DataResult<()> {
        if entries.len() > limits::MAX_PAGE {
            return Err(DataError::Invalid(format!(
                "a batch holds at most {} entries",
                limits::MAX_PAGE
            )));
        }
        for (key, value) in &entries {
            validate_kv_key(key)?;
            check_value(value)?;
        }
        self.write(store, move |conn, info, now| {
            let mut edits = Vec::new();
            for (key, value) in entries {
                // A key set twice in one batch: each write sees the one before.
                let (_, edit) = put_row(conn, info, now, &key, value, SetOptions::default())?;
                edits.push(edit);
            }
            Ok(((), edits))
        })
        .await
    }

    async fn delete_many(&self, store: StoreRef<'_>, keys: Vec<String>) -> DataResult<u64> {
        if keys.len() > limits::MAX_PAGE {
            return Err(DataError::Invalid(format!(
                "a batch holds at most {} keys",
                limits::MAX_PAGE
            )));
        }
        for key in &keys {
            validate_kv_key(key)?;
        }
        self.write(store, move |conn, info, now| {
            let mut edits = Vec::new();
            let mut deleted = 0;
            for key in keys {
                let Some(entry) = current(conn, info, &key, now)? else {
                    continue;
                };
                sql(delete_row(conn, info, &key))?;
                sql(append_change(
                    conn,
                    info,
                    "nimbus.kv.deleted",
                    &key,
                    &json!({"key": key, "version": entry.version}),
                ))?;
                deleted += 1;
                edits.push(MapEdit::Remove(key));
            }
            Ok((deleted, edits))
        })
        .await
    }

    async fn increment(&self, store: StoreRef<'_>, key: &str, delta: i64) -> DataResult<i64> {
        validate_kv_key(key)?;
        let key = key.to_string();
        self.write(store, move |conn, info, now| {
            let existing = current(conn, info, &key, now)?;
            let number = match &existing {
                None => 0,
                Some(e) => std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        DataError::Invalid(format!(
                            "key `{key}` does not hold a decimal integer, so it cannot be incremented"
                        ))
                    })?,
            };
            let next = number.checked_add(delta).ok_or_else(|| {
                DataError::Invalid(format!("incrementing `{key}` by {delta} overflows"))
            })?;
            // Keep the TTL of an existing entry, as Redis INCRBY does.
            let ttl = existing
                .and_then(|e| e.expires_at)
                .map(|t| std::time::Duration::from_millis(t.saturating_sub(now)));
            let options = SetOptions {
                ttl,
                if_version: None,
            };
            let (_, edit) = put_row(
                conn,
                info,
                now,
                &key,
                Bytes::from(next.to_string()),
                options,
            )?;
            Ok((next, vec![edit]))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Database;

    fn open(dir: &std::path::Path) -> (Kv, Catalog) {
        let db = Database::open(dir).unwrap();
        let catalog = Catalog::open(db).unwrap();
        catalog
            .create(StoreKind::Kv, StoreRef::new("shop", "carts"))
            .unwrap();
        (Kv::open(catalog.clone()).unwrap(), catalog)
    }

    const CARTS: StoreRef<'static> = StoreRef {
        app: "shop",
        name: "carts",
    };

    #[tokio::test]
    async fn set_get_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        assert_eq!(
            kv.set(CARTS, "a", "1".into(), SetOptions::default())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            kv.set(CARTS, "a", "2".into(), SetOptions::default())
                .await
                .unwrap(),
            2
        );
        kv.set(CARTS, "b", "x".into(), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(
            kv.delete_many(CARTS, vec!["b".into(), "zz".into()])
                .await
                .unwrap(),
            1
        );
        drop(kv);
        let (kv, catalog) = open(dir.path());
        let a = kv.get(CARTS, "a").unwrap().unwrap();
        assert_eq!((a.value.as_ref(), a.version), (&b"2"[..], 2));
        assert!(kv.get(CARTS, "b").unwrap().is_none());
        let info = catalog.lookup(StoreKind::Kv, CARTS).unwrap();
        let types: Vec<String> = catalog
            .changes(&info, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.event.ty)
            .collect();
        assert_eq!(
            types,
            [
                "nimbus.kv.set",
                "nimbus.kv.set",
                "nimbus.kv.set",
                "nimbus.kv.deleted"
            ]
        );
    }

    #[tokio::test]
    async fn compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        let create = SetOptions {
            if_version: Some(0),
            ..Default::default()
        };
        kv.set(CARTS, "k", "v1".into(), create).await.unwrap();
        let err = kv.set(CARTS, "k", "v2".into(), create).await.unwrap_err();
        assert!(matches!(err, DataError::Conflict(_)), "{err}");
        let swap = SetOptions {
            if_version: Some(1),
            ..Default::default()
        };
        assert_eq!(kv.set(CARTS, "k", "v2".into(), swap).await.unwrap(), 2);
        assert!(kv.set(CARTS, "k", "v3".into(), swap).await.is_err());
        assert_eq!(kv.get(CARTS, "k").unwrap().unwrap().value, "v2");
    }

    #[tokio::test]
    async fn ttl_expires_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        let ttl = SetOptions {
            ttl: Some(Duration::from_millis(30)),
            ..Default::default()
        };
        kv.set(CARTS, "t", "x".into(), ttl).await.unwrap();
        // Rewritten without a TTL before it expires: it stays.
        kv.set(CARTS, "kept", "x".into(), ttl).await.unwrap();
        kv.set(CARTS, "kept", "y".into(), SetOptions::default())
            .await
            .unwrap();
        assert!(kv.get(CARTS, "t").unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(kv.get(CARTS, "t").unwrap().is_none());
        assert_eq!(kv.list(CARTS, "", None, 10).unwrap().keys, ["kept"]);
        assert_eq!(kv.sweep_expired().await.unwrap(), 1);
        assert_eq!(kv.sweep_expired().await.unwrap(), 0);
        assert_eq!(kv.get(CARTS, "kept").unwrap().unwrap().value, "y");
        drop(kv);
        let (kv, _) = open(dir.path());
        assert!(kv.get(CARTS, "t").unwrap().is_none());
        assert!(kv.get(CARTS, "kept").unwrap().is_some());
    }

    #[tokio::test]
    async fn increment_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        assert_eq!(kv.increment(CARTS, "n", 5).await.unwrap(), 5);
        assert_eq!(kv.increment(CARTS, "n", -2).await.unwrap(), 3);
        kv.set(CARTS, "s", "abc".into(), SetOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            kv.increment(CARTS, "s", 1).await,
            Err(DataError::Invalid(_))
        ));
        kv.set_many(
            CARTS,
            vec![("x".into(), "1".into()), ("x".into(), "2".into())],
        )
        .await
        .unwrap();
        let x = kv.get(CARTS, "x").unwrap().unwrap();
        assert_eq!((x.value.as_ref(), x.version), (&b"2"[..], 2));
    }

    #[tokio::test]
    async fn list_by_prefix_with_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        let entries = (0..25)
            .map(|i| (format!("user:{i:02}"), Bytes::from("v")))
            .chain([("other".to_string(), Bytes::from("v"))])
            .collect();
        kv.set_many(CARTS, entries).await.unwrap();
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = kv.list(CARTS, "user:", cursor.as_deref(), 10).unwrap();
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(all.len(), 25);
        assert_eq!(all[0], "user:00");
        assert_eq!(all[24], "user:24");
    }

    #[tokio::test]
    async fn rejects_bad_keys_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, _) = open(dir.path());
        for key in ["", "a\0b", &"k".repeat(1025)] {
            assert!(matches!(
                kv.set(CARTS, key, "v".into(), SetOptions::default()).await,
                Err(DataError::Invalid(_))
            ));
        }
        let big = Bytes::from(vec![0u8; limits::MAX_VALUE_BYTES + 1]);
        assert!(matches!(
            kv.set(CARTS, "big", big, SetOptions::default()).await,
            Err(DataError::TooLarge(_))
        ));
        assert!(matches!(
            kv.get(StoreRef::new("shop", "nope"), "a"),
            Err(DataError::NoSuchStore { .. })
        ));
    }
}
