//! The event bus end to end: rules matched by pattern, deliveries to a queue and
//! to a function (with an input path), retries then the dead-letter queue, put
//! over the CLI and the API (structured, batched, binary mode), per-target
//! counts, replay from the archive, and `kill -9` right after puts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{AppDir, TestNode, text};

const APP: &str = r#"
[app]
name = "shop"

[functions.vip]
source = "{data}"
uses = ["kv:seen"]

[kv.seen]

[queues.big]
[queues.dead]
[queues.tiny]
max_message_size = 10

[bus.rules.big-orders]
pattern = { type = ["order.placed"], data = { total = [{ numeric = [">", 100] }] } }
targets = [{ function = "vip", input_path = "$.data.name" }, { queue = "big" }]

[bus.rules.to-tiny]
pattern = { type = ["order.placed"], source = [{ prefix = "shop/" }] }
targets = [{ queue = "tiny", retries = 1, dead_letter = "dead" }]
"#;

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every message of `queue` received within `wait` (and deleted), as JSON bodies.
async fn drain(node: &TestNode, queue: &str, want: usize, wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let out = cli_ok(
            node,
            &[
                "queue",
                "recv",
                &format!("shop/{queue}"),
                "--max",
                "10",
                "--wait",
                "1",
                "--delete",
                "--json",
            ],
        );
        let batch: Value = serde_json::from_str(&out).unwrap();
        for m in batch["messages"].as_array().unwrap() {
            got.push(serde_json::from_str(m["body"].as_str().unwrap()).unwrap());
        }
    }
    got
}

fn put(node: &TestNode, ty: &str, source: &str, data: &str) -> String {
    cli_ok(
        node,
        &[
            "events", "put", "shop", "--type", ty, "--source", source, "--data", data,
        ],
    )
}

fn target<'a>(rules: &'a Value, rule: &str, i: usize) -> &'a Value {
    let rule = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in {rules}"));
    &rule["targets"][i]
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_route_events_to_queues_and_functions_with_retries_and_replay() {
    let node = TestNode::serve();
    let dir = AppDir::new(APP);
    let plan = node.deploy(dir.path());
    assert!(plan.contains("+ rule big-orders"), "{plan}");

    // Matching is per rule: the big order matches both, the small one only
    // `to-tiny`, another type none.
    let out = put(
        &node,
        "order.placed",
        "shop/checkout",
        r#"{"total": 150, "name": "ada"}"#,
    );
    assert!(out.contains("matched big-orders, to-tiny"), "{out}");
    let out = put(
        &node,
        "order.placed",
        "shop/checkout",
        r#"{"total": 50, "name": "bob"}"#,
    );
    assert!(
        out.contains("matched to-tiny") && !out.contains("big-orders"),
        "{out}"
    );
    let out = put(&node, "cart.updated", "shop/carts", r#"{"total": 500}"#);
    assert!(out.contains("matched no rule"), "{out}");

    // The queue target gets the whole CloudEvent; the function its input path.
    let big = drain(&node, "big", 1, Duration::from_secs(10)).await;
    assert_eq!(big.len(), 1, "{big:?}");
    assert_eq!(big[0]["type"], "order.placed");
    assert_eq!(big[0]["data"]["total"], 150);
    assert!(
        big[0]["time"].is_string(),
        "a put event gets a time: {}",
        big[0]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.cli(&["kv", "get", "shop/seen", "msg:ada"]).stdout != b"1" {
        assert!(
            Instant::now() < deadline,
            "vip never saw ada:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `tiny` refuses every event (too large): one retry, then the dead-letter
    // queue, with the rule, the error and the event.
    let dead = drain(&node, "dead", 2, Duration::from_secs(15)).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert_eq!(d["rule"], "to-tiny");
        assert_eq!(d["attempts"], 2);
        assert!(d["error"].as_str().unwrap().contains("10"), "{d}");
        assert_eq!(d["event"]["type"], "order.placed");
    }

    let rules: Value =
        serde_json::from_str(&cli_ok(&node, &["events", "rules", "shop", "--json"])).unwrap();
    let vip = target(&rules, "big-orders", 0);
    assert_eq!(
        (vip["matched"].as_u64(), vip["delivered"].as_u64()),
        (Some(1), Some(1)),
        "{vip}"
    );
    let tiny = target(&rules, "to-tiny", 0);
    assert_eq!(tiny["matched"], 2, "{tiny}");
    assert_eq!(tiny["retried"], 2, "{tiny}");
    assert_eq!(tiny["failed"], 2, "{tiny}");
    assert_eq!(tiny["dead_lettered"], 2, "{tiny}");
    assert_eq!(tiny["pending"], 0, "{tiny}");
    let table = cli_ok(&node, &["events", "rules", "shop"]);
    assert!(
        table.contains("DEAD-LETTERED") && table.contains("queue tiny"),
        "{table}"
    );
    let status = cli_ok(&node, &["status"]);
    assert!(status.contains("shop/to-tiny -> queue tiny"), "{status}");
    let status = node.status().await;
    assert_eq!(
        status["apps"][0]["rules"][1]["targets"][0]["dead_lettered"], 2,
        "{status}"
    );

    // The API: binary mode, and a batch with one bad entry that fails alone.
    let r = node
        .api(Method::POST, "/v1/apps/shop/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-type", "order.placed")
        .header("ce-source", "elsewhere")
        .header("content-type", "application/json")
        .body(r#"{"total": 900, "name": "cy"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["results"][0]["matched_rules"],
        json!(["big-orders"]),
        "{body}"
    );
    let r = node
        .api(Method::POST, "/v1/apps/shop/events")
        .json(&json!([
            {"specversion": "1.0", "id": "a", "type": "order.placed", "source": "api", "data": {"total": 101, "name": "di"}},
            {"specversion": "1.0", "id": "b", "source": "api"},
        ]))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failed"], 1, "{body}");
    assert_eq!(body["results"][0]["id"], "a");
    assert!(
        body["results"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`type`"),
        "{body}"
    );
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "type": "t", "source": "s"}))
        .collect();
    let r = node
        .api(Method::POST, "/v1/apps/shop/events")
        .json(&eleven)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = drain(&node, "big", 2, Duration::from_secs(10)).await;
    let ids: BTreeSet<&str> = big.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["a", "bin-1"]));

    // Replay: the archived events go through the rules again, marked.
    let out = cli_ok(&node, &["events", "replay", "shop", "--from", "1h"]);
    assert!(out.contains("replayed 5 event(s)"), "{out}");
    let replayed = drain(&node, "big", 3, Duration::from_secs(10)).await;
    assert_eq!(replayed.len(), 3, "{replayed:?}");
    assert!(replayed.iter().all(|e| {
        e["replayof"]
            .as_str()
            .is_some_and(|r| r.starts_with("rpl-"))
    }));

    // Unknown apps are refused.
    let out = node.cli(&["events", "put", "nope", "--type", "t", "--source", "s"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no app `nope`"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_survive_kill_9_right_after_the_puts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), &["serve"]);
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        let id = format!("k{i}");
        let r = node
            .api(Method::POST, "/v1/apps/shop/events")
            .json(&json!({"specversion": "1.0", "id": id, "type": "order.placed", "source": "api", "data": {"total": 1000 + i, "name": format!("n{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.insert(id);
    }
    node.kill9();
    node.restart(&["serve"]);
    // Every acknowledged event reaches the queue at least once (some maybe twice:
    // a delivery made just before the kill but not yet recorded is made again).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = BTreeSet::new();
    while seen != ids && Instant::now() < deadline {
        for e in drain(&node, "big", 1, Duration::from_secs(1)).await {
            seen.insert(e["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_pattern_fails_the_deploy_with_its_place() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        "[app]\nname = \"shop\"\n\n[queues.q]\n\n[bus.rules.r]\n\
         pattern = { data = { total = [{ numeric = [\">>\", 1] }] } }\ntargets = [{ queue = \"q\" }]\n",
    );
    let out = node.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid pattern at `data.total[0].numeric[0]`"),
        "{err}"
    );
    assert!(err.contains("nimbus.toml"), "{err}");
}

/// Functions publish to topics and put events through `nimbus:integration/events`,
/// only where `uses` grants it.
#[tokio::test(flavor = "multi_thread")]
async fn functions_publish_and_put_events_through_the_guest_import() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        r#"
[app]
name = "shop"

[functions.api]
source = "{data}"
uses = ["topic:orders", "bus:shop"]

[functions.other]
source = "{data}"

[[routes]]
path = "/{*path}"
function = "api"

[[routes]]
path = "/other/{*path}"
function = "other"

[queues.audit]
[queues.big]

[topics.orders]
subscriptions = [{ queue = "audit", filter = { kind = ["vip"] } }]

[bus.rules.big-orders]
pattern = { type = ["order.placed"], data = { total = [{ numeric = [">", 100] }] } }
targets = [{ queue = "big" }]
"#,
    );
    node.deploy(dir.path());
    let post = |path: &str, body: &str| {
        let (url, body) = (node.url(path), body.to_string());
        async move {
            let r = crate::support::http()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, id) = post("/events/publish?topic=orders&attr=kind:vip", "order 1").await;
    assert_eq!(status, 200, "{id}");
    let (status, rules) = post(
        "/events/put?bus=shop&type=order.placed&source=shop/api",
        r#"{"total": 150}"#,
    )
    .await;
    assert_eq!((status, rules.as_str()), (200, "big-orders"));
    let audit = drain(&node, "audit", 1, Duration::from_secs(10)).await;
    assert_eq!(audit[0]["id"], id.as_str());
    assert_eq!(audit[0]["message"], "order 1");
    let big = drain(&node, "big", 1, Duration::from_secs(10)).await;
    assert_eq!(big[0]["source"], "shop/api");
    assert_eq!(big[0]["data"]["total"], 150);

    // Without a grant: "not granted", and nothing is published or put.
    let (status, body) = post("/other/events/publish?topic=orders&attr=kind:vip", "x").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not granted"), "{body}");
    let (status, _) = post(
        "/other/events/put?bus=shop&type=order.placed&source=x",
        r#"{"total": 500}"#,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post("/events/put?bus=elsewhere&type=t&source=s", "{}").await;
    assert_eq!(status, 403, "only the granted bus");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        drain(&node, "audit", 1, Duration::from_secs(1))
            .await
            .is_empty()
    );
    assert!(
        drain(&node, "big", 1, Duration::from_secs(1))
            .await
            .is_empty()
    );
}

/// A rule that feeds its own bus, and a loop through a topic, a function and its
/// destination, each stop after `hops::MAX` passes: the last pass goes to the
/// dead-letter queue with why, and nothing keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn routing_loops_stop_after_sixteen_hops() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        r#"
[app]
name = "shop"

[functions.relay]
source = "{data}"
uses = ["kv:seen"]
retries = 0
on_success = { bus = "shop" }
on_failure = { bus = "shop" }

[kv.seen]
[queues.dead]
[queues.self-seen]
[queues.relay-seen]

[topics.echo]
subscriptions = [{ function = "relay" }]

[bus.rules.self-loop]
pattern = { type = ["ping"] }
targets = [{ bus = "shop", dead_letter = "dead" }, { queue = "self-seen" }]

[bus.rules.relay-loop]
pattern = { type = ["pong", "nimbus.invocation.success", "nimbus.invocation.failure"] }
targets = [{ topic = "echo", dead_letter = "dead" }, { queue = "relay-seen" }]
"#,
    );
    node.deploy(dir.path());
    put(&node, "ping", "test", "{}");
    put(&node, "pong", "test", "{}");
    let hops = |events: &[Value]| -> Vec<u64> {
        let mut hops: Vec<u64> = events
            .iter()
            .map(|e| e["nimbushops"].as_str().map_or(0, |h| h.parse().unwrap()))
            .collect();
        hops.sort();
        hops
    };
    let wait = Duration::from_secs(20);
    // The self loop: the put and its 16 passes through the bus.
    let seen = drain(&node, "self-seen", 17, wait).await;
    assert_eq!(hops(&seen), (0..=16).collect::<Vec<_>>());
    // Through the topic (odd hops) and the destination (even ones).
    let seen = drain(&node, "relay-seen", 9, wait).await;
    assert_eq!(hops(&seen), (0..=16).step_by(2).collect::<Vec<_>>());
    let dead = drain(&node, "dead", 2, wait).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for record in &dead {
        assert!(
            record["error"].as_str().unwrap().contains("routing loop"),
            "{record}"
        );
        assert_eq!(record["event"]["nimbushops"], "16", "{record}");
    }
    // Nothing more comes round.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for queue in ["self-seen", "relay-seen", "dead"] {
        assert!(
            drain(&node, queue, 1, Duration::from_millis(500))
                .await
                .is_empty(),
            "{queue} got more"
        );
    }
    let rules: Value =
        serde_json::from_str(&cli_ok(&node, &["events", "rules", "shop", "--json"])).unwrap();
    assert_eq!(
        target(&rules, "self-loop", 0)["dead_lettered"],
        1,
        "{rules}"
    );
    assert_eq!(target(&rules, "self-loop", 0)["delivered"], 16, "{rules}");
    assert_eq!(
        target(&rules, "relay-loop", 0)["dead_lettered"],
        1,
        "{rules}"
    );
}
