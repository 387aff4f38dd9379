//! `[topics.NAME]`: notification topics and their subscriptions (a function,
//! a queue or a signed webhook, each with an optional attribute filter,
//! retries, a retry period and a dead-letter queue).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::bus::{Owner, RawTarget, target};
use super::diagnostic::Reporter;
use super::{Stores, is_name};
use crate::app::{Destination, Subscription, TopicDecl};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopic {
    #[serde(default)]
    subscriptions: Vec<Spanned<RawTarget>>,
}

pub(super) fn resolve(
    reporter: &mut Reporter,
    raw: BTreeMap<Spanned<String>, RawTopic>,
    stores: &Stores,
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> BTreeMap<String, TopicDecl> {
    let names: Vec<String> = raw.keys().map(|k| k.get_ref().clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut topics = BTreeMap::new();
    for (name, topic) in raw {
        let (span, name) = (name.span(), name.into_inner());
        if !is_name(&name) {
            reporter.error(
                Some(span),
                format!("invalid topic name `{name}`"),
                "topic name",
                Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
            );
        }
        let what = format!("topic `{name}`");
        let subscriptions = topic
            .subscriptions
            .into_iter()
            .filter_map(|s| {
                target(
                    reporter,
                    Owner::Subscription,
                    &what,
                    s,
                    stores,
                    &names,
                    destinations,
                )
                .map(|(target, filter)| Subscription { filter, target })
            })
            .collect();
        topics.insert(name, TopicDecl { subscriptions });
    }
    topics
}
