//! Schedules: at each slot of a cron expression (in its time zone) or a rate,
//! an event (`type` `nimbus.schedule`, `source` `nimbus/APP/schedules/NAME`,
//! `time` the slot, `data` the payload) is handed to the schedule's target: an
//! async invocation of a function, a queue message, a topic message, or a put
//! into a bus.
//!
//! A slot is claimed durably (`schedule_state.last_slot`) before its event is
//! handed off, so no slot fires twice, also across restarts. After downtime the
//! most recent missed slot fires once on start when `catch_up` is set (the
//! default), else it is skipped. A new schedule starts counting at its deploy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::civil::{DateTime, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use nimbus_core::app::{App, ScheduleDecl, Sink, When};
use nimbus_core::bus::EventBus;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::cron::Cron;
use nimbus_core::data::{DataError, DataResult, StoreRef};
use nimbus_core::invocation::AsyncInvoker;
use nimbus_core::queue::{QueueService, SendOptions};
use nimbus_core::schedule::{ScheduleService, ScheduleStatus};
use nimbus_core::topic::{Publish, TopicService};
use nimbus_data::Database;
use nimbus_data::catalog::{now_ms, rfc3339};
use rusqlite::OptionalExtension;
use serde_json::Value;
use tokio::sync::watch;

const MIGRATIONS: &[&str] = &["CREATE TABLE schedule_state (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        last_slot INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );"];

/// How far a missed-slot walk looks for the latest one.
const MAX_WALK: usize = 100_000;

/// Where schedules hand their events.
#[derive(Clone)]
pub struct Targets {
    pub invocations: Arc<dyn AsyncInvoker>,
    pub queues: Arc<dyn QueueService>,
    pub topics: Arc<dyn TopicService>,
    pub bus: Arc<dyn EventBus>,
}

/// When a schedule fires: a parsed cron in its zone, or a rate.
#[derive(Debug, Clone)]
enum Clock {
    Cron(Box<Cron>, TimeZone),
    Rate(u64),
}

impl Clock {
    fn of(when: &When) -> Result<Self, String> {
        Ok(match when {
            When::Cron { expr, timezone } => Clock::Cron(
                Box::new(Cron::parse(expr)?),
                TimeZone::get(timezone).map_err(|_| {
                    format!("unknown time zone `{timezone}` (an IANA name such as `Europe/Paris`)")
                })?,
            ),
            When::Rate { every } => Clock::Rate((every.as_millis() as u64).max(1)),
        })
    }

    /// The first slot strictly after `after_ms`.
    fn next(&self, after_ms: u64) -> Option<u64> {
        match self {
            Clock::Rate(every) => Some((after_ms / every + 1) * every),
            Clock::Cron(cron, tz) => next_cron(cron, tz, after_ms),
        }
    }

    /// The latest slot at or before `now`, starting from `from` (a slot).
    fn latest(&self, from: u64, now: u64) -> u64 {
        match self {
            Clock::Rate(every) => (now / every) * every,
            Clock::Cron(..) => {
                let mut latest = from;
                for _ in 0..MAX_WALK {
                    match self.next(latest) {
                        Some(n) if n <= now => latest = n,
                        _ => break,
                    }
                }
                latest
            }
        }
    }
}

/// The first minute after `after_ms` that `cron` matches in `tz`. A local time
/// skipped by a DST change fires at the first instant after the gap.
fn next_cron(cron: &Cron, tz: &TimeZone, after_ms: u64) -> Option<u64> {
    let at = Timestamp::from_millisecond(after_ms as i64)
        .ok()?
        .to_zoned_datetime(tz.clone());
    let start = at.datetime();
    let mut dt = date(start.year(), start.month(), start.day())
        .at(start.hour(), start.minute(), 0, 0)
        .checked_add(1.minute())
        .ok()?;
    // Each step either matches or jumps to the next month, day, hour or minute.
    for _ in 0..200_000 {
        let next = if !cron.month(dt.month() as u32) {
            let (y, m) = if dt.month() == 12 {
                (dt.year() + 1, 1)
            } else {
                (dt.year(), dt.month() + 1)
            };
            date(y, m, 1).at(0, 0, 0, 0)
        } else if !cron.day(dt.day() as u32, dt.weekday().to_sunday_zero_offset() as u32) {
            dt.date().tomorrow().ok()?.at(0, 0, 0, 0)
        } else if !cron.hour(dt.hour() as u32) {
            let top: DateTime = dt.date().at(dt.hour(), 0, 0, 0);
            top.checked_add(1.hour()).ok()?
        } else if !cron.minute(dt.minute() as u32) {
            dt.checked_add(1.minute()).ok()?
        } else {
            let zoned = tz.to_ambiguous_zoned_datetime(dt).compatible().ok()?;
            let ms = zoned.timestamp().as_millisecond() as u64;
            if ms > after_ms {
                return Some(ms);
            }
            dt.checked_add(1.minute()).ok()?
        };
        dt = next;
    }
    None
}

#[derive(Default)]
struct Stats {
    fired: AtomicU64,
    failed: AtomicU64,
}

struct Running {
    decl: ScheduleDecl,
    clock: Clock,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
}

/// The schedules of every app. Cheap to clone.
#[derive(Clone)]
pub struct Schedules {
    db: Database,
    targets: Targets,
    running: Arc<Mutex<HashMap<(String, String), Running>>>,
}

impl Schedules {
    pub fn open(db: Database, targets: Targets) -> Result<Self, DataError> {
        db.migrate("processing.schedules", MIGRATIONS)?;
        Ok(Self {
            db,
            targets,
            running: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `app`'s schedules (time zones against the system's database)
    /// without starting them, so a deploy can fail before anything changes.
    pub fn check(app: &App) -> Result<(), String> {
        for s in app.schedules.values() {
            Clock::of(&s.when).map_err(|e| format!("schedule `{}`: {e}", s.name))?;
        }
        Ok(())
    }

    /// Runs `app`'s enabled schedules; stops those it no longer has.
    pub fn set_app(&self, app: &App) -> Result<(), String> {
        Self::check(app)?;
        let mut running = self.lock();
        running.retain(|(a, name), r| {
            let keep = a != &app.name
                || app
                    .schedules
                    .get(name)
                    .is_some_and(|s| *s == r.decl && s.enabled);
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for s in app.schedules.values().filter(|s| s.enabled) {
            let key = (app.name.clone(), s.name.clone());
            if running.contains_key(&key) {
                continue;
            }
            let clock = Clock::of(&s.when)?;
            let (stop, stopped) = watch::channel(false);
            let stats = Arc::new(Stats::default());
            let job = Job {
                app: app.name.clone(),
                decl: s.clone(),
                clock: clock.clone(),
                db: self.db.clone(),
                targets: self.targets.clone(),
                stats: stats.clone(),
            };
            tokio::spawn(async move { job.run(stopped).await });
            running.insert(
                key,
                Running {
                    decl: s.clone(),
                    clock,
                    stop,
                    stats,
                },
            );
        }
        Ok(())
    }

    /// Stops `app`'s schedules and forgets their slots.
    pub async fn remove_app(&self, app: &str) -> DataResult<()> {
        self.lock().retain(|(a, _), r| {
            if a == app {
                let _ = r.stop.send(true);
            }
            a != app
        });
        let app = app.to_string();
        self.db
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM schedule_state WHERE app = ?1")
                    .and_then(|mut s| s.execute([&app]))
                    .map_err(DataError::storage)?;
                Ok::<_, DataError>(((), None))
            })
            .await
    }
}

async fn last_slot(db: &Database, app: &str, name: &str) -> DataResult<Option<u64>> {
    let (app, name) = (app.to_string(), name.to_string());
    db.call(move |conn| {
        Ok(conn
            .prepare_cached("SELECT last_slot FROM schedule_state WHERE app = ?1 AND name = ?2")?
            .query_row((&app, &name), |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| v as u64))
    })
    .await
    .map_err(DataError::storage)
}

/// Records `slot` as the schedule's last; false if it (or a later one) was
/// already recorded, i.e. it fired before.
async fn claim(db: &Database, app: &str, name: &str, slot: u64) -> DataResult<bool> {
    let (app, name) = (app.to_string(), name.to_string());
    db.write(move |conn| {
        let n = conn
            .prepare_cached(
                "INSERT INTO schedule_state (app, name, last_slot) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app, name) DO UPDATE SET last_slot = ?3 WHERE last_slot < ?3",
            )
            .and_then(|mut s| s.execute((&app, &name, slot as i64)))
            .map_err(DataError::storage)?;
        Ok::<_, DataError>((n > 0, None))
    })
    .await
}

struct Job {
    app: String,
    decl: ScheduleDecl,
    clock: Clock,
    db: Database,
    targets: Targets,
    stats: Arc<Stats>,
}

impl Job {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = self.decl.name.clone();
        let mut last = loop {
            match last_slot(&self.db, &self.app, &name).await {
                Ok(Some(last)) => break last,
                Ok(None) => {
                    // New: count from now.
                    let now = now_ms();
                    match claim(&self.db, &self.app, &name, now).await {
                        Ok(_) => break now,
                        Err(err) => {
                            tracing::warn!(app = %self.app, schedule = %name, "cannot record a schedule: {err}")
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(app = %self.app, schedule = %name, "cannot read a schedule: {err}")
                }
            }
            if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                return;
            }
        };
        loop {
            let Some(next) = self.clock.next(last) else {
                tracing::warn!(app = %self.app, schedule = %name, "the schedule has no future run");
                let _ = stop.changed().await;
                return;
            };
            let now = now_ms();
            if next <= now {
                // Missed while the node was down.
                let latest = self.clock.latest(next, now);
                if self.decl.catch_up {
                    self.fire(latest).await;
                } else if let Err(err) = claim(&self.db, &self.app, &name, latest).await {
                    tracing::warn!(app = %self.app, schedule = %name, "cannot record a skipped run: {err}");
                }
                last = latest;
                continue;
            }
            if sleep_or_stop(&mut stop, Duration::from_millis(next - now)).await {
                return;
            }
            // Timers may wake a little early.
            while now_ms() < next {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.fire(next).await;
            last = next;
        }
    }

    async fn fire(&self, slot: u64) {
        match claim(&self.db, &self.app, &self.decl.name, slot).await {
            Ok(true) => {}
            Ok(false) => return, // fired already
            Err(err) => {
                tracing::warn!(app = %self.app, schedule = %self.decl.name, "cannot claim a run: {err}");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.stats.fired.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = self.hand_off(slot).await {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                app = %self.app, schedule = %self.decl.name,
                "the run at {} could not reach {}: {err}", rfc3339(slot), self.decl.target.destination
            );
        }
    }

    async fn hand_off(&self, slot: u64) -> Result<(), String> {
        let mut event = CloudEvent::new(
            format!("sch-{}-{slot}", self.decl.name),
            format!("nimbus/{}/schedules/{}", self.app, self.decl.name),
            "nimbus.schedule",
        )
        .with_data(
            "application/json",
            self.decl.payload.to_string().into_bytes(),
        );
        event.time = Some(rfc3339(slot));
        let json = event.to_json();
        let input = self
            .decl
            .target
            .input
            .apply(&json)
            .map_err(|e| e.to_string())?;
        let text = match &input {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let err = |e: DataError| e.to_string();
        match &self.decl.target.destination {
            Sink::Function(f) => {
                if self.decl.target.input != nimbus_core::app::Input::Event {
                    event = event.with_data("application/json", input.to_string().into_bytes());
                }
                self.targets
                    .invocations
                    .submit(&self.app, f, event)
                    .await
                    .map(drop)
                    .map_err(err)
            }
            Sink::Queue(q) => self
                .targets
                .queues
                .send(
                    StoreRef::new(&self.app, q),
                    Bytes::from(text),
                    SendOptions::default(),
                )
                .await
                .map(drop)
                .map_err(err),
            Sink::Topic(t) => {
                let message = Publish {
                    message: text,
                    ..Publish::default()
                };
                let mut r = self
                    .targets
                    .topics
                    .publish(&self.app, t, vec![message])
                    .await
                    .map_err(err)?;
                r.pop().expect("one result").map(drop).map_err(err)
            }
            Sink::Bus(app) => {
                let mut r = self
                    .targets
                    .bus
                    .put_events(app, vec![event])
                    .await
                    .map_err(err)?;
                r.pop().expect("one result").map(drop).map_err(err)
            }
            Sink::Webhook { .. } => Err("a schedule does not deliver to webhooks".into()),
        }
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn describe(when: &When) -> String {
    match when {
        When::Cron { expr, timezone } => format!("cron {expr} ({timezone})"),
        When::Rate { every } => format!("rate {}", nimbus_core::duration::format(*every)),
    }
}

#[async_trait]
impl ScheduleService for Schedules {
    async fn schedules(&self, app: &str) -> DataResult<Vec<ScheduleStatus>> {
        let running: Vec<(ScheduleDecl, Clock, u64, u64)> = self
            .lock()
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|(_, r)| {
                (
                    r.decl.clone(),
                    r.clock.clone(),
                    r.stats.fired.load(Ordering::Relaxed),
                    r.stats.failed.load(Ordering::Relaxed),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (decl, clock, fired, failed) in running {
            let last = last_slot(&self.db, app, &decl.name).await?;
            let from = last.unwrap_or_else(now_ms).max(now_ms());
            out.push(ScheduleStatus {
                name: decl.name.clone(),
                when: describe(&decl.when),
                target: decl.target.destination.to_string(),
                enabled: decl.enabled,
                catch_up: decl.catch_up,
                next_run: clock.next(from).map(rfc3339),
                last_run: last.map(rfc3339),
                fired,
                failed,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        s.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        let clock = Clock::of(&When::Cron {
            expr: expr.into(),
            timezone: tz.into(),
        })
        .unwrap();
        let at = clock.next(ms(after)).unwrap();
        Timestamp::from_millisecond(at as i64).unwrap().to_string()
    }

    #[test]
    fn cron_slots_in_their_time_zone() {
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-12-02T03:00:00Z"),
            "2026-12-03T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-12-02T02:59:59Z"),
            "2026-12-02T03:00:00Z"
        );
        // 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer.
        assert_eq!(
            next("0 3 * * *", "Europe/Paris", "2026-12-02T12:00:00Z"),
            "2026-12-03T02:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "Europe/Paris", "2026-07-01T12:00:00Z"),
            "2026-07-02T01:00:00Z"
        );
        // 02:30 does not exist on the day clocks spring forward: the run comes right after the gap.
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z"),
            "2026-03-29T01:30:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-12-02T10:07:00Z"),
            "2026-12-02T10:15:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * * mon", "UTC", "2026-12-02T00:00:00Z"),
            "2026-12-07T09:00:00Z"
        );
        assert!(
            Clock::of(&When::Cron {
                expr: "0 3 * * *".into(),
                timezone: "Europe/Pariss".into()
            })
            .is_err()
        );
    }

    #[test]
    fn rates_and_missed_slots() {
        let five = Clock::Rate(300_000);
        assert_eq!(
            five.next(ms("2026-12-02T10:07:00Z")),
            Some(ms("2026-12-02T10:10:00Z"))
        );
        assert_eq!(
            five.latest(0, ms("2026-12-02T10:07:00Z")),
            ms("2026-12-02T10:05:00Z")
        );
        let daily = Clock::of(&When::Cron {
            expr: "0 3 * * *".into(),
            timezone: "UTC".into(),
        })
        .unwrap();
        assert_eq!(
            daily.latest(ms("2026-12-01T03:00:00Z"), ms("2026-12-05T12:00:00Z")),
            ms("2026-12-05T03:00:00Z")
        );
    }
}
