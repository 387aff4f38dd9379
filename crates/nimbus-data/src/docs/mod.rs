//! The embedded document-store backend: JSON documents of every `[docs.X]` store
//! in one SQLite table keyed by `(store_id, id)`, a revision per document, the
//! change event of each write in the write's own transaction, and one partial
//! expression index per declared field path.
//!
//! Schema:
//! ```sql
//! data_docs (store_id INTEGER, id TEXT, rev INTEGER, body TEXT, PRIMARY KEY (store_id, id)) WITHOUT ROWID
//! "data_docs_ix_<store>_<path>_<hash>" ON data_docs (json_extract(body, '$."a"."b"'), id) WHERE store_id = <store>
//! ```
//! `WITHOUT ROWID` clusters a store's documents in id order, the default query
//! order, and makes a get one B-tree lookup. Filter semantics are in [`query`].

mod cursor;
mod patch;
mod query;

use nimbus_core::app::StoreKind;
use nimbus_core::data::{
    DataError, DataResult, DocQuery, DocStore, Document, FieldPath, QueryPage, QueryPlan, StoreRef,
    limits, validate_doc_id,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::{Value, json};

use crate::catalog::{Catalog, StoreInfo, append_change};

const MIGRATIONS: &[&str] = &["CREATE TABLE data_docs (
        store_id INTEGER NOT NULL,
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (store_id, id)
    ) WITHOUT ROWID;"];

const CREATED: &str = "nimbus.docs.created";
const UPDATED: &str = "nimbus.docs.updated";
const DELETED: &str = "nimbus.docs.deleted";

/// The document stores of the node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Docs {
    catalog: Catalog,
}

fn storage(err: rusqlite::Error) -> DataError {
    DataError::storage(err)
}

impl Docs {
    pub fn open(catalog: Catalog) -> Result<Self, DataError> {
        catalog
            .db()
            .migrate("data.docs", MIGRATIONS)
            .map_err(DataError::storage)?;
        catalog
            .db()
            .call_blocking(|conn| {
                // Creates `sqlite_stat1` if no ANALYZE ever ran.
                conn.execute_batch("ANALYZE sqlite_schema")?;
                plant_stats(conn, "data_docs", PRIMARY_KEY_STATS)?;
                conn.execute_batch("ANALYZE sqlite_schema")?;
                Ok(())
            })
            .map_err(DataError::storage)?;
        Ok(Self { catalog })
    }

    fn store(&self, store: StoreRef<'_>) -> DataResult<StoreInfo> {
        self.catalog.lookup(StoreKind::Docs, store)
    }

    /// Runs `f` on the database thread; SQLite errors inside `f` are mapped by
    /// `f` itself so that domain errors (conflicts) pass through unchanged.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> DataResult<T> + Send + 'static,
    ) -> DataResult<T> {
        self.catalog
            .db()
            .call(move |conn| Ok(f(conn)))
            .await
            .map_err(DataError::storage)?
    }

    /// Runs the write `f` in the database's group commit (its own savepoint of a
    /// shared transaction); returns once it is durable.
    async fn run_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DataResult<T> + Send + 'static,
    ) -> DataResult<T> {
        self.catalog
            .db()
            .write(move |conn| f(conn).map(|t| (t, None)))
            .await
    }

    /// Makes the store's SQLite indexes match the declared field paths (create
    /// missing, drop undeclared).
    pub async fn apply_indexes(&self, store: &StoreInfo, indexes: &[String]) -> DataResult<()> {
        let mut wanted = Vec::new();
        for text in indexes {
            let path = FieldPath::parse(text)
                .map_err(|e| DataError::Invalid(format!("index `{text}`: {e}")))?;
            let name = query::index_name(store.id, &path);
            if !wanted.iter().any(|(n, _)| *n == name) {
                wanted.push((name, path));
            }
        }
        let store_id = store.id;
        self.run(move |conn| {
            let tx = conn.transaction().map_err(storage)?;
            let existing = index_names(&tx, store_id).map_err(storage)?;
            for name in &existing {
                if !wanted.iter().any(|(n, _)| n == name) {
                    drop_index(&tx, name).map_err(storage)?;
                }
            }
            for (name, path) in &wanted {
                if !existing.contains(name) {
                    tx.execute_batch(&query::create_index_sql(store_id, path))
                        .map_err(storage)?;
                    plant_stats(&tx, name, INDEX_STATS).map_err(storage)?;
                }
            }
            // Makes the planner read the statistics of the new indexes.
            tx.execute_batch("ANALYZE sqlite_schema").map_err(storage)?;
            tx.commit().map_err(storage)
        })
        .await
    }

    /// Deletes every document and change event of the store, its indexes, and
    /// the store itself.
    pub async fn drop_store(&self, store: &StoreInfo) -> DataResult<()> {
        let info = store.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(storage)?;
            for name in index_names(&tx, info.id).map_err(storage)? {
                drop_index(&tx, &name).map_err(storage)?;
            }
            tx.execute("DELETE FROM data_docs WHERE store_id = ?1", [info.id])
                .map_err(storage)?;
            Catalog::remove_in(&tx, &info).map_err(storage)?;
            tx.commit().map_err(storage)
        })
        .await?;
        self.catalog.forget(store);
        Ok(())
    }

    /// (documents, total JSON bytes).
    pub async fn stats(&self, store: &StoreInfo) -> DataResult<(u64, u64)> {
        let store_id = store.id;
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(body)), 0) FROM data_docs WHERE store_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([store_id], |row| {
                    Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
                })
            })
            .map_err(storage)
        })
        .await
    }
}

/// Planner statistics (`sqlite_stat1`) for when ANALYZE never ran. Without
/// them SQLite assumes `store_id = ?` selects about 10 rows, so it prefers
/// walking a store's documents in primary-key order, filtering each, over an
/// expression index: a full scan of a million documents for an equality on an
/// indexed field. These say a store holds about 100,000 documents and an indexed
/// value about 10. An actual ANALYZE (`PRAGMA optimize`) replaces them with
/// measured ones, which is as good.
const PRIMARY_KEY_STATS: &str = "1000000 100000 1";
const INDEX_STATS: &str = "100000 10 1";

/// Sets the statistics of index `idx` (for the primary key of a `WITHOUT
/// ROWID` table, the table's name) unless it has some.
fn plant_stats(conn: &Connection, idx: &str, stat: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) SELECT 'data_docs', ?1, ?2
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE tbl = 'data_docs' AND idx = ?1)",
        (idx, stat),
    )?;
    Ok(())
}

fn drop_index(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("DROP INDEX \"{name}\""))?;
    conn.execute(
        "DELETE FROM sqlite_stat1 WHERE tbl = 'data_docs' AND idx = ?1",
        [name],
    )?;
    Ok(())
}

/// The names of the store's indexes, from the schema.
fn index_names(conn: &Connection, store_id: i64) -> rusqlite::Result<Vec<String>> {
    let prefix = query::index_prefix(store_id);
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'data_docs'",
    )?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Filtered here: `_` is a wildcard in LIKE, and store 1's prefix is a
    // prefix of store 12's.
    Ok(names
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

/// Compiles `query`, reading the store's indexes if its order may need one.
fn compile(conn: &Connection, store_id: i64, query: &DocQuery) -> DataResult<query::Compiled> {
    let indexes = if query.order_by.is_empty() {
        Vec::new()
    } else {
        index_names(conn, store_id).map_err(storage)?
    };
    query::compile(store_id, query, &indexes)
}

/// The revision of a document, if it exists.
fn current(conn: &Connection, store_id: i64, id: &str) -> DataResult<Option<(u64, String)>> {
    conn.prepare_cached("SELECT rev, body FROM data_docs WHERE store_id = ?1 AND id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row((store_id, id), |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))
            })
            .optional()
        })
        .map_err(storage)
}

/// The `if_rev` precondition: `Some(0)` means "does not exist".
fn check_rev(id: &str, current: Option<u64>, if_rev: Option<u64>) -> DataResult<()> {
    let Some(want) = if_rev else {
        return Ok(());
    };
    let have = current.unwrap_or(0);
    if want == have {
        return Ok(());
    }
    Err(DataError::Conflict(match (have, want) {
        (0, _) => format!("document `{id}` does not exist (expected revision {want})"),
        (_, 0) => format!("document `{id}` already exists at revision {have}"),
        _ => format!("document `{id}` is at revision {have}, not {want}"),
    }))
}

fn parse_body(id: &str, text: &str) -> DataResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| DataError::Storage(format!("document `{id}` is not valid JSON: {e}")))
}

/// Checks a new body and returns its stored text.
fn body_text(body: &Value) -> DataResult<String> {
    if !body.is_object() {
        return Err(DataError::Invalid(format!(
            "a document is a JSON object, not `{}`",
            kind_of(body)
        )));
    }
    let text = body.to_string();
    if text.len() > limits::MAX_DOC_BYTES {
        return Err(DataError::TooLarge(format!(
            "the document is {} bytes; the limit is {}",
            text.len(),
            limits::MAX_DOC_BYTES
        )));
    }
    Ok(text)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes a document and its change event in `conn`'s open transaction;
/// returns the stored document.
fn write(
    conn: &Connection,
    store: &StoreInfo,
    id: String,
    rev: u64,
    text: &str,
    body: Value,
    ty: &str,
) -> DataResult<Document> {
    conn.prepare_cached(
        "INSERT INTO data_docs (store_id, id, rev, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (store_id, id) DO UPDATE SET rev = excluded.rev, body = excluded.body",
    )
    .and_then(|mut stmt| stmt.execute((store.id, &id, rev as i64, text)))
    .map_err(storage)?;
    let mut data = json!({"id": id, "rev": rev, "document": body});
    append_change(conn, store, ty, &id, &data).map_err(storage)?;
    // Moved into the event and back out, to not copy a large body.
    let body = data["document"].take();
    Ok(Document { id, rev, body })
}

#[async_trait::async_trait]
impl DocStore for Docs {
    async fn get(&self, store: StoreRef<'_>, id: &str) -> DataResult<Option<Document>> {
        let info = self.store(store)?;
        validate_doc_id(id)?;
        let id = id.to_string();
        self.run(move |conn| {
            let Some((rev, text)) = current(conn, info.id, &id)? else {
                return Ok(None);
            };
            let body = parse_body(&id, &text)?;
            Ok(Some(Document { id, rev, body }))
        })
        .await
    }

    async fn put(
        &self,
        store: StoreRef<'_>,
        id: &str,
        body: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document> {
        let info = self.store(store)?;
        validate_doc_id(id)?;
        let text = body_text(&body)?;
        let id = id.to_string();
        self.run_write(move |tx| {
            let old = current(tx, info.id, &id)?.map(|(rev, _)| rev);
            check_rev(&id, old, if_rev)?;
            let ty = if old.is_some() { UPDATED } else { CREATED };
            let doc = write(tx, &info, id, old.unwrap_or(0) + 1, &text, body, ty)?;
            Ok(doc)
        })
        .await
    }

    async fn patch(
        &self,
        store: StoreRef<'_>,
        id: &str,
        patch: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document> {
        let info = self.store(store)?;
        validate_doc_id(id)?;
        if !patch.is_object() {
            // A non-object patch replaces the whole document with a non-object.
            return Err(DataError::Invalid(format!(
                "a merge patch is a JSON object, not {}",
                kind_of(&patch)
            )));
        }
        let id = id.to_string();
        self.run_write(move |tx| {
            let Some((rev, text)) = current(tx, info.id, &id)? else {
                return Err(DataError::NotFound(format!(
                    "document `{id}` does not exist"
                )));
            };
            check_rev(&id, Some(rev), if_rev)?;
            let mut body = parse_body(&id, &text)?;
            patch::merge_patch(&mut body, patch);
            let text = body_text(&body)?;
            let doc = write(tx, &info, id, rev + 1, &text, body, UPDATED)?;
            Ok(doc)
        })
        .await
    }

    async fn delete(&self, store: StoreRef<'_>, id: &str, if_rev: Option<u64>) -> DataResult<bool> {
        let info = self.store(store)?;
        validate_doc_id(id)?;
        let id = id.to_string();
        self.run_write(move |tx| {
            let old = current(tx, info.id, &id)?.map(|(rev, _)| rev);
            check_rev(&id, old, if_rev)?;
            let Some(rev) = old else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM data_docs WHERE store_id = ?1 AND id = ?2")
                .and_then(|mut stmt| stmt.execute((info.id, &id)))
                .map_err(storage)?;
            append_change(tx, &info, DELETED, &id, &json!({"id": id, "rev": rev}))
                .map_err(storage)?;
            Ok(true)
        })
        .await
    }

    async fn query(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPage> {
        let info = self.store(store)?;
        self.run(move |conn| {
            let compiled = compile(conn, info.id, &query)?;
            let mut stmt = conn.prepare_cached(&compiled.sql).map_err(storage)?;
            let n = compiled.sort_keys;
            let mut rows = stmt
                .query_map(params_from_iter(&compiled.params), |row| {
                    let keys = (0..n)
                        .map(|k| row.get::<_, SqlValue>(3 + k))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, String>(2)?,
                        keys,
                    ))
                })
                .map_err(storage)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage)?;
            let cursor = if rows.len() > compiled.limit {
                rows.truncate(compiled.limit);
                rows.last()
                    .map(|(id, _, _, keys)| cursor::encode(&compiled.fingerprint, keys, id))
            } else {
                None
            };
            let documents = rows
                .into_iter()
                .map(|(id, rev, text, _)| {
                    let body = parse_body(&id, &text)?;
                    Ok(Document { id, rev, body })
                })
                .collect::<DataResult<Vec<_>>>()?;
            Ok(QueryPage { documents, cursor })
        })
        .await
    }

    async fn explain(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPlan> {
        let info = self.store(store)?;
        self.run(move |conn| {
            let compiled = compile(conn, info.id, &query)?;
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", compiled.sql))
                .map_err(storage)?;
            let steps = stmt
                .query_map(params_from_iter(&compiled.params), |row| {
                    row.get::<_, String>(3)
                })
                .map_err(storage)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage)?;
            let indexes_used = compiled
                .paths
                .iter()
                .filter(|path| {
                    let name = query::index_name(info.id, path);
                    steps
                        .iter()
                        .any(|step| step.split_whitespace().any(|word| word == name))
                })
                .map(|path| path.to_string())
                .collect();
            Ok(QueryPlan {
                indexes_used,
                steps,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests;
