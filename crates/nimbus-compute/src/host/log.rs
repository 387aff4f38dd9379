//! Guest stdout and stderr, line by line, into the node's log, tagged with app,
//! function and the request id of the invocation the instance is serving.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Who is writing: shared by an instance's streams, updated per invocation.
#[derive(Clone)]
pub struct LogTag(Arc<TagInner>);

struct TagInner {
    app: Arc<str>,
    function: Arc<str>,
    /// Rewritten in place per invocation: no allocation once warm.
    request_id: Mutex<String>,
}

impl LogTag {
    pub fn new(app: Arc<str>, function: Arc<str>) -> Self {
        Self(Arc::new(TagInner {
            app,
            function,
            request_id: Mutex::new(String::new()),
        }))
    }

    pub fn set_request(&self, request_id: &str) {
        let mut current = self.0.request_id.lock().unwrap();
        current.clear();
        current.push_str(request_id);
    }

    pub fn request_id(&self) -> String {
        self.0.request_id.lock().unwrap().clone()
    }

    pub fn app(&self) -> &str {
        &self.0.app
    }

    pub fn function(&self) -> &str {
        &self.0.function
    }
}

pub struct GuestLog {
    tag: LogTag,
    stream: &'static str,
}

impl GuestLog {
    pub fn new(tag: LogTag, stream: &'static str) -> Self {
        Self { tag, stream }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            tag: self.tag.clone(),
            stream: self.stream,
            pending: Vec::new(),
        })
    }
}

/// Emits one log event per complete line; a partial line waits for its end (or
/// for a flush) so interleaved writes stay readable.
struct LineWriter {
    tag: LogTag,
    stream: &'static str,
    pending: Vec<u8>,
}

const MAX_LINE: usize = 16 * 1024;

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\n', '\r']);
        tracing::info!(
            target: "guest",
            app = self.tag.app(),
            function = self.tag.function(),
            request_id = %self.tag.request_id(),
            stream = self.stream,
            "{line}"
        );
    }

    fn flush_lines(&mut self, all: bool) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        if (all || self.pending.len() > MAX_LINE) && !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.flush_lines(false);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_lines(true);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_lines(true);
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_lines(true);
    }
}
