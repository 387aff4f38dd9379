//! Listing a bucket as S3's ListObjectsV2 does: keys in byte order under a
//! prefix, keys with the delimiter after the prefix rolled up into common
//! prefixes, pages continued by an opaque cursor.
//!
//! Every step is a range scan of the `(store_id, key)` primary key: the prefix
//! becomes `key >= prefix AND key < successor(prefix)` (SQLite compares TEXT
//! as bytes, and UTF-8 byte order is code point order), and a rolled-up prefix
//! is skipped with one seek past it rather than by reading its keys.

use crate::prefix::successor;
use nimbus_core::data::{DataResult, ListObjects, ObjectMeta, ObjectPage, limits};
use rusqlite::Connection;

use super::{OBJECT_COLUMNS, OrStorage, meta_from_row};

/// Where the scan resumes.
enum From {
    /// Keys `>=` this one.
    At(String),
    /// Keys `>` this one.
    After(String),
}

pub(super) fn list(conn: &Connection, store_id: i64, req: &ListObjects) -> DataResult<ObjectPage> {
    let limit = req
        .limit
        .unwrap_or(limits::MAX_PAGE)
        .clamp(1, limits::MAX_PAGE);
    let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
    let prefix = req.prefix.as_str();
    let upper = successor(prefix);
    let rollup = |key: &str| -> Option<String> {
        let delimiter = delimiter?;
        let rest = key.strip_prefix(prefix)?;
        let at = rest.find(delimiter)?;
        Some(key[..prefix.len() + at + delimiter.len()].to_string())
    };

    let mut from = From::At(prefix.to_string());
    if let Some(cursor) = req.cursor.clone() {
        // A cursor is the last entry of the previous page. If it is a rolled-up
        // prefix, the next page starts after every key under it.
        let resume = match rollup(&cursor) {
            Some(common) if common == cursor => successor(&cursor).map(From::At),
            _ => Some(From::After(cursor.clone())),
        };
        match resume {
            Some(resume) if cursor.as_str() >= prefix => from = resume,
            Some(_) => {}
            None => return Ok(ObjectPage::default()),
        }
    }

    let mut page = ObjectPage::default();
    let mut last: Option<String> = None;
    let mut count = 0;
    let mut more = false;
    'scan: loop {
        // One more row than still fits tells whether another page follows.
        let rows = scan(conn, store_id, &from, upper.as_deref(), limit - count + 1)?;
        let exhausted = rows.len() < limit - count + 1;
        for meta in rows {
            if count == limit {
                more = true;
                break 'scan;
            }
            count += 1;
            if let Some(common) = rollup(&meta.key) {
                page.common_prefixes.push(common.clone());
                last = Some(common.clone());
                match successor(&common) {
                    Some(next) => {
                        from = From::At(next);
                        continue 'scan;
                    }
                    None => break 'scan,
                }
            }
            last = Some(meta.key.clone());
            from = From::After(meta.key.clone());
            page.objects.push(meta);
        }
        if exhausted {
            break;
        }
    }
    page.cursor = if more { last } else { None };
    Ok(page)
}

fn scan(
    conn: &Connection,
    store_id: i64,
    from: &From,
    upper: Option<&str>,
    limit: usize,
) -> DataResult<Vec<ObjectMeta>> {
    let (op, start) = match from {
        From::At(k) => (">=", k),
        From::After(k) => (">", k),
    };
    let bound = if upper.is_some() { "AND key < ?3" } else { "" };
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM blob_objects
         WHERE store_id = ?1 AND key {op} ?2 {bound} ORDER BY key LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql).or_storage()?;
    let rows = stmt
        .query_map(
            rusqlite::params![store_id, start, upper.unwrap_or(""), limit as i64],
            meta_from_row,
        )
        .or_storage()?
        .collect::<Result<Vec<_>, _>>()
        .or_storage()?;
    Ok(rows)
}
