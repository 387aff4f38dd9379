//! The greeter event function: receives a CloudEvent whose data is
//! `{"name": "..."}` and returns `{"greeting": "Hello, NAME!"}`.
//! Try it: `nimbus invoke hello/greeter --data '{"name":"Ada"}'`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "nimbus:function/event-function",
});

use exports::nimbus::function::handler::{BatchResult, CloudEvent, Guest};

struct Greeter;

fn greet(event: &CloudEvent) -> Result<String, String> {
    let data = event.data.as_deref().unwrap_or(b"{}");
    let text = std::str::from_utf8(data).map_err(|_| "data is not UTF-8".to_string())?;
    // A tiny extraction of "name" keeps the component small (no JSON library).
    let name = text
        .split_once("\"name\"")
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(_, rest)| rest.trim_start().strip_prefix('"'))
        .and_then(|rest| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "world".to_string());
    if name.is_empty() {
        return Err("`name` must not be empty".into());
    }
    Ok(format!("{{\"greeting\":\"Hello, {name}!\"}}"))
}

impl Guest for Greeter {
    fn handle(event: CloudEvent) -> Result<Option<Vec<u8>>, String> {
        println!("greeting for event {} ({})", event.id, event.type_);
        greet(&event).map(|g| Some(g.into_bytes()))
    }

    fn handle_batch(events: Vec<CloudEvent>) -> Result<BatchResult, String> {
        let failed_ids = events
            .iter()
            .filter(|e| greet(e).is_err())
            .map(|e| e.id.clone())
            .collect();
        Ok(BatchResult { failed_ids })
    }
}

export!(Greeter);
