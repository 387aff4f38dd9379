//! `[[triggers]]` on a store's changes: `bucket = "images"`, `kv = "carts"` or
//! `docs = "orders"`, with `events`, `prefix`, `suffix`, `retries` and
//! `enabled`.

use std::collections::BTreeMap;
use std::ops::Range;

use super::diagnostic::Reporter;
use super::{RawTrigger, Stores, check_trigger_function, closest, int_in, trigger_name};
use crate::app::{ChangeTrigger, Function, StoreKind};

/// A resolved trigger with the span of its table, for duplicate-name errors.
pub(super) struct Resolved {
    pub trigger: ChangeTrigger,
    pub span: Range<usize>,
}

pub(super) fn resolve(
    reporter: &mut Reporter,
    span: Range<usize>,
    t: RawTrigger,
    functions: &BTreeMap<String, Function>,
    stores: &Stores,
) -> Option<Resolved> {
    let (kind, store) = match (t.bucket, t.kv, t.docs) {
        (Some(b), None, None) => (StoreKind::Buckets, b),
        (None, Some(k), None) => (StoreKind::Kv, k),
        (None, None, Some(d)) => (StoreKind::Docs, d),
        _ => return None, // the caller reported it
    };
    let names = stores.names(kind);
    if !names.contains(&store.get_ref().as_str()) {
        let help = closest(store.get_ref(), names.iter().copied())
            .map(|near| format!("did you mean `{near}`?"))
            .unwrap_or_else(|| format!("declare it as `[{}.{}]`", kind.as_str(), store.get_ref()));
        reporter.error(
            Some(store.span()),
            format!(
                "the trigger names {} `{}`, which is not declared",
                kind.noun(),
                store.get_ref()
            ),
            "trigger source",
            Some(help),
        );
    }
    check_trigger_function(reporter, &t.function, functions);
    let known = ChangeTrigger::kinds_of(kind);
    let mut events = Vec::new();
    for e in t.events {
        if known.contains(&e.get_ref().as_str()) {
            events.push(e.into_inner());
        } else {
            reporter.error(
                Some(e.span()),
                format!(
                    "{} changes are {}, not `{}`",
                    kind.noun(),
                    known.join(", "),
                    e.get_ref()
                ),
                "event",
                closest(e.get_ref(), known.iter().copied())
                    .map(|near| format!("did you mean `{near}`?")),
            );
        }
    }
    for (key, set) in [
        ("batch_size", t.batch_size.is_some()),
        ("max_batching_window", t.max_batching_window.is_some()),
        ("max_concurrency", t.max_concurrency.is_some()),
    ] {
        if set {
            reporter.error(
                Some(span.clone()),
                format!("`{key}` applies to queue triggers"),
                "trigger",
                Some("changes are delivered one at a time, in order".into()),
            );
        }
    }
    let name = trigger_name(reporter, t.name, store.get_ref(), t.function.get_ref());
    let retries = int_in(reporter, "retries", t.retries, 0, 10, 2) as u32;
    Some(Resolved {
        trigger: ChangeTrigger {
            name,
            kind,
            store: store.into_inner(),
            function: t.function.into_inner(),
            events,
            prefix: t.prefix.unwrap_or_default(),
            suffix: t.suffix.unwrap_or_default(),
            retries,
            enabled: t.enabled.unwrap_or(true),
        },
        span,
    })
}
