//! Function logs: every line a function writes and every platform event about it
//! (cold start, timeout, trap, throttle, retry, dead letter) as a structured
//! record in the node's `logs.db`, trimmed by age and size, queried by app,
//! function, time, level, text and invocation, and followed live.
//!
//! Records reach the store through [`capture`] (a `tracing` layer: anything the
//! node logs with an `app` field is an app's log record). A writer thread takes
//! them in batches, so a logging function never waits on SQLite; when the
//! writer falls behind, lines are dropped and counted, and a "dropped N lines"
//! record says so. Per-function rate limits on guest output live in compute,
//! before the lines become events at all.

pub mod api;
pub mod capture;
mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::store::LogError;

/// How long and how much the node keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Records older than this are deleted.
    pub retention: Duration,
    /// The log database's live pages are kept below this many bytes; the oldest
    /// records go first.
    pub max_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 256 << 20,
        }
    }
}

/// Severity, ordered: a `--level warn` query returns warn and error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            _ => return None,
        })
    }

    fn from_i64(n: i64) -> Self {
        match n {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            _ => Self::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the log: the cursor of a query; grows with every record.
    #[serde(default)]
    pub seq: u64,
    /// Unix milliseconds.
    pub time: u64,
    pub app: String,
    /// Empty for records about the app as a whole (a rule, a schedule).
    pub function: String,
    /// The request id of the invocation, if the record belongs to one.
    pub invocation: String,
    /// The W3C trace id of the invocation, if known.
    pub trace: String,
    pub level: Level,
    /// `stdout` or `stderr` for a function's own output, `platform` for the
    /// node's records about it.
    pub stream: String,
    pub message: String,
}

/// What a query selects. Every condition must hold.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQuery {
    pub app: String,
    pub function: Option<String>,
    /// Only records after this sequence number (a previous page's `next`).
    pub after: Option<u64>,
    /// Only records at or after this Unix millisecond.
    pub since: Option<u64>,
    pub level: Option<Level>,
    /// Only records whose message contains this text.
    pub grep: Option<String>,
    pub invocation: Option<String>,
    /// At most this many records (the newest ones when `after` is not set and
    /// `tail` is).
    pub limit: usize,
    /// Without `after`: return the last `limit` matches instead of the first.
    pub tail: bool,
}

/// A page of records, oldest first, and the cursor to continue after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    /// Pass as `after` for the records that follow.
    pub next: u64,
}

/// The node's log store.
pub struct LogStore {
    sender: mpsc::SyncSender<LogRecord>,
    reader: Mutex<rusqlite::Connection>,
    /// The last sequence number written, for followers.
    written: tokio::sync::watch::Receiver<u64>,
    /// Records refused because the writer was behind, per app and function,
    /// not yet reported.
    dropped: Dropped,
}

/// Records waiting for the writer; beyond this a record is dropped (and counted).
const QUEUE: usize = 64 * 1024;

type Dropped = Arc<Mutex<HashMap<(String, String), u64>>>;

impl LogStore {
    /// Opens (creating) `DIR/logs.db` and starts its writer thread.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Arc<Self>, LogError> {
        let path = dir.join("logs.db");
        let writer = store::open(&path)?;
        let reader = store::open(&path)?;
        let last = store::last_seq(&reader)?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let (notify, written) = tokio::sync::watch::channel(last);
        let dropped = Dropped::default();
        let writer_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("nimbus-logs".into())
            .spawn(move || store::write_loop(writer, receiver, notify, writer_dropped, config))
            .map_err(|e| LogError(format!("cannot start the log writer: {e}")))?;
        Ok(Arc::new(Self {
            sender,
            reader: Mutex::new(reader),
            written,
            dropped,
        }))
    }

    /// Hands `record` to the writer; never blocks. A record that does not fit
    /// the writer's queue is counted and reported later.
    pub fn append(&self, record: LogRecord) {
        if let Err(mpsc::TrySendError::Full(record) | mpsc::TrySendError::Disconnected(record)) =
            self.sender.try_send(record)
        {
            let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
            *dropped.entry((record.app, record.function)).or_default() += 1;
        }
    }

    /// The records `query` selects (at most 1,000).
    pub fn query(&self, query: &LogQuery) -> Result<LogPage, LogError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        store::query(&conn, query)
    }

    /// Like [`Self::query`], but when nothing matches yet waits up to `wait`
    /// for records to be written, returning as soon as one matches.
    pub async fn follow(
        self: &Arc<Self>,
        query: LogQuery,
        wait: Duration,
    ) -> Result<LogPage, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut written = self.written.clone();
        loop {
            written.borrow_and_update();
            let this = self.clone();
            let q = query.clone();
            let page = tokio::task::spawn_blocking(move || this.query(&q))
                .await
                .map_err(|e| LogError(e.to_string()))??;
            if !page.records.is_empty() {
                return Ok(page);
            }
            match tokio::time::timeout_at(deadline, written.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(page),
            }
        }
    }
}
