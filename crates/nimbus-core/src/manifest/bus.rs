//! `[bus]` and `[bus.rules.NAME]`: the app's event bus and its rules. Patterns
//! are checked here (see [`crate::pattern`]), so a bad one fails the deploy
//! with the key and the place inside the pattern.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Reporter;
use super::{Stores, duration_in, int_in, is_name};
use crate::app::{BusDecl, Destination, Input, Rule, RuleTarget, StoreKind};
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
struct RawTarget {
    function: Option<String>,
    queue: Option<String>,
    input_path: Option<Spanned<String>>,
    input_template: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    max_event_age: Option<Spanned<String>>,
    dead_letter: Option<Spanned<String>>,
}

/// Resolves `[bus]`; every target and dead-letter queue it names is pushed to
/// `destinations`, which the caller checks once functions are known.
pub(super) fn resolve(
    reporter: &mut Reporter,
    raw: RawBus,
    stores: &Stores,
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
            .filter_map(|t| target(reporter, &name, t, stores, destinations))
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

fn target(
    reporter: &mut Reporter,
    rule: &str,
    raw: Spanned<RawTarget>,
    stores: &Stores,
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> Option<RuleTarget> {
    let span = raw.span();
    let t = raw.into_inner();
    let destination = match (t.function, t.queue) {
        (Some(f), None) => Destination::Function(f),
        (None, Some(q)) => Destination::Queue(q),
        _ => {
            reporter.error(
                Some(span),
                format!("a target of rule `{rule}` names one destination"),
                "target",
                Some("write `{ function = \"NAME\" }` or `{ queue = \"NAME\" }`".into()),
            );
            return None;
        }
    };
    destinations.push((span.clone(), destination.clone()));
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
    let max_event_age = duration_in(
        reporter,
        "max_event_age",
        t.max_event_age,
        "24h",
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
    Some(RuleTarget {
        destination,
        input,
        retries,
        max_event_age,
        dead_letter,
    })
}
