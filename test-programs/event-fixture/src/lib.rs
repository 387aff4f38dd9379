//! An event function: echoes an event's type and data; data `fail` makes the
//! handler report an error, `trap` makes it panic. In a batch, data `t=NANOS`
//! (a send time, nanoseconds since the Unix epoch) prints
//! `queue-latency-us=N`, the time from that send to the handler's start, for
//! `bench/queue-latency.sh`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "nimbus:function/event-function",
});

use exports::nimbus::function::handler::{BatchResult, CloudEvent, Guest};

struct Fixture;

impl Guest for Fixture {
    fn handle(event: CloudEvent) -> Result<Option<Vec<u8>>, String> {
        let data = event.data.unwrap_or_default();
        match data.as_slice() {
            b"fail" => Err("fixture asked to fail".into()),
            b"trap" => panic!("fixture asked to trap"),
            _ => Ok(Some(
                format!("{} {}", event.type_, String::from_utf8_lossy(&data)).into_bytes(),
            )),
        }
    }

    fn handle_batch(events: Vec<CloudEvent>) -> Result<BatchResult, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for event in &events {
            let sent = event.data.as_deref().and_then(|d| d.strip_prefix(b"t="));
            if let Some(sent) = sent.and_then(|s| std::str::from_utf8(s).ok()?.parse::<u128>().ok())
            {
                println!("queue-latency-us={}", now.saturating_sub(sent) / 1000);
            }
        }
        let failed_ids = events
            .into_iter()
            .filter(|e| e.data.as_deref() == Some(b"fail"))
            .map(|e| e.id)
            .collect();
        Ok(BatchResult { failed_ids })
    }
}

export!(Fixture);
