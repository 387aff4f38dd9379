//! Change data capture: the change feeds of key-value, document and object
//! stores, read by consumers that each keep a durable cursor.
//!
//! - The bus: while an app has bus rules, every change of its stores is put
//!   into its bus (`source` = `nimbus/APP/KIND/NAME`), so rules route changes
//!   like any event. The cursor moves in the same transaction as the put.
//! - Change triggers (`[[triggers]] bucket|kv|docs = "NAME"`): changes that
//!   pass the trigger's `events`, `prefix` and `suffix` are delivered one at a
//!   time, in feed order (so in order per key), to the function's event
//!   handler; a failed change is retried with backoff up to `retries`, then
//!   skipped. The cursor moves after each delivery.
//!
//! Either way a change reaches its consumer at least once, also when the node
//! restarts between the write and the delivery. Consumers sleep until the
//! database commits again, so idle feeds cost nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_core::api::TriggerStatus;
use nimbus_core::app::{App, ChangeTrigger, StoreKind};
use nimbus_core::data::{ChangeRecord, DataError, DataResult, StoreCatalog};
use nimbus_core::ports::{Invoker, Target};
use nimbus_data::Database;
use rusqlite::OptionalExtension;
use tokio::sync::watch;

use crate::bus::Bus;

const MIGRATIONS: &[&str] = &["CREATE TABLE change_cursors (
        app TEXT NOT NULL,
        consumer TEXT NOT NULL,
        kind TEXT NOT NULL,
        store TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (app, consumer, kind, store)
    );
    CREATE TABLE change_trigger_state (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );"];

/// Changes read per pass.
const PAGE: usize = 100;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Who reads a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Consumer {
    Bus,
    Trigger(ChangeTrigger, Target),
}

impl Consumer {
    fn key(&self) -> String {
        match self {
            Consumer::Bus => "bus".into(),
            Consumer::Trigger(t, _) => format!("trigger:{}", t.name),
        }
    }
}

#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// One running consumer of one store's feed.
struct Running {
    consumer: Consumer,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
}

/// Feed position key: (app, consumer, kind, store).
type Key = (String, String, StoreKind, String);

/// The change consumers of every app. Cheap to clone.
#[derive(Clone)]
pub struct Changes {
    db: Database,
    catalog: Arc<dyn StoreCatalog>,
    invoker: Arc<dyn Invoker>,
    bus: Bus,
    running: Arc<Mutex<HashMap<Key, Running>>>,
    /// The deployed apps, for enable/disable and status.
    apps: Arc<Mutex<HashMap<String, (App, u64)>>>,
}

impl Changes {
    pub fn open(
        db: Database,
        catalog: Arc<dyn StoreCatalog>,
        invoker: Arc<dyn Invoker>,
        bus: Bus,
    ) -> Result<Self, DataError> {
        db.migrate("integration.changes", MIGRATIONS)?;
        Ok(Self {
            db,
            catalog,
            invoker,
            bus,
            running: Arc::default(),
            apps: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn overrides(&self, app: &str) -> HashMap<String, bool> {
        let app = app.to_string();
        self.db
            .call_blocking(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, enabled FROM change_trigger_state WHERE app = ?1",
                )?;
                let rows = stmt
                    .query_map([&app], |r| Ok((r.get(0)?, r.get::<_, bool>(1)?)))?
                    .collect::<Result<HashMap<String, bool>, _>>()?;
                Ok(rows)
            })
            .unwrap_or_default()
    }

    /// Runs the consumers `deployment` of `app` asks for: the bus's (while it
    /// has rules) on every data store, and each enabled change trigger's.
    pub fn set_app(&self, app: &App, deployment: u64) {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.name.clone(), (app.clone(), deployment));
        let overrides = self.overrides(&app.name);
        let mut wanted: Vec<(Key, Consumer)> = Vec::new();
        if !app.bus.rules.is_empty() {
            for (kind, store) in app.stores() {
                if kind != StoreKind::Queues {
                    wanted.push((
                        (app.name.clone(), "bus".into(), kind, store.to_string()),
                        Consumer::Bus,
                    ));
                }
            }
        }
        for t in &app.change_triggers {
            if !overrides.get(&t.name).copied().unwrap_or(t.enabled) {
                continue;
            }
            let target = Target {
                app: app.name.as_str().into(),
                function: t.function.as_str().into(),
                deployment,
            };
            let consumer = Consumer::Trigger(t.clone(), target);
            wanted.push((
                (app.name.clone(), consumer.key(), t.kind, t.store.clone()),
                consumer,
            ));
        }
        let mut running = self.lock();
        running.retain(|key, r| {
            let keep =
                key.0 != app.name || wanted.iter().any(|(k, c)| k == key && *c == r.consumer);
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for (key, consumer) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let stats = Arc::new(Stats::default());
            let feed = Feed {
                key: key.clone(),
                consumer: consumer.clone(),
                changes: self.clone(),
                stats: stats.clone(),
            };
            tokio::spawn(async move { feed.run(stopped).await });
            running.insert(
                key,
                Running {
                    consumer,
                    stop,
                    stats,
                },
            );
        }
    }

    /// Stops every consumer of `app` and forgets its cursors.
    pub async fn remove_app(&self, app: &str) -> DataResult<()> {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
        self.lock().retain(|key, r| {
            if key.0 == app {
                let _ = r.stop.send(true);
            }
            key.0 != app
        });
        let app = app.to_string();
        self.db
            .write(move |conn| {
                for table in ["change_cursors", "change_trigger_state"] {
                    conn.prepare_cached(&format!("DELETE FROM {table} WHERE app = ?1"))
                        .and_then(|mut s| s.execute([&app]))
                        .map_err(DataError::storage)?;
                }
                Ok::<_, DataError>(((), None))
            })
            .await
    }

    fn deployed(&self, app: &str) -> Option<(App, u64)> {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// Turns change trigger `name` of `app` on or off, and remembers the choice.
    pub async fn set_enabled(&self, app: &str, name: &str, enabled: bool) -> DataResult<()> {
        let Some((deployed, deployment)) = self
            .deployed(app)
            .filter(|(a, _)| a.change_triggers.iter().any(|t| t.name == name))
        else {
            return Err(DataError::NotFound(format!(
                "app `{app}` has no trigger `{name}`"
            )));
        };
        let (a, n) = (app.to_string(), name.to_string());
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO change_trigger_state (app, name, enabled) VALUES (?1, ?2, ?3)
                     ON CONFLICT (app, name) DO UPDATE SET enabled = ?3",
                )
                .and_then(|mut s| s.execute((&a, &n, enabled)))
                .map_err(DataError::storage)?;
                Ok::<_, DataError>(((), None))
            })
            .await?;
        self.set_app(&deployed, deployment);
        Ok(())
    }

    /// The change triggers of `app`, as `nimbus trigger ls` shows them.
    pub fn status(&self, app: &str) -> Vec<TriggerStatus> {
        let Some((app, _)) = self.deployed(app) else {
            return Vec::new();
        };
        let app = &app;
        let overrides = self.overrides(&app.name);
        let running = self.lock();
        app.change_triggers
            .iter()
            .map(|t| {
                let key = (
                    app.name.clone(),
                    format!("trigger:{}", t.name),
                    t.kind,
                    t.store.clone(),
                );
                let stats = running.get(&key).map(|r| r.stats.clone());
                let delivered = stats
                    .as_ref()
                    .map_or(0, |s| s.delivered.load(Ordering::Relaxed));
                TriggerStatus {
                    name: t.name.clone(),
                    queue: String::new(),
                    source: format!("{} {}", t.kind.grant_prefix(), t.store),
                    function: t.function.clone(),
                    enabled: overrides.get(&t.name).copied().unwrap_or(t.enabled),
                    pollers: u32::from(stats.is_some()),
                    batches: delivered,
                    messages: delivered,
                    failed: stats.map_or(0, |s| s.failed.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }
}

/// The reading side of one consumer.
struct Feed {
    key: Key,
    consumer: Consumer,
    changes: Changes,
    stats: Arc<Stats>,
}

impl Feed {
    async fn cursor(&self) -> DataResult<u64> {
        let (app, consumer, kind, store) = self.key.clone();
        let stored = self
            .changes
            .db
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT seq FROM change_cursors
                         WHERE app = ?1 AND consumer = ?2 AND kind = ?3 AND store = ?4",
                    )?
                    .query_row((&app, &consumer, kind.as_str(), &store), |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()?)
            })
            .await
            .map_err(DataError::storage)?;
        if let Some(seq) = stored {
            return Ok(seq as u64);
        }
        // A new consumer starts after the changes that exist now.
        let (app, _, kind, store) = &self.key;
        let latest = self
            .changes
            .catalog
            .latest_change(app, *kind, store)
            .await?;
        save_cursor(&self.changes.db, &self.key, latest).await?;
        Ok(latest)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut commits = self.changes.db.commits();
        let mut cursor = loop {
            match self.cursor().await {
                Ok(c) => break c,
                Err(DataError::NoSuchStore { .. }) => return,
                Err(err) => {
                    tracing::warn!("reading a change cursor failed: {err}");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        let (app, _, kind, store) = self.key.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            commits.borrow_and_update();
            let page = match self
                .changes
                .catalog
                .changes(&app, kind, &store, cursor, PAGE)
                .await
            {
                Ok(page) => page,
                Err(DataError::NoSuchStore { .. }) => return,
                Err(err) => {
                    tracing::warn!(app, store, "reading a change feed failed: {err}");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let last = page.last().map_or(cursor, |c| c.seq);
            let moved = match &self.consumer {
                Consumer::Bus => self.to_bus(page, last).await,
                Consumer::Trigger(trigger, target) => {
                    self.to_trigger(trigger, target, page, &mut stop).await
                }
            };
            match moved {
                Ok(Some(seq)) => cursor = seq,
                Ok(None) => return, // stopped
                Err(err) => {
                    tracing::warn!(app, store, "delivering changes failed: {err}");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Puts a page of changes into the bus, moving the cursor in the same write.
    async fn to_bus(&self, page: Vec<ChangeRecord>, last: u64) -> DataResult<Option<u64>> {
        let key = self.key.clone();
        let events = page.into_iter().map(|c| c.event).collect();
        self.changes
            .bus
            .put_feed(&self.key.0, events, move |conn| {
                write_cursor(conn, &key, last).map_err(DataError::storage)
            })
            .await?;
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(Some(last))
    }

    /// Delivers the wanted changes of a page one at a time, in order.
    async fn to_trigger(
        &self,
        trigger: &ChangeTrigger,
        target: &Target,
        page: Vec<ChangeRecord>,
        stop: &mut watch::Receiver<bool>,
    ) -> DataResult<Option<u64>> {
        let mut cursor = None;
        for change in page {
            let event = &change.event;
            if trigger.wants(&event.ty, event.subject.as_deref().unwrap_or_default()) {
                let mut attempt = 0;
                loop {
                    let request_id = format!("chg-{}-{}", trigger.name, change.seq);
                    match self
                        .changes
                        .invoker
                        .invoke_event(target, &request_id, event.clone())
                        .await
                    {
                        Ok(_) => {
                            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(err) => {
                            // Throttling does not use up a change's retries.
                            if !err.is_retryable() {
                                attempt += 1;
                            }
                            if attempt > trigger.retries {
                                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    app = %target.app, trigger = %trigger.name,
                                    "skipping change {} ({} of `{}`) after {attempt} attempts: {err}",
                                    change.seq, event.ty, event.subject.as_deref().unwrap_or_default()
                                );
                                break;
                            }
                            let factor = 1u32 << attempt.min(16);
                            let wait = FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF);
                            if sleep_or_stop(stop, wait).await {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
            save_cursor(&self.changes.db, &self.key, change.seq).await?;
            cursor = Some(change.seq);
        }
        Ok(cursor)
    }
}

/// Sleeps `wait`; true if the consumer was stopped meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn write_cursor(conn: &rusqlite::Connection, key: &Key, seq: u64) -> rusqlite::Result<()> {
    let (app, consumer, kind, store) = key;
    conn.prepare_cached(
        "INSERT INTO change_cursors (app, consumer, kind, store, seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (app, consumer, kind, store) DO UPDATE SET seq = MAX(seq, ?5)",
    )?
    .execute((app, consumer, kind.as_str(), store, seq as i64))?;
    Ok(())
}

async fn save_cursor(db: &Database, key: &Key, seq: u64) -> DataResult<()> {
    let key = key.clone();
    db.write(move |conn| {
        write_cursor(conn, &key, seq).map_err(DataError::storage)?;
        Ok::<_, DataError>(((), None))
    })
    .await
}
