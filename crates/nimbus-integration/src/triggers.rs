//! Queue triggers (event-source mappings): pollers that receive batches from a
//! queue and deliver them to a function's `handle-batch`. Messages the function
//! handled are deleted; the ones it reports as failed (or all, when the call
//! fails) come back after their visibility timeout, and reach the dead-letter
//! queue by the queue's usual rule.
//!
//! Scaling: a mapping starts one poller; a poller that receives a full batch
//! starts another, up to `max_concurrency`; a poller whose long poll comes back
//! empty stops, down to one. An idle queue costs no CPU: its poller waits in a
//! long poll. `nimbus trigger disable|enable` turns a mapping off and on without
//! a deploy; the choice is stored, so it survives restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_core::api::TriggerStatus;
use nimbus_core::app::{App, Trigger};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataError, DataResult, StoreRef};
use nimbus_core::ports::{InvokeError, Invoker, Target};
use nimbus_core::queue::{Message, QueueService, ReceiveOptions, limits};
use nimbus_data::Database;
use tokio::sync::watch;

const MIGRATIONS: &[&str] = &["CREATE TABLE trigger_state (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );"];

/// The running side of one mapping.
struct Mapping {
    trigger: Trigger,
    target: Target,
    max_pollers: u32,
    enabled: bool,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    pollers: AtomicU32,
    batches: AtomicU64,
    messages: AtomicU64,
    failed: AtomicU64,
}

/// Everything a poller needs, shared by the pollers of one mapping.
struct Poll {
    queues: Arc<dyn QueueService>,
    invoker: Arc<dyn Invoker>,
    trigger: Trigger,
    target: Target,
    /// `max_concurrency`, capped by the function's own `concurrency`: more
    /// pollers would only be throttled, burning their messages' receive counts.
    max_pollers: u32,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
}

/// The queue triggers of every app. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    db: Database,
    queues: Arc<dyn QueueService>,
    invoker: Arc<dyn Invoker>,
    mappings: Arc<Mutex<HashMap<(String, String), Mapping>>>,
}

impl Triggers {
    pub fn open(
        db: Database,
        queues: Arc<dyn QueueService>,
        invoker: Arc<dyn Invoker>,
    ) -> Result<Self, DataError> {
        db.migrate("integration.triggers", MIGRATIONS)
            .map_err(DataError::storage)?;
        Ok(Self {
            db,
            queues,
            invoker,
            mappings: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Mapping>> {
        self.mappings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored enable/disable choices of `app`'s mappings.
    fn overrides(&self, app: &str) -> HashMap<String, bool> {
        let app = app.to_string();
        self.db
            .call_blocking(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT name, enabled FROM trigger_state WHERE app = ?1")?;
                let rows = stmt
                    .query_map([&app], |row| Ok((row.get(0)?, row.get::<_, bool>(1)?)))?
                    .collect::<Result<HashMap<String, bool>, _>>()?;
                Ok(rows)
            })
            .unwrap_or_else(|err| {
                tracing::error!("cannot read trigger states: {err}");
                HashMap::new()
            })
    }

    /// Runs the mappings of `deployment` of `app`: new ones start, removed ones
    /// stop, changed ones restart with their new settings.
    pub fn set_app(&self, app: &App, deployment: u64) {
        let overrides = self.overrides(&app.name);
        let mut mappings = self.lock();
        let keep: Vec<String> = app.triggers.iter().map(|t| t.name.clone()).collect();
        mappings.retain(|(a, name), m| {
            let retained = a != &app.name || keep.contains(name);
            if !retained {
                let _ = m.stop.send(true);
            }
            retained
        });
        for trigger in &app.triggers {
            let target = Target {
                app: app.name.as_str().into(),
                function: trigger.function.as_str().into(),
                deployment,
            };
            let enabled = overrides
                .get(&trigger.name)
                .copied()
                .unwrap_or(trigger.enabled);
            let max_pollers = app
                .functions
                .get(&trigger.function)
                .map_or(1, |f| f.concurrency)
                .min(trigger.max_concurrency)
                .max(1);
            let key = (app.name.clone(), trigger.name.clone());
            if let Some(m) = mappings.get(&key)
                && m.trigger == *trigger
                && m.target == target
                && m.max_pollers == max_pollers
                && m.enabled == enabled
            {
                continue;
            }
            if let Some(old) = mappings.remove(&key) {
                let _ = old.stop.send(true);
            }
            let mapping = self.start(trigger.clone(), target, max_pollers, enabled);
            mappings.insert(key, mapping);
        }
    }

    /// Stops every mapping of `app`.
    pub fn remove_app(&self, name: &str) {
        self.lock().retain(|(a, _), m| {
            if a == name {
                let _ = m.stop.send(true);
            }
            a != name
        });
    }

    fn start(&self, trigger: Trigger, target: Target, max_pollers: u32, enabled: bool) -> Mapping {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        if enabled {
            let poll = Arc::new(Poll {
                queues: self.queues.clone(),
                invoker: self.invoker.clone(),
                trigger: trigger.clone(),
                target: target.clone(),
                max_pollers,
                stats: stats.clone(),
                stop: stopped,
            });
            spawn_poller(poll);
        }
        Mapping {
            trigger,
            target,
            max_pollers,
            enabled,
            stop,
            stats,
        }
    }

    /// Turns mapping `name` of `app` on or off, and remembers the choice.
    pub async fn set_enabled(&self, app: &str, name: &str, enabled: bool) -> DataResult<()> {
        let key = (app.to_string(), name.to_string());
        if !self.lock().contains_key(&key) {
            return Err(DataError::NotFound(format!(
                "app `{app}` has no trigger `{name}`"
            )));
        }
        let (a, n) = key.clone();
        self.db
            .write(
                move |conn| -> DataResult<((), Option<nimbus_data::AfterCommit>)> {
                    conn.prepare_cached(
                        "INSERT INTO trigger_state (app, name, enabled) VALUES (?1, ?2, ?3)
                     ON CONFLICT (app, name) DO UPDATE SET enabled = ?3",
                    )
                    .and_then(|mut stmt| stmt.execute((&a, &n, enabled)))
                    .map_err(DataError::storage)?;
                    Ok(((), None))
                },
            )
            .await?;
        let mut mappings = self.lock();
        if let Some(m) = mappings.remove(&key) {
            let _ = m.stop.send(true);
            let mapping = self.start(m.trigger, m.target, m.max_pollers, enabled);
            mappings.insert(key, mapping);
        }
        Ok(())
    }

    /// The mappings of `app`, in name order.
    pub fn status(&self, app: &str) -> Vec<TriggerStatus> {
        let mappings = self.lock();
        let mut all: Vec<TriggerStatus> = mappings
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|(_, m)| TriggerStatus {
                name: m.trigger.name.clone(),
                queue: m.trigger.queue.clone(),
                source: format!("queue {}", m.trigger.queue),
                function: m.trigger.function.clone(),
                enabled: m.enabled,
                pollers: m.stats.pollers.load(Ordering::Relaxed),
                batches: m.stats.batches.load(Ordering::Relaxed),
                messages: m.stats.messages.load(Ordering::Relaxed),
                failed: m.stats.failed.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// Starts the first poller of a mapping.
fn spawn_poller(poll: Arc<Poll>) {
    poll.stats.pollers.fetch_add(1, Ordering::AcqRel);
    spawn_reserved(poll);
}

/// Runs a poller whose place in `stats.pollers` is already counted.
fn spawn_reserved(poll: Arc<Poll>) {
    tokio::spawn(async move {
        if run_poller(&poll).await == Exit::Stopped {
            poll.stats.pollers.fetch_sub(1, Ordering::AcqRel);
        }
    });
}

/// Why a poller ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The mapping stopped or its queue is gone; the poller's count remains.
    Stopped,
    /// An idle extra poller left, its count already taken back.
    Retired,
}

/// Counts one more poller if fewer than `max` run. One atomic step, so two
/// pollers with full batches cannot both start one past the cap.
fn reserve(pollers: &AtomicU32, max: u32) -> bool {
    pollers
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// Counts one poller fewer if another remains. One atomic step, so two idle
/// pollers cannot both leave and take the mapping down to none.
fn retire(pollers: &AtomicU32) -> bool {
    pollers
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n > 1).then(|| n - 1)
        })
        .is_ok()
}

/// One poller: long-poll, gather a batch, deliver it, delete what succeeded.
async fn run_poller(poll: &Arc<Poll>) -> Exit {
    let mut stop = poll.stop.clone();
    let queue = StoreRef::new(&poll.target.app, &poll.trigger.queue);
    let batch_size = poll.trigger.batch_size as usize;
    loop {
        if *stop.borrow() {
            return Exit::Stopped;
        }
        let first = ReceiveOptions {
            max: batch_size.min(limits::MAX_RECEIVE),
            wait: limits::MAX_WAIT,
            visibility: None,
        };
        let received = tokio::select! {
            r = poll.queues.receive(queue, first) => r,
            _ = stop.changed() => return Exit::Stopped,
        };
        let mut batch = match received {
            Ok(batch) => batch,
            Err(DataError::NoSuchStore { .. }) => return Exit::Stopped,
            Err(err) => {
                tracing::warn!(trigger = %poll.trigger.name, "receiving from `{}` failed: {err}", poll.trigger.queue);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Idle: extra pollers stop; the first keeps waiting.
            if retire(&poll.stats.pollers) {
                return Exit::Retired;
            }
            continue;
        }
        gather(poll, queue, &mut batch, batch_size).await;
        if batch.len() == batch_size && reserve(&poll.stats.pollers, poll.max_pollers) {
            spawn_reserved(poll.clone());
        }
        deliver(poll, queue, batch).await;
    }
}

/// Fills a batch for up to `max_batching_window`.
async fn gather(poll: &Poll, queue: StoreRef<'_>, batch: &mut Vec<Message>, batch_size: usize) {
    let window = poll.trigger.max_batching_window;
    if window.is_zero() {
        return;
    }
    let deadline = Instant::now() + window;
    while batch.len() < batch_size {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let more = ReceiveOptions {
            max: batch_size - batch.len(),
            wait: left.min(limits::MAX_WAIT),
            visibility: None,
        };
        match poll.queues.receive(queue, more).await {
            Ok(more) if !more.is_empty() => batch.extend(more),
            _ => break,
        }
    }
}

/// Invokes the function with a batch and deletes the messages it handled.
async fn deliver(poll: &Poll, queue: StoreRef<'_>, batch: Vec<Message>) {
    let events: Vec<CloudEvent> = batch
        .iter()
        .map(|m| event(&poll.target.app, &poll.trigger.queue, m))
        .collect();
    let request_id = format!("trg-{}", batch[0].message_id);
    poll.stats.batches.fetch_add(1, Ordering::Relaxed);
    poll.stats
        .messages
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let failed: Vec<String> = match poll
        .invoker
        .invoke_batch(&poll.target, &request_id, events)
        .await
    {
        Ok(failed) => failed,
        Err(err) => {
            tracing::warn!(
                app = %poll.target.app, function = %poll.target.function, request_id,
                "trigger `{}`: batch of {} failed: {err}; the messages return to queue `{}`",
                poll.trigger.name, batch.len(), poll.trigger.queue
            );
            if let InvokeError::Quota(_) = err {
                // Over quota until the day's usage allows more: wait long, so
                // the messages stay in the queue rather than burn their receives.
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else if err.is_retryable() {
                // Throttled: back off so the messages are not burned through
                // their receive count faster than the function can take them.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            batch.iter().map(|m| m.message_id.clone()).collect()
        }
    };
    poll.stats
        .failed
        .fetch_add(failed.len() as u64, Ordering::Relaxed);
    if !failed.is_empty() && failed.len() < batch.len() {
        tracing::warn!(
            app = %poll.target.app, function = %poll.target.function, request_id,
            "trigger `{}`: {} of {} messages failed; they return to queue `{}`",
            poll.trigger.name, failed.len(), batch.len(), poll.trigger.queue
        );
    }
    let done: Vec<String> = batch
        .into_iter()
        .filter(|m| !failed.contains(&m.message_id))
        .map(|m| m.receipt)
        .collect();
    if !done.is_empty()
        && let Err(err) = poll.queues.delete_batch(queue, done).await
    {
        tracing::warn!(trigger = %poll.trigger.name, "deleting a handled batch failed: {err}");
    }
}

/// A message as the CloudEvent its function receives.
fn event(app: &str, queue: &str, m: &Message) -> CloudEvent {
    let content_type = if serde_json::from_slice::<serde_json::Value>(&m.body).is_ok() {
        "application/json"
    } else if std::str::from_utf8(&m.body).is_ok() {
        "text/plain"
    } else {
        "application/octet-stream"
    };
    let mut event = CloudEvent::new(
        m.message_id.clone(),
        format!("nimbus/{app}/queues/{queue}"),
        "nimbus.queue.message",
    )
    .with_data(content_type, m.body.to_vec());
    event.time = Some(nimbus_data::catalog::rfc3339(m.sent_at));
    event
        .extensions
        .insert("receivecount".into(), m.receive_count.to_string());
    if let Some(group) = &m.group_id {
        event.extensions.insert("groupid".into(), group.clone());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollers_never_pass_the_cap_nor_drop_to_none() {
        let pollers = AtomicU32::new(1);
        assert!(!retire(&pollers), "the last poller stays");
        assert!(reserve(&pollers, 3));
        assert!(reserve(&pollers, 3));
        assert!(!reserve(&pollers, 3), "the cap holds");
        assert_eq!(pollers.load(Ordering::Acquire), 3);

        // Many idle pollers retiring at once leave exactly one behind.
        let pollers = Arc::new(AtomicU32::new(64));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let pollers = pollers.clone();
                std::thread::spawn(move || retire(&pollers))
            })
            .collect();
        let retired = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&left| left)
            .count();
        assert_eq!(retired, 63);
        assert_eq!(pollers.load(Ordering::Acquire), 1);
    }
}
