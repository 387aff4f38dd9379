//! Change data capture end to end: store changes delivered to change triggers
//! (filtered by events, prefix and suffix; in order per key; retried then
//! skipped; enable/disable), changes routed by bus rules, and `kill -9`
//! between writes and their delivery.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{AppDir, TestNode, text};

const APP: &str = r#"
[app]
name = "shop"

[functions.worker]
source = "{data}"
uses = ["kv:seen"]

[kv.seen]
[kv.carts]
[buckets.images]
[docs.orders]
[queues.cart-log]

[[triggers]]
bucket = "images"
function = "worker"
events = ["created"]
suffix = ".png"

[[triggers]]
name = "carts-log"
kv = "carts"
function = "worker"
prefix = "c"
retries = 1

[[triggers]]
docs = "orders"
function = "worker"
events = ["deleted"]

[bus.rules.cart-changes]
pattern = { source = ["nimbus/shop/kv/carts"], type = ["nimbus.kv.set"] }
targets = [{ queue = "cart-log" }]
"#;

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The changes the worker logged, in delivery order: "TYPE SUBJECT".
fn logged(node: &TestNode) -> Vec<String> {
    let keys = cli_ok(node, &["kv", "ls", "shop/seen", "--prefix", "change:"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    keys.iter()
        .map(|k| cli_ok(node, &["kv", "get", "shop/seen", k]))
        .collect()
}

async fn wait_logged(node: &TestNode, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = logged(node);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {got:?} of {n} changes delivered:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_changes_reach_triggers_in_order_and_the_bus() {
    let node = TestNode::serve();
    let dir = AppDir::new(APP);
    let plan = node.deploy(dir.path());
    assert!(
        plan.contains("+ trigger images-worker (bucket images -> worker)"),
        "{plan}"
    );
    let file = dir.path().join("pic");
    std::fs::write(&file, b"png bytes").unwrap();
    let file = file.to_str().unwrap();

    // Filters: only created `.png` objects, only `c…` keys, only deleted documents.
    cli_ok(&node, &["blob", "put", "shop/images", "a.png", file]);
    cli_ok(&node, &["blob", "put", "shop/images", "b.jpg", file]);
    cli_ok(&node, &["blob", "rm", "shop/images", "a.png"]);
    cli_ok(&node, &["kv", "set", "shop/carts", "c1", "one"]);
    cli_ok(&node, &["kv", "set", "shop/carts", "x9", "ignored"]);
    cli_ok(&node, &["kv", "set", "shop/carts", "c1", "two"]);
    cli_ok(&node, &["kv", "del", "shop/carts", "c1"]);
    cli_ok(
        &node,
        &["docs", "put", "shop/orders", "o1", r#"{"total": 1}"#],
    );
    cli_ok(&node, &["docs", "del", "shop/orders", "o1"]);

    let got = wait_logged(&node, 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = logged(&node);
    assert_eq!(got_all.len(), got.len(), "more than expected: {got_all:?}");
    let set: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(
        set,
        BTreeSet::from([
            "nimbus.blob.created a.png",
            "nimbus.kv.set c1",
            "nimbus.kv.deleted c1",
            "nimbus.docs.deleted o1",
        ]),
        "{got:?}"
    );
    // In order per key: c1's set, set, delete.
    let c1: Vec<&str> = got
        .iter()
        .filter(|l| l.ends_with(" c1"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        c1,
        [
            "nimbus.kv.set c1",
            "nimbus.kv.set c1",
            "nimbus.kv.deleted c1"
        ]
    );

    // The bus routes kv sets of carts (both keys) to the queue.
    let mut subjects = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while subjects.len() < 3 && Instant::now() < deadline {
        let out = cli_ok(
            &node,
            &[
                "queue",
                "recv",
                "shop/cart-log",
                "--max",
                "10",
                "--wait",
                "1",
                "--delete",
                "--json",
            ],
        );
        let msgs: Value = serde_json::from_str(&out).unwrap();
        for m in msgs["messages"].as_array().unwrap() {
            let e: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
            assert_eq!(e["source"], "nimbus/shop/kv/carts");
            assert_eq!(e["type"], "nimbus.kv.set");
            subjects.push(e["subject"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(subjects, ["c1", "x9", "c1"]);

    // A change the function fails is retried, then skipped; later ones flow.
    cli_ok(&node, &["kv", "set", "shop/carts", "cfail", "x"]);
    cli_ok(&node, &["kv", "set", "shop/carts", "c2", "after"]);
    let got = wait_logged(&node, 6).await;
    assert_eq!(got.last().unwrap(), "nimbus.kv.set c2", "{got:?}");

    // Disabled: changes wait (the cursor stays); enabled: they arrive.
    cli_ok(&node, &["trigger", "disable", "shop/images-worker"]);
    let table = cli_ok(&node, &["trigger", "ls", "shop"]);
    assert!(table.contains("bucket images"), "{table}");
    cli_ok(&node, &["blob", "put", "shop/images", "late.png", file]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(logged(&node).len(), 6);
    cli_ok(&node, &["trigger", "enable", "shop/images-worker"]);
    let got = wait_logged(&node, 7).await;
    assert_eq!(got.last().unwrap(), "nimbus.blob.created late.png");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_written_before_a_kill_9_are_delivered_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), &["serve"]);
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    let keys: Vec<String> = (0..15).map(|i| format!("c{i:02}")).collect();
    for k in &keys {
        cli_ok(&node, &["kv", "set", "shop/carts", k, "v"]);
    }
    node.kill9();
    node.restart(&["serve"]);
    // At least once: every key's change is in the log (duplicates allowed).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: BTreeSet<String> = logged(&node)
            .into_iter()
            .filter_map(|l| l.strip_prefix("nimbus.kv.set ").map(String::from))
            .collect();
        if got == keys.iter().cloned().collect() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered {got:?}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
