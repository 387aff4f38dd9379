//! Compiles a [`DocQuery`] to one SQLite statement, and owns the SQL text of a
//! field (`json_extract(body, '$."a"."b"')`) that both the statements and the
//! per-path indexes use: SQLite only serves an expression from an index when the
//! two expressions are written identically, so there is exactly one function
//! producing it.
//!
//! Filter semantics (documented in `docs/data.md`):
//! - Comparisons only match fields of the same JSON type as the operand: numbers
//!   with numbers, strings with strings, bools with bools (`false < true`). A
//!   string never equals an object or array, although SQLite returns those as
//!   JSON text, and `true` never equals `1`, although SQLite returns it as 1.
//! - `eq null` matches a field holding JSON `null`, not a missing field; use
//!   `exists: false` for that. Ordering comparisons with `null` are invalid.
//! - `ne v` is exactly "not `eq v`": it matches missing fields and fields of
//!   another type.
//! - `exists: true` matches any present field, `null` included.
//! - `prefix` matches strings only, byte-wise (case-sensitive).
//!
//! Sort order is SQLite's: missing and `null` first, then numbers (bools as 0
//! and 1), then strings (objects and arrays as their JSON text); descending is
//! the exact reverse. Ties are broken by document id, in the direction of the
//! last sort key, so one index `(field, id)` serves the order in both directions.
//! Paths name object members only; `items.0` is member `"0"`, not an array index.

use crate::prefix::successor;
use nimbus_core::data::{Cond, DataError, DataResult, DocQuery, FieldPath, Filter, limits};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cursor::{self, Cursor};

/// Page size when the query names none.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// Bound values per statement; SQLite allows 32766, a filter this big is a mistake.
const MAX_PARAMS: usize = 10_000;
const MAX_ORDER_KEYS: usize = 8;

/// The JSON path literal of `path`: `'$."a"."b"'`. Quoting each segment is safe
/// because [`FieldPath`] admits only letters, digits, `_` and `-`.
fn path_literal(path: &FieldPath) -> String {
    let mut s = String::from("'$");
    for seg in path.segments() {
        debug_assert!(
            seg.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        s.push_str(".\"");
        s.push_str(seg);
        s.push('"');
    }
    s.push('\'');
    s
}

/// The value of `path` as SQLite sees it; the one expression indexes are built on.
pub(crate) fn field_expr(path: &FieldPath) -> String {
    format!("json_extract(body, {})", path_literal(path))
}

fn type_expr(path: &FieldPath) -> String {
    format!("json_type(body, {})", path_literal(path))
}

/// Every index of store `store_id` is named with this prefix.
pub(crate) fn index_prefix(store_id: i64) -> String {
    format!("data_docs_ix_{store_id}_")
}

/// The index of `path` in store `store_id`: readable, plus a hash of the exact
/// path because SQLite names are case-insensitive and `.`/`-` are folded.
pub(crate) fn index_name(store_id: i64, path: &FieldPath) -> String {
    let readable: String = path
        .as_str()
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let hash = hex::encode(&Sha256::digest(path.as_str().as_bytes())[..4]);
    format!("{}{readable}_{hash}", index_prefix(store_id))
}

/// A partial index (only the store's rows, so writes to other stores never
/// evaluate it) on the field, then id: an equality on the field is then already
/// in id order, the default order, and an order by the field needs no sort.
pub(crate) fn create_index_sql(store_id: i64, path: &FieldPath) -> String {
    format!(
        "CREATE INDEX \"{}\" ON data_docs ({}, id) WHERE store_id = {store_id}",
        index_name(store_id, path),
        field_expr(path)
    )
}

/// A compiled query.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// Selects `id, rev, body`, then the `sort_keys` order-by values.
    pub sql: String,
    pub params: Vec<SqlValue>,
    pub limit: usize,
    pub sort_keys: usize,
    /// Identifies the filter and order, for cursors.
    pub fingerprint: String,
    /// Every path the filter and order mention, first mention first.
    pub paths: Vec<FieldPath>,
}

#[derive(Default)]
struct Builder {
    sql: String,
    params: Vec<SqlValue>,
}

impl Builder {
    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    fn bind(&mut self, value: SqlValue) {
        self.sql.push('?');
        self.params.push(value);
    }
}

/// Compiles `query` for store `store_id`, whose existing indexes are `indexes`
/// (only looked at when the query has an order).
pub(crate) fn compile(store_id: i64, query: &DocQuery, indexes: &[String]) -> DataResult<Compiled> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > limits::MAX_PAGE {
        return Err(DataError::Invalid(format!(
            "limit {limit} is out of range; it must be 1 to {}",
            limits::MAX_PAGE
        )));
    }
    if query.order_by.len() > MAX_ORDER_KEYS {
        return Err(DataError::Invalid(format!(
            "a query sorts by at most {MAX_ORDER_KEYS} fields"
        )));
    }
    let fingerprint = {
        let text = format!("{store_id}|{:?}|{:?}", query.filter, query.order_by);
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    };
    let after = query
        .cursor
        .as_deref()
        .map(|c| cursor::decode(c, &fingerprint, query.order_by.len()))
        .transpose()?;

    // (expression, descending) of every sort key, the id tie-breaker last.
    let mut keys: Vec<(String, bool)> = query
        .order_by
        .iter()
        .map(|o| (field_expr(&o.path), o.desc))
        .collect();
    let tie_desc = query.order_by.last().is_some_and(|o| o.desc);
    keys.push(("id".into(), tie_desc));

    let mut b = Builder::default();
    b.push("SELECT id, rev, body");
    for (expr, _) in &keys[..keys.len() - 1] {
        b.push(", ");
        b.push(expr);
    }
    // The store id is inlined, not bound: only a literal lets SQLite prove the
    // partial indexes' `WHERE store_id = N` holds. It is our own integer.
    b.push(" FROM data_docs");
    if let Some(name) = order_index(store_id, query, indexes) {
        b.push(&format!(" INDEXED BY \"{name}\""));
    }
    b.push(&format!(" WHERE store_id = {store_id}"));
    let mut paths = Vec::new();
    if let Some(filter) = &query.filter {
        b.push(" AND ");
        compile_filter(&mut b, filter, &mut paths)?;
    }
    if let Some(after) = &after {
        b.push(" AND ");
        compile_after(&mut b, &keys, after);
    }
    b.push(" ORDER BY ");
    for (i, (expr, desc)) in keys.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push(expr);
        b.push(if *desc { " DESC" } else { " ASC" });
    }
    // One row more than asked tells whether another page follows. A literal,
    // because SQLite only plans with a LIMIT it can read (a bound one is
    // unknown): a small page then favors walking an index in the sort order.
    b.push(&format!(" LIMIT {}", limit + 1));
    if b.params.len() > MAX_PARAMS {
        return Err(DataError::Invalid(format!(
            "the filter has more than {MAX_PARAMS} values"
        )));
    }
    for o in &query.order_by {
        if !paths.contains(&o.path) {
            paths.push(o.path.clone());
        }
    }
    Ok(Compiled {
        sql: b.sql,
        params: b.params,
        limit,
        sort_keys: keys.len() - 1,
        fingerprint,
        paths,
    })
}

/// The index to walk for a sorted query, when SQLite would not pick it.
///
/// Its planner costs "scan the store, then sort" below "walk the sort index and
/// look each row up", not counting that a LIMIT stops the walk after a page: a
/// sorted page of a large store would read and sort all of it. So the index of
/// the first sort key is forced, unless the filter names another indexed path,
/// whose index may select far fewer rows (then the planner chooses).
fn order_index(store_id: i64, query: &DocQuery, indexes: &[String]) -> Option<String> {
    let first = &query.order_by.first()?.path;
    let name = index_name(store_id, first);
    if !indexes.contains(&name) {
        return None;
    }
    let mut paths = Vec::new();
    if let Some(filter) = &query.filter {
        collect_paths(filter, &mut paths);
    }
    let other_indexed = paths
        .iter()
        .any(|p| p != first && indexes.contains(&index_name(store_id, p)));
    (!other_indexed).then_some(name)
}

fn collect_paths(filter: &Filter, paths: &mut Vec<FieldPath>) {
    match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            for part in parts {
                collect_paths(part, paths);
            }
        }
        Filter::Field { path, .. } => paths.push(path.clone()),
    }
}

/// "Strictly after the cursor row" in the order of `keys`.
fn compile_after(b: &mut Builder, keys: &[(String, bool)], after: &Cursor) {
    let values: Vec<SqlValue> = after
        .keys
        .iter()
        .cloned()
        .chain([SqlValue::Text(after.id.clone())])
        .collect();
    // The common case, all ascending from non-null values, is one row-value
    // comparison, which SQLite turns into a range of the `(field, id)` index. A
    // row with a null key compares as null and is skipped, right because nulls
    // sort first.
    if keys.iter().all(|(_, desc)| !desc) && !values.contains(&SqlValue::Null) {
        if keys.len() > 1 {
            // Implied by the row value, but SQLite only seeks an expression
            // index with a plain comparison.
            b.push(&keys[0].0);
            b.push(" >= ");
            b.bind(values[0].clone());
            b.push(" AND ");
        }
        b.push("(");
        b.push(
            &keys
                .iter()
                .map(|(e, _)| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        b.push(") > (");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.bind(v.clone());
        }
        b.push(")");
        return;
    }
    // In general: some key k is after the cursor's while all before it are equal
    // (`IS` so that null equals null).
    b.push("(");
    let mut any = false;
    for (k, (expr, desc)) in keys.iter().enumerate() {
        let value = &values[k];
        if *desc && *value == SqlValue::Null {
            // Nulls come last when descending: nothing follows a null.
            continue;
        }
        if any {
            b.push(" OR ");
        }
        any = true;
        b.push("(");
        for (j, (prev, _)) in keys[..k].iter().enumerate() {
            b.push(prev);
            b.push(" IS ");
            b.bind(values[j].clone());
            b.push(" AND ");
        }
        match (desc, value) {
            (false, SqlValue::Null) => {
                b.push(expr);
                b.push(" IS NOT NULL");
            }
            (false, v) => {
                b.push(expr);
                b.push(" > ");
                b.bind(v.clone());
            }
            (true, v) => {
                b.push("(");
                b.push(expr);
                b.push(" < ");
                b.bind(v.clone());
                b.push(" OR ");
                b.push(expr);
                b.push(" IS NULL)");
            }
        }
        b.push(")");
    }
    if !any {
        b.push("0");
    }
    b.push(")");
}

fn compile_filter(b: &mut Builder, filter: &Filter, paths: &mut Vec<FieldPath>) -> DataResult<()> {
    match filter {
        Filter::And(parts) | Filter::Or(parts) if parts.is_empty() => {
            b.push(if matches!(filter, Filter::And(_)) {
                "1"
            } else {
                "0"
            });
        }
        Filter::And(parts) | Filter::Or(parts) => {
            let op = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            b.push("(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    b.push(op);
                }
                compile_filter(b, part, paths)?;
            }
            b.push(")");
        }
        Filter::Field { path, cond } => {
            if !paths.contains(path) {
                paths.push(path.clone());
            }
            compile_cond(b, path, cond)?;
        }
    }
    Ok(())
}

/// A filter operand, by the JSON type it matches.
enum Operand {
    Null,
    Bool(bool),
    Number(SqlValue),
    Text(String),
}

impl Operand {
    fn of(path: &FieldPath, value: &Value) -> DataResult<Self> {
        Ok(match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => SqlValue::Integer(i),
                (None, Some(f)) => SqlValue::Real(f),
                _ => {
                    return Err(DataError::Invalid(format!(
                        "`{path}`: cannot compare with {n}"
                    )));
                }
            }),
            Value::String(s) => Self::Text(s.clone()),
            Value::Array(_) | Value::Object(_) => {
                return Err(DataError::Invalid(format!(
                    "`{path}`: conditions compare with a string, number, bool or null"
                )));
            }
        })
    }
}

const NUMBER_TYPES: &str = " IN ('integer', 'real')";
const BOOL_TYPES: &str = " IN ('true', 'false')";

/// Each comparison is `field <op> ?` (what an index serves) AND a check of the
/// JSON type (what makes `"1"`, `1`, `true` and `[1]` different).
fn compile_cond(b: &mut Builder, path: &FieldPath, cond: &Cond) -> DataResult<()> {
    let e = field_expr(path);
    let t = type_expr(path);
    match cond {
        Cond::Eq(v) => equal(b, &e, &t, Operand::of(path, v)?),
        Cond::Ne(v) => {
            // `eq` is null (not false) on a missing field; `ne` must match it.
            b.push("NOT COALESCE(");
            equal(b, &e, &t, Operand::of(path, v)?);
            b.push(", 0)");
        }
        Cond::Lt(v) | Cond::Le(v) | Cond::Gt(v) | Cond::Ge(v) => {
            let (op, name) = match cond {
                Cond::Lt(_) => (" < ", "lt"),
                Cond::Le(_) => (" <= ", "le"),
                Cond::Gt(_) => (" > ", "gt"),
                _ => (" >= ", "ge"),
            };
            let upward = matches!(cond, Cond::Gt(_) | Cond::Ge(_));
            b.push("(");
            b.push(&e);
            b.push(op);
            match Operand::of(path, v)? {
                Operand::Null => {
                    return Err(DataError::Invalid(format!(
                        "`{path}`: `{name}` cannot compare with null"
                    )));
                }
                Operand::Bool(x) => {
                    b.bind(SqlValue::Integer(x.into()));
                    b.push(&format!(" AND {t}{BOOL_TYPES}"));
                }
                Operand::Number(n) => {
                    b.bind(n);
                    // SQLite sorts every string after every number: bounding the
                    // range keeps an index scan off the strings.
                    if upward {
                        b.push(&format!(" AND {e} < ''"));
                    }
                    b.push(&format!(" AND {t}{NUMBER_TYPES}"));
                }
                Operand::Text(s) => {
                    b.bind(SqlValue::Text(s));
                    if !upward {
                        b.push(&format!(" AND {e} >= ''"));
                    }
                    b.push(&format!(" AND {t} = 'text'"));
                }
            }
            b.push(")");
        }
        Cond::In(values) => {
            let mut numbers = Vec::new();
            let mut texts = Vec::new();
            let mut bools = Vec::new();
            let mut null = false;
            for v in values {
                match Operand::of(path, v)? {
                    Operand::Null => null = true,
                    Operand::Bool(x) => bools.push(x),
                    Operand::Number(n) => numbers.push(n),
                    Operand::Text(s) => texts.push(SqlValue::Text(s)),
                }
            }
            bools.dedup();
            let mut groups = Vec::new();
            if !numbers.is_empty() {
                groups.push((numbers, NUMBER_TYPES.to_string()));
            }
            if !texts.is_empty() {
                groups.push((texts, " = 'text'".to_string()));
            }
            if !bools.is_empty() {
                let types: Vec<String> = bools.iter().map(|x| format!("'{x}'")).collect();
                let values = bools.iter().map(|&x| SqlValue::Integer(x.into())).collect();
                groups.push((values, format!(" IN ({})", types.join(", "))));
            }
            b.push("(");
            for (i, (values, types)) in groups.into_iter().enumerate() {
                if i > 0 {
                    b.push(" OR ");
                }
                b.push(&format!("({e} IN ("));
                for (j, v) in values.into_iter().enumerate() {
                    if j > 0 {
                        b.push(", ");
                    }
                    b.bind(v);
                }
                b.push(&format!(") AND {t}{types})"));
            }
            if null {
                if !values.iter().all(Value::is_null) {
                    b.push(" OR ");
                }
                equal(b, &e, &t, Operand::Null);
            }
            if values.is_empty() {
                b.push("0");
            }
            b.push(")");
        }
        Cond::Exists(true) => b.push(&format!("{t} IS NOT NULL")),
        // `json_extract` is null for missing and null fields alike: the first
        // term lets an index find the candidates.
        Cond::Exists(false) => b.push(&format!("({e} IS NULL AND {t} IS NULL)")),
        Cond::Prefix(prefix) => {
            // A range rather than LIKE, which is case-insensitive and which an
            // expression index cannot serve.
            b.push(&format!("({e} >= "));
            b.bind(SqlValue::Text(prefix.clone()));
            if let Some(end) = successor(prefix) {
                b.push(&format!(" AND {e} < "));
                b.bind(SqlValue::Text(end));
            }
            b.push(&format!(" AND {t} = 'text')"));
        }
    }
    Ok(())
}

fn equal(b: &mut Builder, e: &str, t: &str, operand: Operand) {
    match operand {
        Operand::Null => b.push(&format!("({e} IS NULL AND {t} = 'null')")),
        Operand::Bool(x) => {
            b.push(&format!("({e} = "));
            b.bind(SqlValue::Integer(x.into()));
            b.push(&format!(" AND {t} = '{x}')"));
        }
        Operand::Number(n) => {
            b.push(&format!("({e} = "));
            b.bind(n);
            b.push(&format!(" AND {t}{NUMBER_TYPES})"));
        }
        Operand::Text(s) => {
            b.push(&format!("({e} = "));
            b.bind(SqlValue::Text(s));
            b.push(&format!(" AND {t} = 'text')"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_query_share_the_expression() {
        let path = FieldPath::parse("customer.id").unwrap();
        let sql = create_index_sql(7, &path);
        assert!(
            sql.contains(r#"json_extract(body, '$."customer"."id"')"#),
            "{sql}"
        );
        assert!(sql.ends_with("WHERE store_id = 7"), "{sql}");
        let upper = index_name(7, &FieldPath::parse("Customer.id").unwrap());
        assert_ne!(index_name(7, &path), upper);
        assert!(index_name(7, &path).starts_with(&index_prefix(7)));
        assert!(!index_name(17, &path).starts_with(&index_prefix(1)));
    }
}
