//! `nimbus:integration/queues` over the node's
//! [`QueueService`](nimbus_core::queue::QueueService) port.

use std::time::Duration;

use bytes::Bytes;
use nimbus_core::app::StoreKind;
use nimbus_core::queue::{ReceiveOptions, SendOptions};

use super::HostState;
use super::data::bindings::nimbus::integration::queues as wit;
use super::data::{WitError, to_wit};

type QueueResult<T> = wasmtime::Result<Result<T, WitError>>;

impl wit::Host for HostState {
    async fn send(
        &mut self,
        queue: String,
        body: Vec<u8>,
        options: wit::SendOptions,
    ) -> QueueResult<wit::Sent> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Queues, &queue)?;
            let options = SendOptions {
                delay: options.delay_ms.map(Duration::from_millis),
                attributes: options.attributes.into_iter().collect(),
                group_id: options.group_id,
                dedup_id: options.dedup_id,
            };
            data.ports
                .queues
                .send(store, Bytes::from(body), options)
                .await
        }
        .await;
        Ok(result
            .map(|s| wit::Sent {
                message_id: s.message_id,
                deduplicated: s.deduplicated,
            })
            .map_err(to_wit))
    }

    async fn receive(
        &mut self,
        queue: String,
        max: u32,
        wait_ms: u64,
        visibility_ms: Option<u64>,
    ) -> QueueResult<Vec<wit::Message>> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Queues, &queue)?;
            let options = ReceiveOptions {
                max: max as usize,
                wait: Duration::from_millis(wait_ms),
                visibility: visibility_ms.map(Duration::from_millis),
            };
            data.ports.queues.receive(store, options).await
        }
        .await;
        Ok(result
            .map(|messages| {
                messages
                    .into_iter()
                    .map(|m| wit::Message {
                        message_id: m.message_id,
                        receipt: m.receipt,
                        body: m.body.to_vec(),
                        attributes: m.attributes.into_iter().collect(),
                        receive_count: m.receive_count,
                        sent_at: m.sent_at,
                        group_id: m.group_id,
                    })
                    .collect()
            })
            .map_err(to_wit))
    }

    async fn delete(&mut self, queue: String, receipt: String) -> QueueResult<bool> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Queues, &queue)?;
            data.ports.queues.delete(store, &receipt).await
        }
        .await;
        Ok(result.map_err(to_wit))
    }

    async fn change_visibility(
        &mut self,
        queue: String,
        receipt: String,
        timeout_ms: u64,
    ) -> QueueResult<()> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Queues, &queue)?;
            let timeout = Duration::from_millis(timeout_ms);
            data.ports
                .queues
                .change_visibility(store, &receipt, timeout)
                .await
        }
        .await;
        Ok(result.map_err(to_wit))
    }
}
