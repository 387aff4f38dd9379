use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_core::data::{DataError, StoreRef};
use nimbus_core::manifest::Manifest;
use nimbus_core::queue::{QueueService, ReceiveOptions, SendOptions};
use nimbus_data::Database;

use super::Queues;

const MANIFEST: &str = r#"
[app]
name = "shop"

[queues.orders]
visibility_timeout = "30s"
dead_letter = { queue = "orders-dlq", max_receives = 2 }

[queues.orders-dlq]

[queues.jobs]
fifo = true
dead_letter = { queue = "jobs-dlq", max_receives = 1 }

[queues.jobs-dlq]
fifo = true

[queues.small]
max_message_size = 10
retention = "1s"

[queues.later]
delay = "1m"
"#;

fn q(name: &str) -> StoreRef<'_> {
    StoreRef::new("shop", name)
}

async fn setup(dir: &std::path::Path) -> Queues {
    let queues = Queues::open(Database::open(dir).unwrap()).unwrap();
    let app = Manifest::parse("nimbus.toml", MANIFEST).unwrap().app;
    queues.ensure(&app).await.unwrap();
    queues
}

fn body(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

fn group(g: &str) -> SendOptions {
    SendOptions {
        group_id: Some(g.into()),
        ..Default::default()
    }
}

fn recv(max: usize) -> ReceiveOptions {
    ReceiveOptions {
        max,
        ..Default::default()
    }
}

fn recv_vis(max: usize, visibility: Duration) -> ReceiveOptions {
    ReceiveOptions {
        max,
        visibility: Some(visibility),
        ..Default::default()
    }
}

#[tokio::test]
async fn send_receive_delete() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let mut options = SendOptions::default();
    options.attributes.insert("kind".into(), "new".into());
    let sent = queues
        .send(q("orders"), body("hello"), options)
        .await
        .unwrap();
    assert!(!sent.deduplicated);
    assert_eq!(sent.message_id.len(), 32);
    let got = queues.receive(q("orders"), recv(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.body, body("hello"));
    assert_eq!(m.attributes["kind"], "new");
    assert_eq!(m.receive_count, 1);
    // In flight: not delivered again.
    assert!(
        queues
            .receive(q("orders"), recv(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(queues.delete(q("orders"), &m.receipt).await.unwrap());
    assert!(!queues.delete(q("orders"), &m.receipt).await.unwrap());
    let stats = queues.stats(q("orders")).await.unwrap();
    assert_eq!((stats.visible, stats.in_flight, stats.delayed), (0, 0, 0));
}

#[tokio::test]
async fn unknown_queue_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let err = queues
        .send(q("nope"), body("x"), SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::NoSuchStore { .. }), "{err}");
    let err = queues.receive(q("orders"), recv(11)).await.unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    let err = queues
        .delete(q("orders"), "not-a-receipt")
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    let mut big = SendOptions::default();
    big.attributes.insert("a".into(), "x".repeat(5000));
    let err = queues.send(q("orders"), body("x"), big).await.unwrap_err();
    assert!(matches!(err, DataError::TooLarge(_)), "{err}");
}

#[tokio::test]
async fn oversized_message_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let err = queues
        .send(q("small"), body("0123456789a"), SendOptions::default())
        .await
        .unwrap_err();
    match err {
        DataError::TooLarge(msg) => assert!(msg.contains("10 bytes"), "{msg}"),
        other => panic!("{other:?}"),
    }
    queues
        .send(q("small"), body("0123456789"), SendOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn visibility_expiry_redelivers_with_a_new_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("orders"), body("a"), SendOptions::default())
        .await
        .unwrap();
    let first = queues
        .receive(q("orders"), recv_vis(1, Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(first[0].receive_count, 1);
    let stats = queues.stats(q("orders")).await.unwrap();
    assert_eq!(stats.in_flight, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = queues.receive(q("orders"), recv(1)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);
    // The stale receipt deletes nothing; the current one does.
    assert!(!queues.delete(q("orders"), &first[0].receipt).await.unwrap());
    let err = queues
        .change_visibility(q("orders"), &first[0].receipt, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    assert!(
        queues
            .delete(q("orders"), &second[0].receipt)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn long_poll_wakes_on_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("orders"), body("a"), SendOptions::default())
        .await
        .unwrap();
    queues
        .receive(q("orders"), recv_vis(1, Duration::from_millis(200)))
        .await
        .unwrap();
    let start = Instant::now();
    let again = queues
        .receive(
            q("orders"),
            ReceiveOptions {
                max: 1,
                wait: Duration::from_secs(5),
                visibility: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn change_visibility_zero_makes_it_visible_now() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("orders"), body("a"), SendOptions::default())
        .await
        .unwrap();
    let got = queues.receive(q("orders"), recv(1)).await.unwrap();
    assert!(
        queues
            .receive(q("orders"), recv(1))
            .await
            .unwrap()
            .is_empty()
    );
    queues
        .change_visibility(q("orders"), &got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = queues.receive(q("orders"), recv(1)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn a_receive_of_one_that_moves_a_message_still_returns() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("orders"), body("poison"), SendOptions::default())
        .await
        .unwrap();
    let short = recv_vis(1, Duration::from_millis(30));
    for _ in 0..2 {
        assert_eq!(queues.receive(q("orders"), short).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // max = 1 and the only candidate moves: the look must not find it again.
    let got = tokio::time::timeout(Duration::from_secs(5), queues.receive(q("orders"), short))
        .await
        .expect("receive returned")
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(
        queues
            .receive(q("orders-dlq"), recv(10))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn dead_letter_after_max_receives_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let sent = queues
        .send(q("orders"), body("poison"), SendOptions::default())
        .await
        .unwrap();
    queues
        .send(q("orders"), body("fine"), SendOptions::default())
        .await
        .unwrap();
    let short = recv_vis(10, Duration::from_millis(50));
    for round in 1..=2 {
        let got = queues.receive(q("orders"), short).await.unwrap();
        assert_eq!(got.len(), 2, "round {round}");
        assert!(got.iter().all(|m| m.receive_count == round));
        // Only "fine" is handled; "poison" keeps failing.
        let fine = got.iter().find(|m| m.body == body("fine"));
        if round == 2 {
            queues
                .delete(q("orders"), &fine.unwrap().receipt)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // Received twice (= max_receives): moved instead of delivered a third time.
    let got = queues.receive(q("orders"), short).await.unwrap();
    assert!(got.is_empty(), "{got:?}");
    let dead = queues.receive(q("orders-dlq"), recv(10)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, sent.message_id);
    assert_eq!(dead[0].receive_count, 1);
    queues
        .change_visibility(q("orders-dlq"), &dead[0].receipt, Duration::ZERO)
        .await
        .unwrap();

    let err = queues.redrive(q("orders")).await.unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    assert_eq!(queues.redrive(q("orders-dlq")).await.unwrap(), 1);
    let back = queues.receive(q("orders"), recv(10)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message_id, sent.message_id);
    assert_eq!(back[0].receive_count, 1);
    assert_eq!(queues.stats(q("orders-dlq")).await.unwrap().visible, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let poller = queues.clone();
    let start = Instant::now();
    let poll = tokio::spawn(async move {
        poller
            .receive(
                q("orders"),
                ReceiveOptions {
                    max: 1,
                    wait: Duration::from_secs(10),
                    visibility: None,
                },
            )
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    queues
        .send(q("orders"), body("ping"), SendOptions::default())
        .await
        .unwrap();
    let got = poll.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body("ping"));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let start = Instant::now();
    let got = queues
        .receive(
            q("orders"),
            ReceiveOptions {
                max: 1,
                wait: Duration::from_millis(300),
                visibility: None,
            },
        )
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn fifo_order_per_group_and_one_group_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    for (g, text) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b2"),
        ("a", "a3"),
    ] {
        queues.send(q("jobs"), body(text), group(g)).await.unwrap();
    }
    let first = queues.receive(q("jobs"), recv(1)).await.unwrap();
    assert_eq!(first[0].body, body("a1"));
    assert_eq!(first[0].group_id.as_deref(), Some("a"));
    // Group a is in flight: only b's messages, in order.
    let second = queues.receive(q("jobs"), recv(10)).await.unwrap();
    let texts: Vec<_> = second.iter().map(|m| m.body.clone()).collect();
    assert_eq!(texts, vec![body("b1"), body("b2")]);
    assert!(
        queues
            .receive(q("jobs"), recv(10))
            .await
            .unwrap()
            .is_empty()
    );
    // Deleting a1 opens group a: a2 then a3, together.
    assert!(queues.delete(q("jobs"), &first[0].receipt).await.unwrap());
    let third = queues.receive(q("jobs"), recv(10)).await.unwrap();
    let texts: Vec<_> = third.iter().map(|m| m.body.clone()).collect();
    assert_eq!(texts, vec![body("a2"), body("a3")]);
    // Making a2 visible again while a3 is in flight keeps the group closed.
    queues
        .change_visibility(q("jobs"), &third[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        queues
            .receive(q("jobs"), recv(10))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn fifo_rules_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    let err = queues
        .send(q("jobs"), body("x"), SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    let delayed = SendOptions {
        delay: Some(Duration::from_secs(1)),
        ..group("g")
    };
    let err = queues
        .send(q("jobs"), body("x"), delayed)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");

    let dedup = SendOptions {
        dedup_id: Some("order-1".into()),
        ..group("g")
    };
    let first = queues
        .send(q("jobs"), body("x"), dedup.clone())
        .await
        .unwrap();
    let again = queues.send(q("jobs"), body("x"), dedup).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(queues.stats(q("jobs")).await.unwrap().visible, 1);

    // A batch with a duplicate inside and an invalid entry.
    let results = queues
        .send_batch(
            q("jobs"),
            vec![
                (
                    body("y"),
                    SendOptions {
                        dedup_id: Some("order-2".into()),
                        ..group("g")
                    },
                ),
                (
                    body("y"),
                    SendOptions {
                        dedup_id: Some("order-2".into()),
                        ..group("g")
                    },
                ),
                (body("z"), SendOptions::default()),
            ],
        )
        .await
        .unwrap();
    assert!(!results[0].as_ref().unwrap().deduplicated);
    assert!(results[1].as_ref().unwrap().deduplicated);
    assert!(results[2].is_err());
    assert_eq!(queues.stats(q("jobs")).await.unwrap().visible, 2);
}

#[tokio::test]
async fn purge_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    for i in 0..3 {
        queues
            .send(q("orders"), body(&format!("m{i}")), SendOptions::default())
            .await
            .unwrap();
    }
    queues
        .send(q("later"), body("d"), SendOptions::default())
        .await
        .unwrap();
    let later = queues.stats(q("later")).await.unwrap();
    assert_eq!((later.visible, later.delayed), (0, 1));
    assert!(
        queues
            .receive(q("later"), recv(1))
            .await
            .unwrap()
            .is_empty()
    );

    queues.receive(q("orders"), recv(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = queues.stats(q("orders")).await.unwrap();
    assert_eq!(stats.name, "orders");
    assert_eq!((stats.visible, stats.in_flight, stats.delayed), (2, 1, 0));
    assert!(stats.oldest_age_ms >= 20);
    assert_eq!(queues.purge(q("orders")).await.unwrap(), 3);
    let stats = queues.stats(q("orders")).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.oldest_age_ms),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn retention_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("small"), body("old"), SendOptions::default())
        .await
        .unwrap();
    queues
        .send(q("orders"), body("kept"), SendOptions::default())
        .await
        .unwrap();
    assert_eq!(queues.expire().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(queues.expire().await.unwrap(), 1);
    assert!(
        queues
            .receive(q("small"), recv(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(queues.receive(q("orders"), recv(1)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reopen_keeps_messages_and_config_changes_apply() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queues = setup(dir.path()).await;
        queues
            .send(q("orders"), body("durable"), SendOptions::default())
            .await
            .unwrap();
        let gone = queues
            .send(q("orders"), body("deleted"), SendOptions::default())
            .await
            .unwrap();
        let got = queues.receive(q("orders"), recv(10)).await.unwrap();
        let deleted = got
            .iter()
            .find(|m| m.message_id == gone.message_id)
            .unwrap();
        queues.delete(q("orders"), &deleted.receipt).await.unwrap();
        let kept = got
            .iter()
            .find(|m| m.message_id != gone.message_id)
            .unwrap();
        queues
            .change_visibility(q("orders"), &kept.receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // Reopen without `ensure`: the registry comes from the database.
    let queues = Queues::open(Database::open(dir.path()).unwrap()).unwrap();
    let got = queues.receive(q("orders"), recv(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body("durable"));
    assert_eq!(got[0].receive_count, 2);

    // A smaller size limit applies after `ensure`; a dropped queue is gone.
    let changed = MANIFEST.replace("max_message_size = 10", "max_message_size = 5");
    let app = Manifest::parse("nimbus.toml", &changed).unwrap().app;
    queues.ensure(&app).await.unwrap();
    let err = queues
        .send(q("small"), body("123456"), SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::TooLarge(_)), "{err}");
    queues.drop_queue("shop", "orders").await.unwrap();
    let err = queues.stats(q("orders")).await.unwrap_err();
    assert!(matches!(err, DataError::NoSuchStore { .. }), "{err}");
    queues.ensure(&app).await.unwrap();
    assert_eq!(queues.stats(q("orders")).await.unwrap().visible, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_when_a_delayed_message_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    // The poll starts first and sleeps with nothing due; the delayed send
    // then wakes it only when the message is due.
    let poller = queues.clone();
    let start = Instant::now();
    let poll = tokio::spawn(async move {
        poller
            .receive(
                q("orders"),
                ReceiveOptions {
                    max: 1,
                    wait: Duration::from_secs(5),
                    visibility: None,
                },
            )
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let delayed = SendOptions {
        delay: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    queues
        .send(q("orders"), body("soon"), delayed)
        .await
        .unwrap();
    assert_eq!(queues.stats(q("orders")).await.unwrap().delayed, 1);
    let got = poll.await.unwrap();
    assert_eq!(got.len(), 1);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let too_long = SendOptions {
        delay: Some(Duration::from_secs(16 * 60)),
        ..Default::default()
    };
    let err = queues
        .send(q("orders"), body("x"), too_long)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn fifo_dead_letter_moves_the_head_and_delivers_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    for text in ["p1", "p2"] {
        queues
            .send(q("jobs"), body(text), group("g"))
            .await
            .unwrap();
    }
    let first = queues
        .receive(q("jobs"), recv_vis(1, Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(first[0].body, body("p1"));
    tokio::time::sleep(Duration::from_millis(80)).await;
    // p1 was received once (= max_receives): it moves, p2 comes in its place.
    let next = queues.receive(q("jobs"), recv(10)).await.unwrap();
    let texts: Vec<_> = next.iter().map(|m| m.body.clone()).collect();
    assert_eq!(texts, vec![body("p2")]);
    let dead = queues.receive(q("jobs-dlq"), recv(10)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, body("p1"));
    assert_eq!(dead[0].group_id.as_deref(), Some("g"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receivers_never_share_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    for chunk in 0..10 {
        let entries = (0..10)
            .map(|i| (body(&format!("m{chunk}-{i}")), SendOptions::default()))
            .collect();
        for r in queues.send_batch(q("orders"), entries).await.unwrap() {
            r.unwrap();
        }
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let queues = queues.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = queues.receive(q("orders"), recv(3)).await.unwrap();
                if got.is_empty() {
                    return ids;
                }
                let receipts = got.iter().map(|m| m.receipt.clone()).collect();
                for r in queues.delete_batch(q("orders"), receipts).await.unwrap() {
                    assert!(r.unwrap());
                }
                ids.extend(got.into_iter().map(|m| m.message_id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_poll_wakes_when_a_shortened_visibility_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let queues = setup(dir.path()).await;
    queues
        .send(q("orders"), body("x"), SendOptions::default())
        .await
        .unwrap();
    let got = queues.receive(q("orders"), recv(1)).await.unwrap();
    let poller = queues.clone();
    let start = Instant::now();
    let poll = tokio::spawn(async move {
        poller
            .receive(
                q("orders"),
                ReceiveOptions {
                    max: 1,
                    wait: Duration::from_secs(10),
                    visibility: None,
                },
            )
            .await
            .unwrap()
    });
    // The poll is asleep until its deadline (the message is due in 30 s) when
    // the visibility shrinks to 300 ms: the queue's timer must wake it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    queues
        .change_visibility(q("orders"), &got[0].receipt, Duration::from_millis(300))
        .await
        .unwrap();
    let again = poll.await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
