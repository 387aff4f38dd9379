//! The embedded queue backend: SQS-style queues in the node's SQLite database.
//!
//! Every change (send, receive, delete, ...) is one [`Database::write`], so it
//! shares the group commit with other writes and returns only once durable; a
//! receive that delivers some messages and moves others to the dead-letter queue
//! does both in that one write. Reads (stats) use [`Database::call`].
//!
//! The queue declarations live in memory (loaded at open, changed by
//! [`QueueService::ensure`]), each with a wake-up signal for its long polls
//! (`wake.rs`): a send wakes one poll per message; a visibility change, a
//! FIFO delete or a redrive wakes them all; a delayed send or a delivery arms
//! the queue's timer for when that message becomes visible. A long poll with
//! nothing to do sleeps until the earliest of its deadline and the next
//! `visible_at` of the queue, so an idle poll costs no CPU.
//!
//! Choices:
//! - Standard queues accept a `group_id` (and return it with the message) but
//!   give it no meaning, and ignore `dedup_id`: deduplication is a FIFO feature,
//!   as in SQS.
//! - A message moves to a dead-letter queue in place (same row, body not
//!   copied), remembering its source queue; it keeps its id and `sent_at` (its
//!   retention counts from the original send, as in SQS).
//! - Retention is enforced by [`Queues::expire`]; until it runs, an expired
//!   message may still be delivered.

mod fifo;
mod store;
#[cfg(test)]
mod tests;
mod wake;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::app::{App, QueueDecl, StoreKind};
use nimbus_core::data::{DataError, DataResult, StoreRef};
use nimbus_core::queue::{
    Message, QueueService, QueueStats, ReceiveOptions, SendOptions, Sent, limits,
};
use nimbus_data::catalog::now_ms;
use nimbus_data::{AfterCommit, Database};
use rusqlite::Connection;

use self::wake::{Signal, Wake};

/// One declared queue, as the registry row says.
struct Queue {
    id: i64,
    app: String,
    name: String,
    decl: QueueDecl,
    /// Shared across config changes of the queue, so a long poll that started
    /// before an `ensure` still hears of sends after it.
    wake: Arc<Signal>,
}

type Registry = HashMap<String, HashMap<String, Arc<Queue>>>;

struct Inner {
    db: Database,
    registry: RwLock<Registry>,
}

/// The queues of every app. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").finish_non_exhaustive()
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

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Queues {
    /// Creates the queue tables if needed and loads the declared queues.
    pub fn open(db: Database) -> Result<Self, DataError> {
        db.migrate("integration.queues", store::MIGRATIONS)?;
        let rows = db.call_blocking(|conn| Ok(store::registry(conn)?))?;
        let mut registry = Registry::new();
        for (id, app, name, config) in rows {
            let decl: QueueDecl = match serde_json::from_str(&config) {
                Ok(decl) => decl,
                Err(e) => {
                    // Skipped, not fatal: the next deploy's `ensure` rewrites it.
                    tracing::warn!("queue `{app}/{name}` has an unreadable config: {e}");
                    continue;
                }
            };
            let queue = Queue {
                id,
                app: app.clone(),
                name: name.clone(),
                decl,
                wake: Arc::default(),
            };
            registry
                .entry(app)
                .or_default()
                .insert(name, Arc::new(queue));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                registry: RwLock::new(registry),
            }),
        })
    }

    /// Deletes messages older than their queue's retention (and expired
    /// deduplication ids); returns how many messages. The node calls it
    /// periodically.
    pub async fn expire(&self) -> DataResult<u64> {
        let queues: Vec<(i64, u64)> = self
            .read()
            .values()
            .flat_map(|app| app.values())
            .map(|q| (q.id, ms(q.decl.retention)))
            .collect();
        self.write(move |conn, now| {
            let mut total = 0;
            for (id, retention) in queues {
                total += sql(store::expire(conn, id, now.saturating_sub(retention)))?;
            }
            sql(store::expire_dedup(conn, now))?;
            Ok((total, Vec::new()))
        })
        .await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, app: &str, name: &str) -> Option<Arc<Queue>> {
        self.read().get(app)?.get(name).cloned()
    }

    fn queue(&self, queue: StoreRef<'_>) -> DataResult<Arc<Queue>> {
        self.lookup(queue.app, queue.name)
            .ok_or_else(|| DataError::NoSuchStore {
                kind: StoreKind::Queues,
                app: queue.app.into(),
                name: queue.name.into(),
            })
    }

    /// Runs `f` in the database's group commit with the time of its turn; wakes
    /// the long polls of the returned queues once the write is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, u64) -> DataResult<(T, Vec<Wake>)> + Send + 'static,
    ) -> DataResult<T> {
        let runtime = tokio::runtime::Handle::current();
        self.inner
            .db
            .write(move |conn| {
                let (out, wake) = f(conn, now_ms())?;
                let after: Option<AfterCommit> = if wake.is_empty() {
                    None
                } else {
                    Some(Box::new(move || {
                        for w in wake {
                            w.fire(&runtime);
                        }
                    }))
                };
                Ok((out, after))
            })
            .await
    }

    /// One receive attempt: the messages delivered, and (when none) the time the
    /// next message of the queue becomes visible.
    async fn receive_once(
        &self,
        queue: &Arc<Queue>,
        max: usize,
        visibility: u64,
    ) -> DataResult<(Vec<Message>, Option<u64>)> {
        let dead_letter = queue.decl.dead_letter.as_ref().and_then(|dl| {
            self.lookup(&queue.app, &dl.queue)
                .map(|dlq| (dlq, dl.max_receives))
        });
        let queue = queue.clone();
        self.write(move |conn, now| {
            let until = now.saturating_add(visibility);
            let max_receives = dead_letter.as_ref().map(|(_, m)| *m);
            let mut out = Vec::with_capacity(max);
            let mut dead = Vec::new();
            let mut deliver = |conn: &Connection, id: i64| -> DataResult<()> {
                out.push(sql(store::deliver(conn, id, until, &random_hex()))?);
                Ok(())
            };
            if queue.decl.fifo {
                let plan = sql(fifo::plan(conn, queue.id, now, max, max_receives))?;
                dead = plan.dead;
                for c in plan.deliver {
                    deliver(conn, c.id)?;
                }
            } else {
                let mut delivered: Vec<i64> = Vec::new();
                // Rows already taken (delivered or bound for the dead-letter
                // queue): the next look must skip them, or it finds them again.
                let mut taken: Vec<i64> = Vec::new();
                loop {
                    let wanted = max - delivered.len();
                    let batch = sql(store::visible(conn, queue.id, now, wanted, &taken))?;
                    let full = batch.len() == wanted;
                    let mut moved = false;
                    for c in batch {
                        taken.push(c.id);
                        if max_receives.is_some_and(|m| c.receive_count >= m) {
                            dead.push(c.id);
                            moved = true;
                        } else {
                            deliver(conn, c.id)?;
                            delivered.push(c.id);
                        }
                    }
                    // Look again only if moves left room and there may be more.
                    if !moved || !full || delivered.len() == max {
                        break;
                    }
                }
            }
            let mut wake = Vec::new();
            if let Some((dlq, receives)) = &dead_letter
                && !dead.is_empty()
            {
                tracing::warn!(
                    app = %queue.app,
                    "queue `{}`: moved {} message(s) received {receives} times to the dead-letter queue `{}`",
                    queue.name,
                    dead.len(),
                    dlq.name
                );
                for id in &dead {
                    sql(store::move_to_dead_letter(conn, *id, dlq.id, queue.id, now))?;
                }
                wake.push(Wake::Some(dlq.wake.clone(), dead.len()));
            }
            if !out.is_empty() && until > now {
                wake.push(Wake::At(queue.wake.clone(), until));
            }
            let next = if out.is_empty() {
                sql(store::next_visible_at(conn, queue.id, now))?
            } else {
                None
            };
            Ok(((out, next), wake))
        })
        .await
    }
}

/// Checks a send against its queue's settings; returns the delay to apply.
fn check_send(queue: &Queue, body: &[u8], options: &SendOptions) -> DataResult<Duration> {
    let decl = &queue.decl;
    if body.len() > decl.max_message_size {
        return Err(DataError::TooLarge(format!(
            "the message is {} bytes; the limit of queue `{}` is {} bytes",
            body.len(),
            queue.name,
            decl.max_message_size
        )));
    }
    let attribute_bytes: usize = options
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if attribute_bytes > limits::MAX_ATTRIBUTE_BYTES {
        return Err(DataError::TooLarge(format!(
            "the message attributes are {attribute_bytes} bytes; the limit is {} bytes",
            limits::MAX_ATTRIBUTE_BYTES
        )));
    }
    if decl.fifo {
        if options.delay.is_some() {
            return Err(DataError::Invalid(format!(
                "queue `{}` is FIFO: messages take no delay of their own (set `delay` on the queue)",
                queue.name
            )));
        }
        if options.group_id.is_none() {
            return Err(DataError::Invalid(format!(
                "queue `{}` is FIFO: a send needs a group id",
                queue.name
            )));
        }
    }
    if let Some(group) = &options.group_id {
        check_id("group id", group)?;
    }
    if let Some(dedup) = &options.dedup_id {
        check_id("deduplication id", dedup)?;
    }
    let delay = options.delay.unwrap_or(decl.delay);
    if delay > limits::MAX_DELAY {
        return Err(DataError::Invalid(format!(
            "the delay is {} s; the limit is {} s",
            delay.as_secs(),
            limits::MAX_DELAY.as_secs()
        )));
    }
    Ok(delay)
}

/// Group and deduplication ids: 1 to 128 bytes without control characters.
fn check_id(what: &str, id: &str) -> DataResult<()> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(DataError::Invalid(format!(
            "the {what} must be 1 to 128 bytes without control characters"
        )));
    }
    Ok(())
}

/// A checked send, ready for the write.
struct Outgoing {
    body: Bytes,
    attributes: Option<String>,
    group_id: Option<String>,
    dedup_id: Option<String>,
    delay: u64,
}

impl Outgoing {
    fn new(queue: &Queue, body: Bytes, options: SendOptions) -> DataResult<Self> {
        let delay = ms(check_send(queue, &body, &options)?);
        let attributes = if options.attributes.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&options.attributes).map_err(DataError::storage)?)
        };
        Ok(Self {
            body,
            attributes,
            group_id: options.group_id,
            // Deduplication is a FIFO feature; standard queues ignore the id.
            dedup_id: options.dedup_id.filter(|_| queue.decl.fifo),
            delay,
        })
    }

    /// Enqueues the message (or finds its duplicate) inside a write.
    fn enqueue(self, conn: &Connection, queue_id: i64, now: u64) -> DataResult<Sent> {
        if let Some(dedup) = &self.dedup_id
            && let Some(original) = sql(store::dedup_lookup(conn, queue_id, dedup, now))?
        {
            return Ok(Sent {
                message_id: original,
                deduplicated: true,
            });
        }
        let message_id = random_hex();
        sql(store::insert(
            conn,
            queue_id,
            &store::NewMessage {
                message_id: &message_id,
                body: &self.body,
                attributes: self.attributes.as_deref(),
                group_id: self.group_id.as_deref(),
                sent_at: now,
                visible_at: now.saturating_add(self.delay),
            },
        ))?;
        if let Some(dedup) = &self.dedup_id {
            let expires_at = now.saturating_add(ms(limits::DEDUP_WINDOW));
            sql(store::dedup_remember(
                conn,
                queue_id,
                dedup,
                &message_id,
                expires_at,
            ))?;
        }
        Ok(Sent {
            message_id,
            deduplicated: false,
        })
    }
}

fn check_receipt(receipt: &str) -> DataResult<(i64, &str)> {
    store::parse_receipt(receipt)
        .ok_or_else(|| DataError::Invalid(format!("{receipt:?} is not a receipt")))
}

fn no_such_queue(queue: &Queue) -> DataError {
    DataError::NoSuchStore {
        kind: StoreKind::Queues,
        app: queue.app.clone(),
        name: queue.name.clone(),
    }
}

#[async_trait]
impl QueueService for Queues {
    async fn send(
        &self,
        queue: StoreRef<'_>,
        body: Bytes,
        options: SendOptions,
    ) -> DataResult<Sent> {
        let queue = self.queue(queue)?;
        let outgoing = Outgoing::new(&queue, body, options)?;
        self.write(move |conn, now| {
            // A queue dropped since the lookup must not get orphan rows.
            if !sql(store::queue_exists(conn, queue.id))? {
                return Err(no_such_queue(&queue));
            }
            let delay = outgoing.delay;
            let sent = outgoing.enqueue(conn, queue.id, now)?;
            let wake = match (sent.deduplicated, delay) {
                (true, _) => Vec::new(),
                (false, 0) => vec![Wake::Some(queue.wake.clone(), 1)],
                (false, d) => vec![Wake::At(queue.wake.clone(), now.saturating_add(d))],
            };
            Ok((sent, wake))
        })
        .await
    }

    async fn send_batch(
        &self,
        queue: StoreRef<'_>,
        entries: Vec<(Bytes, SendOptions)>,
    ) -> DataResult<Vec<DataResult<Sent>>> {
        if entries.is_empty() || entries.len() > limits::MAX_BATCH {
            return Err(DataError::Invalid(format!(
                "a batch takes 1 to {} messages, not {}",
                limits::MAX_BATCH,
                entries.len()
            )));
        }
        let queue = self.queue(queue)?;
        let checked: Vec<DataResult<Outgoing>> = entries
            .into_iter()
            .map(|(body, options)| Outgoing::new(&queue, body, options))
            .collect();
        self.write(move |conn, now| {
            if !sql(store::queue_exists(conn, queue.id))? {
                return Err(no_such_queue(&queue));
            }
            let mut results = Vec::with_capacity(checked.len());
            let (mut now_visible, mut first_due) = (0, None::<u64>);
            for entry in checked {
                results.push(match entry {
                    Ok(outgoing) => {
                        let delay = outgoing.delay;
                        let sent = outgoing.enqueue(conn, queue.id, now)?;
                        match (sent.deduplicated, delay) {
                            (true, _) => {}
                            (false, 0) => now_visible += 1,
                            (false, d) => {
                                let at = now.saturating_add(d);
                                first_due = Some(first_due.map_or(at, |t| t.min(at)));
                            }
                        }
                        Ok(sent)
                    }
                    Err(e) => Err(e),
                });
            }
            let mut wake = vec![Wake::Some(queue.wake.clone(), now_visible)];
            if let Some(at) = first_due {
                wake.push(Wake::At(queue.wake.clone(), at));
            }
            Ok((results, wake))
        })
        .await
    }

    async fn receive(
        &self,
        queue: StoreRef<'_>,
        options: ReceiveOptions,
    ) -> DataResult<Vec<Message>> {
        let max = options.max.max(1);
        if max > limits::MAX_RECEIVE {
            return Err(DataError::Invalid(format!(
                "a receive returns at most {} messages, not {max}",
                limits::MAX_RECEIVE
            )));
        }
        if options.wait > limits::MAX_WAIT {
            return Err(DataError::Invalid(format!(
                "the wait is at most {} s",
                limits::MAX_WAIT.as_secs()
            )));
        }
        let queue = self.queue(queue)?;
        let visibility = options.visibility.unwrap_or(queue.decl.visibility_timeout);
        if visibility > limits::MAX_VISIBILITY {
            return Err(DataError::Invalid(format!(
                "the visibility timeout is at most {} s",
                limits::MAX_VISIBILITY.as_secs()
            )));
        }
        let deadline = tokio::time::Instant::now() + options.wait;
        loop {
            // Registered before looking, so a send between the look and the
            // sleep still wakes this poll.
            let notified = queue.wake.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (messages, next) = self.receive_once(&queue, max, ms(visibility)).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let until = match next {
                Some(at) => deadline.min(now + Duration::from_millis(at.saturating_sub(now_ms()))),
                None => deadline,
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, queue: StoreRef<'_>, receipt: &str) -> DataResult<bool> {
        let mut results = self.delete_batch(queue, vec![receipt.to_string()]).await?;
        results.pop().unwrap_or(Ok(false))
    }

    async fn delete_batch(
        &self,
        queue: StoreRef<'_>,
        receipts: Vec<String>,
    ) -> DataResult<Vec<DataResult<bool>>> {
        if receipts.len() > limits::MAX_BATCH {
            return Err(DataError::Invalid(format!(
                "a batch takes at most {} receipts, not {}",
                limits::MAX_BATCH,
                receipts.len()
            )));
        }
        let queue = self.queue(queue)?;
        self.write(move |conn, _now| {
            let mut results = Vec::with_capacity(receipts.len());
            let mut deleted = false;
            for receipt in &receipts {
                results.push(match check_receipt(receipt) {
                    Ok((id, token)) => {
                        let done = sql(store::delete(conn, queue.id, id, token))?;
                        deleted |= done;
                        Ok(done)
                    }
                    Err(e) => Err(e),
                });
            }
            // Deleting an in-flight FIFO message may open its group.
            let wake = if deleted && queue.decl.fifo {
                vec![Wake::All(queue.wake.clone())]
            } else {
                Vec::new()
            };
            Ok((results, wake))
        })
        .await
    }

    async fn change_visibility(
        &self,
        queue: StoreRef<'_>,
        receipt: &str,
        timeout: Duration,
    ) -> DataResult<()> {
        if timeout > limits::MAX_VISIBILITY {
            return Err(DataError::Invalid(format!(
                "the visibility timeout is at most {} s",
                limits::MAX_VISIBILITY.as_secs()
            )));
        }
        let queue = self.queue(queue)?;
        let (id, token) = check_receipt(receipt)?;
        let token = token.to_string();
        self.write(move |conn, now| {
            let at = now.saturating_add(ms(timeout));
            if !sql(store::set_visible_at(conn, queue.id, id, &token, at))? {
                return Err(DataError::Invalid(
                    "the receipt is not current: the message was deleted or received again".into(),
                ));
            }
            let wake = if timeout.is_zero() {
                Wake::All(queue.wake.clone())
            } else {
                Wake::At(queue.wake.clone(), at)
            };
            Ok(((), vec![wake]))
        })
        .await
    }

    async fn purge(&self, queue: StoreRef<'_>) -> DataResult<u64> {
        let queue = self.queue(queue)?;
        self.write(move |conn, _now| Ok((sql(store::purge(conn, queue.id))?, Vec::new())))
            .await
    }

    async fn redrive(&self, dlq: StoreRef<'_>) -> DataResult<u64> {
        let target = self.queue(dlq)?;
        let sources: Vec<Arc<Queue>> = self
            .read()
            .get(dlq.app)
            .map(|queues| {
                queues
                    .values()
                    .filter(|q| {
                        q.decl
                            .dead_letter
                            .as_ref()
                            .is_some_and(|dl| dl.queue == dlq.name)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if sources.is_empty() {
            return Err(DataError::Invalid(format!(
                "queue `{}` is not the dead-letter queue of any queue of app `{}`",
                dlq.name, dlq.app
            )));
        }
        let everyone: Vec<Arc<Queue>> = self
            .read()
            .get(dlq.app)
            .map(|queues| queues.values().cloned().collect())
            .unwrap_or_default();
        self.write(move |conn, now| {
            let moved = sql(store::redrive(conn, target.id, now))?;
            // A source may since have stopped naming this DLQ; the message still
            // goes home, so wake whichever queue it went to.
            let wake = everyone
                .iter()
                .filter(|q| moved.contains_key(&q.id))
                .map(|q| Wake::All(q.wake.clone()))
                .collect();
            Ok((moved.values().sum(), wake))
        })
        .await
    }

    async fn stats(&self, queue: StoreRef<'_>) -> DataResult<QueueStats> {
        let queue = self.queue(queue)?;
        let id = queue.id;
        let now = now_ms();
        let (visible, in_flight, delayed, oldest) = self
            .inner
            .db
            .call(move |conn| Ok(store::stats(conn, id, now)?))
            .await?;
        Ok(QueueStats {
            name: queue.name.clone(),
            visible,
            in_flight,
            delayed,
            oldest_age_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
        })
    }

    async fn ensure(&self, app: &App) -> DataResult<()> {
        let mut wanted = Vec::with_capacity(app.queues.len());
        for (name, decl) in &app.queues {
            let config = serde_json::to_string(decl).map_err(DataError::storage)?;
            wanted.push((name.clone(), decl.clone(), config));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let app_name = app.name.clone();
        let ids: Vec<i64> = self
            .write({
                let app_name = app_name.clone();
                let wanted: Vec<(String, String)> = wanted
                    .iter()
                    .map(|(n, _, c)| (n.clone(), c.clone()))
                    .collect();
                move |conn, now| {
                    let mut ids = Vec::with_capacity(wanted.len());
                    for (name, config) in &wanted {
                        ids.push(sql(store::upsert_queue(
                            conn, &app_name, name, config, now,
                        ))?);
                    }
                    Ok((ids, Vec::new()))
                }
            })
            .await?;
        let mut registry = self.registry_mut();
        let queues = registry.entry(app_name.clone()).or_default();
        for ((name, decl, _), id) in wanted.into_iter().zip(ids) {
            let wake = queues
                .get(&name)
                .filter(|q| q.id == id)
                .map_or_else(Arc::default, |q| q.wake.clone());
            let queue = Queue {
                id,
                app: app_name.clone(),
                name: name.clone(),
                decl,
                wake,
            };
            queues.insert(name, Arc::new(queue));
        }
        Ok(())
    }

    async fn drop_queue(&self, app: &str, name: &str) -> DataResult<()> {
        let Some(queue) = self.lookup(app, name) else {
            return Ok(());
        };
        let id = queue.id;
        self.write(move |conn, _now| {
            sql(store::drop_queue(conn, id))?;
            Ok(((), vec![Wake::All(queue.wake.clone())]))
        })
        .await?;
        let mut registry = self.registry_mut();
        if let Some(queues) = registry.get_mut(app) {
            if queues.get(name).is_some_and(|q| q.id == id) {
                queues.remove(name);
            }
            if queues.is_empty() {
                registry.remove(app);
            }
        }
        Ok(())
    }
}
