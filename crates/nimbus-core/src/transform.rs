//! Input transforms of bus targets: what a target receives of a matched event.
//! A path (`$.data.order.id`, `$.data.items[0]`) selects one part of the event; a
//! template is text whose `<$.path>` placeholders are replaced by the parts they
//! select (strings bare, anything else as JSON; a missing part as `null`).

use serde_json::Value;

use crate::app::Input;

/// A path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path `{path}`: {why}")]
pub struct PathError {
    pub path: String,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Name(String),
    Index(usize),
}

fn parse_path(path: &str) -> Result<Vec<Step>, PathError> {
    let bad = |why| PathError {
        path: path.to_string(),
        why,
    };
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| bad("it starts with `$`"))?;
    let mut steps = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '.' => {
                let mut name = String::new();
                while let Some((_, c)) = chars.peek() {
                    if *c == '.' || *c == '[' {
                        break;
                    }
                    name.push(*c);
                    chars.next();
                }
                if name.is_empty() {
                    return Err(bad("a `.` is followed by a field name"));
                }
                steps.push(Step::Name(name));
            }
            '[' => {
                let mut digits = String::new();
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    digits.push(c);
                }
                let index = digits
                    .parse()
                    .map_err(|_| bad("`[…]` holds a list index such as `[0]`"))?;
                steps.push(Step::Index(index));
            }
            _ => return Err(bad("steps are `.name` or `[index]`")),
        }
    }
    Ok(steps)
}

/// Checks a path without an event (for the manifest).
pub fn check_path(path: &str) -> Result<(), PathError> {
    parse_path(path).map(drop)
}

/// The placeholders of a template, each checked.
pub fn check_template(template: &str) -> Result<(), PathError> {
    placeholders(template).try_for_each(|(_, path)| check_path(path))
}

/// `(byte range, path)` of each `<$…>` in `template`.
fn placeholders(template: &str) -> impl Iterator<Item = (std::ops::Range<usize>, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        let start = from + template[from..].find("<$")?;
        let end = start + template[start..].find('>')?;
        from = end + 1;
        Some((start..end + 1, &template[start + 1..end]))
    })
}

/// The part of `event` at `path`, if there is one.
pub fn select<'a>(event: &'a Value, path: &str) -> Result<Option<&'a Value>, PathError> {
    let mut at = event;
    for step in parse_path(path)? {
        let next = match step {
            Step::Name(name) => at.get(name.as_str()),
            Step::Index(i) => at.get(i),
        };
        match next {
            Some(v) => at = v,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

impl Input {
    /// What the target receives of `event` (a CloudEvent as JSON).
    pub fn apply(&self, event: &Value) -> Result<Value, PathError> {
        Ok(match self {
            Input::Event => event.clone(),
            Input::Path(path) => select(event, path)?.cloned().unwrap_or(Value::Null),
            Input::Template(template) => {
                let mut out = String::with_capacity(template.len());
                let mut last = 0;
                for (range, path) in placeholders(template) {
                    out.push_str(&template[last..range.start]);
                    match select(event, path)? {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(v) => out.push_str(&v.to_string()),
                        None => out.push_str("null"),
                    }
                    last = range.end;
                }
                out.push_str(&template[last..]);
                // A template that makes JSON is passed on as JSON, else as text.
                serde_json::from_str(&out).unwrap_or(Value::String(out))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_and_templates() {
        let event = json!({"type": "order.placed", "data": {"id": "o-1", "total": 42, "items": ["mug", "cup"]}});
        let path = |p: &str| Input::Path(p.into()).apply(&event).unwrap();
        assert_eq!(path("$.data.id"), json!("o-1"));
        assert_eq!(path("$.data.items[1]"), json!("cup"));
        assert_eq!(path("$.data"), event["data"]);
        assert_eq!(path("$"), event);
        assert_eq!(path("$.data.missing"), Value::Null);
        assert_eq!(Input::Event.apply(&event).unwrap(), event);

        let template = |t: &str| Input::Template(t.into()).apply(&event).unwrap();
        assert_eq!(
            template(
                r#"{"order": "<$.data.id>", "total": <$.data.total>, "first": "<$.data.items[0]>"}"#
            ),
            json!({"order": "o-1", "total": 42, "first": "mug"})
        );
        assert_eq!(
            template("order <$.data.id> placed"),
            json!("order o-1 placed")
        );
        assert_eq!(template("<$.nope>"), Value::Null);

        for bad in ["data.id", "$.", "$.a[x]", "$a"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_template("x <$.data..id> y").is_err());
        assert!(check_template("no placeholders").is_ok());
    }
}
