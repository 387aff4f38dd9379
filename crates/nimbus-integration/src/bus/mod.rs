//! The event bus (embedded backend of [`EventBus`]): every app has one. A put
//! matches each event against the app's rules (an indexed [`RuleSet`]) and, in
//! one durable write, archives the event and queues one delivery per matched
//! target (an outbox). The dispatcher then delivers: a queue target gets a
//! message, a function target an async invocation (durably queued, with the
//! function's own retries and destinations). A delivery that fails is retried
//! with exponential backoff up to the target's `retries` and `max_event_age`,
//! then sent to its dead-letter queue. A crash between the put and a delivery
//! loses nothing: the outbox row is still there, so a delivery happens at least
//! once.

mod sink;
mod store;
mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::app::{App, BusDecl, RuleTarget, Sink, Subscription};
use nimbus_core::bus::{EventBus, PutResult, RuleStatus, TargetStatus, limits};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataError, DataResult, StoreRef};
use nimbus_core::invocation::AsyncInvoker;
use nimbus_core::pattern::{Pattern, RuleSet};
use nimbus_core::queue::{QueueService, SendOptions};
use nimbus_data::Database;
use nimbus_data::catalog::{now_ms, rfc3339};
use rusqlite::Connection;
use serde_json::{Value, json};
use tokio::sync::Notify;

use store::Count;

/// First retry after this; each further one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Deliveries taken per dispatcher pass.
const PASS: usize = 256;

fn topic_sub(number: usize, decl: Subscription) -> TopicSub {
    TopicSub {
        number,
        // Valid by construction (the manifest or the API checked it).
        filter: decl.filter.as_ref().and_then(|f| Pattern::parse(f).ok()),
        decl,
    }
}

/// Work done in a put's transaction.
type Also = Box<dyn FnOnce(&Connection) -> DataResult<()> + Send>;

/// The bus of one deployed app.
struct AppBus {
    decl: BusDecl,
    /// Enabled rules, keyed by name.
    rules: RuleSet<String>,
    /// Each topic's subscriptions, by delivery target number.
    topics: HashMap<String, Vec<TopicSub>>,
    /// The app's functions and queues, to check subscriptions added over the API.
    functions: Vec<String>,
    queues: Vec<String>,
}

/// A subscription as deliveries see it.
#[derive(Debug, Clone)]
struct TopicSub {
    /// Its delivery target number: the manifest's index, or [`store::API_SUBS`] + id.
    number: usize,
    filter: Option<Pattern>,
    decl: Subscription,
}

impl AppBus {
    /// The target of a delivery: a rule's, or a topic subscription's.
    fn target(&self, rule: &str, number: usize) -> Option<RuleTarget> {
        match rule.strip_prefix(TOPIC) {
            Some(topic) => self
                .topics
                .get(topic)?
                .iter()
                .find(|s| s.number == number)
                .map(|s| s.decl.target.clone()),
            None => self.decl.rules.get(rule)?.targets.get(number).cloned(),
        }
    }
}

/// Deliveries of topic `NAME` are recorded under rule `topic:NAME` (rule names
/// cannot hold a colon).
const TOPIC: &str = "topic:";

struct Inner {
    db: Database,
    /// For webhook deliveries.
    http: reqwest::Client,
    queues: Arc<dyn QueueService>,
    invocations: Arc<dyn AsyncInvoker>,
    apps: RwLock<HashMap<String, Arc<AppBus>>>,
    wake: Notify,
    started: AtomicBool,
    backoff_ms: AtomicU64,
}

/// The event buses of every app. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

fn sql<T>(result: rusqlite::Result<T>) -> DataResult<T> {
    result.map_err(DataError::storage)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Bus {
    /// Creates the bus tables if needed. Nothing is delivered until [`Self::start`].
    pub fn open(
        db: Database,
        queues: Arc<dyn QueueService>,
        invocations: Arc<dyn AsyncInvoker>,
    ) -> Result<Self, DataError> {
        db.migrate("integration.bus", store::MIGRATIONS)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                http: reqwest::Client::builder()
                    .timeout(sink::WEBHOOK_TIMEOUT)
                    .build()
                    .map_err(DataError::storage)?,
                queues,
                invocations,
                apps: RwLock::default(),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                backoff_ms: AtomicU64::new(ms(FIRST_BACKOFF)),
            }),
        })
    }

    /// For tests: the first retry's backoff (default 1 s, doubling, at most 5 min).
    pub fn with_backoff(self, first: Duration) -> Self {
        self.inner.backoff_ms.store(ms(first), Ordering::Relaxed);
        self
    }

    /// Serves `app`'s rules: new puts match them; queued deliveries of rules the
    /// app no longer has are dropped.
    pub async fn set_app(&self, app: &App) -> DataResult<()> {
        let rules = RuleSet::new(
            app.bus
                .rules
                .values()
                .filter(|r| r.enabled)
                .filter_map(|r| {
                    // Valid by construction (the manifest checked it).
                    Pattern::parse(&r.pattern).ok().map(|p| (r.name.clone(), p))
                }),
        );
        let name = app.name.clone();
        let topic_names: Vec<String> = app.topics.keys().cloned().collect();
        let api = self
            .inner
            .db
            .write(move |conn| {
                // Subscriptions added over the API to topics the app no longer has go.
                let mut kept = Vec::new();
                for (id, topic, spec) in sql(store::api_subs(conn, &name))? {
                    if topic_names.contains(&topic) {
                        kept.push((id, topic, spec));
                    } else {
                        sql(store::remove_sub(conn, &name, &topic, id))?;
                    }
                }
                Ok::<_, DataError>((kept, None))
            })
            .await?;
        let mut topics: HashMap<String, Vec<TopicSub>> = HashMap::new();
        for (topic, decl) in &app.topics {
            let subs = topics.entry(topic.clone()).or_default();
            for (i, sub) in decl.subscriptions.iter().enumerate() {
                subs.push(topic_sub(i, sub.clone()));
            }
        }
        for (id, topic, spec) in api {
            match serde_json::from_str::<Subscription>(&spec) {
                Ok(sub) => topics
                    .entry(topic)
                    .or_default()
                    .push(topic_sub(store::API_SUBS + id as usize, sub)),
                Err(e) => tracing::warn!(app = %app.name, "an API subscription is unreadable: {e}"),
            }
        }
        let bus = Arc::new(AppBus {
            decl: app.bus.clone(),
            rules,
            topics,
            functions: app.functions.keys().cloned().collect(),
            queues: app.queues.keys().cloned().collect(),
        });
        self.inner
            .apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.name.clone(), bus);
        let name = app.name.clone();
        let keep: Vec<String> = app
            .bus
            .rules
            .keys()
            .cloned()
            .chain(app.topics.keys().map(|t| format!("{TOPIC}{t}")))
            .collect();
        self.inner
            .db
            .write(move |conn| {
                sql(store::drop_rules_except(conn, &name, &keep))?;
                Ok::<_, DataError>(((), None))
            })
            .await
    }

    /// Replaces the served copy of `app`'s bus after `f` changed its topics.
    fn update_topics(&self, app: &str, f: impl FnOnce(&mut HashMap<String, Vec<TopicSub>>)) {
        let mut apps = self.inner.apps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(bus) = apps.get(app) {
            let mut topics = bus.topics.clone();
            f(&mut topics);
            let updated = AppBus {
                decl: bus.decl.clone(),
                rules: bus.rules.clone(),
                topics,
                functions: bus.functions.clone(),
                queues: bus.queues.clone(),
            };
            apps.insert(app.to_string(), Arc::new(updated));
        }
    }

    /// Stops serving `app` and forgets its archive, deliveries and counts.
    pub async fn remove_app(&self, app: &str) -> DataResult<()> {
        self.inner
            .apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
        let app = app.to_string();
        self.inner
            .db
            .write(move |conn| {
                sql(store::drop_app(conn, &app))?;
                Ok::<_, DataError>(((), None))
            })
            .await
    }

    /// Starts the dispatcher (after the node restored its apps, so queued
    /// deliveries find their rules).
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { dispatch(inner).await });
    }

    /// Drops archived events past each app's archive retention.
    pub async fn expire(&self) -> DataResult<u64> {
        let now = now_ms();
        let cutoffs: Vec<(String, u64)> = self
            .inner
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, bus)| (name.clone(), now.saturating_sub(ms(bus.decl.archive))))
            .collect();
        self.inner
            .db
            .write(move |conn| {
                let mut n = 0;
                for (app, before) in &cutoffs {
                    n += sql(store::expire_archive(conn, app, *before))?;
                }
                Ok::<_, DataError>((n, None))
            })
            .await
    }

    fn app(&self, app: &str) -> DataResult<Arc<AppBus>> {
        self.inner
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
            .ok_or_else(|| DataError::NotFound(format!("no app `{app}`")))
    }

    /// Puts changes of a store's feed (see [`crate::changes`]): matched like any
    /// event but not archived (the feed keeps them); `also` runs in the same
    /// transaction (the feed's cursor moves with the put).
    pub async fn put_feed(
        &self,
        app: &str,
        events: Vec<CloudEvent>,
        also: impl FnOnce(&Connection) -> DataResult<()> + Send + 'static,
    ) -> DataResult<()> {
        let events = events.into_iter().map(|e| Ok(event_json(e))).collect();
        self.put(app, events, false, Some(Box::new(also)))
            .await
            .map(drop)
    }

    /// Archives (if `archive`) and matches `events` in one write, with `also`.
    async fn put(
        &self,
        app: &str,
        events: Vec<Result<Value, DataError>>,
        archive: bool,
        also: Option<Also>,
    ) -> DataResult<Vec<DataResult<PutResult>>> {
        let bus = self.app(app)?;
        let keep = archive && !bus.decl.archive.is_zero();
        let planned: Vec<DataResult<(PutResult, String)>> = events
            .into_iter()
            .map(|event| {
                let event = event?;
                let text = event.to_string();
                if text.len() > limits::MAX_EVENT_BYTES {
                    return Err(DataError::TooLarge(format!(
                        "the event is {} bytes; at most {} are allowed",
                        text.len(),
                        limits::MAX_EVENT_BYTES
                    )));
                }
                let id = event["id"].as_str().unwrap_or_default().to_string();
                let matched_rules = bus.rules.matching(&event);
                Ok((PutResult { id, matched_rules }, text))
            })
            .collect();
        let app = app.to_string();
        let any_delivery = planned
            .iter()
            .any(|p| p.as_ref().is_ok_and(|(r, _)| !r.matched_rules.is_empty()));
        let inner = self.inner.clone();
        let results = self
            .inner
            .db
            .write(move |conn: &Connection| {
                let now = now_ms();
                if let Some(also) = also {
                    also(conn)?;
                }
                let mut tally = store::Tally::default();
                for (result, text) in planned.iter().flatten() {
                    if keep {
                        sql(store::archive(conn, &app, now, text))?;
                    }
                    for rule in &result.matched_rules {
                        let targets = bus.decl.rules.get(rule).map_or(0, |r| r.targets.len());
                        for target in 0..targets {
                            sql(store::enqueue(conn, &app, rule, target, text, now))?;
                            tally.add(&app, rule, target, Count::Matched);
                        }
                    }
                }
                sql(tally.write(conn))?;
                let after: Option<nimbus_data::AfterCommit> = any_delivery
                    .then(|| Box::new(move || inner.wake.notify_one()) as nimbus_data::AfterCommit);
                Ok::<_, DataError>((
                    planned.into_iter().map(|p| p.map(|(r, _)| r)).collect(),
                    after,
                ))
            })
            .await?;
        Ok(results)
    }
}

/// A put event as the JSON rules match: structured mode, with a `time` added
/// when the sender gave none.
fn event_json(mut event: CloudEvent) -> Value {
    if event.time.is_none() {
        event.time = Some(rfc3339(now_ms()));
    }
    event.to_json()
}

#[async_trait]
impl EventBus for Bus {
    async fn put_events(
        &self,
        app: &str,
        events: Vec<CloudEvent>,
    ) -> DataResult<Vec<DataResult<PutResult>>> {
        if events.len() > limits::MAX_BATCH {
            return Err(DataError::Invalid(format!(
                "a put takes at most {} events, not {}",
                limits::MAX_BATCH,
                events.len()
            )));
        }
        if events.is_empty() {
            return Err(DataError::Invalid("a put needs at least one event".into()));
        }
        let events = events.into_iter().map(|e| Ok(event_json(e))).collect();
        self.put(app, events, true, None).await
    }

    async fn rules(&self, app: &str) -> DataResult<Vec<RuleStatus>> {
        let bus = self.app(app)?;
        let app = app.to_string();
        self.inner
            .db
            .call(move |conn| {
                let mut out = Vec::new();
                for rule in bus.decl.rules.values() {
                    let mut targets = Vec::new();
                    for (i, t) in rule.targets.iter().enumerate() {
                        let [matched, delivered, retried, failed, dead_lettered, pending] =
                            store::counts(conn, &app, &rule.name, i)?;
                        targets.push(TargetStatus {
                            target: t.destination.to_string().replace('`', ""),
                            matched,
                            delivered,
                            retried,
                            failed,
                            dead_lettered,
                            pending,
                        });
                    }
                    out.push(RuleStatus {
                        name: rule.name.clone(),
                        pattern: rule.pattern.clone(),
                        enabled: rule.enabled,
                        targets,
                    });
                }
                Ok(out)
            })
            .await
            .map_err(DataError::storage)
    }

    async fn replay(&self, app: &str, from_ms: u64, to_ms: u64) -> DataResult<u64> {
        if from_ms > to_ms {
            return Err(DataError::Invalid(
                "the replay's start is after its end".into(),
            ));
        }
        self.app(app)?;
        let owned = app.to_string();
        let archived = self
            .inner
            .db
            .call(move |conn| Ok(store::archived(conn, &owned, from_ms, to_ms)?))
            .await
            .map_err(DataError::storage)?;
        let replay = format!("rpl-{:x}", now_ms());
        let mut n = 0;
        for chunk in archived.chunks(500) {
            let events = chunk
                .iter()
                .map(|text| {
                    let mut v: Value = serde_json::from_str(text).map_err(DataError::storage)?;
                    v["replayof"] = Value::String(replay.clone());
                    Ok(v)
                })
                .collect();
            n += self.put(app, events, false, None).await?.len() as u64;
        }
        Ok(n)
    }
}

/// The dispatcher: takes due deliveries, delivers them concurrently, records
/// the outcomes in one write, and sleeps until the next is due or a put wakes it.
async fn dispatch(inner: Arc<Inner>) {
    loop {
        let now = now_ms();
        let due = inner
            .db
            .call(move |conn| Ok(store::due(conn, now, PASS)?))
            .await;
        let due = match due {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!("reading bus deliveries failed: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if due.is_empty() {
            let next = inner
                .db
                .call(|conn| Ok(store::next_due(conn)?))
                .await
                .ok()
                .flatten();
            let wait = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(now_ms()).max(1))
            });
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        // Deliveries to one queue go as batch sends (one write for up to 10);
        // the others one by one, all concurrently.
        let (batched, single) = by_queue(&inner, due);
        let attempts = single.into_iter().map(|d| {
            let inner = inner.clone();
            async move {
                let outcome = attempt(&inner, &d).await;
                vec![(d, outcome)]
            }
        });
        let batches = batched.into_iter().map(|(app, queue, group)| {
            let inner = inner.clone();
            async move { send_to_queue(&inner, &app, &queue, group).await }
        });
        let mut outcomes = futures_join_all(attempts).await;
        outcomes.extend(futures_join_all(batches).await);
        let outcomes: Vec<(store::Due, Outcome)> = outcomes.into_iter().flatten().collect();
        let backoff = Duration::from_millis(inner.backoff_ms.load(Ordering::Relaxed));
        let recorded = inner
            .db
            .write(move |conn: &Connection| {
                let mut tally = store::Tally::default();
                for (d, outcome) in &outcomes {
                    record(conn, d, outcome, backoff, &mut tally)?;
                }
                sql(tally.write(conn))?;
                Ok::<_, DataError>(((), None))
            })
            .await;
        if let Err(err) = recorded {
            tracing::warn!("recording bus deliveries failed: {err}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a delivery task panicked"));
    }
    out
}

/// What became of one attempt.
enum Outcome {
    Delivered,
    /// The rule or target is gone (a deploy removed it): drop the delivery.
    Gone,
    /// Failed; retry unless out of attempts or age, then dead-letter.
    Failed {
        error: String,
    },
    /// Out of retries or age and sent to the dead-letter queue (or none is set).
    GaveUp {
        dead_lettered: bool,
    },
}

/// A due delivery to a queue, with what the queue gets.
struct ToQueue {
    due: store::Due,
    target: RuleTarget,
    event: Value,
    body: Bytes,
}

/// Splits due deliveries into groups of up to a queue batch per (app, queue),
/// and the rest.
#[allow(clippy::type_complexity)]
fn by_queue(
    inner: &Inner,
    due: Vec<store::Due>,
) -> (Vec<(String, String, Vec<ToQueue>)>, Vec<store::Due>) {
    let apps = inner.apps.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mut groups: HashMap<(String, String), Vec<ToQueue>> = HashMap::new();
    let mut single = Vec::new();
    for d in due {
        let target = apps.get(&d.app).and_then(|b| b.target(&d.rule, d.target));
        let event = serde_json::from_str::<Value>(&d.event).ok();
        match (target, event) {
            (Some(target), Some(event)) => {
                let Sink::Queue(queue) = &target.destination else {
                    single.push(d);
                    continue;
                };
                let Ok(input) = target.input.apply(&event) else {
                    single.push(d);
                    continue;
                };
                let body = Bytes::from(match input {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
                let key = (d.app.clone(), queue.clone());
                groups.entry(key).or_default().push(ToQueue {
                    due: d,
                    target,
                    event,
                    body,
                });
            }
            _ => single.push(d),
        }
    }
    let mut batched = Vec::new();
    for ((app, queue), mut all) in groups {
        while !all.is_empty() {
            let rest = all.split_off(all.len().min(nimbus_core::queue::limits::MAX_BATCH));
            batched.push((app.clone(), queue.clone(), all));
            all = rest;
        }
    }
    (batched, single)
}

/// Sends a group of deliveries to one queue in one batch.
async fn send_to_queue(
    inner: &Arc<Inner>,
    app: &str,
    queue: &str,
    group: Vec<ToQueue>,
) -> Vec<(store::Due, Outcome)> {
    let entries = group
        .iter()
        .map(|t| (t.body.clone(), SendOptions::default()))
        .collect();
    let results = match inner
        .queues
        .send_batch(StoreRef::new(app, queue), entries)
        .await
    {
        Ok(results) => results.into_iter().map(|r| r.map(drop)).collect(),
        Err(e) => group.iter().map(|_| Err(e.clone())).collect::<Vec<_>>(),
    };
    let mut out = Vec::with_capacity(group.len());
    for (t, result) in group.into_iter().zip(results) {
        let outcome = match result {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                let failure = sink::Failure {
                    message: e.to_string(),
                    permanent: false,
                };
                after_failure(inner, &t.due, &t.target, &t.event, failure).await
            }
        };
        out.push((t.due, outcome));
    }
    out
}

/// What a failed attempt leads to: a retry, or (out of retries, too old, or a
/// permanent failure) the dead-letter queue.
async fn after_failure(
    inner: &Arc<Inner>,
    d: &store::Due,
    target: &RuleTarget,
    event: &Value,
    failure: sink::Failure,
) -> Outcome {
    let error = failure.message;
    let age = now_ms().saturating_sub(d.put_at);
    if failure.permanent || d.attempts >= target.retries || age >= ms(target.max_event_age) {
        let dead_lettered = dead_letter(inner, d, target, event, &error).await;
        Outcome::GaveUp { dead_lettered }
    } else {
        Outcome::Failed { error }
    }
}

async fn attempt(inner: &Arc<Inner>, d: &store::Due) -> Outcome {
    let bus = inner
        .apps
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&d.app)
        .cloned();
    let Some(target) = bus.as_ref().and_then(|b| b.target(&d.rule, d.target)) else {
        return Outcome::Gone;
    };
    let event: Value = match serde_json::from_str(&d.event) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Failed {
                error: format!("stored event unreadable: {e}"),
            };
        }
    };
    let topic = d.rule.strip_prefix(TOPIC);
    match sink::deliver(inner, &d.app, topic, &target, &event).await {
        Ok(()) => Outcome::Delivered,
        Err(failure) => after_failure(inner, d, &target, &event, failure).await,
    }
}

/// Sends an undeliverable event to the target's dead-letter queue with why;
/// returns whether it got there.
async fn dead_letter(
    inner: &Inner,
    d: &store::Due,
    target: &RuleTarget,
    event: &Value,
    error: &str,
) -> bool {
    let Some(queue) = &target.dead_letter else {
        tracing::warn!(
            app = %d.app, rule = %d.rule,
            "gave up delivering event {} to {} after {} attempts: {error}",
            event["id"], target.destination, d.attempts + 1
        );
        return false;
    };
    let record = json!({
        "rule": d.rule,
        "target": target.destination.to_string().replace('`', ""),
        "attempts": d.attempts + 1,
        "error": error,
        "event": event,
    });
    match inner
        .queues
        .send(
            StoreRef::new(&d.app, queue),
            Bytes::from(record.to_string()),
            SendOptions::default(),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(app = %d.app, rule = %d.rule, "dead-letter queue `{queue}` refused an event: {e}");
            false
        }
    }
}

fn record(
    conn: &Connection,
    d: &store::Due,
    outcome: &Outcome,
    backoff: Duration,
    tally: &mut store::Tally,
) -> DataResult<()> {
    let mut count = |what| tally.add(&d.app, &d.rule, d.target, what);
    match outcome {
        Outcome::Delivered => {
            count(Count::Delivered);
            sql(store::done(conn, d.id))
        }
        Outcome::Gone => sql(store::done(conn, d.id)),
        Outcome::GaveUp { dead_lettered } => {
            count(Count::Failed);
            if *dead_lettered {
                count(Count::DeadLettered);
            }
            sql(store::done(conn, d.id))
        }
        Outcome::Failed { error } => {
            let factor = 1u32 << d.attempts.min(20);
            let wait = backoff.saturating_mul(factor).min(MAX_BACKOFF);
            count(Count::Retried);
            sql(store::retry_at(conn, d.id, now_ms() + ms(wait), error))
        }
    }
}
