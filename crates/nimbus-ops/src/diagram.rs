//! The app's architecture, drawn: a deployed [`App`] as the reference
//! architecture's L1 view — channels, edge (routes, public buckets), compute
//! (functions), and the platform services grouped by L0 layer — with an arrow per
//! trigger labelled with its kind. Rendered as SVG (laid out here, in columns by
//! layer), Mermaid or Graphviz DOT.
//!
//! Directions follow the architecture: edge → compute (routes), compute →
//! platform (a function's `uses` and its async destinations), platform → compute
//! (queue and change triggers, subscriptions, rules, schedules).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nimbus_core::app::{App, Destination, Sink, StoreKind};

/// The L0 layers a node sits in, left to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    Channels,
    Edge,
    Compute,
    Data,
    Integration,
    Processing,
}

impl Layer {
    pub fn title(self) -> &'static str {
        match self {
            Self::Channels => "Channels",
            Self::Edge => "Edge",
            Self::Compute => "Compute",
            Self::Data => "Data",
            Self::Integration => "Integration",
            Self::Processing => "Processing",
        }
    }
}

/// How an arrow triggers or reaches its target: the architecture's five
/// trigger kinds, plus a function's use of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SyncRequestResponse,
    AsyncRequestResponse,
    AsyncMessaging,
    PollingQueue,
    PollingStream,
    Uses,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::SyncRequestResponse => "sync request-response",
            Self::AsyncRequestResponse => "async request-response",
            Self::AsyncMessaging => "async messaging",
            Self::PollingQueue => "polling queue",
            Self::PollingStream => "polling stream",
            Self::Uses => "uses",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Self::SyncRequestResponse => "#1f77b4",
            Self::AsyncRequestResponse => "#9467bd",
            Self::AsyncMessaging => "#2ca02c",
            Self::PollingQueue => "#ff7f0e",
            Self::PollingStream => "#d62728",
            Self::Uses => "#7f7f7f",
        }
    }

    const ALL: [Self; 6] = [
        Self::SyncRequestResponse,
        Self::AsyncRequestResponse,
        Self::AsyncMessaging,
        Self::PollingQueue,
        Self::PollingStream,
        Self::Uses,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub layer: Layer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: Kind,
    /// What the arrow is, e.g. `trigger orders-worker`, `rule big-orders`.
    pub note: String,
}

#[derive(Debug, Clone, Default)]
pub struct Diagram {
    pub app: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

fn store_id(kind: StoreKind, name: &str) -> String {
    format!("{}:{name}", kind.grant_prefix())
}

fn store_layer(kind: StoreKind) -> Layer {
    match kind {
        StoreKind::Kv | StoreKind::Docs | StoreKind::Buckets => Layer::Data,
        StoreKind::Queues | StoreKind::Topics | StoreKind::Bus => Layer::Integration,
    }
}

impl Diagram {
    /// The diagram of `app`.
    pub fn of(app: &App) -> Self {
        let mut d = Diagram {
            app: app.name.clone(),
            ..Diagram::default()
        };
        if !app.routes.is_empty() || app.buckets.values().any(|b| b.public) {
            d.node("clients", "HTTP clients", Layer::Channels);
        }
        for route in &app.routes {
            let label = format!("{} {}", route.method.as_deref().unwrap_or("*"), route.path);
            let id = format!("route:{label}");
            d.node(&id, &label, Layer::Edge);
            d.edge("clients", &id, Kind::SyncRequestResponse, "HTTP");
            let f = format!("fn:{}", route.function);
            d.edge(&id, &f, Kind::SyncRequestResponse, "route");
        }
        for (name, bucket) in app.buckets.iter().filter(|(_, b)| b.public) {
            let id = format!("public:{name}");
            d.node(&id, &format!("GET {} (public)", bucket.mount), Layer::Edge);
            d.edge("clients", &id, Kind::SyncRequestResponse, "HTTP");
            let store = store_id(StoreKind::Buckets, name);
            d.edge(&id, &store, Kind::SyncRequestResponse, "static files");
        }
        for (name, f) in &app.functions {
            d.node(&format!("fn:{name}"), name, Layer::Compute);
            for grant in &f.uses {
                let id = match grant.kind {
                    StoreKind::Bus => d.bus_of(&grant.name, &app.name),
                    kind => store_id(kind, &grant.name),
                };
                d.edge(&format!("fn:{name}"), &id, Kind::Uses, "uses");
            }
            for (when, dest) in [("on success", &f.on_success), ("on failure", &f.on_failure)] {
                let Some(dest) = dest else { continue };
                let to = match dest {
                    Destination::Queue(q) => store_id(StoreKind::Queues, q),
                    Destination::Topic(t) => store_id(StoreKind::Topics, t),
                    Destination::Function(g) => format!("fn:{g}"),
                    Destination::Bus(other) => d.bus_of(other, &app.name),
                };
                d.edge(&format!("fn:{name}"), &to, Kind::AsyncRequestResponse, when);
            }
        }
        for kind in StoreKind::ALL {
            let names: Vec<&String> = match kind {
                StoreKind::Kv => app.kv.keys().collect(),
                StoreKind::Docs => app.docs.keys().collect(),
                StoreKind::Buckets => app.buckets.keys().collect(),
                StoreKind::Queues => app.queues.keys().collect(),
                StoreKind::Topics => app.topics.keys().collect(),
                StoreKind::Bus => Vec::new(),
            };
            for name in names {
                let label = format!("{} {name}", kind.grant_prefix());
                d.node(&store_id(kind, name), &label, store_layer(kind));
            }
        }
        if !app.bus.rules.is_empty() {
            d.node("bus", "event bus", Layer::Integration);
        }
        for t in &app.triggers {
            let from = store_id(StoreKind::Queues, &t.queue);
            let note = format!("trigger {}", t.name);
            d.edge(
                &from,
                &format!("fn:{}", t.function),
                Kind::PollingQueue,
                &note,
            );
        }
        for t in &app.change_triggers {
            let from = store_id(t.kind, &t.store);
            let note = format!("changes, trigger {}", t.name);
            d.edge(
                &from,
                &format!("fn:{}", t.function),
                Kind::PollingStream,
                &note,
            );
        }
        for (topic, decl) in &app.topics {
            let from = store_id(StoreKind::Topics, topic);
            for s in &decl.subscriptions {
                let to = d.sink(&s.target.destination, &app.name);
                d.edge(&from, &to, Kind::AsyncMessaging, "subscription");
            }
        }
        for (name, rule) in &app.bus.rules {
            for target in &rule.targets {
                let to = d.sink(&target.destination, &app.name);
                d.edge("bus", &to, Kind::AsyncMessaging, &format!("rule {name}"));
            }
        }
        for (name, s) in &app.schedules {
            let id = format!("schedule:{name}");
            d.node(&id, &format!("schedule {name}"), Layer::Processing);
            let to = d.sink(&s.target.destination, &app.name);
            d.edge(&id, &to, Kind::AsyncMessaging, "schedule");
        }
        d
    }

    fn node(&mut self, id: &str, label: &str, layer: Layer) {
        if !self.nodes.iter().any(|n| n.id == id) {
            self.nodes.push(Node {
                id: id.into(),
                label: label.into(),
                layer,
            });
        }
    }

    fn edge(&mut self, from: &str, to: &str, kind: Kind, note: &str) {
        let edge = Edge {
            from: from.into(),
            to: to.into(),
            kind,
            note: note.into(),
        };
        if !self.edges.contains(&edge) {
            self.edges.push(edge);
        }
    }

    /// The node of another app's bus (this app's is `bus`).
    fn bus_of(&mut self, other: &str, this: &str) -> String {
        if other == this {
            self.node("bus", "event bus", Layer::Integration);
            return "bus".into();
        }
        let id = format!("bus:{other}");
        self.node(&id, &format!("bus of app {other}"), Layer::Integration);
        id
    }

    fn sink(&mut self, sink: &Sink, this: &str) -> String {
        match sink {
            Sink::Function(f) => format!("fn:{f}"),
            Sink::Queue(q) => store_id(StoreKind::Queues, q),
            Sink::Topic(t) => store_id(StoreKind::Topics, t),
            Sink::Bus(other) => self.bus_of(other, this),
            Sink::Webhook { url, .. } => {
                let id = format!("webhook:{url}");
                self.node(&id, &format!("webhook {url}"), Layer::Channels);
                id
            }
        }
    }

    /// The nodes of `layer` in natural order (`worker2` before `worker10`).
    fn nodes_in(&self, layer: Layer) -> impl Iterator<Item = &Node> {
        let mut nodes: Vec<&Node> = self.nodes.iter().filter(|n| n.layer == layer).collect();
        nodes.sort_by_cached_key(|n| natural_key(&n.id));
        nodes.into_iter()
    }

    const LAYERS: [Layer; 6] = [
        Layer::Channels,
        Layer::Edge,
        Layer::Compute,
        Layer::Data,
        Layer::Integration,
        Layer::Processing,
    ];

    /// Mermaid `flowchart LR`, one subgraph per layer.
    pub fn mermaid(&self) -> String {
        let ids: BTreeMap<&str, String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
            .collect();
        let quote = |s: &str| s.replace('"', "#quot;");
        let mut out = format!("---\ntitle: app {}\n---\nflowchart LR\n", self.app);
        for layer in Self::LAYERS {
            let nodes: Vec<&Node> = self.nodes_in(layer).collect();
            if nodes.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "  subgraph {}[\"{}\"]",
                layer.title().to_lowercase(),
                layer.title()
            );
            for n in nodes {
                let _ = writeln!(out, "    {}[\"{}\"]", ids[n.id.as_str()], quote(&n.label));
            }
            out.push_str("  end\n");
        }
        for e in self.drawable() {
            let arrow = if e.kind == Kind::Uses { "-.->" } else { "-->" };
            let _ = writeln!(
                out,
                "  {} {arrow}|\"{}\"| {}",
                ids[e.from.as_str()],
                e.kind.label(),
                ids[e.to.as_str()]
            );
        }
        out
    }

    /// Graphviz DOT, one cluster per layer, left to right.
    pub fn dot(&self) -> String {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
            quote(&self.app)
        );
        for (i, layer) in Self::LAYERS.into_iter().enumerate() {
            let nodes: Vec<&Node> = self.nodes_in(layer).collect();
            if nodes.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "  subgraph cluster_{i} {{\n    label=\"{}\";",
                layer.title()
            );
            for n in nodes {
                let _ = writeln!(
                    out,
                    "    \"{}\" [label=\"{}\"];",
                    quote(&n.id),
                    quote(&n.label)
                );
            }
            out.push_str("  }\n");
        }
        for e in self.drawable() {
            let style = if e.kind == Kind::Uses {
                ", style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{}\"{style}];",
                quote(&e.from),
                quote(&e.to),
                e.kind.label(),
                e.kind.color()
            );
        }
        out.push_str("}\n");
        out
    }

    /// Edges whose both ends are nodes (a route to an undeclared function cannot
    /// be deployed, but a diagram never panics on one).
    fn drawable(&self) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(|e| {
            self.nodes.iter().any(|n| n.id == e.from) && self.nodes.iter().any(|n| n.id == e.to)
        })
    }

    /// A standalone SVG: one column per layer (the platform layers share the last
    /// column, headed by layer), boxes in declaration order, curved arrows coloured
    /// and labelled by kind, and a legend.
    pub fn svg(&self) -> String {
        const BOX_W: f64 = 210.0;
        const BOX_H: f64 = 30.0;
        const ROW: f64 = 44.0;
        const COL: f64 = 330.0;
        const TOP: f64 = 70.0;
        let column = |layer: Layer| match layer {
            Layer::Channels => 0,
            Layer::Edge => 1,
            Layer::Compute => 2,
            _ => 3,
        };
        let mut place: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut heights = [TOP; 4];
        let mut headings = Vec::new();
        for layer in Self::LAYERS {
            let c = column(layer);
            let nodes: Vec<&Node> = self.nodes_in(layer).collect();
            if nodes.is_empty() {
                continue;
            }
            let x = 30.0 + c as f64 * COL;
            headings.push((x, heights[c] - 14.0, layer.title()));
            for n in nodes {
                place.insert(&n.id, (x, heights[c]));
                heights[c] += ROW;
            }
            heights[c] += 28.0;
        }
        let legend_y = heights.iter().cloned().fold(TOP, f64::max) + 10.0;
        // Room on the right for arrows within the last column.
        let width = 30.0 + 3.0 * COL + BOX_W + 110.0;
        let height = legend_y + 30.0 + Kind::ALL.len() as f64 * 20.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
        );
        out.push_str(r#"<defs>"#);
        for kind in Kind::ALL {
            let _ = write!(
                out,
                r#"<marker id="arrow-{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{c}"/></marker>"#,
                k = kind as u8,
                c = kind.color()
            );
        }
        out.push_str("</defs>\n");
        let _ = writeln!(
            out,
            r#"<rect width="100%" height="100%" fill="white"/><text x="30" y="30" font-size="18" font-weight="bold">app {}</text>"#,
            xml(&self.app)
        );
        for (x, y, title) in headings {
            let _ = writeln!(
                out,
                r##"<text x="{x}" y="{y}" font-size="13" font-weight="bold" fill="#444">{title}</text>"##
            );
        }
        for e in self.drawable() {
            let (Some(&(x1, y1)), Some(&(x2, y2))) =
                (place.get(e.from.as_str()), place.get(e.to.as_str()))
            else {
                continue;
            };
            let (ya, yb) = (y1 + BOX_H / 2.0, y2 + BOX_H / 2.0);
            // Left to right, right to left, or within a column (a loop on the right).
            let (sx, tx, c1, c2) = if x2 > x1 {
                let (s, t) = (x1 + BOX_W, x2);
                (s, t, s + (t - s) / 2.0, t - (t - s) / 2.0)
            } else if x2 < x1 {
                let (s, t) = (x1, x2 + BOX_W);
                (s, t, s - (s - t) / 2.0, t + (s - t) / 2.0)
            } else {
                let s = x1 + BOX_W;
                (s, s, s + 50.0, s + 50.0)
            };
            let _ = writeln!(
                out,
                r#"<path d="M {sx} {ya} C {c1} {ya}, {c2} {yb}, {tx} {yb}" fill="none" stroke="{c}" stroke-width="1.4"{dash} marker-end="url(#arrow-{k})"><title>{t}: {n}</title></path>"#,
                c = e.kind.color(),
                dash = if e.kind == Kind::Uses {
                    r#" stroke-dasharray="5 3""#
                } else {
                    ""
                },
                k = e.kind as u8,
                t = e.kind.label(),
                n = xml(&e.note),
            );
            if e.kind == Kind::Uses {
                // Dashed grey says it; labels on every grant would bury the picture.
                continue;
            }
            // The label sits at 60% of the curve, where fanned-out arrows have
            // spread apart and the text still fits between the columns.
            let (lx, ly) = if x1 == x2 {
                (sx + 40.0, (ya + yb) / 2.0)
            } else {
                (0.424 * sx + 0.576 * tx, ya + (yb - ya) * 0.648 - 3.0)
            };
            let _ = writeln!(
                out,
                r#"<text x="{lx}" y="{ly}" font-size="9" text-anchor="middle" fill="{c}" stroke="white" stroke-width="3" paint-order="stroke">{t}</text>"#,
                c = e.kind.color(),
                t = e.kind.label()
            );
        }
        for n in &self.nodes {
            let Some(&(x, y)) = place.get(n.id.as_str()) else {
                continue;
            };
            let fill = match n.layer {
                Layer::Channels => "#f2f2f2",
                Layer::Edge => "#e8f0fb",
                Layer::Compute => "#fff4e0",
                Layer::Data => "#e9f6ea",
                Layer::Integration => "#f3ecf9",
                Layer::Processing => "#fdecec",
            };
            let label = if n.label.chars().count() > 30 {
                format!("{}…", n.label.chars().take(29).collect::<String>())
            } else {
                n.label.clone()
            };
            let _ = writeln!(
                out,
                r##"<g><title>{full}</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#555"/><text x="{tx}" y="{ty}" font-size="13" text-anchor="middle">{label}</text></g>"##,
                full = xml(&n.label),
                tx = x + BOX_W / 2.0,
                ty = y + BOX_H / 2.0 + 4.5,
                label = xml(&label),
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="30" y="{legend_y}" font-size="12" font-weight="bold" fill="#444">Arrows</text>"##
        );
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let y = legend_y + 18.0 + i as f64 * 20.0;
            let _ = writeln!(
                out,
                r#"<line x1="30" y1="{y}" x2="70" y2="{y}" stroke="{c}" stroke-width="2"/><text x="80" y="{ty}" font-size="12">{t}</text>"#,
                c = kind.color(),
                ty = y + 4.0,
                t = kind.label()
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// Sorts digit runs by value: `(text, number)` pieces.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = u64::from(c as u8 - b'0');
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(u64::from(d));
                chars.next();
            }
            key.push((std::mem::take(&mut text), n));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::manifest::Manifest;

    const APP: &str = r#"
[app]
name = "orders"

[functions.api]
source = "api.wasm"
uses = ["kv:carts", "queue:jobs", "bus:orders"]

[functions.worker]
source = "w.wasm"
on_failure = { queue = "failed" }

[functions.audit]
source = "a.wasm"

[kv.carts]
[queues.jobs]
[queues.failed]

[topics.news]
subscriptions = [{ function = "audit" }]

[[triggers]]
queue = "jobs"
function = "worker"

[[triggers]]
kv = "carts"
function = "audit"

[bus.rules.big]
pattern = { type = ["order.placed"] }
targets = [{ function = "worker" }]

[schedules.nightly]
cron = "0 3 * * *"
target = { topic = "news" }

[[routes]]
method = "POST"
path = "/orders"
function = "api"
"#;

    fn diagram() -> Diagram {
        Diagram::of(&Manifest::parse("nimbus.toml", APP).unwrap().app)
    }

    fn has(d: &Diagram, from: &str, to: &str, kind: Kind) -> bool {
        d.edges
            .iter()
            .any(|e| e.from == from && e.to == to && e.kind == kind)
    }

    #[test]
    fn every_trigger_has_its_kind_and_direction() {
        let d = diagram();
        let route = "route:POST /orders";
        assert!(has(&d, "clients", route, Kind::SyncRequestResponse));
        assert!(has(&d, route, "fn:api", Kind::SyncRequestResponse));
        assert!(has(&d, "fn:api", "kv:carts", Kind::Uses));
        assert!(has(&d, "fn:api", "queue:jobs", Kind::Uses));
        assert!(has(&d, "fn:api", "bus", Kind::Uses));
        assert!(has(&d, "queue:jobs", "fn:worker", Kind::PollingQueue));
        assert!(has(&d, "kv:carts", "fn:audit", Kind::PollingStream));
        assert!(has(&d, "topic:news", "fn:audit", Kind::AsyncMessaging));
        assert!(has(&d, "bus", "fn:worker", Kind::AsyncMessaging));
        assert!(has(
            &d,
            "schedule:nightly",
            "topic:news",
            Kind::AsyncMessaging
        ));
        assert!(has(
            &d,
            "fn:worker",
            "queue:failed",
            Kind::AsyncRequestResponse
        ));
        let layer = |id: &str| d.nodes.iter().find(|n| n.id == id).unwrap().layer;
        assert_eq!(layer("kv:carts"), Layer::Data);
        assert_eq!(layer("queue:jobs"), Layer::Integration);
        assert_eq!(layer("schedule:nightly"), Layer::Processing);
        assert_eq!(layer("fn:audit"), Layer::Compute);
    }

    #[test]
    fn every_format_names_every_node_and_kind() {
        let d = diagram();
        let (svg, mermaid, dot) = (d.svg(), d.mermaid(), d.dot());
        for n in &d.nodes {
            assert!(svg.contains(&xml(&n.label)), "svg lacks {}", n.label);
            assert!(mermaid.contains(&n.label), "mermaid lacks {}", n.label);
            assert!(dot.contains(&n.label), "dot lacks {}", n.label);
        }
        for kind in Kind::ALL {
            assert!(svg.contains(kind.label()));
            assert!(mermaid.contains(kind.label()));
            assert!(dot.contains(kind.label()));
        }
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(mermaid.contains("flowchart LR") && mermaid.contains("subgraph compute"));
        assert!(dot.starts_with("digraph") && dot.contains("cluster_"));
    }
}
