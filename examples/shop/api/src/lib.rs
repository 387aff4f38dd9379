//! The shop's API, one HTTP function over the three stores it is granted:
//!
//! - `GET|PUT|DELETE /carts/{id}`: a JSON cart in the `carts` key-value store,
//!   expiring a day after its last change.
//! - `POST /orders` (JSON with `customer`, `total`): a new order in the `orders`
//!   document store, numbered from a key-value counter; `GET /orders/{id}`;
//!   `PATCH /orders/{id}` (a JSON merge patch, e.g. `{"status": "paid"}`);
//!   `GET /orders?status=paid[&customer=c1]`: matching orders, largest first.
//! - `PUT|GET /images/{name}`: product images in the `images` bucket.

use std::io::Write as _;
use std::time::Duration;

use nimbus_sdk::{Error, blobs, docs, kv};
use serde_json::{Value, json};
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Shop);

struct Shop;

const CART_TTL: Duration = Duration::from_secs(24 * 3600);

struct Response {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn json_response(status: u16, value: &Value) -> Response {
    Response {
        status,
        content_type: "application/json".into(),
        body: value.to_string().into_bytes(),
    }
}

fn problem(status: u16, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn from_error(err: Error) -> Response {
    let status = match &err {
        Error::NotFound(_) | Error::NoSuchStore(_) => 404,
        Error::Conflict(_) => 409,
        Error::Invalid(_) => 400,
        Error::TooLarge(_) => 413,
        Error::NotGranted(_) => 403,
        Error::Storage(_) => 500,
    };
    problem(status, &err.to_string())
}

impl wasi::exports::http::incoming_handler::Guest for Shop {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let response = route(request).unwrap_or_else(from_error);
        send(out, response);
    }
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let incoming = request.consume().expect("request body");
    let input = incoming.stream().expect("body stream");
    let mut body = Vec::new();
    while let Ok(chunk) = input.blocking_read(64 * 1024) {
        body.extend_from_slice(&chunk);
    }
    body
}

fn parse_json(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("the body is not JSON: {e}")))
}

fn route(request: IncomingRequest) -> Result<Response, Error> {
    let path = request.path_with_query().unwrap_or_default();
    let method = request.method();
    let id = header(&request, "x-nimbus-param-id");
    let name = header(&request, "x-nimbus-param-name");
    let content_type = header(&request, "content-type");
    let body = read_body(request);
    match (method, path.split('?').next().unwrap_or_default()) {
        (method, p) if p.starts_with("/carts/") => cart(method, &id.unwrap_or_default(), &body),
        (Method::Post, "/orders") => create_order(&body),
        (Method::Get, "/orders") => list_orders(&path),
        (Method::Get, p) if p.starts_with("/orders/") => {
            let id = id.unwrap_or_default();
            match docs::Collection::new("orders").get(&id)? {
                Some(doc) => Ok(json_response(
                    200,
                    &json!({"id": doc.id, "rev": doc.rev, "order": doc.body}),
                )),
                None => Ok(problem(404, &format!("no order {id}"))),
            }
        }
        (Method::Patch, p) if p.starts_with("/orders/") => {
            let doc = docs::Collection::new("orders")
                .patch(&id.unwrap_or_default(), &parse_json(&body)?)?;
            Ok(json_response(
                200,
                &json!({"id": doc.id, "rev": doc.rev, "order": doc.body}),
            ))
        }
        (method, p) if p.starts_with("/images/") => {
            image(method, &name.unwrap_or_default(), content_type, body)
        }
        _ => Ok(problem(405, "method not allowed")),
    }
}

fn cart(method: Method, id: &str, body: &[u8]) -> Result<Response, Error> {
    let carts = kv::Store::open("carts")?;
    match method {
        Method::Get => match carts.get(id)? {
            Some(bytes) => Ok(Response {
                status: 200,
                content_type: "application/json".into(),
                body: bytes,
            }),
            None => Ok(problem(404, &format!("no cart {id}"))),
        },
        Method::Put => {
            parse_json(body)?;
            let version = carts.set_with_ttl(id, body, CART_TTL)?;
            Ok(json_response(200, &json!({"id": id, "version": version})))
        }
        Method::Delete => {
            carts.delete(id)?;
            Ok(Response {
                status: 204,
                content_type: "text/plain".into(),
                body: Vec::new(),
            })
        }
        _ => Ok(problem(405, "use GET, PUT or DELETE")),
    }
}

fn create_order(body: &[u8]) -> Result<Response, Error> {
    let mut order = parse_json(body)?;
    if !order["customer"].is_string() || !order["total"].is_number() {
        return Ok(problem(
            400,
            "an order needs `customer` (text) and `total` (a number)",
        ));
    }
    order["status"] = json!("new");
    let number = kv::Store::open("carts")?.increment("order-counter", 1)?;
    let id = format!("o{number:06}");
    // `put_if_rev(.., 0)`: an order id is never reused, even if the counter were.
    let doc = docs::Collection::new("orders").put_if_rev(&id, &order, 0)?;
    Ok(json_response(
        201,
        &json!({"id": doc.id, "rev": doc.rev, "order": doc.body}),
    ))
}

fn list_orders(path: &str) -> Result<Response, Error> {
    let mut filter = serde_json::Map::new();
    for field in ["status", "customer"] {
        if let Some(v) = query(path, field) {
            filter.insert(field.into(), json!(v));
        }
    }
    let limit = query(path, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50);
    let orders = docs::Collection::new("orders");
    let mut q = orders.query().order_by("-total").limit(limit);
    if !filter.is_empty() {
        q = q.filter(Value::Object(filter));
    }
    if let Some(c) = query(path, "cursor") {
        q = q.cursor(c);
    }
    let page = q.run()?;
    let orders: Vec<Value> = page
        .documents
        .into_iter()
        .map(|d| json!({"id": d.id, "order": d.body}))
        .collect();
    Ok(json_response(
        200,
        &json!({"orders": orders, "cursor": page.cursor}),
    ))
}

fn image(
    method: Method,
    name: &str,
    content_type: Option<String>,
    body: Vec<u8>,
) -> Result<Response, Error> {
    let images = blobs::Bucket::new("images");
    match method {
        Method::Put => {
            let meta = images.put(name, &body, content_type.as_deref())?;
            Ok(json_response(
                200,
                &json!({"name": name, "size": meta.size, "etag": meta.etag}),
            ))
        }
        Method::Get => match images.get(name)? {
            Some((meta, bytes)) => Ok(Response {
                status: 200,
                content_type: meta
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                body: bytes,
            }),
            None => Ok(problem(404, &format!("no image {name}"))),
        },
        _ => Ok(problem(405, "use GET or PUT")),
    }
}

fn send(out: ResponseOutparam, response: Response) {
    let headers = Fields::from_list(&[
        (
            "content-type".to_string(),
            response.content_type.into_bytes(),
        ),
        (
            "content-length".to_string(),
            response.body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let outgoing = OutgoingResponse::new(headers);
    outgoing
        .set_status_code(response.status)
        .expect("valid status");
    let body = outgoing.body().expect("response body");
    ResponseOutparam::set(out, Ok(outgoing));
    let mut stream = body.write().expect("body stream");
    for chunk in response.body.chunks(4096) {
        stream.write_all(chunk).expect("write body");
    }
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish body");
}
