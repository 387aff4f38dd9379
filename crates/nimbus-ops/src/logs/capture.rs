//! The `tracing` layer that turns the node's log events about an app into
//! [`LogRecord`]s: an event with an `app` field belongs to that app (and to a
//! function with a `function` field, to an invocation with `request_id`).
//! Guest output arrives as events of target `guest` with a `stream` field.
//!
//! The layer exists before the node opens its store (it is installed with the
//! subscriber at start-up), so it holds a [`Capture`] handle the node attaches
//! the store to; until then, and in client verbs, it records nothing.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

use super::{Level, LogRecord, LogStore};

/// Where captured records go, once the node has opened its store.
#[derive(Clone, Default)]
pub struct Capture(Arc<OnceLock<Arc<LogStore>>>);

impl Capture {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every later record to `store`. Only the first call counts.
    pub fn attach(&self, store: Arc<LogStore>) {
        let _ = self.0.set(store);
    }

    /// The layer to install in the subscriber.
    pub fn layer(&self) -> CaptureLayer {
        CaptureLayer(self.clone())
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("attached", &self.0.get().is_some())
            .finish()
    }
}

pub struct CaptureLayer(Capture);

impl<S: Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(store) = self.0.0.get() else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(app) = fields.app else { return };
        let guest = event.metadata().target() == "guest";
        let stream = match (guest, fields.stream) {
            (true, Some(stream)) => stream,
            _ => "platform".into(),
        };
        // What a function writes to stderr is its error output.
        let level = if guest && stream == "stderr" {
            Level::Error
        } else {
            match *event.metadata().level() {
                tracing::Level::TRACE => Level::Trace,
                tracing::Level::DEBUG => Level::Debug,
                tracing::Level::INFO => Level::Info,
                tracing::Level::WARN => Level::Warn,
                tracing::Level::ERROR => Level::Error,
            }
        };
        store.append(LogRecord {
            seq: 0,
            time: nimbus_data::catalog::now_ms(),
            app,
            function: fields.function.unwrap_or_default(),
            invocation: fields.request_id.unwrap_or_default(),
            trace: fields.trace_id.unwrap_or_default(),
            level,
            stream,
            message: fields.message,
        });
    }
}

/// The fields of one event: the known ones by name, the others appended to the
/// message as `name=value`.
#[derive(Default)]
struct Fields {
    app: Option<String>,
    function: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
    stream: Option<String>,
    message: String,
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "app" => self.app = Some(value),
            "function" => self.function = Some(value),
            "request_id" => self.request_id = Some(value).filter(|v| !v.is_empty()),
            "trace_id" => self.trace_id = Some(value),
            "stream" => self.stream = Some(value),
            "message" => {
                let rest = std::mem::take(&mut self.message);
                self.message = value;
                self.message.push_str(&rest);
            }
            name => {
                let _ = write!(self.message, " {name}={value}");
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogConfig, LogQuery};
    use tracing_subscriber::prelude::*;

    #[test]
    fn events_with_an_app_become_records_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), LogConfig::default()).unwrap();
        let capture = Capture::new();
        capture.attach(store.clone());
        let subscriber = tracing_subscriber::registry().with(capture.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("node-wide, not an app's");
            tracing::info!(target: "guest", app = "shop", function = "api", request_id = "r1", stream = "stderr", "oops");
            tracing::warn!(
                app = "shop",
                function = "api",
                request_id = "r2",
                "timed out after {}ms",
                5
            );
            tracing::warn!(app = "shop", rule = "big", "gave up");
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let page = loop {
            let page = store
                .query(&LogQuery {
                    app: "shop".into(),
                    limit: 10,
                    ..LogQuery::default()
                })
                .unwrap();
            if page.records.len() == 3 || std::time::Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let got: Vec<_> = page
            .records
            .iter()
            .map(|r| {
                (
                    r.function.as_str(),
                    r.invocation.as_str(),
                    r.level,
                    r.stream.as_str(),
                    r.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("api", "r1", Level::Error, "stderr", "oops"),
                ("api", "r2", Level::Warn, "platform", "timed out after 5ms"),
                ("", "", Level::Warn, "platform", "gave up rule=big"),
            ]
        );
    }
}
