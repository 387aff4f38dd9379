//! The resolved, validated application: what the runtime sees. Every default is
//! filled in and the order is deterministic, so two resolutions of the same
//! manifest compare equal and a deployment plan is a plain diff.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A validated application, ready to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    /// Extra host names that select this app at the gateway (besides `NAME.localhost`).
    pub hosts: Vec<String>,
    pub functions: BTreeMap<String, Function>,
    /// Routes in manifest order.
    pub routes: Vec<Route>,
    #[serde(default)]
    pub kv: BTreeMap<String, KvStoreDecl>,
    #[serde(default)]
    pub docs: BTreeMap<String, DocStoreDecl>,
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketDecl>,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueDecl>,
    /// Event-source mappings, in manifest order.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// `[[triggers]]` on a store's changes (`bucket`, `kv` or `docs`), in manifest order.
    #[serde(default)]
    pub change_triggers: Vec<ChangeTrigger>,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicDecl>,
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleDecl>,
    /// The app's event bus: its rules (every app has one bus).
    #[serde(default)]
    pub bus: BusDecl,
    /// `[quotas]`; unset limits are unlimited.
    #[serde(default, skip_serializing_if = "crate::meter::Quotas::is_unlimited")]
    pub quotas: crate::meter::Quotas,
}

/// `[bus]` and `[bus.rules.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusDecl {
    /// How long put events are kept for replay; zero keeps none.
    #[serde(with = "duration_ms")]
    pub archive: Duration,
    pub rules: BTreeMap<String, Rule>,
}

impl Default for BusDecl {
    fn default() -> Self {
        Self {
            archive: Duration::from_secs(24 * 3600),
            rules: BTreeMap::new(),
        }
    }
}

/// A bus rule: events matching `pattern` go to each of `targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// The pattern as written (JSON), valid: see [`crate::pattern`].
    pub pattern: serde_json::Value,
    pub targets: Vec<RuleTarget>,
    pub enabled: bool,
}

/// `[schedules.NAME]`: an event emitted at each slot of a cron expression or a
/// rate, delivered to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDecl {
    pub name: String,
    pub when: When,
    pub target: RuleTarget,
    /// The event's `data` (JSON); the target's input transform applies on top.
    pub payload: serde_json::Value,
    /// After downtime, fire the most recent missed slot once on start.
    pub catch_up: bool,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// A cron expression ([`crate::cron`]) read in an IANA time zone.
    Cron { expr: String, timezone: String },
    /// Every so long, on multiples of the period since the Unix epoch.
    Rate {
        #[serde(with = "duration_ms")]
        every: Duration,
    },
}

/// Where the bus or a topic delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// An async invocation of a function of the app.
    Function(String),
    /// A message in a queue of the app.
    Queue(String),
    /// A message published to a topic of the app.
    Topic(String),
    /// An event put into the bus of app `APP` (another app's, or this one's).
    Bus(String),
    /// A signed HTTPS POST (topic subscriptions).
    Webhook { url: String, secret: String },
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Function(n) => write!(f, "function {n}"),
            Self::Queue(n) => write!(f, "queue {n}"),
            Self::Topic(n) => write!(f, "topic {n}"),
            Self::Bus(app) => write!(f, "bus {app}"),
            Self::Webhook { url, .. } => write!(f, "webhook {url}"),
        }
    }
}

/// `[topics.NAME]`: a notification topic and its declared subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDecl {
    pub subscriptions: Vec<Subscription>,
}

/// A topic subscription: messages whose attributes pass `filter` go to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// A filter policy over the message attributes (a pattern, see
    /// [`crate::pattern`]); none: every message.
    pub filter: Option<serde_json::Value>,
    pub target: RuleTarget,
}

/// One target of a rule, with its own delivery retries and dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTarget {
    pub destination: Sink,
    #[serde(default)]
    pub input: Input,
    /// Delivery attempts after the first, with exponential backoff.
    #[serde(default = "default_target_retries")]
    pub retries: u32,
    /// Delivery stops (and the event goes to `dead_letter`) once the event is this old.
    #[serde(with = "duration_ms", default = "default_target_max_event_age")]
    pub max_event_age: Duration,
    /// A queue of this app for events that could not be delivered.
    #[serde(default)]
    pub dead_letter: Option<String>,
}

fn default_target_retries() -> u32 {
    185
}

fn default_target_max_event_age() -> Duration {
    Duration::from_secs(3600)
}

/// What a target receives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The whole CloudEvent.
    #[default]
    Event,
    /// A part of it: `$.data.order` (a JSONPath of names and indexes).
    Path(String),
    /// A template whose `<$.path>` placeholders are replaced by parts of the event.
    Template(String),
}

impl App {
    /// The host names that select this app at the gateway.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts = vec![format!("{}.localhost", self.name)];
        hosts.extend(self.hosts.iter().cloned());
        hosts
    }

    /// Every store (and queue) the app declares, in a stable order.
    pub fn stores(&self) -> Vec<(StoreKind, &str)> {
        let mut all: Vec<(StoreKind, &str)> = Vec::new();
        all.extend(self.kv.keys().map(|n| (StoreKind::Kv, n.as_str())));
        all.extend(self.docs.keys().map(|n| (StoreKind::Docs, n.as_str())));
        all.extend(
            self.buckets
                .keys()
                .map(|n| (StoreKind::Buckets, n.as_str())),
        );
        all.extend(self.queues.keys().map(|n| (StoreKind::Queues, n.as_str())));
        all
    }

    /// Whether the app declares store `name` of `kind`.
    pub fn has_store(&self, kind: StoreKind, name: &str) -> bool {
        match kind {
            StoreKind::Kv => self.kv.contains_key(name),
            StoreKind::Docs => self.docs.contains_key(name),
            StoreKind::Buckets => self.buckets.contains_key(name),
            StoreKind::Queues => self.queues.contains_key(name),
            StoreKind::Topics => self.topics.contains_key(name),
            StoreKind::Bus => name == self.name,
        }
    }
}

/// The kinds of resource a function can be granted (`uses`): stores of the data
/// layer and queues of the integration layer, which hold an app's data and are
/// declared, granted and deleted alike; and topics and the app's bus, which are
/// granted but hold nothing to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Kv,
    Docs,
    Buckets,
    Queues,
    Topics,
    Bus,
}

impl StoreKind {
    pub const ALL: [StoreKind; 6] = [
        Self::Kv,
        Self::Docs,
        Self::Buckets,
        Self::Queues,
        Self::Topics,
        Self::Bus,
    ];

    /// The manifest section and the `KIND` of change event sources: `kv`, `docs`, `buckets`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Docs => "docs",
            Self::Buckets => "buckets",
            Self::Queues => "queues",
            Self::Topics => "topics",
            Self::Bus => "bus",
        }
    }

    /// The prefix of a grant in `uses`: `kv:`, `docs:`, `bucket:`, `queue:`,
    /// `topic:`, `bus:` (naming the app).
    pub fn grant_prefix(self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Docs => "docs",
            Self::Buckets => "bucket",
            Self::Queues => "queue",
            Self::Topics => "topic",
            Self::Bus => "bus",
        }
    }

    /// What a user calls one store of this kind in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Kv => "key-value store",
            Self::Docs => "document store",
            Self::Buckets => "bucket",
            Self::Queues => "queue",
            Self::Topics => "topic",
            Self::Bus => "event bus",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kv" => Some(Self::Kv),
            "docs" => Some(Self::Docs),
            "buckets" | "bucket" => Some(Self::Buckets),
            "queues" | "queue" => Some(Self::Queues),
            _ => None,
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[kv.NAME]`: a key-value store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStoreDecl {}

/// `[docs.NAME]`: a collection of JSON documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocStoreDecl {
    /// Field paths (`status`, `customer.id`) with an index, in manifest order.
    pub indexes: Vec<String>,
}

/// `[buckets.NAME]`: an object store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDecl {
    /// Serve objects read-only through the gateway.
    pub public: bool,
    /// Where a public bucket is served at the gateway (`/NAME` unless set).
    pub mount: String,
    /// Object served for a path that ends in `/` (public buckets).
    pub index_document: String,
}

/// `[queues.NAME]`: a message queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDecl {
    /// How long a received message stays invisible.
    #[serde(with = "duration_ms")]
    pub visibility_timeout: Duration,
    /// How long a message is kept before it is dropped unreceived.
    #[serde(with = "duration_ms")]
    pub retention: Duration,
    /// Delay of every send (standard queues).
    #[serde(with = "duration_ms")]
    pub delay: Duration,
    /// Largest message body, bytes.
    pub max_message_size: usize,
    /// First-in-first-out per group id, with deduplication.
    pub fifo: bool,
    pub dead_letter: Option<DeadLetter>,
}

/// Where messages received too often go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// A queue declared in the same manifest.
    pub queue: String,
    /// A message received more often than this moves to `queue`.
    pub max_receives: u32,
}

/// One entry of a function's `uses`: the store it may touch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub kind: StoreKind,
    pub name: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.grant_prefix(), self.name)
    }
}

/// One function of an app, with every limit resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    /// Path of the component, relative to the manifest's folder.
    pub source: String,
    /// SHA-256 (hex) of the component bytes; empty until the loader has read them.
    pub digest: String,
    pub build: Option<String>,
    pub memory_mb: u64,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub concurrency: u32,
    pub min_instances: u32,
    pub env: BTreeMap<String, String>,
    pub allowed_outbound_hosts: Vec<OutboundHost>,
    /// Reuse a warm instance for later requests (Lambda execution environments).
    pub reuse: bool,
    /// Requests one instance serves before it is replaced.
    pub max_reuse: u64,
    /// Idle time after which a warm instance above `min_instances` is dropped.
    #[serde(with = "duration_ms")]
    pub idle_timeout: Duration,
    /// The stores this function may touch.
    #[serde(default)]
    pub uses: Vec<Grant>,
    /// Async invocations: retries after a failed attempt.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Async invocations: an event older than this is not tried again.
    #[serde(with = "duration_ms", default = "default_max_event_age")]
    pub max_event_age: Duration,
    /// Async invocations: where the record of a success goes.
    #[serde(default)]
    pub on_success: Option<Destination>,
    /// Async invocations: where the record of a final failure goes.
    #[serde(default)]
    pub on_failure: Option<Destination>,
}

fn default_retries() -> u32 {
    2
}

fn default_max_event_age() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// Where an async invocation's outcome is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Queue(String),
    Function(String),
    /// A message (the record) published to a topic of the app.
    Topic(String),
    /// An event (the record as data) put into the bus of app `APP`.
    Bus(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Queue(q) => write!(f, "queue `{q}`"),
            Self::Function(func) => write!(f, "function `{func}`"),
            Self::Topic(t) => write!(f, "topic `{t}`"),
            Self::Bus(app) => write!(f, "the bus of `{app}`"),
        }
    }
}

/// `[[triggers]]` with `queue`: a poller that delivers batches of a queue's
/// messages to a function's event handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Unique in the app: `name`, or `QUEUE-FUNCTION`.
    pub name: String,
    pub queue: String,
    pub function: String,
    /// Messages per invocation.
    pub batch_size: u32,
    /// How long to gather a batch before invoking with fewer messages.
    #[serde(with = "duration_ms")]
    pub max_batching_window: Duration,
    /// Concurrent invocations (pollers) at most.
    pub max_concurrency: u32,
    /// Deployed enabled; `nimbus trigger disable|enable` changes it at run time.
    pub enabled: bool,
}

impl Function {
    /// Whether the function's `uses` grants access to store `name` of `kind`.
    pub fn may_use(&self, kind: StoreKind, name: &str) -> bool {
        self.uses.iter().any(|g| g.kind == kind && g.name == name)
    }
}

/// `[[triggers]]` with `bucket`, `kv` or `docs`: the store's changes, filtered,
/// delivered one at a time in feed order (so in order per key) to a function's
/// event handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeTrigger {
    /// Unique among the app's triggers: `name`, or `STORE-FUNCTION`.
    pub name: String,
    pub kind: StoreKind,
    pub store: String,
    pub function: String,
    /// Change kinds delivered (`created`, `deleted`, ...); empty: all.
    pub events: Vec<String>,
    /// Only keys (ids) starting and ending so.
    pub prefix: String,
    pub suffix: String,
    /// Attempts after the first for a change the function fails; then it is skipped.
    pub retries: u32,
    pub enabled: bool,
}

impl ChangeTrigger {
    /// The change kinds a store of `kind` emits (the last part of their CloudEvent type).
    pub fn kinds_of(kind: StoreKind) -> &'static [&'static str] {
        match kind {
            StoreKind::Kv => &["set", "deleted", "expired"],
            StoreKind::Docs => &["created", "updated", "deleted"],
            StoreKind::Buckets => &["created", "deleted"],
            StoreKind::Queues | StoreKind::Topics | StoreKind::Bus => &[],
        }
    }

    /// Whether a change of CloudEvent `ty` to key `subject` is delivered.
    pub fn wants(&self, ty: &str, subject: &str) -> bool {
        let kind = ty.rsplit('.').next().unwrap_or_default();
        (self.events.is_empty() || self.events.iter().any(|e| e == kind))
            && subject.starts_with(&self.prefix)
            && subject.ends_with(&self.suffix)
    }
}

/// One gateway route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Upper-case method, or `None` for any method.
    pub method: Option<String>,
    /// Path pattern with `{param}` segments and an optional trailing `{*rest}`.
    pub path: String,
    pub function: String,
}

impl Route {
    /// The key that identifies a route in plans: `GET /carts/{id}` or `* /x`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method.as_deref().unwrap_or("*"), self.path)
    }
}

/// An entry of `allowed_outbound_hosts`: `host`, `host:port` or `scheme://host[:port]`;
/// the host may start with `*.` and the port may be `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundHost {
    pub scheme: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl OutboundHost {
    /// Parses one `allowed_outbound_hosts` entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                if scheme != "http" && scheme != "https" {
                    return Err(format!(
                        "unsupported scheme `{scheme}` in `{text}` (use http or https)"
                    ));
                }
                (Some(scheme.to_string()), rest)
            }
            None => (None, text),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("`{text}` must be a host, not a URL with a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("invalid port `{port}` in `{text}`"))?;
                (host, Some(port))
            }
            None => (rest, None),
        };
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty()
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "invalid host `{host}` in `{text}`: expected a name like `api.example.com`"
            ));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        }
    }
}

impl std::fmt::Display for OutboundHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_host_forms() {
        let h = OutboundHost::parse("127.0.0.1:9000").unwrap();
        assert!(h.allows("http", "127.0.0.1", 9000));
        assert!(!h.allows("http", "127.0.0.1", 9001));
        let h = OutboundHost::parse("https://*.example.com").unwrap();
        assert!(h.allows("https", "api.example.com", 443));
        assert!(!h.allows("http", "api.example.com", 80));
        assert!(!h.allows("https", "example.com", 443));
        assert!(OutboundHost::parse("ftp://x").is_err());
        assert!(OutboundHost::parse("x.com/path").is_err());
        assert!(OutboundHost::parse("x.com:port").is_err());
    }
}
