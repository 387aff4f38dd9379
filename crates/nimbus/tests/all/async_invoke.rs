//! Async invocation end to end: accepted means durably queued, retries with
//! backoff then `on_failure`, `on_success` records, status by id, and an
//! accepted invocation surviving `kill -9`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{AppDir, TestNode, text};

const APP: &str = r#"
[app]
name = "jobs"

[functions.worker]
source = "{data}"
uses = ["kv:seen"]
retries = 2
on_success = { queue = "done" }
on_failure = { queue = "failed" }

[functions.short-lived]
source = "{data}"
uses = ["kv:seen"]
retries = 10
max_event_age = "1s"
on_failure = { queue = "failed" }

[kv.seen]

[queues.done]
[queues.failed]
"#;

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn invocation(node: &TestNode, id: &str) -> Value {
    serde_json::from_str(&cli_ok(node, &["invocation", id, "--wait", "--json"])).unwrap()
}

fn receive(node: &TestNode, queue: &str) -> Value {
    let out = cli_ok(
        node,
        &[
            "queue",
            "recv",
            &format!("jobs/{queue}"),
            "--max",
            "10",
            "--wait",
            "5",
            "--json",
        ],
    );
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn success_failure_retries_and_destinations() {
    let node = TestNode::serve();
    let dir = AppDir::new(APP);
    node.deploy(dir.path());

    // Accepted: an id, right away; the function runs after.
    let id = cli_ok(
        &node,
        &[
            "invoke",
            "jobs/worker",
            "--async",
            "-d",
            "hello",
            "-H",
            "content-type: text/plain",
        ],
    );
    let id = id.trim();
    assert!(id.starts_with("inv-"), "{id}");
    let inv = invocation(&node, id);
    assert_eq!(inv["status"], "succeeded", "{inv}");
    assert_eq!(inv["attempts"], 1);
    assert_eq!(inv["output"], "nimbus.invoke hello #1");
    let done = receive(&node, "done");
    let record: Value =
        serde_json::from_str(done["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["requestId"], id);
    assert_eq!(record["responsePayload"], "nimbus.invoke hello #1");

    // A failing event: 1 attempt + 2 retries with backoff (1 s, then 2 s), then on_failure.
    let started = Instant::now();
    let id = cli_ok(&node, &["invoke", "jobs/worker", "--async", "-d", "fail"]);
    let inv = invocation(&node, id.trim());
    let took = started.elapsed();
    assert_eq!(inv["status"], "failed", "{inv}");
    assert_eq!(inv["attempts"], 3);
    assert!(
        inv["error"]
            .as_str()
            .unwrap()
            .contains("fixture asked to fail"),
        "{inv}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "retries came too fast: {took:?}"
    );
    let failed = receive(&node, "failed");
    let record: Value =
        serde_json::from_str(failed["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);

    // max_event_age ends retries early.
    let id = cli_ok(
        &node,
        &["invoke", "jobs/short-lived", "--async", "-d", "fail"],
    );
    let inv = invocation(&node, id.trim());
    assert_eq!(inv["status"], "failed");
    assert!(inv["attempts"].as_u64().unwrap() < 11, "{inv}");
    let failed = receive(&node, "failed");
    let record: Value =
        serde_json::from_str(failed["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");

    // Unknown functions are refused at once, and unknown ids are not found.
    assert!(
        !node
            .cli(&["invoke", "jobs/nope", "--async", "-d", "x"])
            .status
            .success()
    );
    assert!(!node.cli(&["invocation", "inv-0000"]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_invocation_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), &["serve"]);
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    // A failing attempt schedules a retry 1 s later; kill the node before it.
    let id = cli_ok(&node, &["invoke", "jobs/worker", "--async", "-d", "fail"]);
    let ok = cli_ok(
        &node,
        &["invoke", "jobs/worker", "--async", "-d", "after-restart"],
    );
    node.kill9();
    node.restart(&["serve"]);
    let inv = invocation(&node, id.trim());
    assert_eq!(inv["status"], "failed");
    assert_eq!(inv["attempts"], 3, "{inv}");
    let inv = invocation(&node, ok.trim());
    assert_eq!(inv["status"], "succeeded", "{inv}");
    let seen = cli_ok(&node, &["kv", "get", "jobs/seen", "msg:after-restart"]);
    assert!(seen.trim().parse::<u64>().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_functions_take_events_as_cloudevents_over_http() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        "[app]\nname = \"web\"\n\n[functions.api]\nsource = \"{http}\"\nenv = { VERSION = \"7\" }\n\n\
         [[routes]]\npath = \"/{*path}\"\nfunction = \"api\"\n",
    );
    node.deploy(dir.path());
    // The HTTP fixture answers `POST /` with "ok VERSION": a 2xx is a success.
    let id = cli_ok(&node, &["invoke", "web/api", "--async", "-d", "{}"]);
    let inv = invocation(&node, id.trim());
    assert_eq!(inv["status"], "succeeded", "{inv}");
    assert_eq!(inv["output"], "ok 7");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_accepts_with_202_and_a_function_can_be_the_failure_destination() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        r#"
[app]
name = "jobs"

[functions.boom]
source = "{data}"
retries = 0
on_failure = { function = "recorder" }

[functions.recorder]
source = "{data}"
uses = ["kv:seen"]

[kv.seen]
"#,
    );
    node.deploy(dir.path());
    let r = node
        .api(
            reqwest::Method::POST,
            "/v1/apps/jobs/functions/boom/invocations",
        )
        .header("content-type", "text/plain")
        .body("fail")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["invocation_id"].as_str().unwrap();
    let inv = invocation(&node, id);
    assert_eq!(inv["status"], "failed", "{inv}");
    assert_eq!(inv["attempts"], 1, "retries = 0: {inv}");

    // The recorder is invoked with the failure record as its event; it counts
    // the event's data under `msg:DATA` in its store.
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys = cli_ok(&node, &["kv", "ls", "jobs/seen", "--prefix", "msg:"]);
        if !keys.trim().is_empty() || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let record: Value = serde_json::from_str(
        keys.lines()
            .next()
            .unwrap_or_else(|| panic!("the recorder never ran:\n{}", node.log()))
            .strip_prefix("msg:")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["requestId"], id);
    assert_eq!(
        record["requestContext"]["function"], "jobs/boom",
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_may_be_a_topic_or_the_bus() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        r#"
[app]
name = "jobs"

[functions.worker]
source = "{data}"
uses = ["kv:seen"]
retries = 0
on_success = { bus = "jobs" }
on_failure = { topic = "failures" }

[kv.seen]
[queues.succeeded]
[queues.failed]

[topics.failures]
subscriptions = [{ queue = "failed", filter = { condition = ["RetriesExhausted"] } }]

[bus.rules.successes]
pattern = { type = ["nimbus.invocation.success"], source = ["nimbus/jobs/functions/worker"] }
targets = [{ queue = "succeeded", input_path = "$.data" }]
"#,
    );
    node.deploy(dir.path());
    let ok = cli_ok(&node, &["invoke", "jobs/worker", "--async", "-d", "fine"]);
    let bad = cli_ok(&node, &["invoke", "jobs/worker", "--async", "-d", "fail"]);
    let done = receive(&node, "succeeded");
    let record: Value =
        serde_json::from_str(done["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], ok.trim());
    assert_eq!(record["requestContext"]["condition"], "Success");
    let failed = receive(&node, "failed");
    let envelope: Value =
        serde_json::from_str(failed["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["topic"], "failures");
    assert_eq!(envelope["attributes"]["condition"], "RetriesExhausted");
    let record: Value = serde_json::from_str(envelope["message"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], bad.trim());
}
