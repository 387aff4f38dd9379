//! The data layer's ports: key-value stores, document stores, buckets and their
//! change feed, as compute's host bindings, the admin API and the gateway call
//! them. The embedded backend lives in `nimbus-data`; a distributed one would
//! implement the same traits.
//!
//! Also here, because every caller needs them before touching a backend: the
//! limits, the validation of keys, ids and field paths, and the document filter
//! language.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{App, StoreKind};
use crate::cloudevent::CloudEvent;
use crate::ports::Body;

/// Limits of the data layer, documented in `docs/data.md`.
pub mod limits {
    /// Longest key-value key, in bytes.
    pub const MAX_KEY_BYTES: usize = 1024;
    /// Largest key-value value.
    pub const MAX_VALUE_BYTES: usize = 4 << 20;
    /// Longest document id, in bytes.
    pub const MAX_DOC_ID_BYTES: usize = 512;
    /// Largest document, as JSON text.
    pub const MAX_DOC_BYTES: usize = 4 << 20;
    /// Longest object key, in bytes.
    pub const MAX_OBJECT_KEY_BYTES: usize = 1024;
    /// Largest object of a single put, and largest part of a multipart upload.
    pub const MAX_OBJECT_BYTES: u64 = 5 << 30;
    /// Most parts in a multipart upload.
    pub const MAX_PARTS: u32 = 10_000;
    /// Most entries a list, query or batch returns or takes at once.
    pub const MAX_PAGE: usize = 1000;
    /// Most user metadata on an object, keys and values together.
    pub const MAX_METADATA_BYTES: usize = 2048;
}

/// Why a data operation failed. Each variant maps to one HTTP status and code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The app does not declare this store.
    #[error("{} `{app}/{name}` does not exist", kind.noun())]
    NoSuchStore {
        kind: StoreKind,
        app: String,
        name: String,
    },
    /// The function's `uses` does not name this store.
    #[error("{} `{name}` is not granted to function `{function}`; add `\"{}:{name}\"` to its `uses`", kind.noun(), kind.grant_prefix())]
    NotGranted {
        kind: StoreKind,
        name: String,
        function: String,
    },
    /// An item (object, multipart upload) the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A version/revision precondition did not hold (compare-and-swap).
    #[error("{0}")]
    Conflict(String),
    /// Bad input: an invalid key, id, path, filter or argument.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    /// A Content-MD5 sent with a put did not match the bytes received.
    #[error("{0}")]
    BadDigest(String),
    #[error("range not satisfiable: {0}")]
    Range(String),
    /// The backend failed (disk full, I/O error); nothing was changed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The app is over its stored-bytes quota: writes that add data wait.
    #[error("{0}")]
    Quota(String),
}

impl DataError {
    /// The HTTP status and stable error code every caller reports this with.
    pub fn status(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            Self::NoSuchStore { .. } => (S::NOT_FOUND, "no_such_store"),
            Self::NotGranted { .. } => (S::FORBIDDEN, "not_granted"),
            Self::NotFound(_) => (S::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (S::PRECONDITION_FAILED, "conflict"),
            Self::Invalid(_) => (S::BAD_REQUEST, "invalid"),
            Self::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too_large"),
            Self::BadDigest(_) => (S::BAD_REQUEST, "bad_digest"),
            Self::Range(_) => (S::RANGE_NOT_SATISFIABLE, "invalid_range"),
            Self::Storage(_) => (S::INTERNAL_SERVER_ERROR, "storage"),
            Self::Quota(_) => (S::TOO_MANY_REQUESTS, "quota_exceeded"),
        }
    }

    pub fn storage(err: impl std::fmt::Display) -> Self {
        Self::Storage(err.to_string())
    }
}

pub type DataResult<T> = Result<T, DataError>;

/// Which store of which app an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreRef<'a> {
    pub app: &'a str,
    pub name: &'a str,
}

impl<'a> StoreRef<'a> {
    pub fn new(app: &'a str, name: &'a str) -> Self {
        Self { app, name }
    }
}

// ---------------------------------------------------------------------------
// Validation

fn check_text(what: &str, text: &str, max: usize) -> DataResult<()> {
    if text.is_empty() {
        return Err(DataError::Invalid(format!("{what} is empty")));
    }
    if text.len() > max {
        return Err(DataError::Invalid(format!(
            "{what} is {} bytes long; the limit is {max}",
            text.len()
        )));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(DataError::Invalid(format!(
            "{what} {text:?} contains a control character (NUL, newline, ...)"
        )));
    }
    Ok(())
}

/// A key-value key: 1 to 1024 bytes of UTF-8 without control characters.
pub fn validate_kv_key(key: &str) -> DataResult<()> {
    check_text("key", key, limits::MAX_KEY_BYTES)
}

/// A document id: 1 to 512 bytes of UTF-8 without control characters or `/`.
pub fn validate_doc_id(id: &str) -> DataResult<()> {
    check_text("document id", id, limits::MAX_DOC_ID_BYTES)?;
    if id.contains('/') {
        return Err(DataError::Invalid(format!(
            "document id {id:?} contains `/`"
        )));
    }
    Ok(())
}

/// An object key: 1 to 1024 bytes of UTF-8, no control characters, no `\`, no
/// leading `/`, and no `.` or `..` segment, so a key never names a path outside
/// its bucket on any backend.
pub fn validate_object_key(key: &str) -> DataResult<()> {
    check_text("object key", key, limits::MAX_OBJECT_KEY_BYTES)?;
    if key.starts_with('/') || key.contains('\\') {
        return Err(DataError::Invalid(format!(
            "object key {key:?} must not start with `/` or contain `\\`"
        )));
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(DataError::Invalid(format!(
            "object key {key:?} contains a `.` or `..` segment"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Key-value

/// A stored value with its version. Versions start at 1 and grow by one with
/// every write of the key; a deleted and re-created key starts again at 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Bytes,
    pub version: u64,
    /// Unix milliseconds after which the entry is gone.
    pub expires_at: Option<u64>,
}

/// Options of a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// The entry expires this long after the write.
    pub ttl: Option<Duration>,
    /// Compare-and-swap: write only if the key's current version is this one
    /// (`Some(0)`: only if the key does not exist), else [`DataError::Conflict`].
    pub if_version: Option<u64>,
}

/// One page of keys, in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub cursor: Option<String>,
}

/// Key-value stores. Reads are synchronous (served from memory); a write returns
/// once it is durable and its change event is in the feed.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    fn get(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<KvEntry>>;
    fn list(
        &self,
        store: StoreRef<'_>,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> DataResult<KeyPage>;
    /// Writes one value; returns its new version.
    async fn set(
        &self,
        store: StoreRef<'_>,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> DataResult<u64>;
    /// Writes several values in one transaction.
    async fn set_many(&self, store: StoreRef<'_>, entries: Vec<(String, Bytes)>) -> DataResult<()>;
    /// Deletes keys in one transaction; returns how many existed.
    async fn delete_many(&self, store: StoreRef<'_>, keys: Vec<String>) -> DataResult<u64>;
    /// Adds `delta` to the decimal integer stored at `key` (absent = 0) and
    /// returns the result.
    async fn increment(&self, store: StoreRef<'_>, key: &str, delta: i64) -> DataResult<i64>;
}

// ---------------------------------------------------------------------------
// Documents

/// A stored JSON document. Revisions start at 1 and grow with every write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub rev: u64,
    pub body: Value,
}

/// A dotted path into a JSON document, like `customer.id`. Segments are
/// letters, digits, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath(String);

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the field path is empty".into());
        }
        for seg in text.split('.') {
            if seg.is_empty() {
                return Err(format!("`{text}` has an empty segment"));
            }
            if !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "segment `{seg}` of `{text}` may hold only letters, digits, `_` and `-`"
                ));
            }
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A comparison of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Lt(Value),
    Le(Value),
    Gt(Value),
    Ge(Value),
    In(Vec<Value>),
    Exists(bool),
    /// String prefix.
    Prefix(String),
}

/// A document filter.
///
/// JSON form (the API's and the CLI's `--filter`): an object whose keys are field
/// paths or `$and`/`$or`, all of which must hold. A field's value is either a
/// scalar (equality) or an object of operators `eq`, `ne`, `lt`, `le`, `gt`,
/// `ge`, `in` (an array), `exists` (a bool), `prefix` (a string):
/// `{"status": "paid", "total": {"gt": 100}, "$or": [{"a": 1}, {"b": {"exists": true}}]}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Field { path: FieldPath, cond: Cond },
}

impl Filter {
    /// Parses the JSON form.
    pub fn from_json(value: &Value) -> DataResult<Self> {
        let Value::Object(map) = value else {
            return Err(DataError::Invalid(format!(
                "a filter is a JSON object, not `{value}`"
            )));
        };
        let mut all = Vec::new();
        for (key, v) in map {
            match key.as_str() {
                "$and" | "$or" => {
                    let Value::Array(items) = v else {
                        return Err(DataError::Invalid(format!(
                            "`{key}` takes an array of filters"
                        )));
                    };
                    let items = items
                        .iter()
                        .map(Filter::from_json)
                        .collect::<DataResult<Vec<_>>>()?;
                    all.push(if key == "$and" {
                        Filter::And(items)
                    } else {
                        Filter::Or(items)
                    });
                }
                k if k.starts_with('$') => {
                    return Err(DataError::Invalid(format!(
                        "unknown filter operator `{k}` (use `$and` or `$or`)"
                    )));
                }
                path => {
                    let path = FieldPath::parse(path).map_err(DataError::Invalid)?;
                    match v {
                        Value::Object(ops) => {
                            if ops.is_empty() {
                                return Err(DataError::Invalid(format!(
                                    "`{path}` has an empty condition"
                                )));
                            }
                            for (op, arg) in ops {
                                let cond = parse_cond(&path, op, arg)?;
                                all.push(Filter::Field {
                                    path: path.clone(),
                                    cond,
                                });
                            }
                        }
                        Value::Array(_) => {
                            return Err(DataError::Invalid(format!(
                                "`{path}`: to match one of several values write {{\"in\": [...]}}"
                            )));
                        }
                        scalar => all.push(Filter::Field {
                            path,
                            cond: Cond::Eq(scalar.clone()),
                        }),
                    }
                }
            }
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }
}

fn parse_cond(path: &FieldPath, op: &str, arg: &Value) -> DataResult<Cond> {
    let scalar = |arg: &Value| -> DataResult<Value> {
        match arg {
            Value::Array(_) | Value::Object(_) => Err(DataError::Invalid(format!(
                "`{path}`: `{op}` compares with a string, number, bool or null"
            ))),
            v => Ok(v.clone()),
        }
    };
    Ok(match op {
        "eq" => Cond::Eq(scalar(arg)?),
        "ne" => Cond::Ne(scalar(arg)?),
        "lt" => Cond::Lt(scalar(arg)?),
        "le" => Cond::Le(scalar(arg)?),
        "gt" => Cond::Gt(scalar(arg)?),
        "ge" => Cond::Ge(scalar(arg)?),
        "in" => match arg {
            Value::Array(items) => Cond::In(items.iter().map(scalar).collect::<DataResult<_>>()?),
            _ => {
                return Err(DataError::Invalid(format!("`{path}`: `in` takes an array")));
            }
        },
        "exists" => match arg {
            Value::Bool(b) => Cond::Exists(*b),
            _ => {
                return Err(DataError::Invalid(format!(
                    "`{path}`: `exists` takes true or false"
                )));
            }
        },
        "prefix" => match arg {
            Value::String(s) => Cond::Prefix(s.clone()),
            _ => {
                return Err(DataError::Invalid(format!(
                    "`{path}`: `prefix` takes a string"
                )));
            }
        },
        other => {
            return Err(DataError::Invalid(format!(
                "`{path}`: unknown operator `{other}` (use eq, ne, lt, le, gt, ge, in, exists, prefix)"
            )));
        }
    })
}

/// One sort key of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderBy {
    pub path: FieldPath,
    #[serde(default)]
    pub desc: bool,
}

impl OrderBy {
    /// Parses `path` or `-path` (descending) or `path desc`.
    pub fn parse(text: &str) -> DataResult<Self> {
        let text = text.trim();
        let (path, desc) = if let Some(p) = text.strip_prefix('-') {
            (p, true)
        } else if let Some(p) = text.strip_suffix(" desc") {
            (p.trim(), true)
        } else if let Some(p) = text.strip_suffix(" asc") {
            (p.trim(), false)
        } else {
            (text, false)
        };
        Ok(Self {
            path: FieldPath::parse(path).map_err(DataError::Invalid)?,
            desc,
        })
    }
}

/// A document query. Without an order, documents come in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocQuery {
    pub filter: Option<Filter>,
    pub order_by: Vec<OrderBy>,
    /// At most this many documents (default 100, at most [`limits::MAX_PAGE`]).
    pub limit: Option<usize>,
    /// From a previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryPage {
    pub documents: Vec<Document>,
    pub cursor: Option<String>,
}

/// How the backend runs a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPlan {
    /// The declared indexes (field paths) the query uses.
    pub indexes_used: Vec<String>,
    /// The backend's own description, one step per line.
    pub steps: Vec<String>,
}

/// Document stores.
#[async_trait]
pub trait DocStore: Send + Sync + 'static {
    async fn get(&self, store: StoreRef<'_>, id: &str) -> DataResult<Option<Document>>;
    /// Creates or replaces a document; with `if_rev`, only if its revision is that
    /// one (`Some(0)`: only if it does not exist).
    async fn put(
        &self,
        store: StoreRef<'_>,
        id: &str,
        body: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document>;
    /// Applies a JSON merge patch (RFC 7386) to an existing document.
    async fn patch(
        &self,
        store: StoreRef<'_>,
        id: &str,
        patch: Value,
        if_rev: Option<u64>,
    ) -> DataResult<Document>;
    /// Returns whether the document existed.
    async fn delete(&self, store: StoreRef<'_>, id: &str, if_rev: Option<u64>) -> DataResult<bool>;
    async fn query(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPage>;
    async fn explain(&self, store: StoreRef<'_>, query: DocQuery) -> DataResult<QueryPlan>;
}

// ---------------------------------------------------------------------------
// Objects

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Hex MD5 of the bytes for a single put; `HEX-PARTS` for a multipart upload.
    pub etag: String,
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub last_modified: u64,
}

/// Options of a put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The MD5 the sender computed; a mismatch stores nothing.
    pub content_md5: Option<[u8; 16]>,
}

/// A byte range of a read, as in an HTTP `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=START-` or `bytes=START-END` (END inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-N`: the last N bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a single-range `Range` header value.
    pub fn parse(header: &str) -> DataResult<Self> {
        let bad = || DataError::Range(format!("cannot read range `{header}`"));
        let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?;
        if spec.contains(',') {
            return Err(DataError::Range("multiple ranges are not supported".into()));
        }
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Ok(Self::Suffix(b.parse().map_err(|_| bad())?));
        }
        let start = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() {
            None
        } else {
            Some(b.parse().map_err(|_| bad())?)
        };
        if end.is_some_and(|e| e < start) {
            return Err(bad());
        }
        Ok(Self::From { start, end })
    }

    /// The inclusive `(first, last)` byte positions within an object of `size`
    /// bytes, or an error if the range selects nothing.
    pub fn resolve(self, size: u64) -> DataResult<(u64, u64)> {
        let out = || DataError::Range(format!("the object has {size} bytes"));
        match self {
            Self::From { start, end } => {
                if start >= size {
                    return Err(out());
                }
                Ok((start, end.map_or(size - 1, |e| e.min(size - 1))))
            }
            Self::Suffix(0) => Err(out()),
            Self::Suffix(n) => {
                if size == 0 {
                    return Err(out());
                }
                Ok((size.saturating_sub(n), size - 1))
            }
        }
    }
}

/// An object read: its metadata, the byte positions served, and the body.
pub struct ObjectRead {
    pub meta: ObjectMeta,
    /// Inclusive positions, when a range was asked for.
    pub range: Option<(u64, u64)>,
    pub body: Body,
}

/// A list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListObjects {
    pub prefix: String,
    /// With a delimiter (usually `/`), keys that contain it after the prefix are
    /// rolled up into `common_prefixes`, as in S3.
    pub delimiter: Option<String>,
    pub cursor: Option<String>,
    /// Default 1000, at most [`limits::MAX_PAGE`].
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPage {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    pub cursor: Option<String>,
}

/// A finished part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

/// Object stores (buckets). Bodies stream in both directions; a put is atomic.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any object there only once every byte
    /// is durable (and the Content-MD5 matched).
    async fn put(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
        body: Body,
    ) -> DataResult<ObjectMeta>;
    async fn head(&self, store: StoreRef<'_>, key: &str) -> DataResult<Option<ObjectMeta>>;
    async fn get(
        &self,
        store: StoreRef<'_>,
        key: &str,
        range: Option<ByteRange>,
    ) -> DataResult<Option<ObjectRead>>;
    /// Returns whether the object existed.
    async fn delete(&self, store: StoreRef<'_>, key: &str) -> DataResult<bool>;
    /// Copies an object within the app (possibly to another of its buckets).
    async fn copy(
        &self,
        from: StoreRef<'_>,
        from_key: &str,
        to: StoreRef<'_>,
        to_key: &str,
    ) -> DataResult<ObjectMeta>;
    async fn list(&self, store: StoreRef<'_>, request: ListObjects) -> DataResult<ObjectPage>;

    /// Starts a multipart upload; returns its id. Uploads not completed within
    /// [`MULTIPART_EXPIRY`] are removed.
    async fn create_multipart(
        &self,
        store: StoreRef<'_>,
        key: &str,
        options: PutOptions,
    ) -> DataResult<String>;
    /// Stores one part (numbers 1 to [`limits::MAX_PARTS`]; re-sending a number
    /// replaces it).
    async fn upload_part(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        part_number: u32,
        content_md5: Option<[u8; 16]>,
        body: Body,
    ) -> DataResult<PartInfo>;
    /// Assembles the listed parts, in order, into the object.
    async fn complete_multipart(
        &self,
        store: StoreRef<'_>,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> DataResult<ObjectMeta>;
    async fn abort_multipart(&self, store: StoreRef<'_>, upload_id: &str) -> DataResult<()>;
}

/// How long an incomplete multipart upload lives.
pub const MULTIPART_EXPIRY: Duration = Duration::from_secs(24 * 3600);

// ---------------------------------------------------------------------------
// Change feed and catalog

/// One committed write, in the order of its store's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Position in the node's feed; increasing within every store.
    pub seq: u64,
    pub event: CloudEvent,
}

/// A store as `nimbus status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub kind: StoreKind,
    pub name: String,
    /// Keys, documents or objects.
    pub items: u64,
    pub bytes: u64,
}

/// The stores of every app: created and dropped by deploys, and their change feed.
#[async_trait]
pub trait StoreCatalog: Send + Sync + 'static {
    /// Creates the stores `app` declares that do not exist yet and applies their
    /// settings (document indexes). Never deletes anything.
    async fn ensure(&self, app: &App) -> DataResult<()>;
    /// Deletes a store with all its data and its feed.
    async fn drop_store(&self, app: &str, kind: StoreKind, name: &str) -> DataResult<()>;
    /// The app's stores with their sizes.
    async fn stores(&self, app: &str) -> DataResult<Vec<StoreStatus>>;
    /// Change events of one store after position `after`, oldest first.
    async fn changes(
        &self,
        app: &str,
        kind: StoreKind,
        name: &str,
        after: u64,
        limit: usize,
    ) -> DataResult<Vec<ChangeRecord>>;
    /// The position of the store's newest change (0 if it has none): where a
    /// new consumer of the feed starts.
    async fn latest_change(&self, app: &str, kind: StoreKind, name: &str) -> DataResult<u64>;
}

// ---------------------------------------------------------------------------
// Objects over HTTP

/// Serves an object read (with its headers), or 304/416 as HTTP asks. Shared by
/// the admin API and the gateway (public buckets, signed URLs).
pub async fn serve_object(
    blobs: &dyn BlobStore,
    store: StoreRef<'_>,
    key: &str,
    headers: &http::HeaderMap,
    head_only: bool,
) -> DataResult<Option<http::Response<Body>>> {
    let range = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(ByteRange::parse)
        .transpose()?;
    if head_only {
        let Some(meta) = blobs.head(store, key).await? else {
            return Ok(None);
        };
        let mut response = empty_response(http::StatusCode::OK);
        object_headers(response.headers_mut(), &meta);
        response.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(meta.size),
        );
        return Ok(Some(response));
    }
    let Some(read) = blobs.get(store, key, range).await? else {
        return Ok(None);
    };
    let etag = format!("\"{}\"", read.meta.etag);
    if headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut response = empty_response(http::StatusCode::NOT_MODIFIED);
        object_headers(response.headers_mut(), &read.meta);
        return Ok(Some(response));
    }
    let (status, length) = match read.range {
        Some((first, last)) => (http::StatusCode::PARTIAL_CONTENT, last - first + 1),
        None => (http::StatusCode::OK, read.meta.size),
    };
    let mut response = http::Response::new(read.body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    object_headers(h, &read.meta);
    h.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    if let Some((first, last)) = read.range
        && let Ok(v) =
            http::HeaderValue::from_str(&format!("bytes {first}-{last}/{}", read.meta.size))
    {
        h.insert(http::header::CONTENT_RANGE, v);
    }
    Ok(Some(response))
}

fn empty_response(status: http::StatusCode) -> http::Response<Body> {
    use http_body_util::BodyExt as _;
    let body = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response
}

fn object_headers(h: &mut http::HeaderMap, meta: &ObjectMeta) {
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        h.insert(http::header::ETAG, v);
    }
    let content_type = meta
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(
        http::header::ACCEPT_RANGES,
        http::HeaderValue::from_static("bytes"),
    );
    let modified = std::time::UNIX_EPOCH + Duration::from_millis(meta.last_modified);
    if let Ok(v) = http::HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    for (k, v) in &meta.metadata {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(format!("x-nimbus-meta-{k}").as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
}

/// Reads `Content-Type`, `Content-MD5` and `x-nimbus-meta-*` of a put.
pub fn put_options(headers: &http::HeaderMap) -> Result<PutOptions, DataError> {
    let mut options = PutOptions {
        content_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Default::default()
    };
    if let Some(md5) = headers.get("content-md5") {
        let decoded = md5
            .to_str()
            .ok()
            .and_then(|s| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok()
            })
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                DataError::Invalid("Content-MD5 must be the base64 of a 16-byte MD5 digest".into())
            })?;
        options.content_md5 = Some(decoded);
    }
    for (name, value) in headers {
        if let Some(meta) = name.as_str().strip_prefix("x-nimbus-meta-") {
            let value = value
                .to_str()
                .map_err(|_| DataError::Invalid(format!("metadata `{meta}` is not text")))?;
            options.metadata.insert(meta.to_string(), value.to_string());
        }
    }
    Ok(options)
}

// ---------------------------------------------------------------------------
// Signed URLs

/// Where the gateway serves signed object URLs.
pub const SIGNED_PREFIX: &str = "/_nimbus/buckets/";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Signs and checks time-limited object URLs (HMAC-SHA256 over the method, app,
/// bucket, key and expiry) with the node's secret key.
#[derive(Clone)]
pub struct UrlSigner {
    key: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner")
    }
}

/// Characters escaped in a key's path segments.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl UrlSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, o: &SignedObject<'_>) -> String {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            o.method, o.app, o.bucket, o.key, o.expires
        );
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The gateway path (with query) that allows the method on one object until
    /// it expires.
    pub fn signed_path(&self, o: &SignedObject<'_>) -> String {
        let encoded: Vec<String> = o
            .key
            .split('/')
            .map(|seg| percent_encoding::utf8_percent_encode(seg, SEGMENT).to_string())
            .collect();
        format!(
            "{SIGNED_PREFIX}{}/{}/{}?method={}&expires={}&signature={}",
            o.app,
            o.bucket,
            encoded.join("/"),
            o.method,
            o.expires,
            self.mac(o)
        )
    }

    /// Checks a signed URL's signature and expiry at `now` (Unix seconds).
    pub fn verify(
        &self,
        o: &SignedObject<'_>,
        signature: &str,
        now: u64,
    ) -> Result<(), &'static str> {
        let expected = self.mac(o);
        let same = expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err("the signature does not match this URL");
        }
        if now >= o.expires {
            return Err("the signed URL has expired");
        }
        Ok(())
    }
}

/// What a signed URL allows: one method on one object until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedObject<'a> {
    /// `GET` (also allows `HEAD`) or `PUT`.
    pub method: &'a str,
    pub app: &'a str,
    pub bucket: &'a str,
    /// The object key, not percent-encoded.
    pub key: &'a str,
    /// Unix seconds.
    pub expires: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_keys_never_escape() {
        for bad in [
            "", "../x", "a/../b", "a/./b", "/abs", "a\\b", "nul\0x", "..",
        ] {
            assert!(validate_object_key(bad).is_err(), "{bad:?}");
        }
        let long = "k".repeat(1025);
        assert!(validate_object_key(&long).is_err());
        for good in ["a", "dir/file.txt", "a..b", ".hidden", "x/y/"] {
            validate_object_key(good).unwrap();
        }
    }

    #[test]
    fn filter_json_form() {
        let f = Filter::from_json(&json!({"status": "paid"})).unwrap();
        assert_eq!(
            f,
            Filter::Field {
                path: FieldPath::parse("status").unwrap(),
                cond: Cond::Eq(json!("paid"))
            }
        );
        let f = Filter::from_json(&json!({
            "total": {"gt": 10, "le": 20},
            "$or": [{"a.b": {"in": [1, 2]}}, {"c": {"exists": false}}]
        }))
        .unwrap();
        let Filter::And(parts) = f else {
            panic!("{f:?}")
        };
        assert_eq!(parts.len(), 3);
        for bad in [
            json!([1]),
            json!({"a": {"near": 1}}),
            json!({"a": [1, 2]}),
            json!({"$not": []}),
            json!({"a..b": 1}),
            json!({"a": {"in": 3}}),
        ] {
            assert!(Filter::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_urls() {
        let signer = UrlSigner::new(b"secret");
        let o = SignedObject {
            method: "GET",
            app: "shop",
            bucket: "images",
            key: "a b/c.png",
            expires: 100,
        };
        let path = signer.signed_path(&o);
        assert!(
            path.starts_with(
                "/_nimbus/buckets/shop/images/a%20b/c.png?method=GET&expires=100&signature="
            ),
            "{path}"
        );
        let sig = path.rsplit_once("signature=").unwrap().1;
        signer.verify(&o, sig, 99).unwrap();
        assert!(signer.verify(&o, sig, 100).is_err());
        let put = SignedObject { method: "PUT", ..o };
        assert!(signer.verify(&put, sig, 50).is_err());
        let other = SignedObject { key: "other", ..o };
        assert!(signer.verify(&other, sig, 50).is_err());
        assert!(UrlSigner::new(b"other").verify(&o, sig, 50).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-9").unwrap().resolve(100).unwrap(),
            (0, 9)
        );
        assert_eq!(
            ByteRange::parse("bytes=90-").unwrap().resolve(100).unwrap(),
            (90, 99)
        );
        assert_eq!(
            ByteRange::parse("bytes=-5").unwrap().resolve(100).unwrap(),
            (95, 99)
        );
        assert_eq!(
            ByteRange::parse("bytes=50-500")
                .unwrap()
                .resolve(100)
                .unwrap(),
            (50, 99)
        );
        assert!(
            ByteRange::parse("bytes=100-")
                .unwrap()
                .resolve(100)
                .is_err()
        );
        assert!(ByteRange::parse("bytes=5-1").is_err());
        assert!(ByteRange::parse("items=1-2").is_err());
    }
}
