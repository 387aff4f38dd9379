//! The `Invoker` port: runs one HTTP request or one event on a function's
//! instance, enforcing its timeout and concurrency.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http_body_util::BodyExt;
use nimbus_core::cloudevent::CloudEvent;
use nimbus_core::ports::{Body, BoxError, InvokeError, Invoker, Target};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{PoolConcurrencyLimitError, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::event::to_wit;
use crate::pool::{FunctionPool, Outcome, Warm};
use crate::runtime::Runtime;

impl Runtime {
    /// Whether the function handles HTTP but not events: events reach it as
    /// CloudEvents over HTTP instead (binary mode).
    fn http_only(&self, target: &Target) -> bool {
        self.pool(&target.app, &target.function, target.deployment)
            .is_some_and(|pool| pool.kind.http && !pool.kind.event)
    }

    /// Delivers `event` to an HTTP function as a CloudEvents binary-mode `POST /`
    /// (`ce-*` headers, the data as the body). A 2xx answer is success, with the
    /// body as the output; any other status is the handler's error.
    async fn event_over_http(
        &self,
        target: &Target,
        request_id: &str,
        event: CloudEvent,
    ) -> Result<Option<Vec<u8>>, InvokeError> {
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri("http://localhost/")
            .header("ce-specversion", &event.specversion)
            .header("ce-id", &event.id)
            .header("ce-source", &event.source)
            .header("ce-type", &event.ty);
        for (name, value) in [("ce-subject", &event.subject), ("ce-time", &event.time)] {
            if let Some(v) = value {
                builder = builder.header(name, v);
            }
        }
        for (name, value) in &event.extensions {
            builder = builder.header(format!("ce-{name}"), value);
        }
        if let Some(ct) = &event.datacontenttype {
            builder = builder.header(http::header::CONTENT_TYPE, ct);
        }
        let body = http_body_util::Full::new(bytes::Bytes::from(event.data.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = builder.body(body).map_err(|e| InvokeError::Failed {
            function: target.function.to_string(),
            message: format!("the event does not fit in HTTP headers: {e}"),
        })?;
        let response = self.invoke_http(target, request_id, request).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| InvokeError::Failed {
                function: target.function.to_string(),
                message: format!("reading its response failed: {e}"),
            })?
            .to_bytes();
        if status.is_success() {
            Ok(Some(bytes.to_vec()))
        } else {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            Err(InvokeError::Handler(format!("answered {status}: {text}")))
        }
    }

    /// The target's pool and a concurrency permit, if it handles `kind` calls.
    fn admit(
        &self,
        target: &Target,
        request_id: &str,
        kind: &'static str,
    ) -> Result<(Arc<FunctionPool>, OwnedSemaphorePermit), InvokeError> {
        let pool = self
            .pool(&target.app, &target.function, target.deployment)
            .ok_or_else(|| InvokeError::NotFound(format!("{}/{}", target.app, target.function)))?;
        let handles = if kind == "HTTP" {
            pool.kind.http
        } else {
            pool.kind.event
        };
        if !handles {
            return Err(InvokeError::WrongKind {
                function: pool.name.to_string(),
                kind,
            });
        }
        if let Some(quota) = pool.app_meter.over_quota() {
            return Err(quota.into());
        }
        let permit = pool.try_acquire().ok_or_else(|| {
            tracing::warn!(
                app = %pool.app, function = %pool.name, request_id,
                "throttled: {} invocations already running (its concurrency limit)",
                pool.config.concurrency
            );
            InvokeError::Throttled {
                function: pool.name.to_string(),
                limit: pool.config.concurrency,
            }
        })?;
        Ok((pool, permit))
    }
}

/// Classifies a failed call: an epoch interrupt is a timeout; a refused memory
/// growth is named as such.
fn outcome_of(pool: &FunctionPool, warm: &mut Warm, err: wasmtime::Error) -> Outcome {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Outcome::Timeout;
    }
    if warm.store.data().limit.exceeded {
        return Outcome::Failed(format!(
            "exceeded its memory limit of {} MiB ({err:#})",
            pool.config.memory_mb
        ));
    }
    Outcome::Failed(format!("{err:?}"))
}

fn failure(pool: &FunctionPool, outcome: Outcome) -> InvokeError {
    match outcome {
        Outcome::Timeout => InvokeError::Timeout {
            function: pool.name.to_string(),
            timeout: pool.config.timeout,
        },
        Outcome::Failed(message) => InvokeError::Failed {
            function: pool.name.to_string(),
            // The first line only: the full chain and backtrace are in the log.
            message: message.lines().next().unwrap_or_default().to_string(),
        },
        Outcome::Ok => InvokeError::Failed {
            function: pool.name.to_string(),
            message: "the function returned without setting a response".into(),
        },
    }
}

impl Runtime {
    /// A warm or new instance for one invocation. When every instance slot of the
    /// node is taken, the least recently used idle instance (of any function) makes
    /// room; when all are busy, the caller gets `AtCapacity` (503, retry later).
    async fn checkout(&self, pool: &FunctionPool, request_id: &str) -> Result<Warm, InvokeError> {
        let mut evicted = 0;
        let mut warm = loop {
            match pool.checkout().await {
                Ok(warm) => break warm,
                Err(err) if err.is::<PoolConcurrencyLimitError>() => {
                    if evicted < 3 && self.evict_idle() {
                        evicted += 1;
                        continue;
                    }
                    tracing::warn!(app = %pool.app, function = %pool.name, request_id, "no instance slot free: {err}");
                    return Err(InvokeError::AtCapacity(err.to_string()));
                }
                Err(err) => {
                    tracing::warn!(app = %pool.app, function = %pool.name, request_id, "instantiation failed: {err:#}");
                    return Err(InvokeError::Failed {
                        function: pool.name.to_string(),
                        message: format!("instantiation failed: {err}"),
                    });
                }
            }
        };
        warm.tag.set_request(request_id);
        if let Some(took) = warm.cold.take() {
            tracing::info!(
                app = %pool.app, function = %pool.name, request_id,
                "cold start: a new instance in {:.1} ms",
                took.as_secs_f64() * 1000.0
            );
        }
        warm.store.set_epoch_deadline(pool.deadline_ticks);
        Ok(warm)
    }
}

#[async_trait]
impl Invoker for Runtime {
    async fn invoke_http(
        &self,
        target: &Target,
        request_id: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, InvokeError> {
        let (pool, permit) = self.admit(target, request_id, "HTTP")?;
        let mut warm = self.checkout(&pool, request_id).await?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = {
            let mut http = warm.store.data_mut().http();
            let request = request.map(|body| {
                body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
            });
            http.new_incoming_request(Scheme::Http, request)
                .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
        };
        let (req, out) = resources.map_err(|err| InvokeError::Failed {
            function: pool.name.to_string(),
            message: format!("invalid request: {err}"),
        })?;
        let request_id: Arc<str> = request_id.into();
        let task_pool = pool.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let Warm { store, proxy, .. } = &mut warm;
            let proxy = proxy.as_ref().expect("http functions have a proxy");
            let call = proxy
                .wasi_http_incoming_handler()
                .call_handle(store, req, out);
            let result = tokio::time::timeout(task_pool.config.timeout, call).await;
            let outcome = match result {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(err)) => outcome_of(&task_pool, &mut warm, err),
                Err(_) => Outcome::Timeout,
            };
            let summary = outcome.clone();
            task_pool.finish(warm, &outcome, &request_id, started.elapsed());
            drop(permit);
            summary
        });
        match receiver.await {
            Ok(Ok(response)) => {
                Ok(response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
            }
            Ok(Err(code)) => Err(InvokeError::Failed {
                function: pool.name.to_string(),
                message: format!("the function answered with error {code:?}"),
            }),
            Err(_) => Err(match task.await {
                Ok(outcome) => failure(&pool, outcome),
                Err(join) => InvokeError::Failed {
                    function: pool.name.to_string(),
                    message: format!("invocation task failed: {join}"),
                },
            }),
        }
    }

    async fn invoke_event(
        &self,
        target: &Target,
        request_id: &str,
        event: CloudEvent,
    ) -> Result<Option<Vec<u8>>, InvokeError> {
        if self.http_only(target) {
            return self.event_over_http(target, request_id, event).await;
        }
        let (pool, permit) = self.admit(target, request_id, "event")?;
        let mut warm = self.checkout(&pool, request_id).await?;
        let started = Instant::now();
        let event = to_wit(event);
        let Warm {
            store,
            event: handler,
            ..
        } = &mut warm;
        let handler = handler.as_ref().expect("event functions have bindings");
        let call = handler.nimbus_function_handler().call_handle(store, &event);
        let result = tokio::time::timeout(pool.config.timeout, call).await;
        let (outcome, result) = match result {
            Ok(Ok(Ok(output))) => (Outcome::Ok, Ok(output)),
            // The handler ran to completion and reported an error: the instance is fine.
            Ok(Ok(Err(message))) => (Outcome::Ok, Err(InvokeError::Handler(message))),
            Ok(Err(err)) => {
                let outcome = outcome_of(&pool, &mut warm, err);
                let err = failure(&pool, outcome.clone());
                (outcome, Err(err))
            }
            Err(_) => (Outcome::Timeout, Err(failure(&pool, Outcome::Timeout))),
        };
        pool.finish(warm, &outcome, request_id, started.elapsed());
        drop(permit);
        result
    }

    async fn invoke_batch(
        &self,
        target: &Target,
        request_id: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<String>, InvokeError> {
        if self.http_only(target) {
            // One request per event; the ones not answered with 2xx failed.
            let mut failed = Vec::new();
            for event in events {
                let id = event.id.clone();
                match self.event_over_http(target, request_id, event).await {
                    Ok(_) => {}
                    Err(err) if err.is_retryable() => return Err(err),
                    Err(_) => failed.push(id),
                }
            }
            return Ok(failed);
        }
        let (pool, permit) = self.admit(target, request_id, "event")?;
        let mut warm = self.checkout(&pool, request_id).await?;
        let started = Instant::now();
        let events: Vec<_> = events.into_iter().map(to_wit).collect();
        let Warm {
            store,
            event: handler,
            ..
        } = &mut warm;
        let handler = handler.as_ref().expect("event functions have bindings");
        let call = handler
            .nimbus_function_handler()
            .call_handle_batch(store, &events);
        let result = tokio::time::timeout(pool.config.timeout, call).await;
        let (outcome, result) = match result {
            Ok(Ok(Ok(batch))) => (Outcome::Ok, Ok(batch.failed_ids)),
            Ok(Ok(Err(message))) => (Outcome::Ok, Err(InvokeError::Handler(message))),
            Ok(Err(err)) => {
                let outcome = outcome_of(&pool, &mut warm, err);
                let err = failure(&pool, outcome.clone());
                (outcome, Err(err))
            }
            Err(_) => (Outcome::Timeout, Err(failure(&pool, Outcome::Timeout))),
        };
        pool.finish(warm, &outcome, request_id, started.elapsed());
        drop(permit);
        result
    }
}
