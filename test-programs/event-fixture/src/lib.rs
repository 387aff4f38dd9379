//! An event function: echoes an event's type and data; data `fail` makes the
//! handler report an error, `trap` makes it panic.

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
        let failed_ids = events
            .into_iter()
            .filter(|e| e.data.as_deref() == Some(b"fail"))
            .map(|e| e.id)
            .collect();
        Ok(BatchResult { failed_ids })
    }
}

export!(Fixture);
