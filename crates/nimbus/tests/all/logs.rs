//! Function logs end to end: guest output and platform records (cold start,
//! timeout, throttle) in `nimbus logs` with each filter, the API's cursor and
//! `-f`; a flooding function capped while another's lines still arrive; records
//! kept across a restart and trimmed after the retention.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::support::{AppDir, TestNode, http, nimbus_bin, now_ms, text};

const APP: &str = r#"
[app]
name = "shop"

[functions.api]
source = "{http}"

[functions.other]
source = "{http}"

[functions.slow]
source = "{http}"
timeout = "200ms"
concurrency = 1

[[routes]]
path = "/api/{*path}"
function = "api"

[[routes]]
path = "/other/{*path}"
function = "other"

[[routes]]
path = "/slow/{*path}"
function = "slow"
"#;

/// `nimbus logs ARGS --json`: the records printed, one JSON object per line.
fn logs(node: &TestNode, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = node.cli(&all);
    assert!(out.status.success(), "{all:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn messages(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `nimbus logs ARGS` shows a record whose message contains `needle`.
fn wait_for(node: &TestNode, args: &[&str], needle: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = logs(node, args);
        if messages(&records).iter().any(|m| m.contains(needle)) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in {args:?}: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path` and read the whole answer (a guest whose answer is dropped unread
/// traps on its next write, which would show in its logs); status and request id.
async fn get(node: &TestNode, path: &str) -> (u16, String) {
    let response = http().get(node.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    response.text().await.unwrap();
    (status, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn output_and_platform_records_with_each_filter_the_cursor_and_follow() {
    let node = TestNode::serve();
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    let (status, id) = get(&node, "/api/log").await;
    assert_eq!(status, 200);
    assert_eq!(get(&node, "/other/log").await.0, 200);
    assert_eq!(get(&node, "/slow/loop").await.0, 504);
    // One slow request in flight: a second one is throttled.
    let busy = tokio::spawn({
        let url = node.url("/slow/sleep?ms=150");
        async move {
            let response = http().get(url).send().await.unwrap();
            let status = response.status();
            response.text().await.unwrap();
            status
        }
    });
    node.wait_busy("shop", "slow", 1).await;
    assert_eq!(get(&node, "/slow/sleep?ms=1").await.0, 429);
    assert_eq!(busy.await.unwrap(), 200);

    let all = wait_for(&node, &["shop"], "throttled");
    let api = logs(&node, &["shop/api"]);
    assert!(api.iter().all(|r| r["function"] == "api"), "{api:#?}");
    assert_eq!(api.len(), 3, "cold start, stdout, stderr: {api:#?}");
    let stdout = api
        .iter()
        .find(|r| r["message"] == "hello from the guest's stdout")
        .unwrap_or_else(|| panic!("{api:#?}"));
    assert_eq!(stdout["invocation"], id.as_str());
    assert_eq!(stdout["level"], "info");
    assert_eq!(stdout["stream"], "stdout");
    let stderr = api
        .iter()
        .find(|r| r["message"] == "and from its stderr")
        .unwrap();
    assert_eq!(
        (&stderr["level"], &stderr["stream"]),
        (&"error".into(), &"stderr".into())
    );
    let cold = api
        .iter()
        .find(|r| r["message"].as_str().unwrap().starts_with("cold start"))
        .unwrap_or_else(|| panic!("no cold start in {api:#?}"));
    assert_eq!(
        (&cold["stream"], &cold["invocation"]),
        (&"platform".into(), &id.as_str().into())
    );

    // The invocation filter: that request's records only.
    let one = logs(&node, &["shop", "--invocation", &id]);
    assert_eq!(one.len(), 3, "{one:#?}");
    assert!(one.iter().all(|r| r["invocation"] == id.as_str()));
    // The level filter: warn and error only, from every function.
    let warn = logs(&node, &["shop", "--level", "warn"]);
    let warn_text = messages(&warn).join("\n");
    assert!(
        warn.iter()
            .all(|r| r["level"] == "warn" || r["level"] == "error"),
        "{warn:#?}"
    );
    assert!(warn_text.contains("timed out after 200ms"), "{warn_text}");
    assert!(warn_text.contains("throttled"), "{warn_text}");
    assert_eq!(
        warn.iter()
            .filter(|r| r["message"] == "and from its stderr")
            .count(),
        2
    );
    assert!(!warn_text.contains("hello from"), "{warn_text}");
    // The text filter, case-sensitive.
    let grep = logs(&node, &["shop", "--grep", "from its stderr"]);
    let mut functions: Vec<&str> = grep
        .iter()
        .map(|r| r["function"].as_str().unwrap())
        .collect();
    functions.sort();
    assert_eq!(functions, ["api", "other"]);
    assert!(logs(&node, &["shop", "--grep", "FROM ITS"]).is_empty());
    // `--limit`: the newest N.
    let newest = logs(&node, &["shop", "--limit", "2"]);
    assert_eq!(messages(&newest), messages(&all[all.len() - 2..]));
    // Another app has none of these.
    assert!(logs(&node, &["other-app"]).is_empty());

    // `--since`: only what came after.
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(get(&node, "/other/log?n=2&text=later").await.0, 200);
    let later = wait_for(&node, &["shop", "--since", &before.to_string()], "later 1");
    assert_eq!(messages(&later), ["later 0", "later 1"], "{later:#?}");
    let recent = logs(&node, &["shop", "--since", "1h"]);
    assert_eq!(recent.len(), all.len() + 2, "{recent:#?}");

    // The API pages with a cursor, without gaps or repeats.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let page: Value = node
            .api(
                Method::GET,
                &format!("/v1/apps/shop/logs?limit=3&after={after}"),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = page["records"].as_array().unwrap().clone();
        if records.is_empty() {
            break;
        }
        after = page["next"].as_u64().unwrap();
        paged.extend(records);
    }
    assert_eq!(messages(&paged), messages(&recent));
    let bad = node
        .api(Method::GET, "/v1/apps/shop/logs?level=loud")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("`level`"));

    // `-f` prints records as they are written.
    let mut follow = Command::new(nimbus_bin())
        .args([
            "logs",
            "shop/api",
            "-f",
            "--limit",
            "0",
            "--grep",
            "followed",
            "--server",
            &node.admin,
            "--data-dir",
        ])
        .arg(&node.data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&node, "/api/log?n=1&text=followed").await.0, 200);
    let line = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("-f printed nothing");
    assert!(
        line.contains("INFO") && line.contains("api") && line.ends_with("followed 0"),
        "{line}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_function_is_capped_while_another_still_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNode::start_in(tmp.path(), &["serve", "--log-rate", "100"]);
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    assert_eq!(get(&node, "/api/log?n=5000&text=flood").await.0, 200);
    assert_eq!(get(&node, "/other/log?n=3&text=calm").await.0, 200);
    // At most one report a second while the flood lasts, the rest at its end
    // (which may come just after the response).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = logs(&node, &["shop/api", "--grep", "dropped"]);
        let n: usize = dropped
            .iter()
            .map(|r| {
                assert_eq!(r["level"], "warn");
                let message = r["message"].as_str().unwrap();
                assert!(
                    message.ends_with("over the limit of 100 lines/s"),
                    "{message}"
                );
                message
                    .strip_prefix("dropped ")
                    .and_then(|m| m.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("{message}"))
            })
            .sum();
        let kept = logs(&node, &["shop/api", "--grep", "flood", "--limit", "1000"]);
        assert!(kept.len() < 1000, "{} kept", kept.len());
        if kept.len() + n == 5000 {
            assert!(kept.len() >= 100, "{} kept", kept.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} kept and {n} dropped of 5000: {dropped:#?}",
            kept.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let calm = logs(&node, &["shop/other", "--grep", "calm"]);
    assert_eq!(messages(&calm), ["calm 0", "calm 1", "calm 2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_outlive_a_restart_and_are_trimmed_after_the_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["serve", "--log-retention", "4s"];
    let mut node = TestNode::start_in(tmp.path(), &args);
    let dir = AppDir::new(APP);
    node.deploy(dir.path());
    assert_eq!(get(&node, "/api/log?n=1&text=ancient").await.0, 200);
    wait_for(&node, &["shop"], "ancient 0");
    node.restart(&args);
    assert_eq!(
        messages(&logs(&node, &["shop", "--grep", "ancient"])),
        ["ancient 0"]
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(get(&node, "/api/log?n=1&text=fresh").await.0, 200);
    wait_for(&node, &["shop"], "fresh 0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs(&node, &["shop", "--grep", "ancient"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the old record was never trimmed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        messages(&logs(&node, &["shop", "--grep", "fresh"])),
        ["fresh 0"]
    );
}
