//! Port decorators that count operations into the [`Meters`]: every caller of a
//! queue, topic or the bus (guests, the data API, triggers, rules, schedules)
//! goes through one, so the services themselves stay free of metering.
//!
//! A queue's writes are sent messages, a topic's published messages, the bus's
//! put events: usage bills those. Only accepted entries count.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::app::{App, StoreKind, Subscription};
use nimbus_core::bus::{EventBus, PutResult, RuleStatus};
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataResult, StoreRef};
use nimbus_core::meter::{Meters, Op};
use nimbus_core::queue::{Message, QueueService, QueueStats, ReceiveOptions, SendOptions, Sent};
use nimbus_core::topic::{Publish, Published, SubscriptionStatus, TopicService};

/// Wraps a port so its operations are counted.
pub struct Metered<T: ?Sized> {
    inner: Arc<T>,
    meters: Arc<Meters>,
}

impl<T: ?Sized> Metered<T> {
    pub fn new(inner: Arc<T>, meters: Arc<Meters>) -> Arc<Self> {
        Arc::new(Self { inner, meters })
    }

    fn count(&self, app: &str, kind: StoreKind, name: &str, op: Op, n: u64) {
        if n > 0 {
            self.meters.app(app).resource(kind, name).record(op, n);
        }
    }
}

fn accepted<T>(results: &[DataResult<T>]) -> u64 {
    results.iter().filter(|r| r.is_ok()).count() as u64
}

#[async_trait]
impl QueueService for Metered<dyn QueueService> {
    async fn send(
        &self,
        queue: StoreRef<'_>,
        body: Bytes,
        options: SendOptions,
    ) -> DataResult<Sent> {
        let sent = self.inner.send(queue, body, options).await?;
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Write, 1);
        Ok(sent)
    }

    async fn send_batch(
        &self,
        queue: StoreRef<'_>,
        entries: Vec<(Bytes, SendOptions)>,
    ) -> DataResult<Vec<DataResult<Sent>>> {
        let results = self.inner.send_batch(queue, entries).await?;
        let n = accepted(&results);
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Write, n);
        Ok(results)
    }

    async fn receive(
        &self,
        queue: StoreRef<'_>,
        options: ReceiveOptions,
    ) -> DataResult<Vec<Message>> {
        let messages = self.inner.receive(queue, options).await?;
        let n = messages.len() as u64;
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Read, n);
        Ok(messages)
    }

    async fn delete(&self, queue: StoreRef<'_>, receipt: &str) -> DataResult<bool> {
        let deleted = self.inner.delete(queue, receipt).await?;
        let n = u64::from(deleted);
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Delete, n);
        Ok(deleted)
    }

    async fn delete_batch(
        &self,
        queue: StoreRef<'_>,
        receipts: Vec<String>,
    ) -> DataResult<Vec<DataResult<bool>>> {
        let results = self.inner.delete_batch(queue, receipts).await?;
        let n = results.iter().filter(|r| matches!(r, Ok(true))).count() as u64;
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Delete, n);
        Ok(results)
    }

    async fn change_visibility(
        &self,
        queue: StoreRef<'_>,
        receipt: &str,
        timeout: Duration,
    ) -> DataResult<()> {
        self.inner.change_visibility(queue, receipt, timeout).await
    }

    async fn purge(&self, queue: StoreRef<'_>) -> DataResult<u64> {
        let n = self.inner.purge(queue).await?;
        self.count(queue.app, StoreKind::Queues, queue.name, Op::Delete, n);
        Ok(n)
    }

    async fn redrive(&self, dlq: StoreRef<'_>) -> DataResult<u64> {
        self.inner.redrive(dlq).await
    }

    async fn stats(&self, queue: StoreRef<'_>) -> DataResult<QueueStats> {
        self.inner.stats(queue).await
    }

    async fn ensure(&self, app: &App) -> DataResult<()> {
        self.inner.ensure(app).await
    }

    async fn drop_queue(&self, app: &str, name: &str) -> DataResult<()> {
        self.inner.drop_queue(app, name).await
    }
}

#[async_trait]
impl TopicService for Metered<dyn TopicService> {
    async fn publish(
        &self,
        app: &str,
        topic: &str,
        messages: Vec<Publish>,
    ) -> DataResult<Vec<DataResult<Published>>> {
        let results = self.inner.publish(app, topic, messages).await?;
        self.count(app, StoreKind::Topics, topic, Op::Write, accepted(&results));
        Ok(results)
    }

    async fn subscriptions(&self, app: &str, topic: &str) -> DataResult<Vec<SubscriptionStatus>> {
        self.inner.subscriptions(app, topic).await
    }

    async fn subscribe(
        &self,
        app: &str,
        topic: &str,
        subscription: Subscription,
    ) -> DataResult<String> {
        self.inner.subscribe(app, topic, subscription).await
    }

    async fn unsubscribe(&self, app: &str, topic: &str, id: &str) -> DataResult<bool> {
        self.inner.unsubscribe(app, topic, id).await
    }
}

#[async_trait]
impl EventBus for Metered<dyn EventBus> {
    async fn put_events(
        &self,
        app: &str,
        events: Vec<CloudEvent>,
    ) -> DataResult<Vec<DataResult<PutResult>>> {
        let results = self.inner.put_events(app, events).await?;
        self.count(
            app,
            StoreKind::Bus,
            "default",
            Op::Write,
            accepted(&results),
        );
        Ok(results)
    }

    async fn rules(&self, app: &str) -> DataResult<Vec<RuleStatus>> {
        self.inner.rules(app).await
    }

    async fn replay(&self, app: &str, from_ms: u64, to_ms: u64) -> DataResult<u64> {
        self.inner.replay(app, from_ms, to_ms).await
    }
}
