use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nimbus_core::app::App;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::data::{DataError, StoreRef};
use nimbus_core::invocation::{AsyncInvoker, Invocation, InvocationStatus};
use nimbus_core::manifest::Manifest;
use nimbus_core::ports::{Body, InvokeError, Invoker, Target};
use nimbus_core::queue::{Message, QueueService, ReceiveOptions};
use nimbus_data::Database;
use serde_json::{Value, json};

use super::Invocations;
use crate::Queues;

const MANIFEST: &str = r#"
[app]
name = "shop"

[queues.ok]

[queues.ordered]
fifo = true

[functions.work]
source = "x.wasm"
retries = 2
on_success = { queue = "ok" }
on_failure = { function = "dlq-fn" }

[functions.aged]
source = "x.wasm"
retries = 5
max_event_age = "1s"
on_failure = { queue = "ok" }

[functions.plain]
source = "x.wasm"
retries = 0

[functions.fifo]
source = "x.wasm"
on_success = { queue = "ordered" }

[functions.dlq-fn]
source = "x.wasm"
"#;

/// What the fake does on a call.
#[derive(Debug, Clone)]
enum Step {
    Ok(&'static str),
    Binary(Vec<u8>),
    Fail(&'static str),
    Throttle,
    Hang,
}

#[derive(Debug, Clone)]
struct Call {
    function: String,
    request_id: String,
    deployment: u64,
    event: CloudEvent,
    at: Instant,
}

/// A fake invoker: each function follows its script, then answers `Ok`
/// (`{"ok":true}`), or fails forever if told to.
#[derive(Default)]
struct Fake {
    scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    always_fail: Mutex<Vec<String>>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn script(self: &Arc<Self>, function: &str, steps: Vec<Step>) -> Arc<Self> {
        self.scripts
            .lock()
            .unwrap()
            .insert(function.into(), steps.into());
        self.clone()
    }

    fn fail_always(self: &Arc<Self>, function: &str) -> Arc<Self> {
        self.always_fail.lock().unwrap().push(function.into());
        self.clone()
    }

    fn calls(&self, function: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.function == function)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Invoker for Fake {
    async fn invoke_http(
        &self,
        target: &Target,
        _request_id: &str,
        _request: http::Request<Body>,
    ) -> Result<http::Response<Body>, InvokeError> {
        Err(InvokeError::WrongKind {
            function: target.function.to_string(),
            kind: "http",
        })
    }

    async fn invoke_batch(
        &self,
        target: &Target,
        _request_id: &str,
        _events: Vec<CloudEvent>,
    ) -> Result<Vec<String>, InvokeError> {
        Err(InvokeError::WrongKind {
            function: target.function.to_string(),
            kind: "batch",
        })
    }

    async fn invoke_event(
        &self,
        target: &Target,
        request_id: &str,
        event: CloudEvent,
    ) -> Result<Option<Vec<u8>>, InvokeError> {
        let function = target.function.to_string();
        self.calls.lock().unwrap().push(Call {
            function: function.clone(),
            request_id: request_id.into(),
            deployment: target.deployment,
            event,
            at: Instant::now(),
        });
        let step = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&function)
            .and_then(VecDeque::pop_front);
        let step = match step {
            Some(step) => step,
            None if self.always_fail.lock().unwrap().contains(&function) => Step::Fail("boom"),
            None => Step::Ok(r#"{"ok":true}"#),
        };
        match step {
            Step::Ok(text) => Ok(Some(text.as_bytes().to_vec())),
            Step::Binary(bytes) => Ok(Some(bytes)),
            Step::Fail(message) => Err(InvokeError::Handler(message.into())),
            Step::Throttle => Err(InvokeError::Throttled { function, limit: 1 }),
            Step::Hang => std::future::pending().await,
        }
    }
}

fn app() -> App {
    Manifest::parse("nimbus.toml", MANIFEST).unwrap().app
}

struct Setup {
    db: Database,
    queues: Queues,
    invocations: Invocations,
}

/// An engine serving deployment 7 of the app, not started.
async fn open(dir: &std::path::Path, fake: Arc<Fake>, base: Duration) -> Setup {
    let db = Database::open(dir).unwrap();
    let queues = Queues::open(db.clone()).unwrap();
    queues.ensure(&app()).await.unwrap();
    let invocations = Invocations::open(db.clone(), fake, Arc::new(queues.clone()))
        .unwrap()
        .with_backoff(base);
    invocations.set_app(&app(), 7);
    Setup {
        db,
        queues,
        invocations,
    }
}

async fn setup(dir: &std::path::Path, fake: Arc<Fake>, base: Duration) -> Setup {
    let s = open(dir, fake, base).await;
    s.invocations.start();
    s
}

fn event(data: Value) -> CloudEvent {
    CloudEvent::new("ev-1", "test", "test.event")
        .with_data("application/json", data.to_string().into_bytes())
}

/// Polls `get` until `done` holds (10 s at most).
async fn wait_until(
    invocations: &Invocations,
    id: &str,
    done: impl Fn(&Invocation) -> bool,
) -> Invocation {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inv = invocations.get(id).await.unwrap().expect("a record");
        if done(&inv) {
            return inv;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {inv:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ended(invocations: &Invocations, id: &str) -> Invocation {
    wait_until(invocations, id, |i| {
        matches!(
            i.status,
            InvocationStatus::Succeeded | InvocationStatus::Failed
        )
    })
    .await
}

async fn receive(queues: &Queues, queue: &str) -> Vec<Message> {
    queues
        .receive(
            StoreRef::new("shop", queue),
            ReceiveOptions {
                max: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

fn record(message: &Message) -> Value {
    serde_json::from_slice(&message.body).unwrap()
}

#[tokio::test]
async fn success_sends_the_record_to_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let s = setup(dir.path(), fake.clone(), Duration::from_millis(50)).await;
    let id = s
        .invocations
        .submit("shop", "work", event(json!({"order": 42})))
        .await
        .unwrap();
    assert!(id.starts_with("inv-") && id.len() == 4 + 32, "{id}");
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!(inv.attempts, 1);
    assert_eq!(inv.output.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!((inv.app.as_str(), inv.function.as_str()), ("shop", "work"));
    assert!(inv.next_attempt_at.is_none() && inv.error.is_none());

    let calls = fake.calls("work");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].request_id, id);
    assert_eq!(calls[0].deployment, 7);
    assert_eq!(calls[0].event, event(json!({"order": 42})));

    // The record is in the queue once the status is final.
    let messages = receive(&s.queues, "ok").await;
    assert_eq!(messages.len(), 1);
    let r = record(&messages[0]);
    assert_eq!(r["version"], "1.0");
    assert!(r["timestamp"].as_str().unwrap().ends_with('Z'), "{r}");
    assert_eq!(r["requestContext"]["requestId"], id.as_str());
    assert_eq!(r["requestContext"]["function"], "shop/work");
    assert_eq!(r["requestContext"]["condition"], "Success");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(r["requestPayload"]["data"], json!({"order": 42}));
    assert_eq!(r["requestPayload"]["type"], "test.event");
    assert_eq!(r["responseContext"]["statusCode"], 200);
    assert_eq!(r["responsePayload"], json!({"ok": true}));
}

#[tokio::test]
async fn unknown_functions_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), Arc::default(), Duration::from_millis(50)).await;
    for (app, function) in [("shop", "nope"), ("other", "work")] {
        let err = s
            .invocations
            .submit(app, function, event(json!({})))
            .await
            .unwrap_err();
        assert!(matches!(err, DataError::NotFound(_)), "{err:?}");
    }
    assert!(s.invocations.get("inv-nope").await.unwrap().is_none());
}

#[tokio::test]
async fn retries_back_off_then_go_to_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default()).fail_always("work");
    let base = Duration::from_millis(100);
    let s = setup(dir.path(), fake.clone(), base).await;
    let id = s
        .invocations
        .submit("shop", "work", event(json!({"n": 1})))
        .await
        .unwrap();
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Failed);
    assert_eq!(inv.attempts, 3, "1 attempt + 2 retries");
    assert_eq!(inv.error.as_deref(), Some("boom"));
    assert!(inv.output.is_none());

    let calls = fake.calls("work");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.request_id == id));
    let first = calls[1].at - calls[0].at;
    let second = calls[2].at - calls[1].at;
    assert!(first >= base, "{first:?}");
    assert!(second >= 2 * base, "{second:?}");

    // on_failure is a function: it gets a failure event with the record.
    let dlq = wait_for_calls(&fake, "dlq-fn", 1).await;
    let ev = &dlq[0].event;
    assert_eq!(ev.ty, "nimbus.invocation.failure");
    assert_eq!(ev.source, "nimbus/shop/functions/work");
    assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
    let r: Value = serde_json::from_slice(ev.data.as_deref().unwrap()).unwrap();
    assert_eq!(r["requestContext"]["requestId"], id.as_str());
    assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(r["requestPayload"]["data"], json!({"n": 1}));
    assert_eq!(r["responseContext"]["statusCode"], 500);
    assert_eq!(r["responseContext"]["functionError"], "Handled");
    assert_eq!(r["errorMessage"], "boom");
    assert_eq!(r["responsePayload"]["errorMessage"], "boom");
    // The destination invocation is an async invocation of its own.
    let dlq_inv = ended(&s.invocations, &dlq[0].request_id).await;
    assert_eq!(dlq_inv.function, "dlq-fn");
    assert_eq!(dlq_inv.status, InvocationStatus::Succeeded);
}

async fn wait_for_calls(fake: &Fake, function: &str, n: usize) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = fake.calls(function);
        if calls.len() >= n {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "{function}: {} calls",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_retry_can_succeed_and_get_reports_each_status() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default()).script("work", vec![Step::Fail("once"), Step::Hang]);
    let s = open(dir.path(), fake.clone(), Duration::from_millis(300)).await;
    let id = s
        .invocations
        .submit("shop", "work", event(json!({})))
        .await
        .unwrap();
    // Not started: queued, due now.
    let inv = s.invocations.get(&id).await.unwrap().unwrap();
    assert_eq!(inv.status, InvocationStatus::Queued);
    assert_eq!(inv.attempts, 0);
    assert_eq!(inv.next_attempt_at, Some(inv.created_at));
    s.invocations.start();
    // The first attempt fails: queued again for after the backoff.
    let inv = wait_until(&s.invocations, &id, |i| i.attempts == 1).await;
    assert_eq!(inv.status, InvocationStatus::Queued);
    assert_eq!(inv.error.as_deref(), Some("once"));
    let next = inv.next_attempt_at.unwrap();
    assert_eq!(next, inv.updated_at + 300, "{inv:?}");
    // The second hangs: running.
    let inv = wait_until(&s.invocations, &id, |i| {
        i.status == InvocationStatus::Running
    })
    .await;
    assert!(inv.next_attempt_at.is_none());
    assert_eq!(inv.attempts, 1);
}

#[tokio::test]
async fn binary_output_and_retry_success() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default()).script(
        "work",
        vec![Step::Fail("once"), Step::Binary(vec![0xff, 0x00])],
    );
    let s = setup(dir.path(), fake.clone(), Duration::from_millis(20)).await;
    let id = s
        .invocations
        .submit("shop", "work", event(json!({})))
        .await
        .unwrap();
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!(inv.attempts, 2);
    assert_eq!(inv.output.as_deref(), Some("base64:/wA="));
    assert!(inv.error.is_none(), "a success clears the earlier error");
    let r = record(&receive(&s.queues, "ok").await[0]);
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(r["responsePayload"], "base64:/wA=");
}

#[tokio::test]
async fn max_event_age_cuts_retries_short() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default()).fail_always("aged");
    // Attempt 1 at 0 ms (retry at 400 ms < 1 s); attempt 2 at ~400 ms: its
    // retry would wait 800 ms, past the 1 s max age.
    let s = setup(dir.path(), fake.clone(), Duration::from_millis(400)).await;
    let id = s
        .invocations
        .submit("shop", "aged", event(json!({})))
        .await
        .unwrap();
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Failed);
    assert_eq!(inv.attempts, 2, "retries = 5, but the event got too old");
    assert_eq!(fake.calls("aged").len(), 2);
    let messages = receive(&s.queues, "ok").await;
    assert_eq!(messages.len(), 1);
    let r = record(&messages[0]);
    assert_eq!(r["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(r["errorMessage"], "boom");
}

#[tokio::test]
async fn throttled_attempts_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default()).script(
        "plain",
        vec![Step::Throttle, Step::Throttle, Step::Throttle],
    );
    let s = setup(dir.path(), fake.clone(), Duration::from_secs(60)).await;
    let id = s
        .invocations
        .submit("shop", "plain", event(json!({})))
        .await
        .unwrap();
    // retries = 0: one counted failure would end it; three throttles do not.
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!(inv.attempts, 1);
    let calls = fake.calls("plain");
    assert_eq!(calls.len(), 4);
    for pair in calls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(100), "{gap:?}");
    }
}

#[tokio::test]
async fn a_restart_queues_running_invocations_again() {
    let dir = tempfile::tempdir().unwrap();
    // The first node's attempt never ends (it is "killed" while running).
    let hang = Arc::new(Fake::default()).script("plain", vec![Step::Hang]);
    let first = setup(dir.path(), hang.clone(), Duration::from_millis(50)).await;
    let id = first
        .invocations
        .submit("shop", "plain", event(json!({"x": 1})))
        .await
        .unwrap();
    wait_until(&first.invocations, &id, |i| {
        i.status == InvocationStatus::Running
    })
    .await;

    // A second engine on the same data dir, as after kill -9 and a restart.
    let fake = Arc::new(Fake::default());
    let second = open(dir.path(), fake.clone(), Duration::from_millis(50)).await;
    assert_eq!(
        second.invocations.get(&id).await.unwrap().unwrap().status,
        InvocationStatus::Running
    );
    second.invocations.start();
    let inv = ended(&second.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!(inv.attempts, 1, "the interrupted attempt does not count");
    let calls = fake.calls("plain");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].event, event(json!({"x": 1})));
    assert_eq!(hang.calls("plain").len(), 1);
}

#[tokio::test]
async fn an_idle_dispatcher_wakes_only_for_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), Arc::default(), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = s.invocations.passes();
    assert!(idle <= 2, "{idle} passes at start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.invocations.passes(),
        idle,
        "an idle dispatcher does nothing"
    );

    let id = s
        .invocations
        .submit("shop", "plain", event(json!({})))
        .await
        .unwrap();
    ended(&s.invocations, &id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = s.invocations.passes();
    assert!(busy > idle && busy <= idle + 2, "{idle} -> {busy}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.invocations.passes(), busy);
}

#[tokio::test]
async fn invocations_of_an_undeployed_app_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let s = open(dir.path(), fake.clone(), Duration::from_millis(50)).await;
    let id = s
        .invocations
        .submit("shop", "plain", event(json!({})))
        .await
        .unwrap();
    s.invocations.remove_app("shop");
    s.invocations.start();
    let inv = wait_until(&s.invocations, &id, |i| i.error.is_some()).await;
    assert_eq!(inv.status, InvocationStatus::Queued);
    assert!(inv.next_attempt_at.is_none(), "parked: {inv:?}");
    assert!(inv.error.unwrap().contains("not deployed"));
    assert!(fake.calls("plain").is_empty());

    s.invocations.set_app(&app(), 8);
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!(fake.calls("plain")[0].deployment, 8);
}

#[tokio::test]
async fn fifo_destinations_and_failed_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let s = setup(dir.path(), fake.clone(), Duration::from_millis(50)).await;
    let id = s
        .invocations
        .submit("shop", "fifo", event(json!({})))
        .await
        .unwrap();
    assert_eq!(
        ended(&s.invocations, &id).await.status,
        InvocationStatus::Succeeded
    );
    let messages = receive(&s.queues, "ordered").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].group_id.as_deref(), Some("fifo"));

    // A destination that cannot take the record leaves the status alone.
    s.queues.drop_queue("shop", "ok").await.unwrap();
    let id = s
        .invocations
        .submit("shop", "work", event(json!({})))
        .await
        .unwrap();
    let inv = ended(&s.invocations, &id).await;
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert!(inv.error.is_none());
}

#[tokio::test]
async fn expire_deletes_records_a_day_after_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), Arc::default(), Duration::from_millis(50)).await;
    let done = s
        .invocations
        .submit("shop", "plain", event(json!({})))
        .await
        .unwrap();
    ended(&s.invocations, &done).await;
    assert_eq!(s.invocations.expire().await.unwrap(), 0);
    let day = 25 * 3600 * 1000_i64;
    s.db.call(move |c| {
        c.execute(
            "UPDATE invocations SET ended_at = ended_at - ?1, created_at = created_at - ?1",
            [day],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(s.invocations.expire().await.unwrap(), 1);
    assert!(s.invocations.get(&done).await.unwrap().is_none());
}
