//! The hello HTTP function: `GET /hello`, `GET /hello/{name}` and a streaming
//! `POST /echo`. It is a plain `wasi:http/proxy` component: Nimbus passes route
//! parameters as `x-nimbus-param-NAME` headers.

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path.starts_with("/echo") {
            return echo(request, out);
        }
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
        let name = request
            .headers()
            .get("x-nimbus-param-name")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "world".into());
        text(out, 200, &format!("{greeting}, {name}!\n"));
    }
}

fn text(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[
        (
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        ),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body_handle = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = body_handle.write().expect("body stream");
    stream.write_all(body.as_bytes()).expect("write body");
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(body_handle, None).expect("finish body");
}

/// Streams the request body back chunk by chunk as it arrives.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let content_type = request.headers().get("content-type");
    let headers = Fields::new();
    if let Some(ct) = content_type.first() {
        headers
            .set("content-type", &[ct.clone()])
            .expect("valid header");
    }
    let response = OutgoingResponse::new(headers);
    let body_handle = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    let incoming = request.consume().expect("request body");
    let input = incoming.stream().expect("request stream");
    let mut output = body_handle.write().expect("response stream");
    while let Ok(chunk) = input.blocking_read(64 * 1024) {
        if output.write_all(&chunk).is_err() || std::io::Write::flush(&mut output).is_err() {
            return; // the client went away
        }
    }
    drop(output);
    drop(input);
    let _ = OutgoingBody::finish(body_handle, None);
}
