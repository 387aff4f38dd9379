//! Usage metering end to end: after a scripted workload, `nimbus usage` shows the
//! invocations, requests, messages and GB-seconds made — equal to `/metrics`
//! exactly — as JSON, CSV and per resource; the meters survive a graceful stop
//! and `kill -9`; per-minute windows in `nimbus metrics`; and a daily quota
//! refuses new work with 429 `quota_exceeded`, across a restart too.

use std::time::Duration;

use serde_json::Value;

use crate::metrics::{APP, Scrape, hit};
use crate::support::{AppDir, TestNode, http, text};

/// `nimbus ARGS --json`, parsed.
fn json(node: &TestNode, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = node.cli(&all);
    assert!(out.status.success(), "{all:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The line of a usage report whose key is `key`.
fn line<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("no line {key} in {report:#}"))
}

#[tokio::test]
async fn usage_equals_the_workload_and_survives_restarts() {
    let mut node = TestNode::serve();
    let app = AppDir::new(APP);
    node.deploy(app.path());
    hit(&node, "/api/hello", 5).await;
    hit(&node, "/api/trap", 2).await;
    for body in ["a", "b", "c"] {
        let out = node.cli(&["queue", "send", "shop/orders", body]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let by_function = json(&node, &["usage", "shop", "--by", "function"]);
    let api = line(&by_function, "api");
    assert_eq!(api["invocations"], 7);
    assert_eq!(api["errors"], 2);
    assert_eq!(api["requests"], 7);
    // GB-seconds are memory_mb x billed ms (each rounded up to 1 ms), exactly as
    // the metrics count them.
    let m = Scrape::take(&node).await;
    let mb_ms = m.value(
        "nimbus_function_mb_milliseconds_total",
        &[("app", "shop"), ("function", "api")],
    );
    assert_eq!(api["mb_ms"].as_f64().unwrap(), mb_ms);
    assert!(mb_ms >= 7.0 * 256.0);
    let gb_seconds = api["gb_seconds"].as_f64().unwrap();
    assert!((gb_seconds - mb_ms / 1024.0 / 1000.0).abs() < 1e-12);
    assert!(api["cost"].as_f64().unwrap() > 0.0);

    let by_resource = json(&node, &["usage", "shop", "--by", "resource"]);
    assert_eq!(line(&by_resource, "queue:orders")["messages"], 3);
    let sent = m.value("nimbus_app_transfer_out_bytes_total", &[("app", "shop")]);
    assert_eq!(
        line(&by_resource, "app")["transfer_out_bytes"]
            .as_f64()
            .unwrap(),
        sent
    );
    assert_eq!(by_resource["total"]["invocations"], 7);

    // CSV for tools: a header, then one row per line.
    let out = node.cli(&["usage", "shop", "--by", "function", "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0][..4], ["app", "function", "requests", "invocations"]);
    let api_row = rows.iter().find(|r| r[1] == "api").unwrap();
    assert_eq!(api_row[3], "7");
    // The table names the columns and the total.
    let out = node.cli(&["usage"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("INVOCATIONS") && table.contains("total"),
        "{table}"
    );

    // Per-minute windows with percentiles.
    let metrics = json(&node, &["metrics", "shop/api", "--since", "10m"]);
    assert_eq!(metrics["total"]["invocations"], 7);
    assert_eq!(metrics["total"]["errors"], 2);
    assert!(metrics["total"]["p50_ms"].as_f64().unwrap() > 0.0);
    let windows = metrics["windows"].as_array().unwrap();
    let counted: u64 = windows
        .iter()
        .map(|w| w["invocations"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 7);

    // A graceful stop writes the last meters; so does the second-by-second flush
    // before a kill -9.
    node.signal("-TERM");
    assert!(node.wait_exit().success());
    node.restart(&["serve"]);
    let again = json(&node, &["usage", "shop", "--by", "function"]);
    assert_eq!(line(&again, "api")["invocations"], 7);
    hit(&node, "/api/hello", 3).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    node.kill9();
    node.restart(&["serve"]);
    let after_kill = json(&node, &["usage", "shop", "--by", "function"]);
    assert_eq!(line(&after_kill, "api")["invocations"], 10);
    let days = json(&node, &["usage", "shop", "--by", "day"]);
    assert_eq!(days["lines"].as_array().unwrap().len(), 1);
    assert_eq!(days["total"]["invocations"], 10);
}

#[tokio::test]
async fn a_daily_quota_refuses_new_work() {
    let mut node = TestNode::serve();
    let app = AppDir::new(&format!("{APP}\n[quotas]\ninvocations_per_day = 3\n"));
    node.deploy(app.path());
    assert_eq!(hit(&node, "/api/hello", 3).await[&200], 3);
    let refused = http()
        .get(node.url("/api/hello"))
        .header("host", "shop.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("3 invocations per day"),
        "{body}"
    );
    // Direct invocations are refused too.
    let out = node.cli(&["invoke", "shop/api"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("quota"), "{}", text(&out));

    // The day's count is durable: still over quota after a restart.
    node.signal("-TERM");
    assert!(node.wait_exit().success());
    node.restart(&["serve"]);
    let again = http()
        .get(node.url("/api/hello"))
        .header("host", "shop.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    let usage = json(&node, &["usage", "shop"]);
    assert_eq!(usage["total"]["invocations"], 3);

    // Raising the quota lets work through again.
    app.rewrite(&format!("{APP}\n[quotas]\ninvocations_per_day = 10\n"));
    node.deploy(app.path());
    assert_eq!(hit(&node, "/api/hello", 1).await[&200], 1);
}

#[tokio::test]
async fn a_stored_bytes_quota_refuses_writes_that_add_data() {
    let mut node = TestNode::serve();
    let app = AppDir::new(&format!("{APP}\n[quotas]\nstored_bytes = 10\n"));
    node.deploy(app.path());
    // Under the quota as last measured: the write goes through.
    let out = node.cli(&["kv", "set", "shop/carts", "c1", "twelve bytes"]);
    assert!(out.status.success(), "{}", text(&out));
    // Measured again at start (and every minute): now at the quota.
    node.signal("-TERM");
    assert!(node.wait_exit().success());
    node.restart(&["serve"]);
    let refused = node.cli(&["kv", "set", "shop/carts", "c2", "more"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("quota of 10 bytes"),
        "{}",
        text(&refused)
    );
    // Nothing accepted is lost, and deleting is allowed.
    let out = node.cli(&["kv", "get", "shop/carts", "c1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "twelve bytes");
    let out = node.cli(&["kv", "del", "shop/carts", "c1"]);
    assert!(out.status.success(), "{}", text(&out));
}
