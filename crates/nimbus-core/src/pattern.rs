//! Event patterns: EventBridge-style content filters over a CloudEvent (its
//! envelope attributes and its JSON `data`), and [`RuleSet`], which finds the
//! rules an event matches without evaluating every rule.
//!
//! A pattern is a JSON object. Each key names a field of the event; its value is
//! either a nested object (a pattern over that field's object) or a list of
//! matchers, any of which may match. `"$or"` takes a list of patterns, any of
//! which may match. Matchers:
//!
//! | matcher | matches |
//! |---|---|
//! | `"x"`, `12`, `true`, `null` | that exact value |
//! | `{ prefix = "x" }`, `{ suffix = "x" }` | strings starting / ending so |
//! | `{ equals-ignore-case = "x" }` | strings equal but for ASCII case |
//! | `{ anything-but = V }` | a present value that is not V (a value, a list of values, or `{ prefix }` / `{ suffix }`) |
//! | `{ numeric = [">", 100, "<=", 200] }` | numbers within every comparison (`<`, `<=`, `=`, `>=`, `>`) |
//! | `{ exists = true }` / `{ exists = false }` | the field is present / absent |
//!
//! When the event's field is a list, the field matches if any element does.
//! Every key of a pattern must match (and); a missing field matches only
//! `exists = false`.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A pattern that did not parse: where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at `{path}`)")]
pub struct PatternError {
    /// Where in the pattern, e.g. `data.total[0].numeric`.
    pub path: String,
    pub message: String,
}

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Node,
}

/// An object pattern: every field must match, and each `$or` group must have a
/// matching alternative.
#[derive(Debug, Clone, PartialEq, Default)]
struct Node {
    fields: Vec<(String, Field)>,
    ors: Vec<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Nested(Node),
    AnyOf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    IgnoreCase(String),
    AnythingBut(Vec<Matcher>),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Cmp {
    fn holds(self, x: f64, bound: f64) -> bool {
        match self {
            Cmp::Lt => x < bound,
            Cmp::Le => x <= bound,
            Cmp::Eq => x == bound,
            Cmp::Ge => x >= bound,
            Cmp::Gt => x > bound,
        }
    }
}

fn err(path: &str, message: impl Into<String>) -> PatternError {
    PatternError {
        path: if path.is_empty() {
            "pattern".into()
        } else {
            path.into()
        },
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Pattern {
    /// Parses a pattern, with the first problem's place in it.
    pub fn parse(value: &Value) -> Result<Self, PatternError> {
        let Value::Object(map) = value else {
            return Err(err("", "a pattern is a table of fields"));
        };
        if map.is_empty() {
            return Err(err("", "a pattern needs at least one field"));
        }
        Ok(Self {
            root: parse_node(map, "")?,
        })
    }

    /// Whether `event` (a CloudEvent as JSON: attributes, extensions, `data`) matches.
    pub fn matches(&self, event: &Value) -> bool {
        node_matches(&self.root, event)
    }

    /// A field at the top level whose matchers are all exact strings: the
    /// event's value there must be one of them, so it can key an index.
    fn index_key(&self) -> Option<(&str, Vec<&str>)> {
        let exact = |name: &str| {
            self.root.fields.iter().find_map(|(field, m)| match m {
                Field::AnyOf(ms) if field == name => ms
                    .iter()
                    .map(|m| match m {
                        Matcher::Exact(Value::String(s)) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect::<Option<Vec<&str>>>(),
                _ => None,
            })
        };
        // The most selective attributes of a CloudEvent first.
        ["type", "source", "subject"]
            .into_iter()
            .find_map(|name| exact(name).map(|values| (name, values)))
    }
}

fn parse_node(map: &Map<String, Value>, path: &str) -> Result<Node, PatternError> {
    let mut node = Node::default();
    for (key, value) in map {
        let here = join(path, key);
        if key == "$or" {
            let Value::Array(alternatives) = value else {
                return Err(err(&here, "`$or` takes a list of patterns"));
            };
            if alternatives.len() < 2 {
                return Err(err(&here, "`$or` needs at least two patterns"));
            }
            let mut group = Vec::new();
            for (i, alt) in alternatives.iter().enumerate() {
                let at = format!("{here}[{i}]");
                match alt {
                    Value::Object(m) if !m.is_empty() => group.push(parse_node(m, path)?),
                    _ => return Err(err(&at, "each `$or` alternative is a table of fields")),
                }
            }
            node.ors.push(group);
            continue;
        }
        let field = match value {
            Value::Object(m) if m.is_empty() => {
                return Err(err(&here, "an empty table matches nothing"));
            }
            Value::Object(m) => Field::Nested(parse_node(m, &here)?),
            Value::Array(ms) if ms.is_empty() => {
                return Err(err(&here, "an empty list matches nothing"));
            }
            Value::Array(ms) => Field::AnyOf(
                ms.iter()
                    .enumerate()
                    .map(|(i, m)| parse_matcher(m, &format!("{here}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(err(
                    &here,
                    "a field's matchers go in a list, e.g. [\"order.placed\"]",
                ));
            }
        };
        node.fields.push((key.clone(), field));
    }
    Ok(node)
}

fn one_key<'a>(
    m: &'a Map<String, Value>,
    path: &str,
) -> Result<(&'a str, &'a Value), PatternError> {
    let mut it = m.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(err(path, "a matcher table has exactly one key")),
    }
}

fn string<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a str, PatternError> {
    v.as_str()
        .ok_or_else(|| err(path, format!("`{what}` takes a string")))
}

fn parse_matcher(value: &Value, path: &str) -> Result<Matcher, PatternError> {
    let Value::Object(m) = value else {
        return match value {
            Value::Array(_) => Err(err(path, "a list inside a list of matchers")),
            exact => Ok(Matcher::Exact(exact.clone())),
        };
    };
    let (key, arg) = one_key(m, path)?;
    let here = join(path, key);
    Ok(match key {
        "prefix" => Matcher::Prefix(string(arg, &here, key)?.into()),
        "suffix" => Matcher::Suffix(string(arg, &here, key)?.into()),
        "equals-ignore-case" => Matcher::IgnoreCase(string(arg, &here, key)?.into()),
        "exists" => Matcher::Exists(
            arg.as_bool()
                .ok_or_else(|| err(&here, "`exists` takes true or false"))?,
        ),
        "numeric" => Matcher::Numeric(parse_numeric(arg, &here)?),
        "anything-but" => Matcher::AnythingBut(match arg {
            Value::Array(vs) if vs.is_empty() => {
                return Err(err(&here, "`anything-but` needs at least one value"));
            }
            Value::Array(vs) => vs
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Array(_) | Value::Object(_) => Err(err(
                        &format!("{here}[{i}]"),
                        "a list of `anything-but` values holds plain values",
                    )),
                    v => Ok(Matcher::Exact(v.clone())),
                })
                .collect::<Result<_, _>>()?,
            Value::Object(inner) => {
                let (k, v) = one_key(inner, &here)?;
                let at = join(&here, k);
                match k {
                    "prefix" => vec![Matcher::Prefix(string(v, &at, k)?.into())],
                    "suffix" => vec![Matcher::Suffix(string(v, &at, k)?.into())],
                    _ => {
                        return Err(err(
                            &at,
                            format!("`anything-but` takes values, `prefix` or `suffix`, not `{k}`"),
                        ));
                    }
                }
            }
            v => vec![Matcher::Exact(v.clone())],
        }),
        other => {
            return Err(err(
                &here,
                format!(
                    "unknown matcher `{other}` (expected prefix, suffix, equals-ignore-case, \
                     anything-but, numeric or exists)"
                ),
            ));
        }
    })
}

fn parse_numeric(arg: &Value, path: &str) -> Result<Vec<(Cmp, f64)>, PatternError> {
    let Value::Array(items) = arg else {
        return Err(err(
            path,
            "`numeric` takes a list such as [\">\", 0, \"<=\", 5]",
        ));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(err(
            path,
            "`numeric` takes one or two comparisons: an operator and a number each",
        ));
    }
    items
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let at = format!("{path}[{}]", i * 2);
            let cmp = match pair[0].as_str() {
                Some("<") => Cmp::Lt,
                Some("<=") => Cmp::Le,
                Some("=") => Cmp::Eq,
                Some(">=") => Cmp::Ge,
                Some(">") => Cmp::Gt,
                _ => return Err(err(&at, "operators are <, <=, =, >= and >")),
            };
            let bound = pair[1].as_f64().ok_or_else(|| {
                err(
                    &format!("{path}[{}]", i * 2 + 1),
                    "a comparison needs a number",
                )
            })?;
            Ok((cmp, bound))
        })
        .collect()
}

fn node_matches(node: &Node, value: &Value) -> bool {
    let object = value.as_object();
    node.fields.iter().all(|(key, field)| {
        let v = object.and_then(|o| o.get(key));
        match field {
            Field::Nested(inner) => match v {
                Some(Value::Array(items)) => items.iter().any(|i| node_matches(inner, i)),
                Some(v) => node_matches(inner, v),
                None => nested_absent_matches(inner),
            },
            Field::AnyOf(ms) => ms.iter().any(|m| field_matches(m, v)),
        }
    }) && node
        .ors
        .iter()
        .all(|group| group.iter().any(|alt| node_matches(alt, value)))
}

/// A nested pattern over a missing object matches only if all it asks is absence.
fn nested_absent_matches(node: &Node) -> bool {
    node_matches(node, &Value::Null)
}

fn field_matches(m: &Matcher, value: Option<&Value>) -> bool {
    match (m, value) {
        (Matcher::Exists(want), v) => *want == v.is_some(),
        (_, None) => false,
        (m, Some(Value::Array(items))) => items.iter().any(|i| scalar_matches(m, i)),
        (m, Some(v)) => scalar_matches(m, v),
    }
}

fn scalar_matches(m: &Matcher, v: &Value) -> bool {
    match m {
        Matcher::Exact(want) => match (want, v) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        },
        Matcher::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Matcher::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Matcher::IgnoreCase(p) => v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(p)),
        Matcher::AnythingBut(not) => !not.iter().any(|n| scalar_matches(n, v)),
        Matcher::Numeric(cmps) => v
            .as_f64()
            .is_some_and(|x| cmps.iter().all(|(c, bound)| c.holds(x, *bound))),
        Matcher::Exists(want) => *want,
    }
}

/// Rules of one bus, indexed: an event is checked only against the rules whose
/// `type`, `source` or `subject` values (when they name exact ones) include the
/// event's, plus the rules that name none. So 1,000 rules on distinct types
/// cost about what one does.
#[derive(Debug, Clone, Default)]
pub struct RuleSet<K> {
    rules: Vec<(K, Pattern)>,
    /// attribute -> value -> indexes into `rules`.
    index: HashMap<&'static str, HashMap<String, Vec<usize>>>,
    /// Rules with no exact `type`/`source`/`subject`: checked for every event.
    unindexed: Vec<usize>,
}

impl<K: Clone> RuleSet<K> {
    pub fn new(rules: impl IntoIterator<Item = (K, Pattern)>) -> Self {
        let mut set = Self {
            rules: rules.into_iter().collect(),
            index: HashMap::new(),
            unindexed: Vec::new(),
        };
        for (i, (_, pattern)) in set.rules.iter().enumerate() {
            match pattern.index_key() {
                Some((attr, values)) => {
                    let attr = ["type", "source", "subject"]
                        .into_iter()
                        .find(|a| *a == attr)
                        .expect("an indexed attribute");
                    let by_value = set.index.entry(attr).or_default();
                    for v in values {
                        let ids = by_value.entry(v.to_string()).or_default();
                        if ids.last() != Some(&i) {
                            ids.push(i);
                        }
                    }
                }
                None => set.unindexed.push(i),
            }
        }
        set
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The keys of the rules `event` matches, in rule order.
    pub fn matching(&self, event: &Value) -> Vec<K> {
        let mut candidates: Vec<usize> = self.unindexed.clone();
        for (attr, by_value) in &self.index {
            if let Some(ids) = event
                .get(*attr)
                .and_then(Value::as_str)
                .and_then(|v| by_value.get(v))
            {
                candidates.extend(ids);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .filter(|&i| self.rules[i].1.matches(event))
            .map(|i| self.rules[i].0.clone())
            .collect()
    }

    /// Every rule, every field: the baseline the index is measured against.
    pub fn matching_naive(&self, event: &Value) -> Vec<K> {
        self.rules
            .iter()
            .filter(|(_, p)| p.matches(event))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(v: Value) -> Pattern {
        Pattern::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn event() -> Value {
        json!({
            "specversion": "1.0", "id": "e1", "type": "order.placed",
            "source": "nimbus/shop/api", "subject": "orders/o-17",
            "data": {
                "total": 120.5, "count": 3, "status": "paid", "vip": true,
                "customer": {"id": "c-9", "country": "FR", "tags": ["new", "eu"]},
                "note": null
            }
        })
    }

    /// One row per case: (pattern, matches the event above?).
    #[test]
    fn every_operator_matches_and_misses() {
        let cases = [
            // exact
            (json!({"type": ["order.placed"]}), true),
            (json!({"type": ["order.shipped", "order.placed"]}), true),
            (json!({"type": ["order.shipped"]}), false),
            (json!({"data": {"count": [3]}}), true),
            (json!({"data": {"count": [3.0]}}), true),
            (json!({"data": {"count": ["3"]}}), false),
            (json!({"data": {"vip": [true]}}), true),
            (json!({"data": {"vip": [false]}}), false),
            (json!({"data": {"note": [null]}}), true),
            // nested and lists in the event
            (json!({"data": {"customer": {"id": ["c-9"]}}}), true),
            (json!({"data": {"customer": {"tags": ["eu"]}}}), true),
            (json!({"data": {"customer": {"tags": ["us"]}}}), false),
            // prefix, suffix, equals-ignore-case
            (json!({"source": [{"prefix": "nimbus/shop/"}]}), true),
            (json!({"source": [{"prefix": "nimbus/other/"}]}), false),
            (json!({"subject": [{"suffix": "-17"}]}), true),
            (json!({"subject": [{"suffix": "-18"}]}), false),
            (
                json!({"data": {"status": [{"equals-ignore-case": "PAID"}]}}),
                true,
            ),
            (
                json!({"data": {"status": [{"equals-ignore-case": "unpaid"}]}}),
                false,
            ),
            (json!({"data": {"total": [{"prefix": "12"}]}}), false),
            // anything-but
            (
                json!({"data": {"status": [{"anything-but": "refunded"}]}}),
                true,
            ),
            (
                json!({"data": {"status": [{"anything-but": ["paid", "refunded"]}]}}),
                false,
            ),
            (
                json!({"data": {"status": [{"anything-but": {"prefix": "pa"}}]}}),
                false,
            ),
            (
                json!({"data": {"status": [{"anything-but": {"suffix": "ed"}}]}}),
                true,
            ),
            (json!({"data": {"missing": [{"anything-but": "x"}]}}), false),
            (
                json!({"data": {"customer": {"tags": [{"anything-but": "new"}]}}}),
                true,
            ),
            // numeric
            (json!({"data": {"total": [{"numeric": [">", 100]}]}}), true),
            (
                json!({"data": {"total": [{"numeric": [">", 120.5]}]}}),
                false,
            ),
            (
                json!({"data": {"total": [{"numeric": [">=", 120.5]}]}}),
                true,
            ),
            (
                json!({"data": {"total": [{"numeric": [">", 100, "<=", 200]}]}}),
                true,
            ),
            (
                json!({"data": {"total": [{"numeric": [">", 100, "<", 110]}]}}),
                false,
            ),
            (json!({"data": {"count": [{"numeric": ["=", 3]}]}}), true),
            (json!({"data": {"status": [{"numeric": [">", 0]}]}}), false),
            (json!({"data": {"missing": [{"numeric": [">", 0]}]}}), false),
            // exists
            (json!({"data": {"vip": [{"exists": true}]}}), true),
            (json!({"data": {"vip": [{"exists": false}]}}), false),
            (json!({"data": {"missing": [{"exists": false}]}}), true),
            (json!({"data": {"missing": [{"exists": true}]}}), false),
            (json!({"data": {"note": [{"exists": true}]}}), true),
            (json!({"nothing": {"here": [{"exists": false}]}}), true),
            (json!({"nothing": {"here": [{"exists": true}]}}), false),
            // and across fields
            (
                json!({"type": ["order.placed"], "data": {"vip": [true]}}),
                true,
            ),
            (
                json!({"type": ["order.placed"], "data": {"vip": [false]}}),
                false,
            ),
            // $or
            (
                json!({"$or": [{"type": ["x"]}, {"data": {"count": [3]}}]}),
                true,
            ),
            (
                json!({"$or": [{"type": ["x"]}, {"data": {"count": [4]}}]}),
                false,
            ),
            (
                json!({"type": ["order.placed"], "$or": [{"subject": ["nope"]}, {"data": {"status": ["paid"]}}]}),
                true,
            ),
            (
                json!({"data": {"$or": [{"count": [1]}, {"total": [{"numeric": ["<", 200]}]}]}}),
                true,
            ),
        ];
        let event = event();
        for (pattern, expected) in cases {
            assert_eq!(p(pattern.clone()).matches(&event), expected, "{pattern}");
        }
    }

    #[test]
    fn bad_patterns_say_where() {
        let cases = [
            (json!([]), "pattern", "a pattern is a table"),
            (json!({}), "pattern", "at least one field"),
            (json!({"type": "order.placed"}), "type", "go in a list"),
            (json!({"type": []}), "type", "empty list"),
            (
                json!({"data": {"total": [{"numeric": [">"]}]}}),
                "data.total[0].numeric",
                "one or two comparisons",
            ),
            (
                json!({"data": {"total": [{"numeric": ["~", 1]}]}}),
                "data.total[0].numeric[0]",
                "operators are",
            ),
            (
                json!({"data": {"total": [{"numeric": [">", "1"]}]}}),
                "data.total[0].numeric[1]",
                "needs a number",
            ),
            (
                json!({"data": {"total": [{"between": [1, 2]}]}}),
                "data.total[0].between",
                "unknown matcher `between`",
            ),
            (
                json!({"type": [{"prefix": 1}]}),
                "type[0].prefix",
                "takes a string",
            ),
            (
                json!({"type": [{"prefix": "a", "suffix": "b"}]}),
                "type[0]",
                "exactly one key",
            ),
            (
                json!({"type": [{"exists": "yes"}]}),
                "type[0].exists",
                "true or false",
            ),
            (json!({"$or": [{"type": ["a"]}]}), "$or", "at least two"),
            (
                json!({"$or": [{"type": ["a"]}, 3]}),
                "$or[1]",
                "table of fields",
            ),
            (
                json!({"type": [{"anything-but": {"wildcard": "*"}}]}),
                "type[0].anything-but.wildcard",
                "not `wildcard`",
            ),
        ];
        for (pattern, path, message) in cases {
            let e = Pattern::parse(&pattern).expect_err(&pattern.to_string());
            assert_eq!(e.path, path, "{pattern}: {e}");
            assert!(e.message.contains(message), "{pattern}: {e}");
        }
    }

    #[test]
    fn the_index_finds_what_checking_every_rule_finds() {
        let mut rules = Vec::new();
        for i in 0..1000 {
            rules.push((format!("t{i}"), p(json!({"type": [format!("type.{i}")]}))));
        }
        rules.push((
            "placed-big".into(),
            p(json!({"type": ["order.placed"], "data": {"total": [{"numeric": [">", 100]}]}})),
        ));
        rules.push((
            "placed-small".into(),
            p(json!({"type": ["order.placed"], "data": {"total": [{"numeric": ["<", 100]}]}})),
        ));
        rules.push((
            "shop".into(),
            p(json!({"source": [{"prefix": "nimbus/shop/"}]})),
        ));
        rules.push((
            "by-source".into(),
            p(json!({"source": ["nimbus/shop/api", "x"]})),
        ));
        rules.push((
            "either".into(),
            p(json!({"$or": [{"type": ["type.7"]}, {"subject": ["orders/o-17"]}]})),
        ));
        let set = RuleSet::new(rules);
        assert_eq!(set.len(), 1005);
        // Only the rules without an exact type/source/subject are checked for every event.
        assert_eq!(set.unindexed.len(), 2);
        let event = event();
        assert_eq!(
            set.matching(&event),
            vec!["placed-big", "shop", "by-source", "either"]
        );
        assert_eq!(set.matching(&event), set.matching_naive(&event));
        for i in [0, 7, 999] {
            let e = json!({"type": format!("type.{i}"), "source": "elsewhere"});
            assert_eq!(set.matching(&e), set.matching_naive(&e), "type.{i}");
        }
        assert_eq!(
            set.matching(&json!({"type": "type.7"})),
            vec!["t7", "either"]
        );
        assert!(set.matching(&json!({"type": "unknown"})).is_empty());
    }
}
