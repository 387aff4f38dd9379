//! An HTTP function whose paths exercise the runtime: success, traps, endless
//! loops, memory bombs, slow requests, environment, logging, outbound HTTP,
//! route parameters and streaming bodies.

use std::io::{Read as _, Write as _};

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(Fixture);

struct Fixture;

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain".to_vec()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let body_handle = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = body_handle.write().unwrap();
    stream.write_all(body).unwrap();
    // With the whole `content-length` sent, the host may end the body before
    // this flush or the finish (the client has its answer): that is no error.
    let _ = stream.flush();
    drop(stream);
    let _ = OutgoingBody::finish(body_handle, None);
}

static mut COUNTER: u64 = 0;

impl wasi::exports::http::incoming_handler::Guest for Fixture {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let path = full.split('?').next().unwrap_or_default().to_string();
        let route = path.rsplit('/').next().unwrap_or_default().to_string();
        match route.as_str() {
            "trap" => panic!("fixture asked to trap"),
            "loop" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "alloc" => {
                let mb: usize = query(&full, "mb").and_then(|v| v.parse().ok()).unwrap_or(1);
                let mut v: Vec<u8> = Vec::new();
                for _ in 0..mb {
                    let chunk = vec![1u8; 1 << 20];
                    v.extend_from_slice(&chunk);
                }
                respond(
                    out,
                    200,
                    format!("allocated {} MiB", v.len() >> 20).as_bytes(),
                );
            }
            "sleep" => {
                let ms: u64 = query(&full, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, b"slept");
            }
            "env" => {
                let name = query(&full, "name").unwrap_or_default();
                let value = std::env::var(&name).unwrap_or_else(|_| "<unset>".into());
                respond(out, 200, value.as_bytes());
            }
            "log" => {
                // `?n=N&text=T`: N lines `T 0` … `T N-1` on stdout.
                let n: usize = query(&full, "n").and_then(|v| v.parse().ok()).unwrap_or(0);
                if n == 0 {
                    println!("hello from the guest's stdout");
                    eprintln!("and from its stderr");
                } else {
                    let text = query(&full, "text").unwrap_or_else(|| "line".into());
                    for i in 0..n {
                        println!("{text} {i}");
                    }
                }
                respond(out, 200, b"logged");
            }
            "count" => {
                // Per-instance state: shows whether an instance was reused.
                let n = unsafe {
                    COUNTER += 1;
                    COUNTER
                };
                respond(out, 200, n.to_string().as_bytes());
            }
            "params" => {
                let mut pairs: Vec<String> = request
                    .headers()
                    .entries()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("x-nimbus-param-"))
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            &k["x-nimbus-param-".len()..],
                            String::from_utf8_lossy(&v)
                        )
                    })
                    .collect();
                pairs.sort();
                respond(out, 200, pairs.join("&").as_bytes());
            }
            "fetch" => {
                let target = query(&full, "authority").unwrap_or_default();
                let body = match fetch(&target) {
                    Ok(text) => text,
                    Err(err) => format!("error: {err}"),
                };
                respond(out, 200, body.as_bytes());
            }
            "echo" => echo(request, out),
            _ => respond(
                out,
                200,
                format!("ok {}", std::env::var("VERSION").unwrap_or_default()).as_bytes(),
            ),
        }
    }
}

/// Streams the request body back as it arrives, chunk by chunk.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let resp = OutgoingResponse::new(Fields::new());
    let body_handle = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let mut output = body_handle.write().unwrap();
    // Read as data arrives (not to the end first), so the echo streams.
    while let Ok(chunk) = input.blocking_read(16 * 1024) {
        if output.write_all(&chunk).is_err() {
            return;
        }
        let _ = output.flush();
    }
    drop(output);
    drop(input);
    let _ = OutgoingBody::finish(body_handle, None);
}

fn fetch(authority: &str) -> Result<String, String> {
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get).unwrap();
    req.set_scheme(Some(&Scheme::Http)).unwrap();
    req.set_authority(Some(authority)).unwrap();
    req.set_path_with_query(Some("/")).unwrap();
    let future = wasi::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|_| "no body")?;
    let mut stream = body.stream().map_err(|_| "no stream")?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).ok();
    Ok(format!("{status} {}", String::from_utf8_lossy(&text)))
}
