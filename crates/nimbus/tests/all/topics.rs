//! Notification topics end to end: fan-out to a queue, a function (with an
//! attribute filter) and a signed webhook (retried on 500, then sent to its
//! dead-letter queue), subscriptions added and removed over the CLI, and a
//! numeric filter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{AppDir, TestNode, text};

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A webhook receiver on a loopback port: answers 500 while `fail` is above
/// zero (counting it down; `u32::MAX` fails forever), else 200; keeps each
/// request's head and body.
struct Receiver {
    port: u16,
    fail: Arc<AtomicU32>,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fail = Arc::new(AtomicU32::new(0));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (f, g) = (fail.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, g) = (f.clone(), g.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let head = text[..end].to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let body = text[end + 4..end + 4 + len].to_string();
                        g.lock().unwrap().push((head, body));
                        let failing = f
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                                0 => None,
                                u32::MAX => Some(u32::MAX),
                                n => Some(n - 1),
                            })
                            .is_ok();
                        let status = if failing {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        Self { port, fail, got }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_default()
}

async fn recv(node: &TestNode, queue: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
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

#[tokio::test(flavor = "multi_thread")]
async fn topics_fan_out_with_filters_and_signed_retried_webhooks() {
    let hook = Receiver::start().await;
    let node = TestNode::serve();
    let manifest = format!(
        r#"
[app]
name = "shop"

[functions.email]
source = "{{data}}"
uses = ["kv:seen"]

[kv.seen]
[queues.audit]
[queues.big]
[queues.hook-dlq]

[topics.orders]
subscriptions = [
  {{ queue = "audit" }},
  {{ function = "email", filter = {{ kind = ["vip"] }} }},
  {{ webhook = "http://127.0.0.1:{}/hook", secret = "hook-secret", dead_letter = "hook-dlq", retry_for = "4s" }},
]
"#,
        hook.port
    );
    let dir = AppDir::new(&manifest);
    node.deploy(dir.path());

    // The webhook fails twice, then accepts: retried with backoff, delivered once.
    hook.fail.store(2, Ordering::SeqCst);
    let out = cli_ok(
        &node,
        &[
            "topic",
            "publish",
            "shop/orders",
            "order 1",
            "--attr",
            "kind=vip",
        ],
    );
    assert!(out.contains("to 3 subscription(s)"), "{out}");
    let out = cli_ok(
        &node,
        &[
            "topic",
            "publish",
            "shop/orders",
            "order 2",
            "--attr",
            "kind=regular",
        ],
    );
    assert!(out.contains("to 2 subscription(s)"), "{out}");

    let audit = recv(&node, "audit", 2).await;
    let messages: Vec<&str> = audit
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["order 1", "order 2"]);
    assert_eq!(audit[0]["attributes"]["kind"], "vip");
    assert_eq!(audit[0]["topic"], "orders");

    // Only the vip order passed the function's filter.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let keys = cli_ok(&node, &["kv", "ls", "shop/seen", "--prefix", "msg:"]);
        if !keys.trim().is_empty() || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen: Vec<Value> = seen
        .lines()
        .map(|k| serde_json::from_str(k.strip_prefix("msg:").unwrap()).unwrap())
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["message"], "order 1");

    // The webhook: 2 failures, then a success per message; each signed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while hook.requests().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "webhook got {:?}",
            hook.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (head, body) in hook.requests() {
        let sig = header(&head, "x-nimbus-signature");
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .unwrap_or_else(|| panic!("no signature in {head}"));
        assert_eq!(t, header(&head, "x-nimbus-timestamp"));
        // Checked as a receiver would, with the shared secret.
        let mac = {
            use hmac::Mac as _;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(v1, mac, "bad signature for {body}");
    }
    let subs: Value =
        serde_json::from_str(&cli_ok(&node, &["topic", "subs", "shop/orders", "--json"])).unwrap();
    let webhook = &subs["subscriptions"][2];
    assert_eq!(webhook["id"], "m2");
    assert_eq!(webhook["counts"]["delivered"], 2, "{webhook}");
    assert_eq!(webhook["counts"]["retried"], 2, "{webhook}");

    // A receiver that stays down: retried for `retry_for`, then dead-lettered.
    hook.fail.store(u32::MAX, Ordering::SeqCst);
    cli_ok(&node, &["topic", "publish", "shop/orders", "order 3"]);
    let dead = recv(&node, "hook-dlq", 1).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["error"].as_str().unwrap().contains("500"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["event"]["message"], "order 3");
    recv(&node, "audit", 1).await;

    // A subscription added over the CLI, with a numeric filter; then removed.
    let id = cli_ok(
        &node,
        &[
            "topic",
            "subscribe",
            "shop/orders",
            "--queue",
            "big",
            "--filter",
            r#"{"total": [{"numeric": [">", 100]}]}"#,
        ],
    );
    assert_eq!(id.trim(), "s1");
    cli_ok(
        &node,
        &[
            "topic",
            "publish",
            "shop/orders",
            "small",
            "--attr",
            "total=50",
        ],
    );
    cli_ok(
        &node,
        &[
            "topic",
            "publish",
            "shop/orders",
            "large",
            "--attr",
            "total=150",
        ],
    );
    let big = recv(&node, "big", 1).await;
    assert_eq!(big.len(), 1);
    assert_eq!(big[0]["message"], "large");
    assert_eq!(big[0]["attributes"]["total"], 150.0);
    let table = cli_ok(&node, &["topic", "subs", "shop/orders"]);
    assert!(
        table.contains("s1") && table.contains("queue big"),
        "{table}"
    );
    cli_ok(&node, &["topic", "unsubscribe", "shop/orders", "s1"]);
    let out = cli_ok(
        &node,
        &[
            "topic",
            "publish",
            "shop/orders",
            "again",
            "--attr",
            "total=500",
        ],
    );
    assert!(out.contains("to 2 subscription(s)"), "{out}");
    // Bad subscriptions are refused with the reason.
    let out = node.cli(&["topic", "subscribe", "shop/orders", "--queue", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no queue `nope`"), "{}", text(&out));
    let out = node.cli(&["topic", "publish", "shop/nope", "x"]);
    assert!(text(&out).contains("no topic `nope`"), "{}", text(&out));
}
