//! Document stores (`[docs.NAME]`): JSON documents with ids and revisions, and
//! queries over their fields.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::nimbus::data::docs as wit;
use crate::{Error, Result};

/// A collection the function is granted (`"docs:NAME"`).
pub struct Collection {
    name: String,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    /// 1 when created, +1 per write.
    pub rev: u64,
    pub body: Value,
}

impl Document {
    /// The body as a typed value.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.body.clone())
            .map_err(|e| Error::Invalid(format!("document `{}`: {e}", self.id)))
    }
}

/// A page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub documents: Vec<Document>,
    /// Pass to [`Query::cursor`] for the next page.
    pub cursor: Option<String>,
}

fn to_doc(d: wit::Document) -> Result<Document> {
    let body = serde_json::from_str(&d.body)
        .map_err(|e| Error::Storage(format!("document `{}` is not JSON: {e}", d.id)))?;
    Ok(Document {
        id: d.id,
        rev: d.rev,
        body,
    })
}

fn to_json(body: &impl Serialize) -> Result<String> {
    serde_json::to_string(body)
        .map_err(|e| Error::Invalid(format!("cannot encode the document: {e}")))
}

impl Collection {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    pub fn get(&self, id: &str) -> Result<Option<Document>> {
        wit::get(&self.name, id)?.map(to_doc).transpose()
    }

    /// Creates or replaces document `id`.
    pub fn put(&self, id: &str, body: &impl Serialize) -> Result<Document> {
        to_doc(wit::put(&self.name, id, &to_json(body)?, None)?)
    }

    /// Writes only if the document is at `rev` (0: only if it does not exist),
    /// else [`Error::Conflict`].
    pub fn put_if_rev(&self, id: &str, body: &impl Serialize, rev: u64) -> Result<Document> {
        to_doc(wit::put(&self.name, id, &to_json(body)?, Some(rev))?)
    }

    /// Applies a JSON merge patch (RFC 7386): `null` removes a field.
    pub fn patch(&self, id: &str, patch: &Value) -> Result<Document> {
        to_doc(wit::patch(&self.name, id, &patch.to_string(), None)?)
    }

    /// Returns whether the document existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        Ok(wit::delete(&self.name, id, None)?)
    }

    /// A query over this collection.
    pub fn query(&self) -> Query<'_> {
        Query {
            collection: self,
            filter: None,
            order_by: Vec::new(),
            limit: None,
            cursor: None,
        }
    }
}

/// A query being built; [`Query::run`] runs it.
pub struct Query<'a> {
    collection: &'a Collection,
    filter: Option<Value>,
    order_by: Vec<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl Query<'_> {
    /// A filter such as `{"status": "paid", "total": {"gt": 100}}`: field paths
    /// with a value (equality) or operators `eq ne lt le gt ge in exists prefix`,
    /// combined with `$and` / `$or`.
    pub fn filter(mut self, filter: Value) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sorts by a field path; `-path` sorts descending.
    pub fn order_by(mut self, path: &str) -> Self {
        self.order_by.push(path.into());
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    pub fn run(self) -> Result<Page> {
        let query = wit::DocQuery {
            filter: self.filter.map(|f| f.to_string()),
            order_by: self.order_by,
            limit: self.limit,
            cursor: self.cursor,
        };
        let page = wit::query(&self.collection.name, &query)?;
        Ok(Page {
            documents: page
                .documents
                .into_iter()
                .map(to_doc)
                .collect::<Result<_>>()?,
            cursor: page.cursor,
        })
    }
}
