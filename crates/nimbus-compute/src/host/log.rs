//! Guest stdout and stderr, line by line, into the node's log, tagged with app,
//! function and the request id of the invocation the instance is serving, within
//! the function's line budget: a flood of output is cut at the budget and the
//! cut lines are counted in one "dropped N lines" record, so a noisy function
//! can neither fill the disk nor slow the node.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Who is writing: shared by an instance's streams, updated per invocation.
#[derive(Clone)]
pub struct LogTag(Arc<TagInner>);

struct TagInner {
    app: Arc<str>,
    function: Arc<str>,
    budget: Arc<LineBudget>,
    /// Rewritten in place per invocation: no allocation once warm.
    request_id: Mutex<String>,
}

impl LogTag {
    pub fn new(app: Arc<str>, function: Arc<str>, budget: Arc<LineBudget>) -> Self {
        Self(Arc::new(TagInner {
            app,
            function,
            budget,
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

    /// Logs how many lines the budget cut since the last report, if any.
    pub fn report_dropped(&self) {
        if self.0.budget.per_second == 0 {
            return; // nothing is ever dropped: skip the shared lock
        }
        let dropped = std::mem::take(&mut self.0.budget.state.lock().unwrap().dropped);
        self.report(dropped);
    }

    fn report(&self, dropped: u64) {
        if dropped > 0 {
            tracing::warn!(
                app = self.app(),
                function = self.function(),
                request_id = %self.request_id(),
                "dropped {dropped} lines of output: over the limit of {} lines/s",
                self.0.budget.per_second
            );
        }
    }
}

/// A function's output allowance: a token bucket of `per_second` lines, as many
/// at once. Shared by all the function's instances.
pub struct LineBudget {
    per_second: u32,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    tokens: f64,
    last: Instant,
    dropped: u64,
    /// When dropped lines were last reported: at most one report a second while
    /// a flood goes on (the rest at the invocation's end).
    reported: Instant,
}

impl LineBudget {
    /// `per_second = 0`: no limit.
    pub fn new(per_second: u32) -> Arc<Self> {
        Arc::new(Self {
            per_second,
            state: Mutex::new(BudgetState {
                tokens: f64::from(per_second),
                last: Instant::now(),
                dropped: 0,
                reported: Instant::now(),
            }),
        })
    }

    /// Whether one more line may be written now (`None`: no; it is counted),
    /// with the count of lines refused before it, to report.
    fn take(&self) -> Option<u64> {
        if self.per_second == 0 {
            return Some(0);
        }
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let rate = f64::from(self.per_second);
        state.tokens =
            (state.tokens + now.duration_since(state.last).as_secs_f64() * rate).min(rate);
        state.last = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            if state.dropped > 0 && now.duration_since(state.reported).as_secs() >= 1 {
                state.reported = now;
                return Some(std::mem::take(&mut state.dropped));
            }
            Some(0)
        } else {
            state.dropped += 1;
            None
        }
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
            cut: false,
        })
    }
}

/// Emits one log event per complete line; a partial line waits for its end (or
/// for a flush) so interleaved writes stay readable.
struct LineWriter {
    tag: LogTag,
    stream: &'static str,
    pending: Vec<u8>,
    /// A flush emitted a partial line: a newline that comes next ends that
    /// line, not an empty one (unbuffered stderr writes text and `\n` apart).
    cut: bool,
}

const MAX_LINE: usize = 16 * 1024;

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let Some(dropped) = self.tag.0.budget.take() else {
            return;
        };
        self.tag.report(dropped);
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
            self.cut = true;
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
        let len = buf.len();
        let mut buf = buf;
        if std::mem::take(&mut self.cut)
            && self.pending.is_empty()
            && let Some(rest) = buf
                .strip_prefix(b"\r\n")
                .or_else(|| buf.strip_prefix(b"\n"))
        {
            buf = rest;
        }
        self.pending.extend_from_slice(buf);
        self.flush_lines(false);
        Poll::Ready(Ok(len))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_its_rate_then_counts_what_it_refuses() {
        let budget = LineBudget::new(10);
        let allowed = (0..25).filter(|_| budget.take().is_some()).count();
        // Ten at once, and perhaps one more refilled while the loop ran.
        assert!((10..=11).contains(&allowed), "{allowed}");
        assert_eq!(budget.state.lock().unwrap().dropped as usize, 25 - allowed);
        let unlimited = LineBudget::new(0);
        assert!((0..10_000).all(|_| unlimited.take() == Some(0)));
    }
}
