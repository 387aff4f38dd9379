//! Metrics end to end: `/metrics` on the admin port parses as Prometheus text and
//! its counters match the invocations made; `nimbus status` agrees; gauges show
//! queue depth and store sizes.

use std::collections::HashMap;

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use reqwest::Method;

use crate::support::{AppDir, TestNode, http, text};

pub const APP: &str = r#"
[app]
name = "shop"

[functions.api]
source = "{http}"
memory_mb = 256

[functions.slow]
source = "{http}"
timeout = "200ms"

[queues.orders]

[kv.carts]

[[routes]]
path = "/api/{*path}"
function = "api"

[[routes]]
method = "GET"
path = "/slow/{*path}"
function = "slow"
"#;

/// One scrape, parsed by a Prometheus text-format parser.
pub struct Scrape(MetricsExposition<PrometheusType, PrometheusValue>);

impl Scrape {
    pub async fn take(node: &TestNode) -> Self {
        let response = node.api(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let body = response.text().await.unwrap();
        Self(parse_prometheus(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}")))
    }

    /// The value of the one series of `family` with all of `labels`.
    fn sample(&self, family: &str, labels: &[(&str, &str)]) -> &PrometheusValue {
        let family = self
            .0
            .families
            .get(family)
            .unwrap_or_else(|| panic!("no family {family}"));
        let found: Vec<_> = family
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().unwrap();
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{labels:?}: {found:?}");
        &found[0].value
    }

    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        match self.sample(family, labels) {
            PrometheusValue::Counter(c) => c.value.as_f64(),
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
            other => panic!("{family} is not a number: {other:?}"),
        }
    }

    /// The cumulative buckets of a histogram (upper bound, count) and its count.
    pub fn histogram(&self, family: &str, labels: &[(&str, &str)]) -> (Vec<(f64, f64)>, u64) {
        match self.sample(family, labels) {
            PrometheusValue::Histogram(h) => (
                h.buckets
                    .iter()
                    .map(|b| (b.upper_bound, b.count.as_f64()))
                    .collect(),
                h.count.unwrap(),
            ),
            other => panic!("{family} is not a histogram: {other:?}"),
        }
    }
}

/// Makes `n` gateway requests to `path`, reading each answer whole; returns the
/// statuses seen.
pub async fn hit(node: &TestNode, path: &str, n: usize) -> HashMap<u16, usize> {
    let client = http();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = client
            .get(node.url(path))
            .header("host", "shop.localhost")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        response.bytes().await.unwrap();
        *seen.entry(status).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn metrics_count_what_ran() {
    let node = TestNode::serve();
    let app = AppDir::new(APP);
    node.deploy(app.path());

    assert_eq!(hit(&node, "/api/hello", 5).await, HashMap::from([(200, 5)]));
    assert_eq!(hit(&node, "/api/trap", 2).await, HashMap::from([(500, 2)]));
    assert_eq!(
        hit(&node, "/slow/sleep?ms=2000", 1).await,
        HashMap::from([(504, 1)])
    );
    assert_eq!(hit(&node, "/nope", 1).await, HashMap::from([(404, 1)]));
    for body in ["a", "b"] {
        let out = node.cli(&["queue", "send", "shop/orders", body]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = node.cli(&["kv", "set", "shop/carts", "c1", "three apples"]);
    assert!(out.status.success(), "{}", text(&out));

    let m = Scrape::take(&node).await;
    let api = [("app", "shop"), ("function", "api")];
    let slow = [("app", "shop"), ("function", "slow")];
    assert_eq!(m.value("nimbus_function_invocations_total", &api), 7.0);
    assert_eq!(m.value("nimbus_function_errors_total", &api), 2.0);
    assert_eq!(m.value("nimbus_function_timeouts_total", &api), 0.0);
    assert_eq!(m.value("nimbus_function_invocations_total", &slow), 1.0);
    assert_eq!(m.value("nimbus_function_timeouts_total", &slow), 1.0);
    assert_eq!(m.value("nimbus_function_errors_total", &slow), 1.0);
    assert_eq!(m.value("nimbus_function_throttles_total", &api), 0.0);
    assert!(m.value("nimbus_function_cold_starts_total", &api) >= 1.0);
    assert_eq!(m.value("nimbus_function_concurrency", &api), 0.0);
    // The histogram holds every invocation; the slow one lasted at least 200 ms.
    let (_, count) = m.histogram("nimbus_function_duration_seconds", &api);
    assert_eq!(count, 7);
    let (slow_buckets, _) = m.histogram("nimbus_function_duration_seconds", &slow);
    let under_200ms = slow_buckets.iter().find(|(le, _)| *le == 0.2).unwrap().1;
    assert_eq!(under_200ms, 0.0, "{slow_buckets:?}");
    // Billed: 256 MB times at least 1 ms per invocation.
    assert!(m.value("nimbus_function_mb_milliseconds_total", &api) >= 7.0 * 256.0);

    let route =
        |r: &'static str, status: &'static str| [("app", "shop"), ("route", r), ("status", status)];
    assert_eq!(
        m.value(
            "nimbus_http_requests_total",
            &route("* /api/{*path}", "200")
        ),
        5.0
    );
    assert_eq!(
        m.value(
            "nimbus_http_requests_total",
            &route("* /api/{*path}", "500")
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "nimbus_http_requests_total",
            &route("GET /slow/{*path}", "504")
        ),
        1.0
    );
    assert_eq!(
        m.value("nimbus_app_requests_total", &[("app", "shop")]),
        9.0
    );
    assert!(m.value("nimbus_app_transfer_out_bytes_total", &[("app", "shop")]) > 0.0);

    let orders = [("app", "shop"), ("queue", "orders")];
    let visible = [orders[0], orders[1], ("state", "visible")];
    assert_eq!(m.value("nimbus_queue_messages", &visible), 2.0);
    assert!(m.value("nimbus_queue_oldest_message_age_seconds", &orders) >= 0.0);
    let carts = [("app", "shop"), ("kind", "kv"), ("name", "carts")];
    let ops = |op: &'static str| [carts[0], carts[1], carts[2], ("op", op)];
    assert_eq!(
        m.value("nimbus_resource_operations_total", &ops("write")),
        1.0
    );
    let sent = [
        orders[0],
        ("kind", "queue"),
        ("name", "orders"),
        ("op", "write"),
    ];
    assert_eq!(m.value("nimbus_resource_operations_total", &sent), 2.0);
    assert_eq!(m.value("nimbus_store_items", &carts), 1.0);
    assert!(m.value("nimbus_store_bytes", &carts) >= 12.0);

    // `nimbus status` reads the same counters.
    let status = node.function_status("shop", "api").await;
    assert_eq!(status["invocations"], 7);
    assert_eq!(status["errors"], 2);

    // Without the token there is nothing to read.
    let anonymous = http()
        .get(format!("{}/metrics", node.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
