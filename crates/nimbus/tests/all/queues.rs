//! Queues end to end: sends and receives through a guest, the API and the CLI;
//! visibility timeouts and redelivery, dead-letter queues and redrive, long
//! polling, FIFO order and deduplication, limits, grants, and `kill -9` in the
//! middle of a stream of sends and deletes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{AppDir, TestNode, http, text};

const APP: &str = r#"
[app]
name = "shop"

[functions.api]
source = "{data}"
uses = ["queue:orders", "queue:orders-dlq", "queue:jobs"]

[[routes]]
path = "/{*path}"
function = "api"

[queues.orders]
visibility_timeout = "1s"
dead_letter = { queue = "orders-dlq", max_receives = 2 }

[queues.orders-dlq]

[queues.jobs]
fifo = true

[queues.small]
max_message_size = 100
"#;

fn deployed() -> (TestNode, AppDir) {
    let node = TestNode::serve();
    let app = AppDir::new(APP);
    node.deploy(app.path());
    (node, app)
}

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn guest(node: &TestNode, path: &str, body: &str) -> (u16, String) {
    let r = http()
        .post(node.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn receive(node: &TestNode, queue: &str, query: &str) -> Vec<Value> {
    let r = node
        .api(
            Method::GET,
            &format!("/v1/apps/shop/queues/{queue}/messages?{query}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone()
}

async fn stats(node: &TestNode, queue: &str) -> Value {
    let r = node
        .api(Method::GET, &format!("/v1/apps/shop/queues/{queue}"))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn send_receive_delete_through_guest_api_and_cli() {
    let (node, _app) = deployed();
    // The guest sends; the CLI receives without deleting.
    let (status, id) = guest(&node, "/queues/send?queue=orders", "order 1").await;
    assert_eq!(status, 200, "{id}");
    let out = cli_ok(&node, &["queue", "recv", "shop/orders", "--json"]);
    let got: Value = serde_json::from_str(&out).unwrap();
    let m = &got["messages"][0];
    assert_eq!(m["message_id"], id.as_str());
    assert_eq!(m["body"], "order 1");
    assert_eq!(m["receive_count"], 1);
    assert_eq!(m["attributes"]["from"], "guest");
    assert_eq!(stats(&node, "orders").await["in_flight"], 1);
    // Deleting with the receipt removes it for good.
    let receipt = m["receipt"].as_str().unwrap();
    let out = cli_ok(&node, &["queue", "del", "shop/orders", receipt]);
    assert_eq!(out.trim(), "deleted");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receive(&node, "orders", "max=10").await.is_empty());

    // The CLI sends (with attributes); the guest receives and deletes.
    let id = cli_ok(
        &node,
        &["queue", "send", "shop/orders", "from cli", "--attr", "k=v"],
    );
    assert!(!id.trim().is_empty());
    let (_, line) = guest(&node, "/queues/recv?queue=orders&max=10", "").await;
    let (receipt, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "1 from cli");
    assert_eq!(
        guest(
            &node,
            &format!("/queues/del?queue=orders&receipt={receipt}"),
            ""
        )
        .await
        .1,
        "true"
    );
    // A second delete of the same receipt deletes nothing.
    assert_eq!(
        guest(
            &node,
            &format!("/queues/del?queue=orders&receipt={receipt}"),
            ""
        )
        .await
        .1,
        "false"
    );

    // Batch send over the API, with per-entry results.
    let r = node
        .api(Method::POST, "/v1/apps/shop/queues/orders/messages/batch")
        .json(&json!({"entries": [{"body": "a"}, {"body": "b", "attributes": {"x": "1"}}, {"body": "c"}]}))
        .send()
        .await
        .unwrap();
    let results: Value = r.json().await.unwrap();
    assert_eq!(results["results"].as_array().unwrap().len(), 3);
    let got = receive(&node, "orders", "max=10").await;
    let bodies: BTreeSet<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, BTreeSet::from(["a", "b", "c"]));
    let receipts: Vec<&str> = got.iter().map(|m| m["receipt"].as_str().unwrap()).collect();
    let r = node
        .api(Method::POST, "/v1/apps/shop/queues/orders/messages/delete")
        .json(&json!({"receipts": receipts}))
        .send()
        .await
        .unwrap();
    let results: Value = r.json().await.unwrap();
    assert!(
        results["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["deleted"] == true),
        "{results}"
    );
    let s = stats(&node, "orders").await;
    assert_eq!(
        (s["visible"].as_u64(), s["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );

    // Grants: the guest may not use `small`; nothing is sent.
    let (status, body) = guest(&node, "/queues/send?queue=small", "x").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(stats(&node, "small").await["visible"], 0);
    // Limits: an oversized message is refused with the limit in the message.
    let out = node.cli(&["queue", "send", "shop/small", &"x".repeat(101)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("100"), "{}", text(&out));
    let r = node
        .api(Method::GET, "/v1/apps/shop/queues/orders/messages?max=11")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = node
        .api(Method::GET, "/v1/apps/shop/queues/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Status shows depth and age.
    cli_ok(&node, &["queue", "send", "shop/orders", "waiting"]);
    let table = cli_ok(&node, &["status"]);
    assert!(table.contains("shop/orders      1"), "{table}");
    cli_ok(&node, &["queue", "purge", "shop/orders"]);
    assert_eq!(stats(&node, "orders").await["visible"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_timeout_redelivery_dead_letter_and_redrive() {
    let (node, _app) = deployed();
    cli_ok(&node, &["queue", "send", "shop/orders", "fragile"]);
    let first = receive(&node, "orders", "max=1").await;
    assert_eq!(first[0]["receive_count"], 1);
    // Invisible while in flight...
    assert!(receive(&node, "orders", "max=1").await.is_empty());
    // ...and back after the visibility timeout, counted again, with a new receipt.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = receive(&node, "orders", "max=1").await;
    assert_eq!(second[0]["receive_count"], 2);
    assert_ne!(second[0]["receipt"], first[0]["receipt"]);
    // The old receipt no longer deletes it.
    let stale = first[0]["receipt"].as_str().unwrap();
    let r = node
        .api(
            Method::DELETE,
            &format!("/v1/apps/shop/queues/orders/messages/{stale}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], false);
    // After max_receives (2), the next receive moves it to the dead-letter queue.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receive(&node, "orders", "max=1").await.is_empty());
    let dead = receive(&node, "orders-dlq", "max=10&visibility=0s").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["body"], "fragile");
    // Redrive moves it back, with its receive count reset.
    let out = cli_ok(&node, &["queue", "redrive", "shop/orders-dlq"]);
    assert!(out.contains("moved 1"), "{out}");
    let back = receive(&node, "orders", "max=1").await;
    assert_eq!(back[0]["body"], "fragile");
    assert_eq!(back[0]["receive_count"], 1);
    // change-visibility 0 makes it visible at once.
    let receipt = back[0]["receipt"].as_str().unwrap();
    assert_eq!(
        guest(
            &node,
            &format!("/queues/hide?queue=orders&receipt={receipt}&ms=0"),
            ""
        )
        .await,
        (200, "ok".into())
    );
    assert_eq!(receive(&node, "orders", "max=1").await.len(), 1);
    // Redriving a queue that is nobody's dead-letter queue is refused.
    assert!(
        !node
            .cli(&["queue", "redrive", "shop/orders"])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_polling_returns_as_soon_as_a_message_arrives() {
    let (node, _app) = deployed();
    let started = Instant::now();
    let sender = {
        let node_url = node.url("/queues/send?queue=orders");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            http().post(node_url).body("late").send().await.unwrap();
        })
    };
    let got = receive(&node, "orders", "max=1&wait=10s").await;
    let waited = started.elapsed();
    sender.await.unwrap();
    assert_eq!(got[0]["body"], "late");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "long poll did not return early: {waited:?}"
    );
    // With nothing to receive, it waits the whole time.
    let started = Instant::now();
    assert!(
        receive(&node, "orders-dlq", "max=1&wait=1s")
            .await
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A delayed message becomes receivable after its delay.
    cli_ok(
        &node,
        &["queue", "send", "shop/orders-dlq", "later", "--delay", "1s"],
    );
    assert_eq!(stats(&node, "orders-dlq").await["delayed"], 1);
    assert!(receive(&node, "orders-dlq", "max=1").await.is_empty());
    let got = receive(&node, "orders-dlq", "max=1&wait=5s").await;
    assert_eq!(got[0]["body"], "later");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_queues_keep_group_order_and_drop_duplicates() {
    let (node, _app) = deployed();
    for (group, body) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
    ] {
        let (status, _) = guest(
            &node,
            &format!("/queues/send?queue=jobs&group={group}&dedup={body}"),
            body,
        )
        .await;
        assert_eq!(status, 200);
    }
    // A repeated deduplication id is accepted but not enqueued again.
    let out = cli_ok(
        &node,
        &[
            "queue",
            "send",
            "shop/jobs",
            "a1",
            "--group",
            "a",
            "--dedup-id",
            "a1",
        ],
    );
    assert!(out.contains("duplicate"), "{out}");
    // A FIFO send needs a group.
    assert!(
        !node
            .cli(&["queue", "send", "shop/jobs", "x"])
            .status
            .success()
    );

    // One receive at a time: group order holds, and a group with a message in
    // flight gives no other message.
    let first = receive(&node, "jobs", "max=1").await;
    assert_eq!(first[0]["body"], "a1");
    let next = receive(&node, "jobs", "max=10").await;
    let bodies: Vec<&str> = next.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["b1", "b2"], "group a is in flight");
    assert!(receive(&node, "jobs", "max=10").await.is_empty());
    // Deleting a1 releases group a, in order.
    let receipt = first[0]["receipt"].as_str().unwrap();
    node.api(
        Method::DELETE,
        &format!("/v1/apps/shop/queues/jobs/messages/{receipt}"),
    )
    .send()
    .await
    .unwrap();
    let rest = receive(&node, "jobs", "max=10").await;
    let bodies: Vec<&str> = rest.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["a2", "a3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_message_and_revives_no_deleted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), &["serve"]);
    let app = AppDir::new(APP);
    node.deploy(app.path());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let deleted = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let attempted = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (stop, sent) = (stop.clone(), sent.clone());
        let url = node.url("/queues/send?queue=orders-dlq");
        workers.push(tokio::spawn(async move {
            let client = http();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = format!("m-{w}-{i}");
                if let Ok(r) = client.post(&url).body(body.clone()).send().await
                    && r.status() == 200
                {
                    sent.lock().unwrap().insert(body);
                }
            }
        }));
    }
    {
        // A consumer deletes what it receives, recording each acknowledged delete.
        let (stop, deleted, attempted) = (stop.clone(), deleted.clone(), attempted.clone());
        let token = std::fs::read_to_string(node.data_dir.join("admin-token")).unwrap();
        let admin = node.admin.clone();
        workers.push(tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                let Ok(r) = client
                    .get(format!(
                        "{admin}/v1/apps/shop/queues/orders-dlq/messages?max=10&visibility=2s"
                    ))
                    .bearer_auth(token.trim())
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(body) = r.json::<Value>().await else {
                    continue;
                };
                for m in body["messages"].as_array().into_iter().flatten() {
                    let receipt = m["receipt"].as_str().unwrap();
                    attempted
                        .lock()
                        .unwrap()
                        .insert(m["body"].as_str().unwrap().to_string());
                    if let Ok(r) = client
                        .delete(format!(
                            "{admin}/v1/apps/shop/queues/orders-dlq/messages/{receipt}"
                        ))
                        .bearer_auth(token.trim())
                        .send()
                        .await
                        && r.status() == 200
                        && r.json::<Value>().await.is_ok_and(|v| v["deleted"] == true)
                    {
                        deleted
                            .lock()
                            .unwrap()
                            .insert(m["body"].as_str().unwrap().to_string());
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    node.restart(&["serve"]);
    let sent = sent.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(sent.len() > 20, "too few sends: {}", sent.len());
    // Deliveries cut short by the kill become visible again after 2 s.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut seen = BTreeSet::new();
    loop {
        let got = receive(&node, "orders-dlq", "max=10&visibility=1h").await;
        if got.is_empty() {
            break;
        }
        for m in got {
            seen.insert(m["body"].as_str().unwrap().to_string());
        }
    }
    for body in &deleted {
        assert!(!seen.contains(body), "deleted message {body} came back");
    }
    // Every acknowledged send is still there, unless a delete of it was sent
    // (and may have committed just before the kill, unanswered).
    let lost: Vec<&String> = sent
        .iter()
        .filter(|b| !seen.contains(*b) && !attempted.contains(*b))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(!deleted.is_empty(), "the consumer deleted nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_only_app_is_valid_and_bad_batches_are_refused() {
    let node = TestNode::serve();
    let dir = AppDir::new("[app]\nname = \"shop\"\n\n[queues.inbox]\n");
    let plan = node.deploy(dir.path());
    assert!(plan.contains("+ store queues/inbox"), "{plan}");
    cli_ok(&node, &["queue", "send", "shop/inbox", "hi"]);
    let out = cli_ok(&node, &["queue", "recv", "shop/inbox", "--delete"]);
    assert!(out.contains("hi"), "{out}");
    // Malformed and oversized batches: a clear 400, nothing enqueued.
    let r = node
        .api(Method::POST, "/v1/apps/shop/queues/inbox/messages/batch")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let entries: Vec<Value> = (0..11).map(|i| json!({"body": format!("m{i}")})).collect();
    let r = node
        .api(Method::POST, "/v1/apps/shop/queues/inbox/messages/batch")
        .json(&json!({ "entries": entries }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at most 10"));
    assert_eq!(stats(&node, "inbox").await["visible"], 0);

    // Dropping the queue from the manifest deletes its messages: only with --yes.
    cli_ok(&node, &["queue", "send", "shop/inbox", "kept"]);
    dir.rewrite("[app]\nname = \"shop\"\n");
    let out = node.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("- store queues/inbox (deletes its data)"),
        "{}",
        text(&out)
    );
    assert_eq!(stats(&node, "inbox").await["visible"], 1);
    cli_ok(&node, &["deploy", dir.path().to_str().unwrap(), "--yes"]);
    let r = node
        .api(Method::GET, "/v1/apps/shop/queues/inbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_limits_partial_batches_visibility_and_status_figures() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        "[app]\nname = \"shop\"\n\n[queues.inbox]\nvisibility_timeout = \"30s\"\n\n[queues.tiny]\nmax_message_size = 10\n",
    );
    node.deploy(dir.path());
    let post = |path: &str, body: Value| {
        node.api(Method::POST, &format!("/v1/apps/shop/queues/{path}"))
            .json(&body)
            .send()
    };

    // The default limit is 256 KiB: exactly that is accepted, a byte more is a
    // 413 naming the limit, and nothing is enqueued for it.
    for (size, code) in [(256 << 10, 200), ((256 << 10) + 1, 413)] {
        let r = node
            .api(Method::POST, "/v1/apps/shop/queues/inbox/messages")
            .body("x".repeat(size))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{size} bytes");
        if code == 413 {
            assert!(r.text().await.unwrap().contains("262144"));
        }
    }
    assert_eq!(stats(&node, "inbox").await["visible"], 1);
    cli_ok(&node, &["queue", "purge", "shop/inbox"]);

    // A batch with one oversized entry: the others are sent, that one fails.
    let r = post(
        "tiny/messages/batch",
        json!({"entries": [{"body": "ok-1"}, {"body": "far too long"}, {"body": "ok-2"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let results: Value = r.json().await.unwrap();
    let results = results["results"].as_array().unwrap();
    assert!(results[0]["message_id"].is_string(), "{results:?}");
    assert_eq!(results[1]["error"]["code"], "too_large", "{results:?}");
    assert!(results[2]["message_id"].is_string(), "{results:?}");
    assert_eq!(stats(&node, "tiny").await["visible"], 2);

    // A batch delete with a stale receipt: the good one is deleted, the stale
    // one reported, per entry.
    let got = receive(&node, "tiny", "max=10").await;
    assert_eq!(got.len(), 2);
    let good = got[0]["receipt"].as_str().unwrap();
    let r = post(
        "tiny/messages/delete",
        json!({"receipts": [good, "999999-00000000000000000000000000000000"]}),
    )
    .await
    .unwrap();
    let results: Value = r.json().await.unwrap();
    assert_eq!(results["results"][0]["deleted"], true, "{results}");
    assert_ne!(results["results"][1]["deleted"], true, "{results}");

    // Change visibility over the API: 0s makes the in-flight message visible
    // again, with its receive count kept.
    let other = got[1]["receipt"].as_str().unwrap();
    let r = node
        .api(
            Method::PUT,
            &format!("/v1/apps/shop/queues/tiny/messages/{other}/visibility"),
        )
        .json(&json!({"timeout": "0s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = receive(&node, "tiny", "max=10").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["receive_count"], 2);

    // Long polls are capped at 20 s, and a visibility is a duration.
    for query in ["wait=21s", "visibility=soon"] {
        let r = node
            .api(
                Method::GET,
                &format!("/v1/apps/shop/queues/inbox/messages?{query}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
    }

    // The CLI's --visibility holds the message that long; status counts it in
    // flight, and the age of the oldest message grows.
    cli_ok(&node, &["queue", "send", "shop/inbox", "held"]);
    let out = cli_ok(
        &node,
        &[
            "queue",
            "recv",
            "shop/inbox",
            "--visibility",
            "1s",
            "--json",
        ],
    );
    assert!(out.contains("held"), "{out}");
    let status = node.status().await;
    let inbox = status["apps"][0]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "inbox")
        .cloned()
        .unwrap();
    assert_eq!(
        (inbox["visible"].as_u64(), inbox["in_flight"].as_u64()),
        (Some(0), Some(1)),
        "{inbox}"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let s = stats(&node, "inbox").await;
    assert_eq!(
        (s["visible"].as_u64(), s["in_flight"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    assert!(s["oldest_age_ms"].as_u64().unwrap() >= 1000, "{s}");
    let table = cli_ok(&node, &["status"]);
    assert!(table.contains("IN FLIGHT"), "{table}");
}
