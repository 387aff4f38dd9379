//! Port decorators that count operations into the [`Meters`]: every caller of a
//! store, queue, topic or the bus (guests, the data API, the gateway's public
//! buckets, triggers, rules, schedules) goes through one, so the services
//! themselves stay free of metering. The store decorators also hold the
//! stored-bytes quota: a write that adds data is refused while the app's stores
//! are at it.
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
use nimbus_core::data::{
    BlobStore, ByteRange, DataError, DataResult, DocQuery, DocStore, Document, KeyPage, KvEntry,
    KvStore, ListObjects, ObjectMeta, ObjectPage, ObjectRead, PartInfo, PutOptions, QueryPage,
    QueryPlan, SetOptions, StoreRef,
};
use nimbus_core::meter::{Meters, Op};
use nimbus_core::ports::Body;
use nimbus_core::queue::{Message, QueueService, QueueStats, ReceiveOptions, SendOptions, Sent};
use nimbus_core::topic::{Publish, Published, SubscriptionStatus, TopicService};
use serde_json::Value;

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

impl<T: ?Sized> Metered<T> {
    /// Refuses a write that adds data while the app is over its stored-bytes quota.
    fn room(&self, app: &str) -> DataResult<()> {
        match self.meters.app(app).over_storage() {
            Some(quota) => Err(DataError::Quota(quota.to_string())),
            None => Ok(()),
        }
    }

    fn one(&self, store: StoreRef<'_>, kind: StoreKind, op: Op) {
        self.count(store.app, kind, store.name, op, 1);
    }
}

#[async_trait]
impl KvStore for Metered<dyn KvStore> {
    fn get(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<KvEntry>> {
        self.one(store, StoreKind::Kv, Op::Read);
        self.inner.get(store, key)
    }

    fn list(
        &self,
        store: StoreRef<'_>,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> DataResult<KeyPage> {
        self.one(store, StoreKind::Kv, Op::Read);
        self.inner.list(store, prefix, cursor, limit)
    }

    async fn set(
        &self,
        store: StoreRef<'_>,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> DataResult<u64> {
        self.room(store.app)?;
        let version = self.inner.set(store, key, value, options).await?;
        self.one(store, StoreKind::Kv, Op::Write);
        Ok(version)
    }

    async fn set_many(&self, store: StoreRef<'_>, entries: Vec<(String, Bytes)>) -> DataResult<()> {
        self.room(store.app)?;
        let n = entries.len() as u64;
        self.inner.set_many(store, entries).await?;
        self.count(store.app, StoreKind::Kv, store.name, Op::Write, n);
        Ok(())
    }

    async fn delete_many(&self, store: StoreRef<'_>, keys: Vec<String>) -> DataResult<u64> {
        let n = self.inner.delete_many(store, keys).await?;
        self.count(store.app, StoreKind::Kv, store.name, Op::Delete, n);
        Ok(n)
    }

    async fn increment(&self, store: StoreRef<'_>, key: &str, delta: i64) -> DataResult<i64> {
        self.room(store.app)?;
        let value = self.inner.increment(store, key, delta).await?;
        self.one(store, StoreKind::Kv, Op::Write);
        Ok(value)
    }
}

#[async_trait]
impl DocStore for Metered<dyn DocStore> {
    async fn get(&self, store: StoreRef<'_>, id: &str) -> DataResult<Option<Document>> {
        self.one(store, StoreKind::Docs, Op::Read);
        self.inner.get(store, id).await
    }

    async fn put(
        &self,
        store: StoreRef<'_>,
        id: &str,
        body: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document> {
        self.room(store.app)?;
        let doc = self.inner.put(store, id, body, if_rev).await?;
        self.one(store, StoreKind::Docs, Op::Write);
        Ok(doc)
    }

    async fn patch(
        &self,
        store: StoreRef<'_>,
        id: &str,
        patch: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document> {
        self.room(store.app)?;
        let doc = self.inner.patch(store, id, patch, if_rev).await?;
        self.one(store, StoreKind::Docs, Op::Write);
        Ok(doc)
    }

    async fn delete(&self, store: StoreRef<'_>, id: &str, if_rev: Option<u64>) -> DataResult<bool> {
        let existed = self.inner.delete(store, id, if_rev).await?;
        if existed {
            self.one(store, StoreKind::Docs, Op::Delete);
        }
        Ok(existed)
    }

    async fn query(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPage> {
        self.one(store, StoreKind::Docs, Op::Read);
        self.inner.query(store, query).await
    }

    async fn explain(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPlan> {
        self.inner.explain(store, query).await
    }
}

#[async_trait]
impl BlobStore for Metered<dyn BlobStore> {
    async fn put(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
        body: Body,
    ) -> DataResult<ObjectMeta> {
        self.room(store.app)?;
        let meta = self.inner.put(store, key, options, body).await?;
        self.one(store, StoreKind::Buckets, Op::Write);
        Ok(meta)
    }

    async fn head(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<ObjectMeta>> {
        self.one(store, StoreKind::Buckets, Op::Read);
        self.inner.head(store, key).await
    }

    async fn get(
        &self,
        store: StoreRef<'_>,
        key: &str,
        range: Option<ByteRange>,
    ) -> DataResult<Option<ObjectRead>> {
        self.one(store, StoreKind::Buckets, Op::Read);
        self.inner.get(store, key, range).await
    }

    async fn delete(&self, store: StoreRef<'_>, key: &str) -> DataResult<bool> {
        let existed = self.inner.delete(store, key).await?;
        if existed {
            self.one(store, StoreKind::Buckets, Op::Delete);
        }
        Ok(existed)
    }

    async fn copy(
        &self,
        from: StoreRef<'_>,
        from_key: &str,
        to: StoreRef<'_>,
        to_key: &str,
    ) -> DataResult<ObjectMeta> {
        self.room(to.app)?;
        let meta = self.inner.copy(from, from_key, to, to_key).await?;
        self.one(to, StoreKind::Buckets, Op::Write);
        Ok(meta)
    }

    async fn list(&self, store: StoreRef<'_>, request: ListObjects) -> DataResult<ObjectPage> {
        self.one(store, StoreKind::Buckets, Op::Read);
        self.inner.list(store, request).await
    }

    async fn create_multipart(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
    ) -> DataResult<String> {
        self.room(store.app)?;
        self.inner.create_multipart(store, key, options).await
    }

    async fn upload_part(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        part_number: u32,
        content_md5: Option<[u8; 16]>,
        body: Body,
    ) -> DataResult<PartInfo> {
        self.room(store.app)?;
        self.inner
            .upload_part(store, upload_id, part_number, content_md5, body)
            .await
    }

    async fn complete_multipart(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> DataResult<ObjectMeta> {
        let meta = self
            .inner
            .complete_multipart(store, upload_id, parts)
            .await?;
        self.one(store, StoreKind::Buckets, Op::Write);
        Ok(meta)
    }

    async fn abort_multipart(&self, store: StoreRef<'_>, upload_id: &str) -> DataResult<()> {
        self.inner.abort_multipart(store, upload_id).await
    }
}
