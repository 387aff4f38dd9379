//! `[bus]` and `[bus.rules.NAME]`: the app's event bus and its rules. Patterns
//! are checked here (see [`crate::pattern`]), so a bad one fails the deploy
//! with the key and the place inside the pattern.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Reporter;
use super::{Stores, closest, duration_in, int_in, is_name};
use crate::app::{BusDecl, Destination, Input, Rule, RuleTarget, Sink, StoreKind};
use crate::pattern::Pattern;
use crate::transform;

/// Longest archive retention.
const MAX_ARCHIVE: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBus {
    archive: Option<Spanned<String>>,
    #[serde(default)]
    rules: BTreeMap<Spanned<String>, Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: Spanned<toml::Value>,
    targets: Spanned<Vec<Spanned<RawTarget>>>,
    enabled: Option<bool>,
    #[allow(dead_code)] // for people reading the manifest
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    function: Option<String>,
    queue: Option<String>,
    topic: Option<String>,
    bus: Option<String>,
    webhook: Option<Spanned<String>>,
    secret: Option<String>,
    filter: Option<Spanned<toml::Value>>,
    retry_for: Option<Spanned<String>>,
    input_path: Option<Spanned<String>>,
    input_template: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    max_event_age: Option<Spanned<String>>,
    dead_letter: Option<Spanned<String>>,
}

/// Resolves `[bus]`; every target and dead-letter queue it names is pushed to
/// `destinations`, which the caller checks once functions are known.
/// What a target belongs to: a bus rule, or a subscription of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Rule,
    Subscription,
}

pub(super) fn resolve(
    reporter: &mut Reporter,
    raw: RawBus,
    stores: &Stores,
    topics: &[&str],
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> BusDecl {
    let archive = match raw.archive {
        Some(a) if matches!(a.get_ref().trim(), "0" | "0s" | "off") => Duration::ZERO,
        a => duration_in(reporter, "archive", a, "24h", MAX_ARCHIVE),
    };
    let mut rules = BTreeMap::new();
    for (name, rule) in raw.rules {
        let (name_span, name) = (name.span(), name.into_inner());
        if !is_name(&name) {
            reporter.error(
                Some(name_span),
                format!("invalid rule name `{name}`"),
                "rule name",
                Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
            );
        }
        let rule = rule.into_inner();
        let pattern_span = rule.pattern.span();
        let pattern = serde_json::to_value(rule.pattern.get_ref()).unwrap_or_default();
        if let Err(e) = Pattern::parse(&pattern) {
            reporter.error(
                Some(pattern_span),
                format!("rule `{name}`: invalid pattern at `{}`: {}", e.path, e.message),
                "pattern",
                Some(
                    "patterns look like `{ type = [\"order.placed\"], data = { total = [{ numeric = [\">\", 100] }] } }`"
                        .into(),
                ),
            );
        }
        let targets_span = rule.targets.span();
        let raw_targets = rule.targets.into_inner();
        if raw_targets.is_empty() {
            reporter.error(
                Some(targets_span),
                format!("rule `{name}` has no targets"),
                "targets",
                Some(
                    "add one: `targets = [{ function = \"NAME\" }]` or `[{ queue = \"NAME\" }]`"
                        .into(),
                ),
            );
        }
        let targets = raw_targets
            .into_iter()
            .filter_map(|t| {
                let what = format!("rule `{name}`");
                target(
                    reporter,
                    Owner::Rule,
                    &what,
                    t,
                    stores,
                    topics,
                    destinations,
                )
                .map(|(t, _)| t)
            })
            .collect();
        rules.insert(
            name.clone(),
            Rule {
                name,
                pattern,
                targets,
                enabled: rule.enabled.unwrap_or(true),
            },
        );
    }
    BusDecl { archive, rules }
}

/// One target (of a rule) or subscription (of a topic), with the filter a
/// subscription may have.
pub(super) fn target(
    reporter: &mut Reporter,
    owner: Owner,
    what: &str,
    raw: Spanned<RawTarget>,
    stores: &Stores,
    topics: &[&str],
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> Option<(RuleTarget, Option<serde_json::Value>)> {
    let span = raw.span();
    let t = raw.into_inner();
    let named = [
        t.function.is_some(),
        t.queue.is_some(),
        t.topic.is_some(),
        t.bus.is_some(),
        t.webhook.is_some(),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    let one_of = match owner {
        Owner::Rule => {
            "`{ function = \"NAME\" }`, `{ queue = \"NAME\" }`, `{ topic = \"NAME\" }` or `{ bus = \"APP\" }`"
        }
        Owner::Subscription => {
            "`{ function = \"NAME\" }`, `{ queue = \"NAME\" }` or `{ webhook = \"https://…\", secret = \"…\" }`"
        }
    };
    if named != 1 {
        reporter.error(
            Some(span),
            format!("a target of {what} names one destination"),
            "target",
            Some(format!("write {one_of}")),
        );
        return None;
    }
    let misplaced = |reporter: &mut Reporter, key: &str, set: bool| {
        if set {
            reporter.error(
                Some(span.clone()),
                format!("`{key}` does not apply to a target of {what}"),
                "target",
                Some(format!("write {one_of}")),
            );
        }
    };
    match owner {
        Owner::Rule => {
            misplaced(reporter, "webhook", t.webhook.is_some());
            misplaced(reporter, "secret", t.secret.is_some());
            misplaced(reporter, "filter", t.filter.is_some());
            misplaced(reporter, "retry_for", t.retry_for.is_some());
        }
        Owner::Subscription => {
            misplaced(reporter, "topic", t.topic.is_some());
            misplaced(reporter, "bus", t.bus.is_some());
            misplaced(reporter, "input_path", t.input_path.is_some());
            misplaced(reporter, "input_template", t.input_template.is_some());
            misplaced(reporter, "max_event_age", t.max_event_age.is_some());
        }
    }
    let destination = if let Some(f) = t.function {
        destinations.push((span.clone(), Destination::Function(f.clone())));
        Sink::Function(f)
    } else if let Some(q) = t.queue {
        destinations.push((span.clone(), Destination::Queue(q.clone())));
        Sink::Queue(q)
    } else if let Some(topic) = t.topic {
        if !topics.contains(&topic.as_str()) {
            reporter.error(
                Some(span.clone()),
                format!("the destination names topic `{topic}`, which is not declared"),
                "destination",
                Some(
                    closest(&topic, topics.iter().copied())
                        .map(|near| format!("did you mean `{near}`?"))
                        .unwrap_or_else(|| {
                            format!("declare it in this manifest (`[topics.{topic}]`)")
                        }),
                ),
            );
        }
        Sink::Topic(topic)
    } else if let Some(app) = t.bus {
        if !is_name(&app) {
            reporter.error(
                Some(span.clone()),
                format!("`bus = \"{app}\"` does not name an app"),
                "destination",
                Some("name the app whose bus receives the events".into()),
            );
        }
        Sink::Bus(app)
    } else {
        let url = t.webhook.expect("counted above");
        let ok = url
            .get_ref()
            .strip_prefix("https://")
            .or_else(|| url.get_ref().strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        if !ok {
            reporter.error(
                Some(url.span()),
                format!("invalid webhook URL `{}`", url.get_ref()),
                "webhook",
                Some("write an absolute URL such as `https://example.com/hook`".into()),
            );
        }
        let Some(secret) = t.secret.filter(|s| !s.is_empty()) else {
            reporter.error(
                Some(url.span()),
                "a webhook subscription needs a `secret` (deliveries are signed with it)"
                    .to_string(),
                "webhook",
                Some(
                    "add `secret = \"…\"`; receivers check the `x-nimbus-signature` header with it"
                        .into(),
                ),
            );
            return None;
        };
        Sink::Webhook {
            url: url.into_inner(),
            secret,
        }
    };
    let filter = t.filter.and_then(|f| {
        let (f_span, value) = (f.span(), serde_json::to_value(f.get_ref()).unwrap_or_default());
        match Pattern::parse(&value) {
            Ok(_) => Some(value),
            Err(e) => {
                reporter.error(
                    Some(f_span),
                    format!("{what}: invalid filter at `{}`: {}", e.path, e.message),
                    "filter",
                    Some("filters match attributes, e.g. `{ kind = [\"vip\"], total = [{ numeric = [\">\", 100] }] }`".into()),
                );
                None
            }
        }
    });
    let input = match (t.input_path, t.input_template) {
        (None, None) => Input::Event,
        (Some(p), None) => {
            if let Err(e) = transform::check_path(p.get_ref()) {
                reporter.error(
                    Some(p.span()),
                    e.to_string(),
                    "input_path",
                    Some("e.g. `$.data.order`".into()),
                );
            }
            Input::Path(p.into_inner())
        }
        (None, Some(t)) => {
            if let Err(e) = transform::check_template(t.get_ref()) {
                reporter.error(
                    Some(t.span()),
                    e.to_string(),
                    "input_template",
                    Some("placeholders look like `<$.data.id>`".into()),
                );
            }
            Input::Template(t.into_inner())
        }
        (Some(p), Some(_)) => {
            reporter.error(
                Some(p.span()),
                "a target takes `input_path` or `input_template`, not both".to_string(),
                "input",
                None,
            );
            Input::Event
        }
    };
    let retries = int_in(reporter, "retries", t.retries, 0, 185, 185) as u32;
    let (age_key, age) = match owner {
        Owner::Rule => ("max_event_age", t.max_event_age),
        Owner::Subscription => ("retry_for", t.retry_for),
    };
    let max_event_age = duration_in(
        reporter,
        age_key,
        age,
        match owner {
            Owner::Rule => "24h",
            Owner::Subscription => "1h",
        },
        Duration::from_secs(24 * 3600),
    );
    let dead_letter = t.dead_letter.map(|dl| {
        let (dl_span, dl) = (dl.span(), dl.into_inner());
        if !stores.names(StoreKind::Queues).contains(&dl.as_str()) {
            // Reported with the other destinations.
            destinations.push((dl_span, Destination::Queue(dl.clone())));
        }
        dl
    });
    Some((
        RuleTarget {
            destination,
            input,
            retries,
            max_event_age,
            dead_letter,
        },
        filter,
    ))
}
