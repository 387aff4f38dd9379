//! Queue triggers end to end: batches delivered to a real guest's `handle-batch`,
//! partial failures returned to the queue and dead-lettered by the usual rule,
//! batching windows, scaling with depth, and enable/disable without a deploy.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{AppDir, TestNode, text};

fn app(trigger_settings: &str) -> String {
    format!(
        r#"
[app]
name = "shop"

[functions.worker]
source = "{{data}}"
uses = ["kv:seen"]

[kv.seen]

[queues.orders]
visibility_timeout = "1s"
dead_letter = {{ queue = "orders-dlq", max_receives = 2 }}

[queues.orders-dlq]

[[triggers]]
queue = "orders"
function = "worker"
{trigger_settings}
"#
    )
}

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The count the worker recorded under `key` in its `seen` store (0 if none).
fn seen(node: &TestNode, key: &str) -> u64 {
    let out = node.cli(&["kv", "get", "shop/seen", key]);
    if !out.status.success() {
        return 0;
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stats(node: &TestNode, queue: &str) -> Value {
    serde_json::from_str(&cli_ok(
        node,
        &["queue", "stats", &format!("shop/{queue}"), "--json"],
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_reach_the_function_and_failures_go_to_the_dead_letter_queue() {
    let node = TestNode::serve();
    let dir = AppDir::new(&app("batch_size = 10\nmax_batching_window = \"300ms\""));
    let plan = node.deploy(dir.path());
    assert!(
        plan.contains("+ trigger orders-worker (orders -> worker)"),
        "{plan}"
    );
    for i in 0..5 {
        cli_ok(&node, &["queue", "send", "shop/orders", &format!("m{i}")]);
    }
    cli_ok(&node, &["queue", "send", "shop/orders", "fail"]);
    // Every good message is handled once and deleted.
    wait_for("five deliveries", Duration::from_secs(10), || {
        (0..5).all(|i| seen(&node, &format!("msg:m{i}")) == 1)
    })
    .await;
    // The batching window gathered them into one batch.
    assert!(seen(&node, "batch:6") >= 1, "no batch of 6 was delivered");
    // The failed one returns after its visibility timeout, fails again, and moves
    // to the dead-letter queue after max_receives.
    wait_for("the dead letter", Duration::from_secs(15), || {
        stats(&node, "orders-dlq")["visible"] == 1
    })
    .await;
    let s = stats(&node, "orders");
    assert_eq!(
        (s["visible"].as_u64(), s["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    let dead: Value = serde_json::from_str(&cli_ok(
        &node,
        &["queue", "recv", "shop/orders-dlq", "--json"],
    ))
    .unwrap();
    assert_eq!(dead["messages"][0]["body"], "fail");
    for i in 0..5 {
        assert_eq!(seen(&node, &format!("msg:m{i}")), 1, "m{i} delivered twice");
    }
    let triggers: Value =
        serde_json::from_str(&cli_ok(&node, &["trigger", "ls", "shop", "--json"])).unwrap();
    assert_eq!(triggers[0]["name"], "orders-worker");
    assert!(triggers[0]["failed"].as_u64().unwrap() >= 2, "{triggers}");
    let table = cli_ok(&node, &["status"]);
    assert!(table.contains("shop/orders-worker"), "{table}");

    // Idle now, with a poller waiting on the queue its last message left for
    // the dead-letter queue: the node sleeps (a busy poll would take a core).
    let before = node.cpu_time();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = node.cpu_time() - before;
    assert!(
        used < Duration::from_millis(600),
        "an idle node used {used:?} of CPU in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_trigger_leaves_messages_in_the_queue_until_enabled() {
    let node = TestNode::serve();
    let dir = AppDir::new(&app("batch_size = 10"));
    node.deploy(dir.path());
    cli_ok(&node, &["trigger", "disable", "shop/orders-worker"]);
    cli_ok(&node, &["queue", "send", "shop/orders", "held"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(seen(&node, "msg:held"), 0);
    assert_eq!(stats(&node, "orders")["visible"], 1);
    // Disabled stays disabled across a restart of the node.
    let mut node = node;
    node.restart(&["serve"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen(&node, "msg:held"), 0);
    let triggers: Value =
        serde_json::from_str(&cli_ok(&node, &["trigger", "ls", "shop", "--json"])).unwrap();
    assert_eq!(triggers[0]["enabled"], false);
    cli_ok(&node, &["trigger", "enable", "shop/orders-worker"]);
    wait_for("the held message", Duration::from_secs(10), || {
        seen(&node, "msg:held") == 1
    })
    .await;
    assert!(
        !node
            .cli(&["trigger", "disable", "shop/nope"])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pollers_scale_with_depth_and_drain_a_backlog() {
    let node = TestNode::serve();
    let dir = AppDir::new(&app("batch_size = 2\nmax_concurrency = 4"));
    node.deploy(dir.path());
    cli_ok(&node, &["trigger", "disable", "shop/orders-worker"]);
    for i in 0..40 {
        cli_ok(&node, &["queue", "send", "shop/orders", &format!("b{i}")]);
    }
    cli_ok(&node, &["trigger", "enable", "shop/orders-worker"]);
    let mut most_pollers = 0;
    wait_for("the backlog to drain", Duration::from_secs(20), || {
        let triggers: Value =
            serde_json::from_str(&cli_ok(&node, &["trigger", "ls", "shop", "--json"])).unwrap();
        most_pollers = most_pollers.max(triggers[0]["pollers"].as_u64().unwrap());
        stats(&node, "orders")["visible"] == 0 && stats(&node, "orders")["in_flight"] == 0
    })
    .await;
    assert!((0..40).all(|i| seen(&node, &format!("msg:b{i}")) >= 1));
    assert!(most_pollers > 1, "pollers never scaled up");
    // Idle again: back to one poller.
    wait_for("the pollers to scale down", Duration::from_secs(30), || {
        let triggers: Value =
            serde_json::from_str(&cli_ok(&node, &["trigger", "ls", "shop", "--json"])).unwrap();
        triggers[0]["pollers"] == 1
    })
    .await;
}
