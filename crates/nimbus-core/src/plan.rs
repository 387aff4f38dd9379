//! Deployment plans: the difference between the app a node runs and the app a
//! deploy asks for, shown to the user before it is applied.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::app::{App, Function, StoreKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Added,
    Changed,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    /// `function`, `route` or `app`.
    pub kind: String,
    pub name: String,
    /// What changed, for `changed` entries (e.g. `timeout, digest`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The changes a deploy makes to one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub app: String,
    pub changes: Vec<Change>,
}

impl Plan {
    /// The plan that turns `current` (if any) into `next`.
    pub fn between(current: Option<&App>, next: &App) -> Self {
        let mut changes = Vec::new();
        let empty = BTreeMap::new();
        let old_functions = current.map_or(&empty, |a| &a.functions);
        if let Some(current) = current
            && current.hosts != next.hosts
        {
            changes.push(Change {
                op: Op::Changed,
                kind: "app".into(),
                name: next.name.clone(),
                detail: "hosts".into(),
            });
        }
        for (name, f) in &next.functions {
            match old_functions.get(name) {
                None => changes.push(change(Op::Added, "function", name, String::new())),
                Some(old) if old != f => {
                    changes.push(change(Op::Changed, "function", name, function_diff(old, f)))
                }
                Some(_) => {}
            }
        }
        for name in old_functions.keys() {
            if !next.functions.contains_key(name) {
                changes.push(change(Op::Removed, "function", name, String::new()));
            }
        }
        let old_routes: BTreeMap<String, &str> = current
            .map(|a| {
                a.routes
                    .iter()
                    .map(|r| (r.key(), r.function.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let new_routes: BTreeMap<String, &str> = next
            .routes
            .iter()
            .map(|r| (r.key(), r.function.as_str()))
            .collect();
        for (key, function) in &new_routes {
            match old_routes.get(key) {
                None => changes.push(change(Op::Added, "route", key, format!("-> {function}"))),
                Some(old) if old != function => changes.push(change(
                    Op::Changed,
                    "route",
                    key,
                    format!("-> {function} (was {old})"),
                )),
                Some(_) => {}
            }
        }
        for key in old_routes.keys() {
            if !new_routes.contains_key(key) {
                changes.push(change(Op::Removed, "route", key, String::new()));
            }
        }
        let empty_triggers = Vec::new();
        let old_triggers = current.map_or(&empty_triggers, |a| &a.triggers);
        for t in &next.triggers {
            let detail = format!("{} -> {}", t.queue, t.function);
            match old_triggers.iter().find(|o| o.name == t.name) {
                None => changes.push(change(Op::Added, "trigger", &t.name, detail)),
                Some(o) if o != t => changes.push(change(Op::Changed, "trigger", &t.name, detail)),
                Some(_) => {}
            }
        }
        for o in old_triggers {
            if !next.triggers.iter().any(|t| t.name == o.name) {
                changes.push(change(Op::Removed, "trigger", &o.name, String::new()));
            }
        }
        let empty_changes = Vec::new();
        let old_changes = current.map_or(&empty_changes, |a| &a.change_triggers);
        for t in &next.change_triggers {
            let detail = format!("{} {} -> {}", t.kind.grant_prefix(), t.store, t.function);
            match old_changes.iter().find(|o| o.name == t.name) {
                None => changes.push(change(Op::Added, "trigger", &t.name, detail)),
                Some(o) if o != t => changes.push(change(Op::Changed, "trigger", &t.name, detail)),
                Some(_) => {}
            }
        }
        for o in old_changes {
            if !next.change_triggers.iter().any(|t| t.name == o.name) {
                changes.push(change(Op::Removed, "trigger", &o.name, String::new()));
            }
        }
        let empty_topics = BTreeMap::new();
        let old_topics = current.map_or(&empty_topics, |a| &a.topics);
        for (name, topic) in &next.topics {
            let detail = format!("{} subscription(s)", topic.subscriptions.len());
            match old_topics.get(name) {
                None => changes.push(change(Op::Added, "topic", name, detail)),
                Some(old) if old != topic => {
                    changes.push(change(Op::Changed, "topic", name, detail))
                }
                Some(_) => {}
            }
        }
        for name in old_topics.keys() {
            if !next.topics.contains_key(name) {
                changes.push(change(Op::Removed, "topic", name, String::new()));
            }
        }
        let empty_schedules = BTreeMap::new();
        let old_schedules = current.map_or(&empty_schedules, |a| &a.schedules);
        for (name, sched) in &next.schedules {
            let when = match &sched.when {
                crate::app::When::Cron { expr, timezone } => format!("cron {expr} {timezone}"),
                crate::app::When::Rate { every } => {
                    format!("rate {}", crate::duration::format(*every))
                }
            };
            let detail = format!("{when} -> {}", sched.target.destination);
            match old_schedules.get(name) {
                None => changes.push(change(Op::Added, "schedule", name, detail)),
                Some(old) if old != sched => {
                    changes.push(change(Op::Changed, "schedule", name, detail))
                }
                Some(_) => {}
            }
        }
        for name in old_schedules.keys() {
            if !next.schedules.contains_key(name) {
                changes.push(change(Op::Removed, "schedule", name, String::new()));
            }
        }
        let empty_rules = BTreeMap::new();
        let old_rules = current.map_or(&empty_rules, |a| &a.bus.rules);
        for (name, rule) in &next.bus.rules {
            let targets = rule
                .targets
                .iter()
                .map(|t| t.destination.to_string().replace('`', ""))
                .collect::<Vec<_>>()
                .join(", ");
            let detail = format!("-> {targets}");
            match old_rules.get(name) {
                None => changes.push(change(Op::Added, "rule", name, detail)),
                Some(old) if old != rule => changes.push(change(Op::Changed, "rule", name, detail)),
                Some(_) => {}
            }
        }
        for name in old_rules.keys() {
            if !next.bus.rules.contains_key(name) {
                changes.push(change(Op::Removed, "rule", name, String::new()));
            }
        }
        let old_quotas = current.map(|a| a.quotas.clone()).unwrap_or_default();
        if old_quotas != next.quotas {
            let op = if old_quotas.is_unlimited() {
                Op::Added
            } else if next.quotas.is_unlimited() {
                Op::Removed
            } else {
                Op::Changed
            };
            let detail = serde_json::to_string(&next.quotas).unwrap_or_default();
            changes.push(change(op, "quotas", &next.name, detail));
        }
        let old_stores: Vec<(StoreKind, &str)> = current.map(App::stores).unwrap_or_default();
        let new_stores = next.stores();
        for &(kind, name) in &new_stores {
            let key = format!("{}/{name}", kind.as_str());
            if !old_stores.contains(&(kind, name)) {
                changes.push(change(Op::Added, "store", &key, String::new()));
            } else if let Some(detail) = current.and_then(|c| store_diff(c, next, kind, name)) {
                changes.push(change(Op::Changed, "store", &key, detail));
            }
        }
        for &(kind, name) in &old_stores {
            if !new_stores.contains(&(kind, name)) {
                changes.push(change(
                    Op::Removed,
                    "store",
                    &format!("{}/{name}", kind.as_str()),
                    DELETES_DATA.into(),
                ));
            }
        }
        Self {
            app: next.name.clone(),
            changes,
        }
    }

    /// The stores this plan deletes with their data, as `KIND/NAME`.
    pub fn deleted_stores(&self) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|c| c.op == Op::Removed && c.kind == "store")
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The plan that removes `app`.
    pub fn removal(app: &App) -> Self {
        let mut changes: Vec<Change> = app
            .functions
            .keys()
            .map(|name| change(Op::Removed, "function", name, String::new()))
            .collect();
        changes.extend(
            app.routes
                .iter()
                .map(|r| change(Op::Removed, "route", &r.key(), String::new())),
        );
        changes.extend(
            app.triggers
                .iter()
                .map(|t| change(Op::Removed, "trigger", &t.name, String::new())),
        );
        changes.extend(
            app.change_triggers
                .iter()
                .map(|t| change(Op::Removed, "trigger", &t.name, String::new())),
        );
        changes.extend(
            app.schedules
                .keys()
                .map(|name| change(Op::Removed, "schedule", name, String::new())),
        );
        changes.extend(
            app.topics
                .keys()
                .map(|name| change(Op::Removed, "topic", name, String::new())),
        );
        changes.extend(
            app.bus
                .rules
                .keys()
                .map(|name| change(Op::Removed, "rule", name, String::new())),
        );
        changes.extend(app.stores().into_iter().map(|(kind, name)| {
            change(
                Op::Removed,
                "store",
                &format!("{}/{name}", kind.as_str()),
                DELETES_DATA.into(),
            )
        }));
        Self {
            app: app.name.clone(),
            changes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

fn change(op: Op, kind: &str, name: &str, detail: String) -> Change {
    Change {
        op,
        kind: kind.into(),
        name: name.into(),
        detail,
    }
}

/// The detail of a removed store: what a user must confirm.
const DELETES_DATA: &str = "deletes its data";

fn store_diff(old: &App, new: &App, kind: StoreKind, name: &str) -> Option<String> {
    match kind {
        StoreKind::Kv | StoreKind::Topics | StoreKind::Bus => None,
        StoreKind::Queues => {
            let (a, b) = (&old.queues[name], &new.queues[name]);
            let mut fields = Vec::new();
            let mut check = |field: &'static str, differs: bool| {
                if differs {
                    fields.push(field);
                }
            };
            check(
                "visibility_timeout",
                a.visibility_timeout != b.visibility_timeout,
            );
            check("retention", a.retention != b.retention);
            check("delay", a.delay != b.delay);
            check("max_message_size", a.max_message_size != b.max_message_size);
            check("fifo", a.fifo != b.fifo);
            check("dead_letter", a.dead_letter != b.dead_letter);
            (!fields.is_empty()).then(|| fields.join(", "))
        }
        StoreKind::Docs => {
            let (a, b) = (&old.docs[name].indexes, &new.docs[name].indexes);
            (a != b).then(|| format!("indexes: {} -> {}", a.join(", "), b.join(", ")))
        }
        StoreKind::Buckets => {
            let (a, b) = (&old.buckets[name], &new.buckets[name]);
            let mut fields = Vec::new();
            if a.public != b.public {
                fields.push(if b.public {
                    "now public"
                } else {
                    "now private"
                });
            }
            if a.mount != b.mount {
                fields.push("mount");
            }
            if a.index_document != b.index_document {
                fields.push("index_document");
            }
            (!fields.is_empty()).then(|| fields.join(", "))
        }
    }
}

fn function_diff(old: &Function, new: &Function) -> String {
    let mut fields = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            fields.push(name.to_string());
        }
    };
    check("code", old.digest != new.digest);
    check("source", old.source != new.source);
    check("build", old.build != new.build);
    check("memory_mb", old.memory_mb != new.memory_mb);
    check("timeout", old.timeout != new.timeout);
    check("concurrency", old.concurrency != new.concurrency);
    check("min_instances", old.min_instances != new.min_instances);
    check("env", old.env != new.env);
    check(
        "allowed_outbound_hosts",
        old.allowed_outbound_hosts != new.allowed_outbound_hosts,
    );
    check("reuse", old.reuse != new.reuse);
    check("max_reuse", old.max_reuse != new.max_reuse);
    check("idle_timeout", old.idle_timeout != new.idle_timeout);
    check("uses", old.uses != new.uses);
    check("retries", old.retries != new.retries);
    check("max_event_age", old.max_event_age != new.max_event_age);
    check("on_success", old.on_success != new.on_success);
    check("on_failure", old.on_failure != new.on_failure);
    fields.join(", ")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "app `{}`: no changes", self.app);
        }
        writeln!(f, "app `{}`:", self.app)?;
        for c in &self.changes {
            let sign = match c.op {
                Op::Added => '+',
                Op::Changed => '~',
                Op::Removed => '-',
            };
            write!(f, "  {sign} {} {}", c.kind, c.name)?;
            if !c.detail.is_empty() {
                write!(f, " ({})", c.detail)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn app(text: &str) -> App {
        Manifest::parse("nimbus.toml", text).unwrap().app
    }

    const BASE: &str = "[app]\nname = \"a\"\n[functions.f]\nsource = \"f.wasm\"\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nfunction = \"f\"\n";

    #[test]
    fn identical_apps_have_no_changes() {
        let plan = Plan::between(Some(&app(BASE)), &app(BASE));
        assert!(plan.is_empty());
        assert_eq!(plan.to_string(), "app `a`: no changes\n");
    }

    #[test]
    fn shows_added_changed_removed() {
        let next = BASE
            .replace("/x", "/y")
            .replace("f.wasm\"", "f.wasm\"\ntimeout = \"1s\"");
        let plan = Plan::between(Some(&app(BASE)), &app(&next));
        let text = plan.to_string();
        assert!(text.contains("~ function f (timeout)"), "{text}");
        assert!(text.contains("+ route GET /y (-> f)"), "{text}");
        assert!(text.contains("- route GET /x"), "{text}");
    }

    #[test]
    fn a_new_queue_only_app_has_changes() {
        let a = app("[app]\nname = \"a\"\n[queues.inbox]\n");
        assert_eq!(a.queues.len(), 1, "{a:?}");
        let plan = Plan::between(None, &a);
        assert_eq!(plan.to_string(), "app `a`:\n  + store queues/inbox\n");
    }

    #[test]
    fn store_removal_is_flagged() {
        let with = format!("{BASE}[kv.carts]\n[docs.orders]\nindexes = [\"status\"]\n");
        let plan = Plan::between(Some(&app(BASE)), &app(&with));
        assert!(plan.to_string().contains("+ store kv/carts"), "{plan}");
        assert!(plan.deleted_stores().is_empty());
        let next = format!("{BASE}[docs.orders]\nindexes = [\"status\", \"total\"]\n");
        let plan = Plan::between(Some(&app(&with)), &app(&next));
        let text = plan.to_string();
        assert!(
            text.contains("- store kv/carts (deletes its data)"),
            "{text}"
        );
        assert!(
            text.contains("~ store docs/orders (indexes: status -> status, total)"),
            "{text}"
        );
        assert_eq!(plan.deleted_stores(), ["kv/carts"]);
    }
}
