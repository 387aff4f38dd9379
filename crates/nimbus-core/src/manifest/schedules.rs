//! `[schedules.NAME]`: `cron` (with `timezone`) or `rate`, a `target` (a
//! function, queue, topic or bus, with an optional input transform), a
//! constant `payload`, `catch_up` and `enabled`. Time zone names are checked
//! against the time zone database when the node activates the app.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::bus::{Owner, RawTarget, target};
use super::diagnostic::Reporter;
use super::{Stores, duration_in, is_name};
use crate::app::{Destination, ScheduleDecl, When};
use crate::cron::Cron;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    cron: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    target: Spanned<RawTarget>,
    payload: Option<toml::Value>,
    catch_up: Option<bool>,
    enabled: Option<bool>,
}

pub(super) fn resolve(
    reporter: &mut Reporter,
    raw: BTreeMap<Spanned<String>, Spanned<RawSchedule>>,
    stores: &Stores,
    topics: &[&str],
    destinations: &mut Vec<(Range<usize>, Destination)>,
) -> BTreeMap<String, ScheduleDecl> {
    let mut out = BTreeMap::new();
    for (name, sched) in raw {
        let (name_span, name) = (name.span(), name.into_inner());
        if !is_name(&name) {
            reporter.error(
                Some(name_span.clone()),
                format!("invalid schedule name `{name}`"),
                "schedule name",
                Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into()),
            );
        }
        let (span, s) = (sched.span(), sched.into_inner());
        let when = match (s.cron, s.rate) {
            (Some(cron), None) => {
                if let Err(e) = Cron::parse(cron.get_ref()) {
                    reporter.error(
                        Some(cron.span()),
                        format!("schedule `{name}`: {e}"),
                        "cron",
                        Some("e.g. `cron = \"0 3 * * *\"` (03:00 every day)".into()),
                    );
                }
                let timezone = s.timezone.map_or_else(
                    || "UTC".to_string(),
                    |t| {
                        if t.get_ref().is_empty() || t.get_ref().contains(char::is_whitespace) {
                            reporter.error(
                                Some(t.span()),
                                format!("invalid time zone `{}`", t.get_ref()),
                                "timezone",
                                Some("an IANA name such as `Europe/Paris` or `UTC`".into()),
                            );
                        }
                        t.into_inner()
                    },
                );
                When::Cron {
                    expr: cron.into_inner(),
                    timezone,
                }
            }
            (None, Some(rate)) => {
                if let Some(tz) = &s.timezone {
                    reporter.error(
                        Some(tz.span()),
                        "`timezone` applies to `cron` schedules".to_string(),
                        "timezone",
                        None,
                    );
                }
                let every = duration_in(
                    reporter,
                    "rate",
                    Some(rate),
                    "1m",
                    Duration::from_secs(366 * 24 * 3600),
                );
                When::Rate { every }
            }
            _ => {
                reporter.error(
                    Some(span.clone()),
                    format!("schedule `{name}` needs `cron` or `rate` (one of them)"),
                    "schedule",
                    Some("write `cron = \"0 3 * * *\"` or `rate = \"5m\"`".into()),
                );
                continue;
            }
        };
        let what = format!("schedule `{name}`");
        let Some((target, _)) = target(
            reporter,
            Owner::Rule,
            &what,
            s.target,
            stores,
            topics,
            destinations,
        ) else {
            continue;
        };
        let payload = s
            .payload
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .unwrap_or_else(|| serde_json::json!({}));
        out.insert(
            name.clone(),
            ScheduleDecl {
                name,
                when,
                target,
                payload,
                catch_up: s.catch_up.unwrap_or(true),
                enabled: s.enabled.unwrap_or(true),
            },
        );
    }
    out
}
