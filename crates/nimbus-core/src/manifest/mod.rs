//! `nimbus.toml`: the strict user-facing schema and its resolution into an [`App`].
//!
//! Parsing keeps every key's span, so each error points at the file, line and key
//! it is about. Resolution fills in defaults and checks everything that can be
//! checked without I/O: names, limits, durations, routes (duplicates and conflicts)
//! and references between sections. Reading component files is the loader's job
//! (in the `nimbus` crate); it reports through [`Manifest::source_error`].

mod bus;
mod change_triggers;
mod diagnostic;
mod schedules;
mod topics;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use diagnostic::Reporter;
pub use diagnostic::{ManifestError, ManifestErrors, closest, line_col};

use crate::app::{
    App, BucketDecl, ChangeTrigger, DeadLetter, Destination, DocStoreDecl, Function, Grant,
    KvStoreDecl, OutboundHost, QueueDecl, Route, StoreKind, Trigger,
};
use crate::data::FieldPath;
use crate::duration;

/// Defaults for unset function keys.
pub mod defaults {
    pub const MEMORY_MB: u64 = 128;
    pub const TIMEOUT: &str = "10s";
    pub const CONCURRENCY: u32 = 100;
    pub const MAX_REUSE: u64 = 10_000;
    pub const IDLE_TIMEOUT: &str = "5m";
    pub const MAX_MEMORY_MB: u64 = 4096;
    pub const MAX_TIMEOUT_SECS: u64 = 15 * 60;
    pub const MAX_CONCURRENCY: u32 = 1000;
    pub const VISIBILITY_TIMEOUT: &str = "30s";
    pub const RETENTION: &str = "4d";
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    app: Spanned<RawApp>,
    #[serde(default)]
    functions: BTreeMap<Spanned<String>, Spanned<RawFunction>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    triggers: Vec<Spanned<RawTrigger>>,
    #[serde(default)]
    kv: BTreeMap<Spanned<String>, RawKv>,
    #[serde(default)]
    docs: BTreeMap<Spanned<String>, RawDocs>,
    #[serde(default)]
    buckets: BTreeMap<Spanned<String>, RawBucket>,
    #[serde(default)]
    queues: BTreeMap<Spanned<String>, RawQueue>,
    #[serde(default)]
    topics: BTreeMap<Spanned<String>, topics::RawTopic>,
    #[serde(default)]
    bus: bus::RawBus,
    #[serde(default)]
    schedules: BTreeMap<Spanned<String>, Spanned<schedules::RawSchedule>>,
    /// `[quotas]`: the app's limits on invocations, GB-seconds and stored bytes.
    #[serde(default)]
    quotas: crate::meter::Quotas,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    visibility_timeout: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    max_message_size: Option<Spanned<i64>>,
    fifo: Option<bool>,
    dead_letter: Option<RawDeadLetter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadLetter {
    queue: Spanned<String>,
    max_receives: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKv {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocs {
    #[serde(default)]
    indexes: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    public: Option<bool>,
    mount: Option<Spanned<String>>,
    index_document: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    source: Spanned<String>,
    build: Option<String>,
    memory_mb: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    min_instances: Option<Spanned<i64>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    uses: Vec<Spanned<String>>,
    reuse: Option<bool>,
    max_reuse: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    max_event_age: Option<Spanned<String>>,
    on_success: Option<Spanned<RawDestination>>,
    on_failure: Option<Spanned<RawDestination>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    queue: Option<String>,
    function: Option<String>,
    topic: Option<String>,
    bus: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    kv: Option<Spanned<String>>,
    docs: Option<Spanned<String>>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
    prefix: Option<String>,
    suffix: Option<String>,
    retries: Option<Spanned<i64>>,
    function: Spanned<String>,
    batch_size: Option<Spanned<i64>>,
    max_batching_window: Option<Spanned<String>>,
    max_concurrency: Option<Spanned<i64>>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    function: Spanned<String>,
}

/// A resolved manifest: the [`App`] plus what the loader needs to report errors
/// about component files at the right place.
#[derive(Debug)]
pub struct Manifest {
    pub app: App,
    file: String,
    text: String,
    source_spans: BTreeMap<String, Range<usize>>,
}

impl Manifest {
    /// Parses and validates manifest `text`; `file` names it in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Self, ManifestErrors> {
        let mut reporter = Reporter::new(file, text);
        let raw: RawManifest = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                report_toml_error(&mut reporter, &err);
                return Err(reporter.finish().expect_err("an error was reported"));
            }
        };
        let mut source_spans = BTreeMap::new();
        let app = resolve(&mut reporter, raw, &mut source_spans);
        reporter.finish()?;
        Ok(Self {
            app,
            file: file.to_string(),
            text: text.to_string(),
            source_spans,
        })
    }

    /// The manifest text this was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The file name used in diagnostics.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// An error about function `function`'s component, pointing at its `source` key.
    pub fn source_error(
        &self,
        function: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ManifestErrors {
        let mut reporter = Reporter::new(&self.file, &self.text);
        reporter.error(
            self.source_spans.get(function).cloned(),
            message,
            "this component",
            help,
        );
        reporter.finish().expect_err("an error was reported")
    }
}

fn report_toml_error(reporter: &mut Reporter, err: &toml::de::Error) {
    let message = err.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde: "unknown field `x`, expected one of `a`, `b`" / "expected `a`" / "there are no fields"
        let unknown = rest.split('`').next().unwrap_or_default().to_string();
        let expected: Vec<&str> = rest
            .split('`')
            .skip(1)
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let help = match closest(&unknown, expected.iter().copied()) {
            Some(near) => Some(format!(
                "did you mean `{near}`? valid keys here: {}",
                expected.join(", ")
            )),
            None if expected.is_empty() => None,
            None => Some(format!("valid keys here: {}", expected.join(", "))),
        };
        reporter.error(
            err.span(),
            format!("unknown key `{unknown}`"),
            "unknown key",
            help,
        );
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        reporter.error(
            err.span(),
            format!("missing required key `{field}`"),
            format!("`{field}` is required in this table"),
            None,
        );
    } else {
        reporter.error(err.span(), message, "here", None);
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63
}

fn resolve(
    reporter: &mut Reporter,
    raw: RawManifest,
    source_spans: &mut BTreeMap<String, Range<usize>>,
) -> App {
    let raw_app = raw.app.into_inner();
    let name = raw_app.name.get_ref().clone();
    if !is_name(&name) || name.contains('_') {
        reporter.error(
            Some(raw_app.name.span()),
            format!("invalid app name `{name}`"),
            "app name",
            Some("use lower-case letters, digits and `-`, starting with a letter (it becomes a host name)".into()),
        );
    }
    let mut hosts = Vec::new();
    for host in raw_app.hosts {
        let h = host.get_ref().to_ascii_lowercase();
        if h.is_empty() || h.contains(['/', ':', ' ']) {
            reporter.error(
                Some(host.span()),
                format!("invalid host `{}`", host.get_ref()),
                "host name",
                Some("write a bare host name such as `shop.example.com`".into()),
            );
        } else {
            hosts.push(h);
        }
    }

    let mut stores = resolve_stores(reporter, raw.kv, raw.docs, raw.buckets);
    stores.queues = resolve_queues(reporter, raw.queues);
    stores.topics = raw.topics.keys().map(|t| t.get_ref().clone()).collect();
    stores.app = name.clone();
    let mut functions = BTreeMap::new();
    let mut function_destinations: Vec<(Range<usize>, Destination)> = Vec::new();
    for (fname, f) in raw.functions {
        let fspan = fname.span();
        let fname = fname.into_inner();
        if !is_name(&fname) {
            reporter.error(
                Some(fspan),
                format!("invalid function name `{fname}`"),
                "function name",
                Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
            );
        }
        let f = f.into_inner();
        source_spans.insert(fname.clone(), f.source.span());
        let function = resolve_function(reporter, &fname, f, &stores, &mut function_destinations);
        functions.insert(fname, function);
    }

    let routes = resolve_routes(reporter, raw.routes, &functions);
    let topics = topics::resolve(reporter, raw.topics, &stores, &mut function_destinations);
    let topic_names: Vec<&str> = topics.keys().map(String::as_str).collect();
    let bus = bus::resolve(
        reporter,
        raw.bus,
        &stores,
        &topic_names,
        &mut function_destinations,
    );
    let schedules = schedules::resolve(
        reporter,
        raw.schedules,
        &stores,
        &topic_names,
        &mut function_destinations,
    );
    check_destinations(reporter, &function_destinations, &functions, &stores);
    let (triggers, change_triggers) = resolve_triggers(reporter, raw.triggers, &functions, &stores);
    App {
        name,
        hosts,
        functions,
        routes,
        kv: stores.kv,
        docs: stores.docs,
        buckets: stores.buckets,
        queues: stores.queues,
        triggers,
        change_triggers,
        topics,
        schedules,
        bus,
        quotas: raw.quotas,
    }
}

#[derive(Default)]
struct Stores {
    kv: BTreeMap<String, KvStoreDecl>,
    docs: BTreeMap<String, DocStoreDecl>,
    buckets: BTreeMap<String, BucketDecl>,
    queues: BTreeMap<String, QueueDecl>,
    /// Topic names (for grants; the topics resolve after the functions).
    topics: Vec<String>,
    /// The app's own name: `bus:APP` grants name it.
    app: String,
}

impl Stores {
    fn names(&self, kind: StoreKind) -> Vec<&str> {
        match kind {
            StoreKind::Kv => self.kv.keys().map(String::as_str).collect(),
            StoreKind::Docs => self.docs.keys().map(String::as_str).collect(),
            StoreKind::Buckets => self.buckets.keys().map(String::as_str).collect(),
            StoreKind::Queues => self.queues.keys().map(String::as_str).collect(),
            StoreKind::Topics => self.topics.iter().map(String::as_str).collect(),
            StoreKind::Bus => vec![self.app.as_str()],
        }
    }
}

fn store_name(reporter: &mut Reporter, kind: StoreKind, name: Spanned<String>) -> String {
    if !is_name(name.get_ref()) {
        reporter.error(
            Some(name.span()),
            format!("invalid {} name `{}`", kind.noun(), name.get_ref()),
            "store name",
            Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
        );
    }
    name.into_inner()
}

fn resolve_queues(
    reporter: &mut Reporter,
    raw: BTreeMap<Spanned<String>, RawQueue>,
) -> BTreeMap<String, QueueDecl> {
    use crate::queue::limits;
    let names: Vec<String> = raw.keys().map(|n| n.get_ref().clone()).collect();
    let fifo_names: Vec<String> = raw
        .iter()
        .filter(|(_, q)| q.fifo == Some(true))
        .map(|(n, _)| n.get_ref().clone())
        .collect();
    let mut queues = BTreeMap::new();
    for (name, q) in raw {
        let name = store_name(reporter, StoreKind::Queues, name);
        let visibility_timeout = duration_in(
            reporter,
            "visibility_timeout",
            q.visibility_timeout,
            defaults::VISIBILITY_TIMEOUT,
            limits::MAX_VISIBILITY,
        );
        let retention = duration_in(
            reporter,
            "retention",
            q.retention,
            defaults::RETENTION,
            Duration::from_secs(14 * 24 * 3600),
        );
        let delay = match q.delay {
            Some(d) if d.get_ref().trim() == "0s" || d.get_ref().trim() == "0" => Duration::ZERO,
            d => duration_in(reporter, "delay", d, "0ms", limits::MAX_DELAY),
        };
        let max_message_size = int_in(
            reporter,
            "max_message_size",
            q.max_message_size,
            1,
            limits::MAX_MESSAGE_BYTES_CEILING as i64,
            limits::MAX_MESSAGE_BYTES as i64,
        ) as usize;
        let fifo = q.fifo.unwrap_or(false);
        let dead_letter = q.dead_letter.map(|dl| {
            let target = dl.queue.get_ref().clone();
            if target == name {
                reporter.error(
                    Some(dl.queue.span()),
                    format!("queue `{name}` names itself as its dead-letter queue"),
                    "dead-letter queue",
                    Some("declare a separate queue, e.g. `[queues.{name}-dlq]`".replace("{name}", &name)),
                );
            } else if !names.contains(&target) {
                let help = closest(&target, names.iter().map(String::as_str))
                    .map(|near| format!("did you mean `{near}`?"))
                    .unwrap_or_else(|| format!("declare it as `[queues.{target}]`"));
                reporter.error(
                    Some(dl.queue.span()),
                    format!("dead-letter queue `{target}` is not declared"),
                    "dead-letter queue",
                    Some(help),
                );
            } else if fifo != fifo_names.contains(&target) {
                reporter.error(
                    Some(dl.queue.span()),
                    format!(
                        "queue `{name}` is {} but its dead-letter queue `{target}` is not",
                        if fifo { "FIFO" } else { "standard" }
                    ),
                    "dead-letter queue",
                    Some("a FIFO queue needs a FIFO dead-letter queue, a standard one a standard one".into()),
                );
            }
            DeadLetter {
                queue: target,
                max_receives: int_in(reporter, "max_receives", dl.max_receives, 1, 1000, 5) as u32,
            }
        });
        queues.insert(
            name,
            QueueDecl {
                visibility_timeout,
                retention,
                delay,
                max_message_size,
                fifo,
                dead_letter,
            },
        );
    }
    queues
}

fn resolve_stores(
    reporter: &mut Reporter,
    kv: BTreeMap<Spanned<String>, RawKv>,
    docs: BTreeMap<Spanned<String>, RawDocs>,
    buckets: BTreeMap<Spanned<String>, RawBucket>,
) -> Stores {
    let mut stores = Stores::default();
    for (name, RawKv {}) in kv {
        let name = store_name(reporter, StoreKind::Kv, name);
        stores.kv.insert(name, KvStoreDecl {});
    }
    for (name, raw) in docs {
        let name = store_name(reporter, StoreKind::Docs, name);
        let mut indexes: Vec<String> = Vec::new();
        for index in raw.indexes {
            if let Err(msg) = FieldPath::parse(index.get_ref()) {
                reporter.error(
                    Some(index.span()),
                    format!("invalid index `{}`: {msg}", index.get_ref()),
                    "index",
                    Some("an index names a field path such as `status` or `customer.id`".into()),
                );
            } else if indexes.contains(index.get_ref()) {
                reporter.error(
                    Some(index.span()),
                    format!("index `{}` is declared twice", index.get_ref()),
                    "duplicate",
                    None,
                );
            } else {
                indexes.push(index.into_inner());
            }
        }
        stores.docs.insert(name, DocStoreDecl { indexes });
    }
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in buckets {
        let name = store_name(reporter, StoreKind::Buckets, name);
        let mount = match raw.mount {
            None => format!("/{name}"),
            Some(m) => {
                let text = m.get_ref().trim_end_matches('/');
                let text = if text.is_empty() { "/" } else { text };
                if !m.get_ref().starts_with('/')
                    || text.contains(['{', '}', '?', '#'])
                    || text.split('/').any(|seg| seg == "." || seg == "..")
                {
                    reporter.error(
                        Some(m.span()),
                        format!("invalid mount `{}`", m.get_ref()),
                        "mount path",
                        Some("a mount is a plain path such as `/` or `/static`".into()),
                    );
                }
                if raw.public != Some(true) {
                    reporter.error(
                        Some(m.span()),
                        format!("bucket `{name}` has a `mount` but is not public"),
                        "mount",
                        Some("add `public = true` to serve it through the gateway".into()),
                    );
                }
                if let Some(other) = mounts.get(text) {
                    reporter.error(
                        Some(m.span()),
                        format!("bucket `{name}` is mounted at `{text}`, as bucket `{other}` is"),
                        "mount",
                        Some("give each public bucket its own mount".into()),
                    );
                }
                text.to_string()
            }
        };
        if raw.public == Some(true) {
            mounts.insert(mount.clone(), name.clone());
        }
        let index_document = match raw.index_document {
            None => "index.html".to_string(),
            Some(doc) => {
                if crate::data::validate_object_key(doc.get_ref()).is_err() {
                    reporter.error(
                        Some(doc.span()),
                        format!("invalid `index_document` `{}`", doc.get_ref()),
                        "object key",
                        Some("name an object such as `index.html`".into()),
                    );
                }
                doc.into_inner()
            }
        };
        stores.buckets.insert(
            name,
            BucketDecl {
                public: raw.public.unwrap_or(false),
                mount,
                index_document,
            },
        );
    }
    stores
}

fn int_in(
    reporter: &mut Reporter,
    key: &str,
    value: Option<Spanned<i64>>,
    min: i64,
    max: i64,
    default: i64,
) -> i64 {
    match value {
        None => default,
        Some(v) if (min..=max).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            reporter.error(
                Some(v.span()),
                format!("`{key}` = {} is out of range ({min} to {max})", v.get_ref()),
                format!("must be between {min} and {max}"),
                None,
            );
            default
        }
    }
}

fn duration_in(
    reporter: &mut Reporter,
    key: &str,
    value: Option<Spanned<String>>,
    default: &str,
    max: Duration,
) -> Duration {
    let default = duration::parse(default).expect("valid default");
    let Some(value) = value else { return default };
    match duration::parse(value.get_ref()) {
        Ok(d) if d.is_zero() => {
            reporter.error(
                Some(value.span()),
                format!("`{key}` must be greater than zero"),
                "zero duration",
                None,
            );
            default
        }
        Ok(d) if d > max => {
            reporter.error(
                Some(value.span()),
                format!("`{key}` = \"{}\" is too long", value.get_ref()),
                format!("at most {}", duration::format(max)),
                None,
            );
            default
        }
        Ok(d) => d,
        Err(msg) => {
            reporter.error(
                Some(value.span()),
                msg,
                "duration",
                Some("durations look like \"500ms\", \"10s\", \"5m\" or \"1h\"".into()),
            );
            default
        }
    }
}

fn resolve_function(
    reporter: &mut Reporter,
    name: &str,
    f: RawFunction,
    stores: &Stores,
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> Function {
    if f.source.get_ref().trim().is_empty() {
        reporter.error(
            Some(f.source.span()),
            format!("function `{name}` has an empty `source`"),
            "path to a .wasm component",
            None,
        );
    }
    let memory_mb = int_in(
        reporter,
        "memory_mb",
        f.memory_mb,
        1,
        defaults::MAX_MEMORY_MB as i64,
        defaults::MEMORY_MB as i64,
    ) as u64;
    let concurrency = int_in(
        reporter,
        "concurrency",
        f.concurrency,
        1,
        defaults::MAX_CONCURRENCY as i64,
        defaults::CONCURRENCY as i64,
    ) as u32;
    let min_span = f.min_instances.as_ref().map(|m| m.span());
    let min_instances = int_in(
        reporter,
        "min_instances",
        f.min_instances,
        0,
        defaults::MAX_CONCURRENCY as i64,
        0,
    ) as u32;
    if min_instances > concurrency {
        reporter.error(
            min_span,
            format!(
                "`min_instances` ({min_instances}) is larger than `concurrency` ({concurrency})"
            ),
            "too many warm instances",
            Some("warm instances count against the function's concurrency".into()),
        );
    }
    let max_reuse = int_in(
        reporter,
        "max_reuse",
        f.max_reuse,
        1,
        i64::MAX,
        defaults::MAX_REUSE as i64,
    ) as u64;
    let timeout = duration_in(
        reporter,
        "timeout",
        f.timeout,
        defaults::TIMEOUT,
        Duration::from_secs(defaults::MAX_TIMEOUT_SECS),
    );
    let idle_timeout = duration_in(
        reporter,
        "idle_timeout",
        f.idle_timeout,
        defaults::IDLE_TIMEOUT,
        Duration::from_secs(24 * 3600),
    );
    let mut env = BTreeMap::new();
    for (key, value) in f.env {
        let valid = key
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.get_ref().is_empty()
            && !key.get_ref().starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            reporter.error(
                Some(key.span()),
                format!("invalid environment variable name `{}`", key.get_ref()),
                "env key",
                Some("use letters, digits and `_`, not starting with a digit".into()),
            );
        }
        env.insert(key.into_inner(), value);
    }
    let mut allowed_outbound_hosts = Vec::new();
    for host in f.allowed_outbound_hosts {
        match OutboundHost::parse(host.get_ref()) {
            Ok(h) => allowed_outbound_hosts.push(h),
            Err(msg) => reporter.error(
                Some(host.span()),
                msg,
                "outbound host",
                Some("write `host`, `host:port` or `https://host[:port]`".into()),
            ),
        }
    }
    let mut uses = Vec::new();
    for grant in f.uses {
        if let Some(g) = resolve_grant(reporter, &grant, stores) {
            if uses.contains(&g) {
                reporter.error(
                    Some(grant.span()),
                    format!("`{}` is granted twice", grant.get_ref()),
                    "duplicate grant",
                    None,
                );
            } else {
                uses.push(g);
            }
        }
    }
    uses.sort();
    let retries = int_in(reporter, "retries", f.retries, 0, 10, 2) as u32;
    let max_event_age = duration_in(
        reporter,
        "max_event_age",
        f.max_event_age,
        "6h",
        Duration::from_secs(6 * 3600),
    );
    let mut destination = |raw: Option<Spanned<RawDestination>>, key: &str| {
        let raw = raw?;
        let span = raw.span();
        let dest = match raw.into_inner() {
            RawDestination {
                queue: Some(q),
                function: None,
                topic: None,
                bus: None,
            } => Destination::Queue(q),
            RawDestination {
                queue: None,
                function: Some(f),
                topic: None,
                bus: None,
            } => Destination::Function(f),
            RawDestination {
                queue: None,
                function: None,
                topic: Some(t),
                bus: None,
            } => Destination::Topic(t),
            RawDestination {
                queue: None,
                function: None,
                topic: None,
                bus: Some(b),
            } => Destination::Bus(b),
            _ => {
                reporter.error(
                    Some(span),
                    format!("`{key}` names one destination"),
                    "destination",
                    Some(format!("write `{key} = {{ queue = \"NAME\" }}`, `{{ function = \"NAME\" }}`, `{{ topic = \"NAME\" }}` or `{{ bus = \"APP\" }}`")),
                );
                return None;
            }
        };
        destinations.push((span, dest.clone()));
        Some(dest)
    };
    let on_success = destination(f.on_success, "on_success");
    let on_failure = destination(f.on_failure, "on_failure");
    Function {
        name: name.to_string(),
        source: f.source.into_inner(),
        digest: String::new(),
        build: f.build,
        memory_mb,
        timeout,
        concurrency,
        min_instances,
        env,
        allowed_outbound_hosts,
        reuse: f.reuse.unwrap_or(true),
        max_reuse,
        idle_timeout,
        uses,
        retries,
        max_event_age,
        on_success,
        on_failure,
    }
}

/// Destinations name a declared queue or function.
fn check_destinations(
    reporter: &mut Reporter,
    destinations: &[(Range<usize>, Destination)],
    functions: &BTreeMap<String, Function>,
    stores: &Stores,
) {
    for (span, dest) in destinations {
        let (kind, name, known): (&str, &str, Vec<&str>) = match dest {
            Destination::Queue(q) => ("queue", q, stores.names(StoreKind::Queues)),
            Destination::Function(f) => (
                "function",
                f,
                functions.keys().map(String::as_str).collect(),
            ),
            Destination::Topic(t) => ("topic", t, stores.names(StoreKind::Topics)),
            Destination::Bus(app) => {
                if !is_name(app) {
                    reporter.error(
                        Some(span.clone()),
                        format!("`bus = \"{app}\"` does not name an app"),
                        "destination",
                        Some("name the app whose bus receives the record".into()),
                    );
                }
                continue;
            }
        };
        if !known.contains(&name) {
            let help = closest(name, known.iter().copied())
                .map(|near| format!("did you mean `{near}`?"))
                .unwrap_or_else(|| format!("declare it in this manifest (`[{kind}s.{name}]`)"));
            reporter.error(
                Some(span.clone()),
                format!("the destination names {kind} `{name}`, which is not declared"),
                "destination",
                Some(help),
            );
        }
    }
}

/// A trigger's `name`, checked, or by default `SOURCE-FUNCTION`.
fn trigger_name(
    reporter: &mut Reporter,
    name: Option<Spanned<String>>,
    source: &str,
    function: &str,
) -> String {
    let Some(n) = name else {
        return format!("{source}-{function}");
    };
    if !is_name(n.get_ref()) {
        reporter.error(
            Some(n.span()),
            format!("invalid trigger name `{}`", n.get_ref()),
            "trigger name",
            Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
        );
    }
    n.into_inner()
}

/// A trigger's `function` names a declared function.
fn check_trigger_function(
    reporter: &mut Reporter,
    function: &Spanned<String>,
    functions: &BTreeMap<String, Function>,
) {
    if functions.contains_key(function.get_ref()) {
        return;
    }
    let help = closest(function.get_ref(), functions.keys().map(String::as_str))
        .map(|near| format!("did you mean `{near}`?"))
        .unwrap_or_else(|| format!("declare it as `[functions.{}]`", function.get_ref()));
    reporter.error(
        Some(function.span()),
        format!(
            "the trigger names function `{}`, which is not declared",
            function.get_ref()
        ),
        "trigger target",
        Some(help),
    );
}

/// `[[triggers]]`: each names a declared queue and function.
fn resolve_triggers(
    reporter: &mut Reporter,
    raw: Vec<Spanned<RawTrigger>>,
    functions: &BTreeMap<String, Function>,
    stores: &Stores,
) -> (Vec<Trigger>, Vec<ChangeTrigger>) {
    let mut triggers: Vec<Trigger> = Vec::new();
    let mut changes: Vec<ChangeTrigger> = Vec::new();
    for t in raw {
        let span = t.span();
        let t = t.into_inner();
        let sources = [&t.queue, &t.bucket, &t.kv, &t.docs]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if sources != 1 {
            reporter.error(
                Some(span),
                if sources == 0 {
                    "a trigger needs a source".to_string()
                } else {
                    "a trigger has one source".to_string()
                },
                "trigger",
                Some("write one of `queue = \"NAME\"`, `bucket = \"NAME\"`, `kv = \"NAME\"` or `docs = \"NAME\"`".into()),
            );
            continue;
        }
        let Some(queue) = t.queue else {
            if let Some(c) = change_triggers::resolve(reporter, span, t, functions, stores) {
                let taken = triggers.iter().any(|x| x.name == c.trigger.name)
                    || changes.iter().any(|x| x.name == c.trigger.name);
                if taken {
                    reporter.error(
                        Some(c.span.clone()),
                        format!("two triggers are named `{}`", c.trigger.name),
                        "duplicate trigger",
                        Some("give one a `name`".into()),
                    );
                }
                changes.push(c.trigger);
            }
            continue;
        };
        for (key, set) in [
            ("events", !t.events.is_empty()),
            ("prefix", t.prefix.is_some()),
            ("suffix", t.suffix.is_some()),
            ("retries", t.retries.is_some()),
        ] {
            if set {
                reporter.error(
                    Some(span.clone()),
                    format!("`{key}` applies to triggers on store changes, not on queues"),
                    "trigger",
                    Some(
                        "queue triggers take batch_size, max_batching_window and max_concurrency"
                            .into(),
                    ),
                );
            }
        }
        let queues = stores.names(StoreKind::Queues);
        if !queues.contains(&queue.get_ref().as_str()) {
            let help = closest(queue.get_ref(), queues.iter().copied())
                .map(|near| format!("did you mean `{near}`?"))
                .unwrap_or_else(|| format!("declare it as `[queues.{}]`", queue.get_ref()));
            reporter.error(
                Some(queue.span()),
                format!(
                    "the trigger names queue `{}`, which is not declared",
                    queue.get_ref()
                ),
                "trigger source",
                Some(help),
            );
        }
        check_trigger_function(reporter, &t.function, functions);
        let name = trigger_name(reporter, t.name, queue.get_ref(), t.function.get_ref());
        if triggers.iter().any(|x| x.name == name) || changes.iter().any(|x| x.name == name) {
            reporter.error(
                Some(span.clone()),
                format!("two triggers are named `{name}`"),
                "duplicate trigger",
                Some("give one a `name`".into()),
            );
        }
        let batch_size = int_in(reporter, "batch_size", t.batch_size, 1, 10, 10) as u32;
        let max_concurrency =
            int_in(reporter, "max_concurrency", t.max_concurrency, 1, 100, 5) as u32;
        let max_batching_window = match t.max_batching_window {
            Some(w)
                if w.get_ref()
                    .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    == "0" =>
            {
                Duration::ZERO
            }
            w => duration_in(
                reporter,
                "max_batching_window",
                w,
                "0ms",
                Duration::from_secs(300),
            ),
        };
        triggers.push(Trigger {
            name,
            queue: queue.into_inner(),
            function: t.function.into_inner(),
            batch_size,
            max_batching_window,
            max_concurrency,
            enabled: t.enabled.unwrap_or(true),
        });
    }
    (triggers, changes)
}

fn resolve_grant(
    reporter: &mut Reporter,
    grant: &Spanned<String>,
    stores: &Stores,
) -> Option<Grant> {
    let kinds = StoreKind::ALL.map(|k| k.grant_prefix()).join(", ");
    let Some((prefix, resource)) = grant.get_ref().split_once(':') else {
        reporter.error(
            Some(grant.span()),
            format!("invalid grant `{}`", grant.get_ref()),
            "grant",
            Some(format!(
                "a grant is `KIND:NAME` with KIND one of {kinds}, e.g. `kv:carts`"
            )),
        );
        return None;
    };
    let Some(kind) = StoreKind::ALL
        .into_iter()
        .find(|k| k.grant_prefix() == prefix)
    else {
        let help = closest(prefix, StoreKind::ALL.map(|k| k.grant_prefix()))
            .map(|near| format!("did you mean `{near}:{resource}`?"))
            .unwrap_or_else(|| format!("KIND is one of {kinds}"));
        reporter.error(
            Some(grant.span()),
            format!(
                "unknown resource kind `{prefix}` in grant `{}`",
                grant.get_ref()
            ),
            "grant",
            Some(help),
        );
        return None;
    };
    let names = stores.names(kind);
    if kind == StoreKind::Bus && !names.contains(&resource) {
        reporter.error(
            Some(grant.span()),
            format!("`uses` names the bus of app `{resource}`"),
            "grant",
            Some(format!(
                "a function puts events into its own app's bus: `bus:{}`",
                stores.app
            )),
        );
        return None;
    }
    if !names.contains(&resource) {
        let help = closest(resource, names.iter().copied())
            .map(|near| format!("did you mean `{prefix}:{near}`?"))
            .unwrap_or_else(|| format!("declare it as `[{}.{resource}]`", kind.as_str()));
        reporter.error(
            Some(grant.span()),
            format!(
                "`uses` names {} `{resource}`, which this manifest does not declare",
                kind.noun()
            ),
            "grant",
            Some(help),
        );
        return None;
    }
    Some(Grant {
        kind,
        name: resource.to_string(),
    })
}

fn resolve_routes(
    reporter: &mut Reporter,
    raw: Vec<Spanned<RawRoute>>,
    functions: &BTreeMap<String, Function>,
) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
    let mut paths = matchit::Router::<String>::new();
    let mut path_lines: BTreeMap<String, usize> = BTreeMap::new();
    for route in raw {
        let route_span = route.span();
        let route = route.into_inner();
        let method = match &route.method {
            None => None,
            Some(m) if m.get_ref() == "*" || m.get_ref().eq_ignore_ascii_case("any") => None,
            Some(m) => {
                let upper = m.get_ref().to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    let help = closest(&upper, METHODS.iter().copied())
                        .map(|near| format!("did you mean `{near}`?"))
                        .or_else(|| Some(format!("use one of {} or \"*\"", METHODS.join(", "))));
                    reporter.error(
                        Some(m.span()),
                        format!("unknown HTTP method `{}`", m.get_ref()),
                        "method",
                        help,
                    );
                }
                Some(upper)
            }
        };
        let path = route.path.get_ref().clone();
        if !path.starts_with('/') {
            reporter.error(
                Some(route.path.span()),
                format!("route path `{path}` must start with `/`"),
                "path",
                None,
            );
            continue;
        }
        if !functions.contains_key(route.function.get_ref()) {
            let help = closest(
                route.function.get_ref(),
                functions.keys().map(|k| k.as_str()),
            )
            .map(|near| format!("did you mean `{near}`?"))
            .or_else(|| {
                Some(format!(
                    "declare it as `[functions.{}]`",
                    route.function.get_ref()
                ))
            });
            reporter.error(
                Some(route.function.span()),
                format!(
                    "route names function `{}`, which is not declared",
                    route.function.get_ref()
                ),
                "unknown function",
                help,
            );
        }
        let resolved = Route {
            method,
            path: path.clone(),
            function: route.function.get_ref().clone(),
        };
        let key = resolved.key();
        if let Some(first) = seen.get(&key) {
            let (line, _) = line_col_of(reporter, first.start);
            reporter.error(
                Some(route_span.clone()),
                format!("duplicate route `{key}`"),
                "duplicate",
                Some(format!("the same route is declared at line {line}")),
            );
            continue;
        }
        seen.insert(key, route_span.clone());
        if !path_lines.contains_key(&path) {
            if let Err(err) = paths.insert(path.clone(), path.clone()) {
                let (message, help) = match &err {
                    matchit::InsertError::Conflict { with } => (
                        format!("route path `{path}` conflicts with `{with}`"),
                        Some(format!(
                            "both match the same requests{}; rename a parameter or make one path static",
                            path_lines
                                .get(with)
                                .map(|l| format!(" (`{with}` is at line {l})"))
                                .unwrap_or_default()
                        )),
                    ),
                    other => (
                        format!("invalid route path `{path}`: {other}"),
                        Some("parameters look like `{id}`; a trailing `{*rest}` matches the rest of the path".into()),
                    ),
                };
                reporter.error(Some(route.path.span()), message, "path", help);
                continue;
            }
            let (line, _) = line_col_of(reporter, route_span.start);
            path_lines.insert(path.clone(), line);
        }
        routes.push(resolved);
    }
    // `*` and a specific method on one path: the specific one wins at the gateway,
    // which is what users expect, so that is allowed.
    routes
}

fn line_col_of(reporter: &Reporter, offset: usize) -> (usize, usize) {
    reporter.line_col(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app]
name = "shop"

[functions.api]
source = "api.wasm"
timeout = "500ms"
env = { GREETING = "hi" }

[[routes]]
method = "GET"
path = "/carts/{id}"
function = "api"

[[routes]]
path = "/files/{*rest}"
function = "api"
"#;

    #[test]
    fn resolves_defaults() {
        let m = Manifest::parse("nimbus.toml", GOOD).unwrap();
        let f = &m.app.functions["api"];
        assert_eq!(f.timeout, Duration::from_millis(500));
        assert_eq!(f.memory_mb, defaults::MEMORY_MB);
        assert_eq!(f.concurrency, defaults::CONCURRENCY);
        assert!(f.reuse);
        assert_eq!(m.app.routes[1].method, None);
        assert_eq!(f.env["GREETING"], "hi");
    }

    fn first_error(text: &str) -> ManifestError {
        Manifest::parse("nimbus.toml", text)
            .unwrap_err()
            .errors
            .remove(0)
    }

    #[test]
    fn misspelled_key_suggests_the_closest() {
        let e = first_error(&GOOD.replace("timeout =", "timeot ="));
        assert_eq!(e.message, "unknown key `timeot`");
        assert!(e.help.unwrap().starts_with("did you mean `timeout`?"));
        assert_eq!(e.line, 7);
    }

    #[test]
    fn route_to_missing_function() {
        let e = first_error(&GOOD.replace(
            "function = \"api\"\n\n[[routes]]",
            "function = \"apj\"\n\n[[routes]]",
        ));
        assert!(e.message.contains("function `apj`"), "{}", e.message);
        assert_eq!(e.help.as_deref(), Some("did you mean `api`?"));
    }

    #[test]
    fn conflicting_routes() {
        let text = format!(
            "{GOOD}\n[[routes]]\nmethod = \"POST\"\npath = \"/carts/{{cart}}\"\nfunction = \"api\"\n"
        );
        let e = first_error(&text);
        assert!(
            e.message.contains("conflicts with `/carts/{id}`"),
            "{}",
            e.message
        );
    }
}
