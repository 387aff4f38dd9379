//! The store catalog and the change feed: which stores exist (one row per
//! declared `[kv.X]`, `[docs.X]`, `[buckets.X]` of each app, with a numeric id the
//! store tables key on), and the durable, ordered log of committed writes.
//!
//! A store appends its change event with [`append_change`] inside the transaction
//! of the write itself, so the feed holds exactly the committed writes, also
//! across `kill -9`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::app::StoreKind;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{ChangeRecord, DataError, DataResult, StoreRef};
use rusqlite::{Connection, OptionalExtension};

use crate::Database;

// AUTOINCREMENT: a dropped store's id is never reused, so a write still in
// flight for it can never land in a newer store.
const MIGRATIONS: &[&str] = &["CREATE TABLE data_stores (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (app, kind, name)
    );
    CREATE TABLE data_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        store_id INTEGER NOT NULL,
        time INTEGER NOT NULL,
        type TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX data_changes_by_store ON data_changes (store_id, seq);"];

/// A store that exists, as the store tables know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    pub id: i64,
    pub app: Arc<str>,
    pub kind: StoreKind,
    pub name: Arc<str>,
}

impl StoreInfo {
    /// The CloudEvent `source` of the store's changes: `nimbus/APP/KIND/NAME`.
    pub fn source(&self) -> String {
        format!("nimbus/{}/{}/{}", self.app, self.kind.as_str(), self.name)
    }
}

/// The stores of every app. Lookups are served from memory: by app, then a short
/// scan of the app's stores (no allocation on the hot path of every data call).
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Database,
    stores: Arc<RwLock<HashMap<String, Vec<StoreInfo>>>>,
}

impl Catalog {
    pub fn open(db: Database) -> Result<Self, crate::DbError> {
        db.migrate("data.catalog", MIGRATIONS)?;
        let rows = db.call_blocking(|conn| {
            let mut stmt = conn.prepare("SELECT id, app, kind, name FROM data_stores")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        let mut stores: HashMap<String, Vec<StoreInfo>> = HashMap::new();
        for (id, app, kind, name) in rows {
            let Some(kind) = StoreKind::parse(&kind) else {
                continue;
            };
            stores.entry(app.clone()).or_default().push(StoreInfo {
                id,
                app: app.into(),
                kind,
                name: name.into(),
            });
        }
        Ok(Self {
            db,
            stores: Arc::new(RwLock::new(stores)),
        })
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The store `store` of `kind`, or [`DataError::NoSuchStore`].
    pub fn lookup(&self, kind: StoreKind, store: StoreRef<'_>) -> DataResult<StoreInfo> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores
            .get(store.app)
            .and_then(|of_app| {
                of_app
                    .iter()
                    .find(|s| s.kind == kind && &*s.name == store.name)
            })
            .cloned()
            .ok_or_else(|| DataError::NoSuchStore {
                kind,
                app: store.app.to_string(),
                name: store.name.to_string(),
            })
    }

    /// The store with numeric id `id`.
    pub fn by_id(&self, id: i64) -> Option<StoreInfo> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores.values().flatten().find(|s| s.id == id).cloned()
    }

    /// Every store of `app`.
    pub fn of_app(&self, app: &str) -> Vec<StoreInfo> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<StoreInfo> = stores.get(app).cloned().unwrap_or_default();
        all.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        all
    }

    /// Creates the store if it does not exist; returns it either way.
    pub fn create(&self, kind: StoreKind, store: StoreRef<'_>) -> DataResult<StoreInfo> {
        if let Ok(info) = self.lookup(kind, store) {
            return Ok(info);
        }
        let (app, name) = (store.app.to_string(), store.name.to_string());
        let id = self
            .db
            .call_blocking(|conn| {
                conn.execute(
                    "INSERT OR IGNORE INTO data_stores (app, kind, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    (&app, kind.as_str(), &name, now_ms() as i64),
                )?;
                Ok(conn.query_row(
                    "SELECT id FROM data_stores WHERE app = ?1 AND kind = ?2 AND name = ?3",
                    (&app, kind.as_str(), &name),
                    |row| row.get::<_, i64>(0),
                )?)
            })
            .map_err(DataError::storage)?;
        let info = StoreInfo {
            id,
            app: app.clone().into(),
            kind,
            name: name.clone().into(),
        };
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        let of_app = stores.entry(app).or_default();
        // Two creators may race; the row is unique, so is the entry.
        if !of_app.iter().any(|s| s.id == info.id) {
            of_app.push(info.clone());
        }
        Ok(info)
    }

    /// Forgets a store and deletes its change feed, inside the caller's
    /// transaction (which deletes the store's data too).
    pub fn remove_in(conn: &Connection, store: &StoreInfo) -> rusqlite::Result<()> {
        conn.execute("DELETE FROM data_changes WHERE store_id = ?1", [store.id])?;
        conn.execute("DELETE FROM data_stores WHERE id = ?1", [store.id])?;
        Ok(())
    }

    /// Drops the in-memory entry after [`Catalog::remove_in`] committed.
    pub fn forget(&self, store: &StoreInfo) {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        if let Some(of_app) = stores.get_mut(&*store.app) {
            of_app.retain(|s| s.id != store.id);
        }
    }

    /// Change events of `store` after `after`, oldest first.
    pub async fn changes(
        &self,
        store: &StoreInfo,
        after: u64,
        limit: usize,
    ) -> DataResult<Vec<ChangeRecord>> {
        let store = store.clone();
        let source = store.source();
        let rows = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, time, type, subject, data FROM data_changes
                     WHERE store_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map((store.id, after as i64, limit as i64), |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Option<String>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .map_err(DataError::storage)?;
        Ok(rows
            .into_iter()
            .map(|(seq, time, ty, subject, data)| {
                let mut event = CloudEvent::new(seq.to_string(), source.clone(), ty);
                event.subject = Some(subject);
                event.time = Some(rfc3339(time as u64));
                if let Some(data) = data {
                    event = event.with_data("application/json", data.into_bytes());
                }
                ChangeRecord {
                    seq: seq as u64,
                    event,
                }
            })
            .collect())
    }
}

impl Catalog {
    /// The position of `store`'s newest change, 0 if none.
    pub async fn latest_change(&self, store: &StoreInfo) -> DataResult<u64> {
        let id = store.id;
        self.db
            .call(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT MAX(seq) FROM data_changes WHERE store_id = ?1")?
                    .query_row([id], |r| r.get::<_, Option<i64>>(0))?
                    .unwrap_or(0) as u64)
            })
            .await
            .map_err(DataError::storage)
    }
}

/// Appends a change event for `store` inside the caller's transaction. `data` is
/// the event's JSON payload.
pub fn append_change(
    conn: &Connection,
    store: &StoreInfo,
    ty: &str,
    subject: &str,
    data: &serde_json::Value,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO data_changes (store_id, time, type, subject, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute((store.id, now_ms() as i64, ty, subject, data.to_string()))?;
    Ok(conn.last_insert_rowid() as u64)
}

/// Looks up whether a store row still exists (used by tests and recovery).
pub fn store_exists(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM data_stores WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// RFC 3339 time with milliseconds, UTC.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_survive_reopen_and_changes_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let catalog = Catalog::open(db.clone()).unwrap();
        let carts = catalog
            .create(StoreKind::Kv, StoreRef::new("shop", "carts"))
            .unwrap();
        let other = catalog
            .create(StoreKind::Kv, StoreRef::new("shop", "other"))
            .unwrap();
        assert_eq!(carts.source(), "nimbus/shop/kv/carts");
        db.call_blocking(|conn| {
            let tx = conn.transaction()?;
            append_change(
                &tx,
                &carts,
                "nimbus.kv.set",
                "a",
                &serde_json::json!({"key": "a"}),
            )?;
            append_change(&tx, &other, "nimbus.kv.set", "x", &serde_json::json!({}))?;
            append_change(
                &tx,
                &carts,
                "nimbus.kv.deleted",
                "a",
                &serde_json::json!({}),
            )?;
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        drop(catalog);
        let catalog = Catalog::open(db).unwrap();
        let carts = catalog
            .lookup(StoreKind::Kv, StoreRef::new("shop", "carts"))
            .unwrap();
        let changes = catalog.changes(&carts, 0, 10).await.unwrap();
        let types: Vec<&str> = changes.iter().map(|c| c.event.ty.as_str()).collect();
        assert_eq!(types, ["nimbus.kv.set", "nimbus.kv.deleted"]);
        assert_eq!(changes[0].event.subject.as_deref(), Some("a"));
        let rest = catalog.changes(&carts, changes[0].seq, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(matches!(
            catalog.lookup(StoreKind::Docs, StoreRef::new("shop", "carts")),
            Err(DataError::NoSuchStore { .. })
        ));
    }
}
