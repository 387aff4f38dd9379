//! `nimbus:integration/events` over the node's
//! [`TopicService`](nimbus_core::topic::TopicService) and
//! [`EventBus`](nimbus_core::bus::EventBus) ports.

use nimbus_core::app::StoreKind;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::DataError;
use nimbus_core::topic::{Publish, attribute_value};

use super::HostState;
use super::data::bindings::nimbus::integration::events as wit;
use super::data::{WitError, to_wit};

type EventsResult<T> = wasmtime::Result<Result<T, WitError>>;

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl wit::Host for HostState {
    async fn publish(
        &mut self,
        topic: String,
        message: String,
        attributes: Vec<(String, String)>,
    ) -> EventsResult<wit::Published> {
        let data = &self.data;
        let result = async {
            let target = data.granted(StoreKind::Topics, &topic)?;
            let publish = Publish {
                message,
                attributes: attributes
                    .into_iter()
                    .map(|(k, v)| (k, attribute_value(&v)))
                    .collect(),
                hops: 0,
            };
            let mut results = data
                .ports
                .topics
                .publish(target.app, target.name, vec![publish])
                .await?;
            results.pop().expect("one result per message")
        }
        .await;
        Ok(result
            .map(|p| wit::Published {
                message_id: p.message_id,
                deliveries: p.deliveries as u32,
            })
            .map_err(to_wit))
    }

    async fn put_event(&mut self, bus: String, event: wit::Event) -> EventsResult<Vec<String>> {
        let data = &self.data;
        let result = async {
            let target = data.granted(StoreKind::Bus, &bus)?;
            if event.source.is_empty() || event.type_.is_empty() {
                return Err(DataError::Invalid(
                    "an event needs a source and a type".into(),
                ));
            }
            let mut cloud =
                CloudEvent::new(event.id.unwrap_or_else(new_id), event.source, event.type_);
            cloud.subject = event.subject;
            if let Some(bytes) = event.data {
                cloud = cloud.with_data(
                    event
                        .datacontenttype
                        .unwrap_or_else(|| "application/json".into()),
                    bytes,
                );
            }
            let mut results = data.ports.bus.put_events(target.name, vec![cloud]).await?;
            results
                .pop()
                .expect("one result per event")
                .map(|r| r.matched_rules)
        }
        .await;
        Ok(result.map_err(to_wit))
    }
}
