//! Per-function limits and isolation: traps, timeouts, memory, concurrency,
//! warm instances, scale to zero, env, logs and outbound HTTP.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::{AppDir, TestNode, http, http_app};

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_fails_one_request_only() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("traps", ""));
    node.deploy(app.path());
    let client = http();
    let r = client.get(node.url("/trap")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(
        body.contains("function_error") && !body.contains("panicked"),
        "no internals: {body}"
    );
    node.wait_log(&id);
    // The guest's panic message is its own log line; it may follow the error's.
    node.wait_log("fixture asked to trap");
    let r = client.get(node.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_times_out_with_504() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("loops", "timeout = \"300ms\""));
    node.deploy(app.path());
    let started = Instant::now();
    let r = http().get(node.url("/loop")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let r = http().get(node.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_stops_at_the_limit() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("mem", "memory_mb = 32"));
    node.deploy(app.path());
    let client = http();
    let r = client.get(node.url("/alloc?mb=8")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "allocated 8 MiB");
    let r = client.get(node.url("/alloc?mb=64")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    node.wait_log("exceeded its memory limit of 32 MiB");
    let r = client.get(node.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_concurrency_limit_gets_429() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("busy", "concurrency = 1"));
    node.deploy(app.path());
    let slow = tokio::spawn(http().get(node.url("/sleep?ms=1500")).send());
    // Wait until the slow request holds the only slot.
    node.wait_busy("busy", "api", 1).await;
    let r = http().get(node.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        http().get(node.url("/ok")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_warm_and_scale_to_zero() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("warm", "idle_timeout = \"1s\""));
    node.deploy(app.path());
    let client = http();
    for expected in 1..=3 {
        let r = client.get(node.url("/count")).send().await.unwrap();
        assert_eq!(
            r.text().await.unwrap(),
            expected.to_string(),
            "same warm instance"
        );
    }
    let status = node.function_status("warm", "api").await;
    assert_eq!(status["cold_starts"], 1);
    assert_eq!(status["live_instances"], 1);
    assert_eq!(status["invocations"], 3);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        node.function_status("warm", "api").await["live_instances"],
        0
    );
    let r = client.get(node.url("/count")).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "1",
        "a fresh instance after scale-to-zero"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_false_gives_a_fresh_instance_per_request() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("fresh", "reuse = false"));
    node.deploy(app.path());
    for _ in 0..3 {
        let r = http().get(node.url("/count")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn min_instances_are_started_at_deploy() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app(
        "prewarm",
        "min_instances = 2\nidle_timeout = \"1s\"",
    ));
    node.deploy(app.path());
    let status = node.function_status("prewarm", "api").await;
    assert_eq!(status["live_instances"], 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        node.function_status("prewarm", "api").await["live_instances"],
        2,
        "kept warm"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn env_and_logs_reach_the_right_places() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("envlog", "env = { GREETING = \"howdy\" }"));
    node.deploy(app.path());
    let r = http()
        .get(node.url("/env?name=GREETING"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "howdy");
    let r = http().get(node.url("/env?name=HOME")).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "<unset>",
        "the host's environment stays out"
    );
    let r = http().get(node.url("/log")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let log = node.wait_log("hello from the guest's stdout");
    let line = log
        .lines()
        .find(|l| l.contains("hello from the guest's stdout"))
        .unwrap();
    assert!(
        line.contains("app=\"envlog\"") && line.contains("function=\"api\""),
        "{line}"
    );
    assert!(line.contains(&id), "tagged with the request id: {line}");
    node.wait_log("and from its stderr");
}

/// A one-shot HTTP server on loopback answering `upstream`.
fn upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_only_to_allowed_hosts() {
    let port = upstream();
    let node = TestNode::serve();
    let app = AppDir::new(&http_app(
        "out",
        &format!("allowed_outbound_hosts = [\"127.0.0.1:{port}\"]"),
    ));
    node.deploy(app.path());
    let r = http()
        .get(node.url(&format!("/fetch?authority=127.0.0.1:{port}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "200 upstream");
    let r = http()
        .get(node.url(&format!("/fetch?authority=localhost:{port}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "error: ErrorCode::HttpRequestDenied"
    );
    node.wait_log(&format!("outbound request to `localhost:{port}` refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut node = TestNode::serve();
    let app = AppDir::new(&http_app("drain", ""));
    node.deploy(app.path());
    let slow = tokio::spawn(http().get(node.url("/sleep?ms=1000")).send());
    node.wait_busy("drain", "api", 1).await;
    node.signal("-TERM");
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slept");
    assert!(node.wait_exit().success());
}

const THREE_FUNCTIONS: &str = r#"
[app]
name = "slots"

[functions.a]
source = "{http}"

[functions.b]
source = "{http}"

[functions.c]
source = "{http}"

[[routes]]
path = "/a/{*rest}"
function = "a"

[[routes]]
path = "/b/{*rest}"
function = "b"

[[routes]]
path = "/c/{*rest}"
function = "c"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_evicts_idle_instances_then_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start_in(tmp.path(), &["serve", "--max-instances", "2"]);
    let app = AppDir::new(THREE_FUNCTIONS);
    node.deploy(app.path());
    let client = http();
    for f in ["a", "b", "c"] {
        let r = client
            .get(node.url(&format!("/{f}/ok")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "function {f}");
    }
    // Two slots: `c` got `a`'s, the least recently used idle instance.
    assert_eq!(
        node.function_status("slots", "a").await["live_instances"],
        0
    );
    assert_eq!(
        node.function_status("slots", "b").await["live_instances"],
        1
    );
    assert_eq!(
        node.function_status("slots", "c").await["live_instances"],
        1
    );

    // Both slots busy: nothing to evict, so the node says to retry.
    let slow_b = tokio::spawn(client.get(node.url("/b/sleep?ms=1500")).send());
    let slow_c = tokio::spawn(client.get(node.url("/c/sleep?ms=1500")).send());
    node.wait_busy("slots", "b", 1).await;
    node.wait_busy("slots", "c", 1).await;
    let r = client.get(node.url("/a/ok")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "at_capacity");
    assert_eq!(slow_b.await.unwrap().unwrap().status(), 200);
    assert_eq!(slow_c.await.unwrap().unwrap().status(), 200);
    let r = client.get(node.url("/a/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a slot is free again");
}
