//! Schedules end to end: a rate schedule delivering its payload to a queue,
//! `nimbus schedule ls`, no slot fired twice across `kill -9`, the latest
//! missed slot fired once on start with `catch_up` (and not without), and a bad
//! time zone failing the deploy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{AppDir, TestNode, now_ms, text};

const APP: &str = r#"
[app]
name = "clock"

[queues.ticks]
[queues.caught]
[queues.skipped]

[schedules.tick]
rate = "1s"
target = { queue = "ticks" }
payload = { hello = "world" }

[schedules.catchy]
rate = "3s"
target = { queue = "caught" }

[schedules.nocatch]
rate = "3s"
catch_up = false
target = { queue = "skipped" }
"#;

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every event waiting in `queue` (received and deleted), as JSON.
fn drain(node: &TestNode, queue: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let out = cli_ok(
            node,
            &[
                "queue",
                "recv",
                &format!("clock/{queue}"),
                "--max",
                "10",
                "--delete",
                "--json",
            ],
        );
        let batch: Value = serde_json::from_str(&out).unwrap();
        let msgs = batch["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return all;
        }
        all.extend(
            msgs.iter()
                .map(|m| serde_json::from_str(m["body"].as_str().unwrap()).unwrap()),
        );
    }
}

/// The slot (Unix ms) of a schedule event, from its id `sch-NAME-SLOT`.
fn slot(event: &Value) -> u64 {
    event["id"]
        .as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_fire_each_slot_once_and_catch_up_after_downtime() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), &["serve"]);
    let dir = AppDir::new(APP);
    let plan = node.deploy(dir.path());
    assert!(
        plan.contains("+ schedule tick (rate 1s -> queue ticks)"),
        "{plan}"
    );

    let table = cli_ok(&node, &["schedule", "ls", "clock"]);
    assert!(
        table.contains("tick") && table.contains("rate 1s") && table.contains("queue ticks"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&cli_ok(&node, &["schedule", "ls", "clock", "--json"])).unwrap();
    assert!(
        listed["schedules"][2]["next_run"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{listed}"
    );

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut ticks = drain(&node, "ticks");
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert_eq!(ticks[0]["type"], "nimbus.schedule");
    assert_eq!(ticks[0]["source"], "nimbus/clock/schedules/tick");
    assert_eq!(ticks[0]["data"]["hello"], "world");
    assert_eq!(slot(&ticks[0]) % 1000, 0, "slots fall on whole seconds");

    // Down for two and more 3-second slots.
    drain(&node, "caught");
    drain(&node, "skipped");
    node.kill9();
    let down_at = now_ms();
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let restarted_at = now_ms();
    node.restart(&["serve"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // catch_up: the latest missed slot fired once; without it: none.
    let caught: Vec<u64> = drain(&node, "caught").iter().map(slot).collect();
    let missed: Vec<u64> = caught
        .iter()
        .copied()
        .filter(|s| *s > down_at && *s < restarted_at)
        .collect();
    assert_eq!(
        missed.len(),
        1,
        "caught up {caught:?} (down {down_at}..{restarted_at})"
    );
    assert!(
        restarted_at - missed[0] < 3000,
        "the latest missed slot, not an older one"
    );
    let skipped: Vec<u64> = drain(&node, "skipped").iter().map(slot).collect();
    assert!(
        skipped.iter().all(|s| *s >= restarted_at),
        "a missed slot fired without catch_up: {skipped:?}"
    );

    // No slot fired twice, before or after the restart.
    ticks.extend(drain(&node, "ticks"));
    let slots: Vec<u64> = ticks.iter().map(slot).collect();
    let unique: BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(unique.len(), slots.len(), "a slot fired twice: {slots:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_time_zone_fails_the_deploy() {
    let node = TestNode::serve();
    let dir = AppDir::new(
        "[app]\nname = \"clock\"\n\n[queues.q]\n\n[schedules.nightly]\ncron = \"0 3 * * *\"\n\
         timezone = \"Europe/Pariss\"\ntarget = { queue = \"q\" }\n",
    );
    let out = node.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown time zone `Europe/Pariss`"),
        "{}",
        text(&out)
    );
    let dir = AppDir::new(
        "[app]\nname = \"clock\"\n\n[queues.q]\n\n[schedules.nightly]\ncron = \"0 3 * *\"\ntarget = { queue = \"q\" }\n",
    );
    let out = node.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("5 fields"), "{}", text(&out));
}
