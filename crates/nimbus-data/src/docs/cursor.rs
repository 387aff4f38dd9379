//! The opaque page cursor of a document query: the sort values and id of the
//! last row returned (keyset pagination), bound to a fingerprint of the query so
//! a cursor cannot silently continue a different one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nimbus_core::data::{DataError, DataResult};
use rusqlite::types::Value as SqlValue;
use serde_json::{Value, json};

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    /// The values of the `order_by` expressions, as SQLite returned them.
    pub keys: Vec<SqlValue>,
    pub id: String,
}

pub(crate) fn encode(fingerprint: &str, keys: &[SqlValue], id: &str) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|v| match v {
            SqlValue::Integer(i) => json!(i),
            SqlValue::Real(f) => json!(f),
            SqlValue::Text(s) => json!(s),
            // Sort expressions are `json_extract`, which never yields a blob.
            SqlValue::Null | SqlValue::Blob(_) => Value::Null,
        })
        .collect();
    let text = json!({"q": fingerprint, "k": keys, "id": id}).to_string();
    URL_SAFE_NO_PAD.encode(text)
}

pub(crate) fn decode(text: &str, fingerprint: &str, n_keys: usize) -> DataResult<Cursor> {
    let bad = || DataError::Invalid("the cursor is malformed".into());
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if value.get("q").and_then(Value::as_str) != Some(fingerprint) {
        return Err(DataError::Invalid(
            "the cursor belongs to a different query (filter and order must stay the same across pages)"
                .into(),
        ));
    }
    let id = value.get("id").and_then(Value::as_str).ok_or_else(bad)?;
    let keys = value.get("k").and_then(Value::as_array).ok_or_else(bad)?;
    if keys.len() != n_keys {
        return Err(bad());
    }
    let keys = keys
        .iter()
        .map(|k| match k {
            Value::Null => Ok(SqlValue::Null),
            Value::String(s) => Ok(SqlValue::Text(s.clone())),
            // serde_json keeps `1.0` a float, so integers and reals round-trip.
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(SqlValue::Integer(i)),
                (None, Some(f)) => Ok(SqlValue::Real(f)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect::<DataResult<Vec<_>>>()?;
    Ok(Cursor {
        keys,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_queries() {
        let keys = vec![
            SqlValue::Null,
            SqlValue::Integer(-3),
            SqlValue::Real(1.0),
            SqlValue::Real(2.5),
            SqlValue::Text("x\"y".into()),
        ];
        let text = encode("abc", &keys, "doc-1");
        let cursor = decode(&text, "abc", keys.len()).unwrap();
        assert_eq!(cursor.keys, keys);
        assert_eq!(cursor.id, "doc-1");
        assert!(matches!(
            decode(&text, "abd", keys.len()),
            Err(DataError::Invalid(_))
        ));
        assert!(matches!(
            decode(&text, "abc", 1),
            Err(DataError::Invalid(_))
        ));
        for junk in ["", "!!!", "bm90IGpzb24", &URL_SAFE_NO_PAD.encode("[1]")] {
            assert!(
                matches!(decode(junk, "abc", 0), Err(DataError::Invalid(_))),
                "{junk}"
            );
        }
    }
}
