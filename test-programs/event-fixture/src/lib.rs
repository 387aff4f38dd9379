//! An event function: echoes an event's type and data; data `fail` makes the
//! handler report an error, `trap` makes it panic. Data holding `t=NANOS` (a
//! send time, nanoseconds since the Unix epoch; also inside a topic message's
//! JSON envelope) prints `queue-latency-us=N`, the time from that send to the
//! handler's start, for `bench/queue-latency.sh` and `bench/events-bench.sh`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "nimbus:function/event-function",
});

use exports::nimbus::function::handler::{BatchResult, CloudEvent, Guest};

struct Fixture;

impl Guest for Fixture {
    fn handle(event: CloudEvent) -> Result<Option<Vec<u8>>, String> {
        print_latency(event.data.as_deref());
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
        for event in &events {
            print_latency(event.data.as_deref());
        }
        let failed_ids = events
            .into_iter()
            .filter(|e| e.data.as_deref() == Some(b"fail"))
            .map(|e| e.id)
            .collect();
        Ok(BatchResult { failed_ids })
    }
}

/// Prints `queue-latency-us=N` for data that holds `t=NANOS`.
fn print_latency(data: Option<&[u8]>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let Some(text) = data.and_then(|d| std::str::from_utf8(d).ok()) else {
        return;
    };
    let Some(at) = text.find("t=") else { return };
    let digits: String = text[at + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if let Ok(sent) = digits.parse::<u128>() {
        println!("queue-latency-us={}", now.saturating_sub(sent) / 1000);
    }
}

export!(Fixture);
