//! An HTTP function that drives every data call of the SDK from query
//! parameters, so end-to-end tests can check each one through a real guest:
//! `/kv/OP`, `/docs/OP`, `/blobs/OP` with `store=`/`coll=`/`bucket=`, `key=`, ...
//! and the value or document as the request body. Data errors come back as
//! statuses (403 not granted, 404, 409 conflict, 400 invalid, 413) with the
//! node's message as the body.

use std::io::Write as _;
use std::time::{Duration, Instant};

use nimbus_sdk::{Error, blobs, docs, events, kv, queues};
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Fixture);

struct Fixture;

/// The same component is also an event function (the Nimbus event world), for
/// queue triggers and async invocations: each event it handles is counted in
/// the `seen` key-value store (`msg:DATA`, and `batch:SIZE` per batch), so tests
/// can see every delivery. Data `fail` fails (reported), `trap` panics. A store
/// change (type `nimbus.kv.*`, `nimbus.docs.*`, `nimbus.blob.*`) is logged as `change:NNNN` = "TYPE SUBJECT" in
/// delivery order; a change to a key ending in `fail` fails.
mod event {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "nimbus:function/event-function",
    });

    use exports::nimbus::function::handler::{BatchResult, CloudEvent, Guest};
    use nimbus_sdk::kv;

    struct Worker;

    fn handle_one(event: &CloudEvent) -> Result<String, String> {
        let data = String::from_utf8_lossy(event.data.as_deref().unwrap_or_default()).into_owned();
        // A store change: logged in delivery order as `change:NNNN` = "TYPE SUBJECT".
        let change = ["nimbus.kv.", "nimbus.docs.", "nimbus.blob."]
            .iter()
            .any(|p| event.type_.starts_with(p));
        if change {
            let seen = kv::Store::open("seen").map_err(|e| e.to_string())?;
            if event
                .subject
                .as_deref()
                .is_some_and(|s| s.ends_with("fail"))
            {
                return Err("fixture asked to fail".into());
            }
            let n = seen.increment("changes", 1).map_err(|e| e.to_string())?;
            let line = format!(
                "{} {}",
                event.type_,
                event.subject.as_deref().unwrap_or_default()
            );
            seen.set(&format!("change:{n:04}"), line.as_bytes())
                .map_err(|e| e.to_string())?;
            return Ok(line);
        }
        match data.as_str() {
            "fail" => Err("fixture asked to fail".into()),
            "trap" => panic!("fixture asked to trap"),
            _ => {
                let seen = kv::Store::open("seen").map_err(|e| e.to_string())?;
                let n = seen
                    .increment(&format!("msg:{data}"), 1)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{} {data} #{n}", event.type_))
            }
        }
    }

    impl Guest for Worker {
        fn handle(event: CloudEvent) -> Result<Option<Vec<u8>>, String> {
            handle_one(&event).map(|out| Some(out.into_bytes()))
        }

        fn handle_batch(events: Vec<CloudEvent>) -> Result<BatchResult, String> {
            if let Ok(seen) = kv::Store::open("seen") {
                let _ = seen.increment(&format!("batch:{}", events.len()), 1);
            }
            let failed_ids = events
                .iter()
                .filter(|e| handle_one(e).is_err())
                .map(|e| e.id.clone())
                .collect();
            Ok(BatchResult { failed_ids })
        }
    }

    export!(Worker);
}

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(full: &str) -> Self {
        let q = full.split_once('?').map(|(_, q)| q).unwrap_or_default();
        Self(
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn req(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default()
    }

    fn num(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain".into(),
        body: body.into(),
    }
}

fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        content_type: "text/plain".into(),
        body: body.into(),
    }
}

fn fail(err: Error) -> Reply {
    let code = match &err {
        Error::NotGranted(_) => 403,
        Error::NoSuchStore(_) | Error::NotFound(_) => 404,
        Error::Conflict(_) => 409,
        Error::Invalid(_) => 400,
        Error::TooLarge(_) => 413,
        Error::Storage(_) => 500,
    };
    status(code, err.to_string())
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

fn respond(out: ResponseOutparam, reply: Reply) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), reply.content_type.into_bytes()),
        (
            "content-length".to_string(),
            reply.body.len().to_string().into_bytes(),
        ),
    ])
    .unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(reply.status).unwrap();
    let body_handle = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = body_handle.write().unwrap();
    for chunk in reply.body.chunks(4096) {
        stream.write_all(chunk).unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    OutgoingBody::finish(body_handle, None).unwrap();
}

impl wasi::exports::http::incoming_handler::Guest for Fixture {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let path = full.split('?').next().unwrap_or_default();
        // The same component serves as several functions; some are mounted under `/other`.
        let path = path.strip_prefix("/other").unwrap_or(path).to_string();
        let p = Params::parse(&full);
        let body = read_body(request);
        let result = match path.as_str() {
            p_ if p_.starts_with("/kv/") => kv_op(&path[4..], &p, body),
            p_ if p_.starts_with("/docs/") => docs_op(&path[6..], &p, body),
            p_ if p_.starts_with("/blobs/") => blobs_op(&path[7..], &p, body),
            p_ if p_.starts_with("/queues/") => queues_op(&path[8..], &p, body),
            p_ if p_.starts_with("/events/") => events_op(&path[8..], &p, body),
            _ => Ok(status(404, "unknown fixture path")),
        };
        respond(out, result.unwrap_or_else(fail));
    }
}

/// `/events/publish?topic=T&attr=K:V` (the body is the message) and
/// `/events/put?bus=APP&type=T&source=S` (the body is JSON data).
fn events_op(op: &str, p: &Params, body: Vec<u8>) -> Result<Reply, Error> {
    Ok(match op {
        "publish" => {
            let attrs: Vec<(&str, &str)> =
                p.0.iter()
                    .filter(|(k, _)| k == "attr")
                    .filter_map(|(_, v)| v.split_once(':'))
                    .collect();
            let message = String::from_utf8_lossy(&body);
            ok(events::Topic::new(p.req("topic")).publish(&message, &attrs)?)
        }
        "put" => {
            let data: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| Error::Invalid(e.to_string()))?;
            let event = events::Event::new(p.req("source"), p.req("type")).json(&data);
            ok(events::Bus::new(p.req("bus")).put(event)?.join(","))
        }
        _ => status(404, "unknown events op"),
    })
}

fn kv_op(op: &str, p: &Params, body: Vec<u8>) -> Result<Reply, Error> {
    let store = kv::Store::open(p.req("store"))?;
    let key = p.req("key");
    Ok(match op {
        "get" => match store.get(key)? {
            Some(v) => ok(v),
            None => status(404, "absent"),
        },
        "entry" => match store.get_entry(key)? {
            Some(e) => ok(format!(
                "version={} expires={} value={}",
                e.version,
                e.expires_at.is_some(),
                String::from_utf8_lossy(&e.value)
            )),
            None => status(404, "absent"),
        },
        "set" => {
            if let Some(ms) = p.num("ttl_ms") {
                let v = store.set_with_ttl(key, &body, Duration::from_millis(ms))?;
                ok(format!("version={v}"))
            } else if let Some(version) = p.num("if_version") {
                let v = store.set_if_version(key, &body, version)?;
                ok(format!("version={v}"))
            } else if p.get("wasi").is_some() {
                store
                    .wasi_bucket()
                    .set(key, &body)
                    .map_err(|e| Error::Storage(format!("{e:?}")))?;
                ok("ok")
            } else {
                store.set(key, &body)?;
                ok("ok")
            }
        }
        "del" => {
            store.delete(key)?;
            ok("ok")
        }
        "exists" => ok(store.exists(key)?.to_string()),
        "wasi-incr" => ok(store
            .increment_unsigned(key, p.num("by").unwrap_or(1))?
            .to_string()),
        "incr" => {
            let by: i64 = p.get("by").and_then(|v| v.parse().ok()).unwrap_or(1);
            ok(store.increment(key, by)?.to_string())
        }
        "list" => ok(store.keys(p.req("prefix"))?.join("\n")),
        "page" => {
            let limit = p.num("limit").unwrap_or(10) as u32;
            let page = store.list(p.req("prefix"), p.get("cursor"), limit)?;
            ok(format!(
                "{}\ncursor={}",
                page.keys.join(","),
                page.cursor.unwrap_or_default()
            ))
        }
        "batch" => {
            // Body: `k=v` lines; sets them in one write, then reads them back.
            let text = String::from_utf8_lossy(&body).into_owned();
            let entries: Vec<(String, Vec<u8>)> = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            store.set_many(&entries)?;
            let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
            let got = store.get_many(&keys)?;
            let found = got.iter().filter(|e| e.is_some()).count();
            ok(format!("found={found}"))
        }
        "bench" => {
            // `n` host calls inside this one request, timed in the guest: the
            // in-process rate, without HTTP. `op=get` reads `key` (which must
            // exist) through `wasi:keyvalue` `get`, `op=sdk-get` through the SDK's
            // `get` (the Nimbus call with the version), `op=set` writes keys
            // `key0..key{n-1}` with the body as value (each a durable write).
            let n = p.num("n").unwrap_or(100_000);
            let prefix = p.get("key").unwrap_or("bench");
            let bucket = store.wasi_bucket();
            let mut found = 0u64;
            let start = Instant::now();
            match p.req("op") {
                "get" => {
                    for _ in 0..n {
                        let v = bucket
                            .get(prefix)
                            .map_err(|e| Error::Storage(format!("{e:?}")))?;
                        found += u64::from(v.is_some());
                    }
                }
                "sdk-get" => {
                    for _ in 0..n {
                        found += u64::from(store.get(prefix)?.is_some());
                    }
                }
                "set" => {
                    for i in 0..n {
                        store.set(&format!("{prefix}{i}"), &body)?;
                        found += 1;
                    }
                }
                _ => return Ok(status(400, "op is get, sdk-get or set")),
            }
            let secs = start.elapsed().as_secs_f64();
            ok(format!(
                "ops_per_sec={:.0} n={n} found={found} secs={secs:.6}",
                n as f64 / secs
            ))
        }
        "batch-del" => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let keys: Vec<String> = text.lines().map(str::to_string).collect();
            store.delete_many(&keys)?;
            ok("ok")
        }
        _ => status(404, "unknown kv op"),
    })
}

fn docs_op(op: &str, p: &Params, body: Vec<u8>) -> Result<Reply, Error> {
    let coll = docs::Collection::new(p.req("coll"));
    let id = p.req("id");
    let json = || -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&body).map_err(|e| Error::Invalid(e.to_string()))
    };
    Ok(match op {
        "put" => {
            let doc = match p.num("if_rev") {
                Some(rev) => coll.put_if_rev(id, &json()?, rev)?,
                None => coll.put(id, &json()?)?,
            };
            ok(format!("rev={}", doc.rev))
        }
        "get" => match coll.get(id)? {
            Some(doc) => Reply {
                status: 200,
                content_type: "application/json".into(),
                body: serde_json::json!({"id": doc.id, "rev": doc.rev, "body": doc.body})
                    .to_string()
                    .into_bytes(),
            },
            None => status(404, "absent"),
        },
        "patch" => ok(format!("rev={}", coll.patch(id, &json()?)?.rev)),
        "del" => ok(coll.delete(id)?.to_string()),
        "query" => {
            let spec = json()?;
            let mut q = coll.query();
            if let Some(f) = spec.get("filter") {
                q = q.filter(f.clone());
            }
            for o in spec["order_by"].as_array().into_iter().flatten() {
                q = q.order_by(o.as_str().unwrap_or_default());
            }
            if let Some(l) = spec["limit"].as_u64() {
                q = q.limit(l as u32);
            }
            if let Some(c) = spec["cursor"].as_str() {
                q = q.cursor(c);
            }
            let page = q.run()?;
            let ids: Vec<String> = page.documents.into_iter().map(|d| d.id).collect();
            ok(format!(
                "{}\ncursor={}",
                ids.join(","),
                page.cursor.unwrap_or_default()
            ))
        }
        _ => status(404, "unknown docs op"),
    })
}

fn blobs_op(op: &str, p: &Params, body: Vec<u8>) -> Result<Reply, Error> {
    let bucket = blobs::Bucket::new(p.req("bucket"));
    let key = p.req("key");
    Ok(match op {
        "put" => {
            let meta = bucket.put_with_metadata(
                key,
                &body,
                p.get("type"),
                &[("origin".to_string(), "guest".to_string())],
            )?;
            ok(format!("etag={} size={}", meta.etag, meta.size))
        }
        "get" => match bucket.get(key)? {
            Some((meta, bytes)) => Reply {
                status: 200,
                content_type: meta
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                body: bytes,
            },
            None => status(404, "absent"),
        },
        "range" => match bucket.get_range(
            key,
            p.num("offset").unwrap_or(0),
            p.num("length").unwrap_or(1),
        )? {
            Some(bytes) => ok(bytes),
            None => status(404, "absent"),
        },
        "head" => match bucket.head(key)? {
            Some(meta) => ok(format!("size={} etag={}", meta.size, meta.etag)),
            None => status(404, "absent"),
        },
        "del" => ok(bucket.delete(key)?.to_string()),
        "copy" => {
            let to = blobs::Bucket::new(p.get("to").unwrap_or(p.req("bucket")));
            let meta = bucket.copy_to(key, &to, p.req("to_key"))?;
            ok(format!("etag={}", meta.etag))
        }
        "list" => {
            let page = bucket.list(p.req("prefix"), p.get("delimiter"), None, 1000)?;
            let keys: Vec<String> = page.objects.into_iter().map(|o| o.key).collect();
            ok(format!(
                "{}\nprefixes={}",
                keys.join(","),
                page.common_prefixes.join(",")
            ))
        }
        _ => status(404, "unknown blobs op"),
    })
}

fn queues_op(op: &str, p: &Params, body: Vec<u8>) -> Result<Reply, Error> {
    let queue = queues::Queue::new(p.req("queue"));
    Ok(match op {
        "send" => {
            let options = queues::Send {
                delay: p.num("delay_ms").map(Duration::from_millis),
                attributes: vec![("from".to_string(), "guest".to_string())],
                group_id: p.get("group").map(str::to_string),
                dedup_id: p.get("dedup").map(str::to_string),
            };
            ok(queue.send_with(&body, options)?)
        }
        "recv" => {
            let max = p.num("max").unwrap_or(1) as u32;
            let wait = Duration::from_millis(p.num("wait_ms").unwrap_or(0));
            let messages = queue.receive(max, wait)?;
            let lines: Vec<String> = messages
                .iter()
                .map(|m| {
                    format!(
                        "{} {} {}",
                        m.receipt,
                        m.receive_count,
                        String::from_utf8_lossy(&m.body)
                    )
                })
                .collect();
            ok(lines.join("\n"))
        }
        "del" => ok(queue.delete(p.req("receipt"))?.to_string()),
        "hide" => {
            let ms = p.num("ms").unwrap_or(0);
            queue.change_visibility(p.req("receipt"), Duration::from_millis(ms))?;
            ok("ok")
        }
        "bench" => {
            // Host calls in a loop inside this one request, timed in the guest
            // (bench/queue-bench.sh): `op=send` sends `n` messages one call each
            // (the body, or `size` bytes of `x`), each durable when it returns;
            // `op=recv` receives batches of `batch` (1 to 10, no wait) and deletes
            // each message (one call per receipt) until `n` are deleted or the
            // queue comes back empty. `found` counts messages sent or deleted.
            let n = p.num("n").unwrap_or(1000);
            let batch = p.num("batch").unwrap_or(10) as u32;
            let payload = if body.is_empty() {
                vec![b'x'; p.num("size").unwrap_or(128) as usize]
            } else {
                body
            };
            let mut found = 0u64;
            let mut calls = 0u64;
            let start = Instant::now();
            match p.req("op") {
                "send" => {
                    for _ in 0..n {
                        queue.send(&payload)?;
                        found += 1;
                        calls += 1;
                    }
                }
                "recv" => {
                    while found < n {
                        let messages = queue.receive(batch, Duration::ZERO)?;
                        calls += 1;
                        if messages.is_empty() {
                            break;
                        }
                        for m in &messages {
                            found += u64::from(queue.delete(&m.receipt)?);
                            calls += 1;
                        }
                    }
                }
                _ => return Ok(status(400, "op is send or recv")),
            }
            let secs = start.elapsed().as_secs_f64();
            ok(format!(
                "msgs_per_sec={:.0} n={n} found={found} calls={calls} secs={secs:.6}",
                found as f64 / secs
            ))
        }
        _ => status(404, "unknown queues op"),
    })
}
