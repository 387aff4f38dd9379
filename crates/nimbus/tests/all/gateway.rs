//! Routing, statuses, request ids, body limits and streaming through the gateway.

use crate::support::{AppDir, TestNode, http};

const ROUTES: &str = r#"
[app]
name = "gw"

[functions.api]
source = "{http}"

[[routes]]
method = "GET"
path = "/items/{id}/params"
function = "api"

[[routes]]
method = "PUT"
path = "/items/{id}/params"
function = "api"

[[routes]]
path = "/files/{dir}/{*rest}"
function = "api"

[[routes]]
method = "POST"
path = "/echo"
function = "api"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn routes_params_and_statuses() {
    let node = TestNode::serve();
    let app = AppDir::new(ROUTES);
    node.deploy(app.path());
    let client = http();

    let r = client
        .get(node.url("/items/42/params"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(r.text().await.unwrap(), "id=42");

    let r = client
        .get(node.url("/files/docs/a/b/params"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "dir=docs&rest=a/b/params");

    let r = client
        .delete(node.url("/items/42/params"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, PUT");
    assert!(r.headers().contains_key("x-request-id"));

    let r = client.get(node.url("/nothing/here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413() {
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start_in(tmp.path(), &["serve", "--max-body-size", "1024"]);
    let app = AppDir::new(ROUTES);
    node.deploy(app.path());
    let client = http();

    let r = client
        .post(node.url("/echo"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 1000);

    // Declared too large: refused before the function runs.
    let r = client
        .post(node.url("/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Chunked, no length: cut off by the limit while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = client.post(node.url("/echo")).body(body).send().await;
    match r {
        Ok(r) => assert!(
            r.status() == 413
                || r.status() == 200 && r.bytes().await.map_or(true, |b| b.len() <= 1024)
        ),
        // The server may close the connection while the client still sends.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_streams_large_bodies() {
    let node = TestNode::serve();
    let app = AppDir::new(ROUTES);
    node.deploy(app.path());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64u8).map(|i| Ok(vec![i; 64 * 1024])).collect();
    let expected: Vec<u8> = (0..64u8).flat_map(|i| vec![i; 64 * 1024]).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = http()
        .post(node.url("/echo"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_selected_by_host() {
    let node = TestNode::serve();
    let one = AppDir::new(&crate::support::http_app(
        "one",
        "env = { VERSION = \"one\" }",
    ));
    let two = AppDir::new(&crate::support::http_app(
        "two",
        "env = { VERSION = \"two\" }",
    ));
    node.deploy(one.path());
    node.deploy(two.path());
    let client = http();
    for app in ["one", "two"] {
        let r = client
            .get(node.url("/x"))
            .header("host", format!("{app}.localhost"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), format!("ok {app}"));
    }
    // Two apps and no default: an unknown host is not guessed.
    let r = client
        .get(node.url("/x"))
        .header("host", "elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_requires_the_token() {
    let node = TestNode::serve();
    let r = http()
        .get(format!("{}/v1/status", node.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(format!("{}/v1/status", node.admin))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let token = std::fs::read_to_string(node.data_dir.join("admin-token")).unwrap();
    let r = http()
        .get(format!("{}/v1/status", node.admin))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_each_chunk_before_the_request_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::serve();
    let app = AppDir::new(ROUTES);
    node.deploy(app.path());
    let addr = node.gateway.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: gw.localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await
        .unwrap();
    // The first chunk comes back while the request body is still open: neither
    // side buffers the whole body.
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("first chunk echoed before the body ended")
            .unwrap();
        assert!(n > 0, "connection closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    while !String::from_utf8_lossy(&seen).contains("second") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early");
        seen.extend_from_slice(&buf[..n]);
    }
}
