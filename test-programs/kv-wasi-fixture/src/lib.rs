//! An HTTP function written against the standard `wasi:keyvalue` interfaces
//! alone (bindings generated from the upstream WIT, no Nimbus SDK or import), as
//! a component made for another wasi:keyvalue host would be. Tests drive each
//! call from the path and query: `/OP?store=S&key=K`, the value as the body.
//! Errors come back as 500 with the host's `error` variant as the body.

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

wasi::http::proxy::export!(Fixture);

struct Fixture;

impl wasi::exports::http::incoming_handler::Guest for Fixture {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let op = path.trim_start_matches('/').to_string();
        let body = read_body(request);
        let reply = run(&op, &param, body).unwrap_or_else(|e| (500, format!("{e:?}").into_bytes()));
        respond(out, reply);
    }
}

fn run(
    op: &str,
    param: &dyn Fn(&str) -> Option<String>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), store::Error> {
    let bucket = store::open(&param("store").unwrap_or_default())?;
    let key = param("key").unwrap_or_default();
    let keys = || -> Vec<String> {
        param("keys")
            .unwrap_or_default()
            .split(',')
            .map(String::from)
            .collect()
    };
    Ok(match op {
        "set" => {
            bucket.set(&key, &body)?;
            (200, b"ok".to_vec())
        }
        "get" => match bucket.get(&key)? {
            Some(value) => (200, value),
            None => (404, b"absent".to_vec()),
        },
        "exists" => (200, bucket.exists(&key)?.to_string().into_bytes()),
        "delete" => {
            bucket.delete(&key)?;
            (200, b"ok".to_vec())
        }
        "increment" => {
            let by = param("by").and_then(|b| b.parse().ok()).unwrap_or(1);
            (
                200,
                atomics::increment(&bucket, &key, by)?
                    .to_string()
                    .into_bytes(),
            )
        }
        // Every key, following cursors to the end: one line each.
        "list" => {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                all.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            (200, all.join("\n").into_bytes())
        }
        // `keys=a,b`: `k=v` per found key, `-` per missing one.
        "get-many" => {
            let found = batch::get_many(&bucket, &keys())?;
            let lines: Vec<String> = found
                .into_iter()
                .map(|kv| match kv {
                    Some((k, v)) => format!("{k}={}", String::from_utf8_lossy(&v)),
                    None => "-".into(),
                })
                .collect();
            (200, lines.join("\n").into_bytes())
        }
        // The body holds `k=v` lines.
        "set-many" => {
            let pairs = String::from_utf8_lossy(&body)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            batch::set_many(&bucket, &pairs)?;
            (200, b"ok".to_vec())
        }
        "delete-many" => {
            batch::delete_many(&bucket, &keys())?;
            (200, b"ok".to_vec())
        }
        _ => (404, b"unknown op".to_vec()),
    })
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let mut body = Vec::new();
    while let Ok(chunk) = input.blocking_read(64 * 1024) {
        body.extend_from_slice(&chunk);
    }
    body
}

fn respond(out: ResponseOutparam, (status, body): (u16, Vec<u8>)) {
    let headers = Fields::from_list(&[(
        "content-length".to_string(),
        body.len().to_string().into_bytes(),
    )])
    .unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let body_handle = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = body_handle.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.write_all(chunk).unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    OutgoingBody::finish(body_handle, None).unwrap();
}
