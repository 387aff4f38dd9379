//! Notification topics, on the bus's outbox: a publish matches each message's
//! attributes against the topic's subscriptions and queues one delivery per
//! passing subscription in the same durable write as nothing else — the
//! message itself lives only in its deliveries. Subscriptions come from the
//! manifest or the API (kept in `bus_topic_subs`).

use async_trait::async_trait;
use nimbus_core::app::{Sink, Subscription};
use nimbus_core::bus::TargetStatus;
use nimbus_core::data::{DataError, DataResult};
use nimbus_core::pattern::Pattern;
use nimbus_core::topic::{Publish, Published, SubscriptionStatus, TopicService, limits};
use nimbus_data::catalog::{now_ms, rfc3339};
use rusqlite::Connection;
use serde_json::json;

use super::store::{self, Count};
use super::{Bus, TOPIC, sql, topic_sub};

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

fn no_topic(app: &str, topic: &str) -> DataError {
    DataError::NotFound(format!("app `{app}` has no topic `{topic}`"))
}

impl Bus {
    /// Publishes `messages` to `topic` of `app`: one result per message.
    pub(super) async fn publish_messages(
        &self,
        app: &str,
        topic: &str,
        messages: Vec<Publish>,
    ) -> DataResult<Vec<DataResult<Published>>> {
        if messages.len() > limits::MAX_BATCH {
            return Err(DataError::Invalid(format!(
                "a publish takes at most {} messages, not {}",
                limits::MAX_BATCH,
                messages.len()
            )));
        }
        let bus = self.app(app)?;
        let subs = bus
            .topics
            .get(topic)
            .ok_or_else(|| no_topic(app, topic))?
            .clone();
        let now = now_ms();
        let planned: Vec<DataResult<(Published, String, Vec<usize>)>> = messages
            .into_iter()
            .map(|m| {
                if let Some((k, _)) = m
                    .attributes
                    .iter()
                    .find(|(_, v)| !(v.is_string() || v.is_number()))
                {
                    return Err(DataError::Invalid(format!(
                        "attribute `{k}` must be a string or a number"
                    )));
                }
                let message_id = random_id();
                let attributes = json!(m.attributes);
                let mut envelope = json!({
                    "id": message_id,
                    "app": app,
                    "topic": topic,
                    "message": m.message,
                    "attributes": attributes,
                    "time": rfc3339(now),
                });
                if m.hops > 0 {
                    envelope["hops"] = m.hops.into();
                }
                let envelope = envelope.to_string();
                if envelope.len() > limits::MAX_MESSAGE_BYTES {
                    return Err(DataError::TooLarge(format!(
                        "the message is {} bytes with its attributes; at most {} are allowed",
                        envelope.len(),
                        limits::MAX_MESSAGE_BYTES
                    )));
                }
                let to: Vec<usize> = subs
                    .iter()
                    .filter(|s| s.filter.as_ref().is_none_or(|f| f.matches(&attributes)))
                    .map(|s| s.number)
                    .collect();
                Ok((
                    Published {
                        message_id,
                        deliveries: to.len(),
                    },
                    envelope,
                    to,
                ))
            })
            .collect();
        let (app, rule) = (app.to_string(), format!("{TOPIC}{topic}"));
        let inner = self.inner.clone();
        let any = planned
            .iter()
            .any(|p| p.as_ref().is_ok_and(|(_, _, to)| !to.is_empty()));
        self.inner
            .db
            .write(move |conn: &Connection| {
                let mut tally = store::Tally::default();
                for (_, envelope, to) in planned.iter().flatten() {
                    for &number in to {
                        sql(store::enqueue(conn, &app, &rule, number, envelope, now))?;
                        tally.add(&app, &rule, number, Count::Matched);
                    }
                }
                sql(tally.write(conn))?;
                let after: Option<nimbus_data::AfterCommit> = any
                    .then(|| Box::new(move || inner.wake.notify_one()) as nimbus_data::AfterCommit);
                Ok::<_, DataError>((
                    planned.into_iter().map(|p| p.map(|(r, _, _)| r)).collect(),
                    after,
                ))
            })
            .await
    }

    /// Checks a subscription added over the API against what `app` declares.
    fn check_subscription(&self, app: &str, sub: &Subscription) -> DataResult<()> {
        let bus = self.app(app)?;
        match &sub.target.destination {
            Sink::Function(f) if !bus.functions.contains(f) => {
                return Err(DataError::Invalid(format!(
                    "app `{app}` has no function `{f}`"
                )));
            }
            Sink::Queue(q) if !bus.queues.contains(q) => {
                return Err(DataError::Invalid(format!(
                    "app `{app}` has no queue `{q}`"
                )));
            }
            Sink::Webhook { url, secret } => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(DataError::Invalid(format!("invalid webhook URL `{url}`")));
                }
                if secret.is_empty() {
                    return Err(DataError::Invalid(
                        "a webhook subscription needs a secret (deliveries are signed with it)"
                            .into(),
                    ));
                }
            }
            Sink::Topic(_) | Sink::Bus(_) => {
                return Err(DataError::Invalid(
                    "a subscription delivers to a function, a queue or a webhook".into(),
                ));
            }
            _ => {}
        }
        if let Some(dl) = &sub.target.dead_letter
            && !bus.queues.contains(dl)
        {
            return Err(DataError::Invalid(format!(
                "app `{app}` has no queue `{dl}`"
            )));
        }
        if let Some(filter) = &sub.filter {
            Pattern::parse(filter).map_err(|e| {
                DataError::Invalid(format!("invalid filter at `{}`: {}", e.path, e.message))
            })?;
        }
        Ok(())
    }
}

fn counts(
    conn: &Connection,
    app: &str,
    rule: &str,
    number: usize,
    target: String,
) -> rusqlite::Result<TargetStatus> {
    let [matched, delivered, retried, failed, dead_lettered, pending] =
        store::counts(conn, app, rule, number)?;
    Ok(TargetStatus {
        target,
        matched,
        delivered,
        retried,
        failed,
        dead_lettered,
        pending,
    })
}

#[async_trait]
impl TopicService for Bus {
    async fn publish(
        &self,
        app: &str,
        topic: &str,
        messages: Vec<Publish>,
    ) -> DataResult<Vec<DataResult<Published>>> {
        self.publish_messages(app, topic, messages).await
    }

    async fn subscriptions(&self, app: &str, topic: &str) -> DataResult<Vec<SubscriptionStatus>> {
        let bus = self.app(app)?;
        let subs = bus
            .topics
            .get(topic)
            .ok_or_else(|| no_topic(app, topic))?
            .clone();
        let (app, rule) = (app.to_string(), format!("{TOPIC}{topic}"));
        self.inner
            .db
            .call(move |conn| {
                let mut out = Vec::new();
                for s in subs {
                    let id = if s.number >= store::API_SUBS {
                        format!("s{}", s.number - store::API_SUBS)
                    } else {
                        format!("m{}", s.number)
                    };
                    let target = s.decl.target.destination.to_string();
                    out.push(SubscriptionStatus {
                        id,
                        counts: counts(conn, &app, &rule, s.number, target)?,
                        subscription: s.decl,
                    });
                }
                Ok(out)
            })
            .await
            .map_err(DataError::storage)
    }

    async fn subscribe(
        &self,
        app: &str,
        topic: &str,
        subscription: Subscription,
    ) -> DataResult<String> {
        let bus = self.app(app)?;
        if !bus.topics.contains_key(topic) {
            return Err(no_topic(app, topic));
        }
        self.check_subscription(app, &subscription)?;
        let spec = serde_json::to_string(&subscription).map_err(DataError::storage)?;
        let (a, t) = (app.to_string(), topic.to_string());
        let id = self
            .inner
            .db
            .write(move |conn| {
                Ok::<_, DataError>((sql(store::add_sub(conn, &a, &t, &spec))?, None))
            })
            .await?;
        self.update_topics(app, |topics| {
            topics
                .entry(topic.to_string())
                .or_default()
                .push(topic_sub(store::API_SUBS + id as usize, subscription));
        });
        Ok(format!("s{id}"))
    }

    async fn unsubscribe(&self, app: &str, topic: &str, id: &str) -> DataResult<bool> {
        let bus = self.app(app)?;
        if !bus.topics.contains_key(topic) {
            return Err(no_topic(app, topic));
        }
        let Some(n) = id.strip_prefix('s').and_then(|n| n.parse::<i64>().ok()) else {
            return Err(DataError::Invalid(format!(
                "`{id}` is not a subscription added over the API (those are `s1`, `s2`, …; remove the others from the manifest)"
            )));
        };
        let (a, t) = (app.to_string(), topic.to_string());
        let removed = self
            .inner
            .db
            .write(move |conn| Ok::<_, DataError>((sql(store::remove_sub(conn, &a, &t, n))?, None)))
            .await?;
        let number = store::API_SUBS + n as usize;
        self.update_topics(app, |topics| {
            if let Some(subs) = topics.get_mut(topic) {
                subs.retain(|s| s.number != number);
            }
        });
        Ok(removed)
    }
}
