//! The embedded async-invocation engine behind
//! [`nimbus_core::invocation::AsyncInvoker`]: events accepted for a function are
//! durably queued in the node's SQLite database, tried with retries and
//! exponential backoff, and their outcome sent to the function's `on_success` /
//! `on_failure` destination, as Lambda's asynchronous invocation does.
//!
//! Life of an invocation: `submit` inserts a `queued` row (one
//! [`Database::write`], so it is durable once accepted) and wakes the
//! dispatcher. The dispatcher is one task that sleeps until the earliest
//! `next_attempt_at` or a wake-up, takes the due rows in one write (marking them
//! `running`), and runs each attempt in its own task, at most
//! [`MAX_IN_FLIGHT`] at a time. An attempt ends in one write: `succeeded`,
//! `failed`, or `queued` again for its retry. An idle node does no work: with
//! nothing queued the dispatcher waits for a submit.
//!
//! Choices:
//! - At least once: an invocation left `running` by a crash is queued again at
//!   [`Invocations::start`] (the interrupted attempt does not count).
//! - A throttled or at-capacity attempt goes back to the queue after a short
//!   random delay (100–500 ms) without counting as an attempt; it still ends as
//!   `EventAgeExceeded` once the event is older than `max_event_age`.
//! - An event already older than `max_event_age` when its attempt is due (the
//!   node was down) fails as `EventAgeExceeded` without being tried.
//! - The destination is sent *before* the final status is written, so once
//!   `get` reports `succeeded` or `failed` the record is in the destination; a
//!   crash in between runs the invocation again and may send the record twice
//!   (at least once). A FIFO queue destination gets the function name as group
//!   id and `ID-CONDITION` as deduplication id. A destination failure is logged
//!   and does not change the invocation's status.
//! - A due invocation whose app or function is not deployed (removed, or not yet
//!   set after a restart) is parked: it stays `queued` without a
//!   `next_attempt_at` until the app is set again (or the engine starts again);
//!   [`Invocations::expire`] deletes parked rows older than 24 h.
//! - The request id passed to the function is the invocation id, the same on
//!   every attempt.

mod record;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::app::{App, Destination, Function};
use nimbus_core::bus::{EventBus, hops};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataError, DataResult, StoreRef};
use nimbus_core::invocation::{AsyncInvoker, Invocation, InvocationStatus};
use nimbus_core::ports::{InvokeError, Invoker, Target};
use nimbus_core::queue::{QueueService, SendOptions};
use nimbus_core::topic::{Publish, TopicService};
use nimbus_data::Database;
use nimbus_data::catalog::{now_ms, rfc3339};
use rusqlite::Connection;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use self::record::{Condition, Outcome, Record, output_text};

/// Attempts running at once, over all apps.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long records are kept after their invocation ended.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Throttled attempts go back to the queue after 100 ms plus up to this much.
const THROTTLE_DELAY_MS: u64 = 100;
const THROTTLE_JITTER_MS: u64 = 400;

/// The deployment of an app this engine serves.
struct Deployed {
    deployment: u64,
    app: App,
}

struct Inner {
    db: Database,
    invoker: Arc<dyn Invoker>,
    queues: Arc<dyn QueueService>,
    apps: RwLock<HashMap<String, Arc<Deployed>>>,
    /// Wakes the dispatcher (a stored permit if it is busy, so none is lost).
    wake: Notify,
    /// When the sleeping dispatcher looks again (unix ms); 0 while it is awake.
    sleeping_until: AtomicU64,
    /// Set by `set_app`: parked invocations become due at the next pass.
    unpark: AtomicBool,
    slots: Arc<Semaphore>,
    backoff_us: AtomicU64,
    started: AtomicBool,
    /// Dispatcher passes (each one write), to check that idle means idle.
    passes: AtomicU64,
    /// Topic and bus destinations, bound once the bus exists (it is built on
    /// async invocations).
    events: std::sync::OnceLock<(Arc<dyn TopicService>, Arc<dyn EventBus>)>,
}

/// The async invocations of every app. Cheap to clone.
#[derive(Clone)]
pub struct Invocations {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Invocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocations").finish_non_exhaustive()
    }
}

fn sql<T>(result: rusqlite::Result<T>) -> DataResult<T> {
    result.map_err(DataError::storage)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("system randomness");
    u64::from_le_bytes(bytes) % n.max(1)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// The backoff before retry number `attempts` (1 for the first): `base` ×
/// 2^(attempts−1), at most [`MAX_BACKOFF`].
fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Invocations {
    /// Creates the invocation table if needed. Nothing runs until [`Self::start`].
    pub fn open(
        db: Database,
        invoker: Arc<dyn Invoker>,
        queues: Arc<dyn QueueService>,
    ) -> Result<Self, DataError> {
        db.migrate("integration.invocations", store::MIGRATIONS)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                invoker,
                queues,
                apps: RwLock::default(),
                wake: Notify::new(),
                sleeping_until: AtomicU64::new(0),
                unpark: AtomicBool::new(false),
                slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                backoff_us: AtomicU64::new(DEFAULT_BACKOFF.as_micros() as u64),
                started: AtomicBool::new(false),
                passes: AtomicU64::new(0),
                events: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Lets `on_success` / `on_failure` name a topic or a bus.
    pub fn bind_events(&self, topics: Arc<dyn TopicService>, bus: Arc<dyn EventBus>) {
        let _ = self.inner.events.set((topics, bus));
    }

    /// For tests: the first retry's backoff (default 1 s; each retry doubles it,
    /// capped at 5 min).
    pub fn with_backoff(self, base: Duration) -> Self {
        let us = base.as_micros().try_into().unwrap_or(u64::MAX);
        self.inner.backoff_us.store(us, Ordering::Relaxed);
        self
    }

    /// Serves `deployment` of `app`: its functions' settings apply to new attempts.
    pub fn set_app(&self, app: &App, deployment: u64) {
        let deployed = Arc::new(Deployed {
            deployment,
            app: app.clone(),
        });
        self.inner
            .apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.name.clone(), deployed);
        // Invocations parked while the app was unknown can run now.
        self.inner.unpark.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Stops serving `name`: its due invocations are parked until it is set again.
    pub fn remove_app(&self, name: &str) {
        self.inner
            .apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Starts the dispatcher (needs a Tokio runtime). Invocations left `running`
    /// by a crash are queued again first. Call [`Self::set_app`] for the deployed
    /// apps before, or their invocations wait (parked) until it is called.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let recovered = inner
                .write(|conn, now| {
                    let running = sql(store::requeue_running(conn, now))?;
                    let parked = sql(store::unpark(conn, now))?;
                    Ok((running, parked))
                })
                .await;
            match recovered {
                Ok((0, _)) => {}
                Ok((n, _)) => {
                    tracing::info!("queued {n} async invocation(s) interrupted by a restart again");
                }
                Err(e) => tracing::error!("cannot recover async invocations: {e}"),
            }
            inner.dispatch().await;
        });
    }

    /// Deletes records of invocations that ended more than 24 h ago; returns how many.
    pub async fn expire(&self) -> DataResult<u64> {
        self.inner
            .write(|conn, now| sql(store::expire(conn, now.saturating_sub(ms(RETENTION)))))
            .await
    }

    /// Dispatcher passes so far (tests check that an idle engine stays idle).
    #[cfg(test)]
    fn passes(&self) -> u64 {
        self.inner.passes.load(Ordering::SeqCst)
    }
}

impl Inner {
    /// Runs `f` in the database's group commit with the time of its turn.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, u64) -> DataResult<T> + Send + 'static,
    ) -> DataResult<T> {
        self.db
            .write(move |conn| Ok((f(conn, now_ms())?, None)))
            .await
    }

    fn deployed(&self, app: &str) -> Option<Arc<Deployed>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    fn backoff_base(&self) -> Duration {
        Duration::from_micros(self.backoff_us.load(Ordering::Relaxed))
    }

    /// Wakes the dispatcher for a row due at `at`, unless it already sleeps until
    /// then or earlier.
    fn wake_for(&self, at: u64) {
        let until = self.sleeping_until.load(Ordering::SeqCst);
        if until == 0 || until > at {
            self.wake.notify_one();
        }
    }

    /// The dispatcher: takes due invocations while there are free slots, then
    /// sleeps until the next is due or a wake-up.
    async fn dispatch(self: Arc<Self>) {
        loop {
            // Wait for one free slot, then take every other free one.
            let Ok(first) = self.slots.clone().acquire_owned().await else {
                return;
            };
            let mut permits = vec![first];
            while permits.len() < MAX_IN_FLIGHT {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            self.sleeping_until.store(0, Ordering::SeqCst);
            self.passes.fetch_add(1, Ordering::SeqCst);
            let max = permits.len();
            let this = self.clone();
            let taken = self.write(move |conn, now| this.take(conn, now, max)).await;
            let (rows, next) = match taken {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::error!("async invocations: cannot take due invocations: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let full = rows.len() == max;
            for (row, deployed) in rows {
                let permit = permits.pop().expect("one permit per row");
                tokio::spawn(self.clone().attempt(row, deployed, permit));
            }
            drop(permits);
            if full {
                continue;
            }
            let now = now_ms();
            match next {
                Some(at) if at <= now => continue,
                Some(at) => {
                    self.sleeping_until.store(at, Ordering::SeqCst);
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                    }
                }
                None => {
                    self.sleeping_until.store(u64::MAX, Ordering::SeqCst);
                    self.wake.notified().await;
                }
            }
        }
    }

    /// One dispatcher pass, inside a write: marks up to `max` due invocations
    /// `running` (parking those of undeployed functions); returns them and when
    /// the next queued one is due.
    #[allow(clippy::type_complexity)]
    fn take(
        &self,
        conn: &Connection,
        now: u64,
        max: usize,
    ) -> DataResult<(Vec<(store::Due, Arc<Deployed>)>, Option<u64>)> {
        if self.unpark.swap(false, Ordering::SeqCst) {
            sql(store::unpark(conn, now))?;
        }
        let mut out = Vec::new();
        for row in sql(store::due(conn, now, max))? {
            let deployed = self
                .deployed(&row.app)
                .filter(|d| d.app.functions.contains_key(&row.function));
            match deployed {
                Some(deployed) => {
                    sql(store::mark_running(conn, &row.id, now))?;
                    out.push((row, deployed));
                }
                None => {
                    let error = format!(
                        "function `{}` of app `{}` is not deployed; waiting for a deployment",
                        row.function, row.app
                    );
                    sql(store::park(conn, &row.id, &error, now))?;
                }
            }
        }
        Ok((out, sql(store::next_due(conn))?))
    }

    /// One attempt of `row`, and what follows from its result.
    async fn attempt(
        self: Arc<Self>,
        row: store::Due,
        deployed: Arc<Deployed>,
        _permit: OwnedSemaphorePermit,
    ) {
        let id = row.id.clone();
        if let Err(e) = self.try_attempt(row, deployed).await {
            tracing::error!("async invocation `{id}`: cannot record its attempt: {e}");
        }
    }

    async fn try_attempt(&self, row: store::Due, deployed: Arc<Deployed>) -> DataResult<()> {
        let event: CloudEvent = match serde_json::from_str(&row.event) {
            Ok(event) => event,
            Err(e) => {
                let error = format!("the stored event is unreadable: {e}");
                return self
                    .finish(
                        &row,
                        InvocationStatus::Failed,
                        row.attempts,
                        None,
                        Some(&error),
                    )
                    .await;
            }
        };
        let Some(function) = deployed.app.functions.get(&row.function) else {
            return Ok(()); // checked by `take`
        };
        let max_age = ms(function.max_event_age);
        if now_ms().saturating_sub(row.created_at) >= max_age {
            let error = format!(
                "the event is older than its max_event_age of {} s",
                function.max_event_age.as_secs()
            );
            let outcome = Outcome::Failure {
                condition: Condition::EventAgeExceeded,
                message: &error,
                function_error: None,
                code: None,
            };
            self.destination(&row, &deployed, function, &event, row.attempts, outcome)
                .await;
            return self
                .finish(
                    &row,
                    InvocationStatus::Failed,
                    row.attempts,
                    None,
                    Some(&error),
                )
                .await;
        }
        let target = Target {
            app: row.app.as_str().into(),
            function: row.function.as_str().into(),
            deployment: deployed.deployment,
        };
        let result = self
            .invoker
            .invoke_event(&target, &row.id, event.clone())
            .await;
        let now = now_ms();
        let age = now.saturating_sub(row.created_at);
        match result {
            Ok(output) => {
                let attempts = row.attempts + 1;
                let outcome = Outcome::Success(output.as_deref());
                self.destination(&row, &deployed, function, &event, attempts, outcome)
                    .await;
                let text = output.as_deref().map(output_text);
                self.finish(
                    &row,
                    InvocationStatus::Succeeded,
                    attempts,
                    text.as_deref(),
                    None,
                )
                .await
            }
            Err(e) if e.is_retryable() => {
                let delay = THROTTLE_DELAY_MS + random_below(THROTTLE_JITTER_MS);
                let message = e.to_string();
                if age.saturating_add(delay) >= max_age {
                    return self
                        .fail(&row, &deployed, function, &event, row.attempts, &e, true)
                        .await;
                }
                self.requeue(&row, row.attempts, &message, delay).await
            }
            Err(e) => {
                let attempts = row.attempts + 1;
                let wait = ms(backoff(self.backoff_base(), attempts));
                if attempts > function.retries {
                    return self
                        .fail(&row, &deployed, function, &event, attempts, &e, false)
                        .await;
                }
                if age.saturating_add(wait) >= max_age {
                    return self
                        .fail(&row, &deployed, function, &event, attempts, &e, true)
                        .await;
                }
                self.requeue(&row, attempts, &e.to_string(), wait).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        row: &store::Due,
        deployed: &Deployed,
        function: &Function,
        event: &CloudEvent,
        attempts: u32,
        error: &InvokeError,
        too_old: bool,
    ) -> DataResult<()> {
        let message = error.to_string();
        let condition = if too_old {
            Condition::EventAgeExceeded
        } else {
            Condition::RetriesExhausted
        };
        let to = match &function.on_failure {
            Some(dest) => format!("; its record goes to {dest}"),
            None => String::new(),
        };
        tracing::warn!(
            app = %row.app, function = %row.function, request_id = %row.id,
            "gave up after {attempts} attempt(s) ({}): {message}{to}",
            condition.as_str()
        );
        let function_error = match error {
            InvokeError::Handler(_) => Some("Handled"),
            InvokeError::Failed { .. } | InvokeError::Timeout { .. } => Some("Unhandled"),
            _ => None,
        };
        let outcome = Outcome::Failure {
            condition,
            message: &message,
            function_error,
            code: Some(error.status().1),
        };
        self.destination(row, deployed, function, event, attempts, outcome)
            .await;
        self.finish(
            row,
            InvocationStatus::Failed,
            attempts,
            None,
            Some(&message),
        )
        .await
    }

    /// Queues `row` again for `delay` after the write's time.
    async fn requeue(
        &self,
        row: &store::Due,
        attempts: u32,
        error: &str,
        delay: u64,
    ) -> DataResult<()> {
        tracing::warn!(
            app = %row.app, function = %row.function, request_id = %row.id,
            "attempt {} failed: {error}; retrying in {:.1} s",
            attempts.max(1),
            delay as f64 / 1000.0
        );
        let (id, error) = (row.id.clone(), error.to_string());
        let requeued = self
            .write(move |conn, now| {
                let at = now.saturating_add(delay);
                let done = sql(store::requeue(conn, &id, attempts, &error, at, now))?;
                Ok(done.then_some(at))
            })
            .await?;
        if let Some(at) = requeued {
            self.wake_for(at);
        }
        Ok(())
    }

    async fn finish(
        &self,
        row: &store::Due,
        status: InvocationStatus,
        attempts: u32,
        output: Option<&str>,
        error: Option<&str>,
    ) -> DataResult<()> {
        let id = row.id.clone();
        let output = output.map(str::to_string);
        let error = error.map(str::to_string);
        self.write(move |conn, now| {
            let end = store::End {
                status,
                attempts,
                output: output.as_deref(),
                error: error.as_deref(),
            };
            sql(store::end(conn, &id, &end, now))
        })
        .await?;
        Ok(())
    }

    /// Sends the record of `outcome` to the function's destination for it, if any;
    /// a failure is logged.
    async fn destination(
        &self,
        row: &store::Due,
        deployed: &Deployed,
        function: &Function,
        event: &CloudEvent,
        attempts: u32,
        outcome: Outcome<'_>,
    ) {
        let success = matches!(outcome, Outcome::Success(_));
        let dest = if success {
            &function.on_success
        } else {
            &function.on_failure
        };
        let Some(dest) = dest else { return };
        let now = now_ms();
        let record = Record {
            request_id: &row.id,
            app: &row.app,
            function: &row.function,
            attempts,
            event,
            now,
            outcome,
        };
        let condition = record.condition();
        let json = record.to_json();
        // A destination passes the invoking event on: one hop further (loops of
        // functions naming each other as destinations stop there).
        let hops = match hops::next(hops::of_event(event)) {
            Ok(hops) => hops,
            Err(loop_error) => {
                tracing::warn!(
                    "async invocation `{}` of `{}/{}`: not sending its record to {dest}: {loop_error}",
                    row.id,
                    row.app,
                    row.function
                );
                return;
            }
        };
        // The record as the CloudEvent a function or a bus receives.
        let record_event = || {
            let ty = if success {
                "nimbus.invocation.success"
            } else {
                "nimbus.invocation.failure"
            };
            let source = format!("nimbus/{}/functions/{}", row.app, row.function);
            let mut event =
                CloudEvent::new(format!("{}-{}", row.id, condition.as_str()), source, ty)
                    .with_data("application/json", json.to_string().into_bytes());
            event.subject = Some(row.id.clone());
            event.time = Some(rfc3339(now));
            hops::set(&mut event, hops);
            event
        };
        let sent = match dest {
            Destination::Queue(queue) => {
                let fifo = deployed.app.queues.get(queue).is_some_and(|q| q.fifo);
                let options = if fifo {
                    SendOptions {
                        group_id: Some(row.function.clone()),
                        dedup_id: Some(format!("{}-{}", row.id, condition.as_str())),
                        ..Default::default()
                    }
                } else {
                    SendOptions::default()
                };
                let body = Bytes::from(json.to_string());
                self.queues
                    .send(StoreRef::new(&row.app, queue), body, options)
                    .await
                    .map(drop)
            }
            Destination::Function(target) => self
                .submit(&row.app, target, record_event())
                .await
                .map(drop),
            Destination::Topic(topic) => match self.events.get() {
                Some((topics, _)) => {
                    let message = Publish {
                        message: json.to_string(),
                        attributes: [("condition".to_string(), condition.as_str().into())].into(),
                        hops,
                    };
                    match topics.publish(&row.app, topic, vec![message]).await {
                        Ok(mut r) => r.pop().expect("one result").map(drop),
                        Err(e) => Err(e),
                    }
                }
                None => Err(DataError::Storage("topics are not running".into())),
            },
            Destination::Bus(app) => match self.events.get() {
                Some((_, bus)) => match bus.put_events(app, vec![record_event()]).await {
                    Ok(mut r) => r.pop().expect("one result").map(drop),
                    Err(e) => Err(e),
                },
                None => Err(DataError::Storage("the event bus is not running".into())),
            },
        };
        if let Err(e) = sent {
            tracing::warn!(
                "async invocation `{}` of `{}/{}`: cannot send its record to {dest}: {e}",
                row.id,
                row.app,
                row.function
            );
        }
    }

    async fn submit(&self, app: &str, function: &str, event: CloudEvent) -> DataResult<String> {
        let known = self
            .deployed(app)
            .is_some_and(|d| d.app.functions.contains_key(function));
        if !known {
            return Err(DataError::NotFound(format!(
                "function `{function}` of app `{app}` is not deployed"
            )));
        }
        let json = serde_json::to_string(&event).map_err(DataError::storage)?;
        let id = format!("inv-{}", random_hex());
        let (app, function) = (app.to_string(), function.to_string());
        let inserted = id.clone();
        self.write(move |conn, now| {
            sql(store::insert(
                conn,
                &store::NewInvocation {
                    id: &inserted,
                    app: &app,
                    function: &function,
                    event: &json,
                    now,
                },
            ))
        })
        .await?;
        self.wake.notify_one();
        Ok(id)
    }
}

#[async_trait]
impl AsyncInvoker for Invocations {
    async fn submit(&self, app: &str, function: &str, event: CloudEvent) -> DataResult<String> {
        self.inner.submit(app, function, event).await
    }

    async fn get(&self, id: &str) -> DataResult<Option<Invocation>> {
        let id = id.to_string();
        Ok(self
            .inner
            .db
            .call(move |conn| Ok(store::get(conn, &id)?))
            .await?)
    }
}
