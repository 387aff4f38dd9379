//! `GET /metrics`: every meter and gauge of the node in the Prometheus text
//! format (0.0.4), encoded with `prometheus-client`.
//!
//! Counters come from the [`Meters`] the layers record into; gauges (instances,
//! concurrency, queue depth and age, store sizes) from the node status read at
//! scrape time. Each scrape builds a fresh registry around one snapshot, so a
//! scrape is consistent and costs nothing between scrapes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use nimbus_core::api::StatusReport;
use nimbus_core::meter::{DURATION_BUCKETS_MS, Meters, Op};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::control::Control;

#[derive(Clone)]
pub(crate) struct MetricsState {
    pub control: Arc<Control>,
    pub meters: Arc<Meters>,
}

pub(crate) async fn metrics(State(state): State<MetricsState>) -> Response {
    let status = state.control.status().await;
    match render(&state.meters, status) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// The exposition text of `meters` and the gauges in `status`.
pub fn render(meters: &Arc<Meters>, status: StatusReport) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        meters: meters.clone(),
        status,
    }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

struct Scrape {
    meters: Arc<Meters>,
    status: StatusReport,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let apps = self.meters.apps();
        let functions: Vec<_> = apps
            .iter()
            .flat_map(|(app, m)| {
                m.functions().into_iter().map(move |(name, f)| {
                    let labels: Labels =
                        vec![("app", app.to_string()), ("function", name.to_string())];
                    (labels, f.snapshot())
                })
            })
            .collect();
        let per_function = |pick: fn(&nimbus_core::meter::FunctionCounts) -> u64| {
            functions
                .iter()
                .map(move |(labels, c)| (labels.clone(), pick(c)))
        };
        let e = &mut encoder;
        counter(
            e,
            "nimbus_function_invocations",
            "Invocations that ran to an end.",
            per_function(|c| c.invocations),
        )?;
        counter(
            e,
            "nimbus_function_errors",
            "Invocations that trapped, failed or timed out.",
            per_function(|c| c.errors),
        )?;
        counter(
            e,
            "nimbus_function_throttles",
            "Invocations refused at the function's concurrency limit.",
            per_function(|c| c.throttles),
        )?;
        counter(
            e,
            "nimbus_function_timeouts",
            "Invocations stopped at the function's timeout.",
            per_function(|c| c.timeouts),
        )?;
        counter(
            e,
            "nimbus_function_cold_starts",
            "New instances started for an invocation.",
            per_function(|c| c.cold_starts),
        )?;
        counter(
            e,
            "nimbus_function_mb_milliseconds",
            "Billed duration (rounded up to 1 ms) times memory_mb.",
            per_function(|c| c.mb_ms),
        )?;
        {
            let mut family = e.encode_descriptor(
                "nimbus_function_duration_seconds",
                "How long invocations ran.",
                None,
                MetricType::Histogram,
            )?;
            for (labels, c) in &functions {
                let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_MS
                    .iter()
                    .map(|ms| ms / 1000.0)
                    .chain([f64::INFINITY])
                    .zip(c.duration.buckets.iter().copied())
                    .collect();
                family
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(
                        c.duration.sum_us as f64 / 1e6,
                        c.duration.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        let fn_status = self.status.apps.iter().flat_map(|a| {
            a.functions.iter().map(move |f| {
                let labels: Labels = vec![("app", a.name.clone()), ("function", f.name.clone())];
                (labels, f)
            })
        });
        gauge(
            e,
            "nimbus_function_concurrency",
            "Invocations running now.",
            fn_status.clone().map(|(l, f)| (l, f.busy_instances as f64)),
        )?;
        gauge(
            e,
            "nimbus_function_instances",
            "Instances alive now, busy or warm.",
            fn_status.map(|(l, f)| (l, f.live_instances as f64)),
        )?;

        let routes = apps.iter().flat_map(|(app, m)| {
            m.routes().into_iter().flat_map(move |(route, r)| {
                r.snapshot().into_iter().map(move |(status, n)| {
                    let labels: Labels = vec![
                        ("app", app.to_string()),
                        ("route", route.to_string()),
                        ("status", status.to_string()),
                    ];
                    (labels, n)
                })
            })
        });
        counter(
            e,
            "nimbus_http_requests",
            "Gateway responses per route and status.",
            routes,
        )?;
        let app_labels = |app: &Arc<str>| -> Labels { vec![("app", app.to_string())] };
        counter(
            e,
            "nimbus_app_requests",
            "Gateway requests that selected the app.",
            apps.iter().map(|(a, m)| {
                (
                    app_labels(a),
                    m.requests.load(std::sync::atomic::Ordering::Relaxed),
                )
            }),
        )?;
        counter(
            e,
            "nimbus_app_transfer_out_bytes",
            "Response body bytes the gateway sent.",
            apps.iter().map(|(a, m)| {
                (
                    app_labels(a),
                    m.transfer_out_bytes
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            }),
        )?;

        let ops = apps.iter().flat_map(|(app, m)| {
            m.resources().into_iter().flat_map(move |(kind, name, r)| {
                Op::ALL.into_iter().map(move |op| {
                    let labels: Labels = vec![
                        ("app", app.to_string()),
                        ("kind", kind.grant_prefix().to_string()),
                        ("name", name.clone()),
                        ("op", op.as_str().to_string()),
                    ];
                    (labels, r.count(op))
                })
            })
        });
        counter(
            e,
            "nimbus_resource_operations",
            "Reads, writes and deletes per store, queue, topic and bus.",
            ops,
        )?;

        let queues = self
            .status
            .apps
            .iter()
            .flat_map(|a| a.queues.iter().map(move |q| (a.name.clone(), q)));
        let queue_labels = |app: &str, queue: &str, state: Option<&'static str>| -> Labels {
            let mut l = vec![("app", app.to_string()), ("queue", queue.to_string())];
            if let Some(s) = state {
                l.push(("state", s.to_string()));
            }
            l
        };
        gauge(
            e,
            "nimbus_queue_messages",
            "Messages in a queue by state.",
            queues.clone().flat_map(|(app, q)| {
                [
                    ("visible", q.visible),
                    ("in_flight", q.in_flight),
                    ("delayed", q.delayed),
                ]
                .map(|(state, n)| (queue_labels(&app, &q.name, Some(state)), n as f64))
            }),
        )?;
        gauge(
            e,
            "nimbus_queue_oldest_message_age_seconds",
            "Age of the oldest message in a queue.",
            queues.map(|(app, q)| {
                (
                    queue_labels(&app, &q.name, None),
                    q.oldest_age_ms as f64 / 1000.0,
                )
            }),
        )?;

        let stores = self.status.apps.iter().flat_map(|a| {
            a.stores.iter().map(move |s| {
                let labels: Labels = vec![
                    ("app", a.name.clone()),
                    ("kind", s.kind.grant_prefix().to_string()),
                    ("name", s.name.clone()),
                ];
                (labels, s)
            })
        });
        gauge(
            e,
            "nimbus_store_items",
            "Keys, documents or objects in a store.",
            stores.clone().map(|(l, s)| (l, s.items as f64)),
        )?;
        gauge(
            e,
            "nimbus_store_bytes",
            "Bytes stored in a store.",
            stores.map(|(l, s)| (l, s.bytes as f64)),
        )?;
        Ok(())
    }
}
