//! Waking long polls. Each queue has a [`Signal`]: a [`Notify`] its idle polls
//! wait on, and one timer for the earliest future `visible_at` a write of this
//! node has set (a delayed send, a delivery's visibility timeout, a changed
//! visibility). The timer matters for polls already asleep: they computed when
//! to look again before that write, so without it a message whose visibility
//! ran out would wait for the poll's deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_data::catalog::now_ms;
use tokio::runtime::Handle;
use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct Signal {
    pub notify: Notify,
    /// When the pending timer fires (unix ms), if one is pending.
    timer: Mutex<Option<u64>>,
}

impl Signal {
    /// Wakes the polls at `at` unless a timer at or before `at` is pending:
    /// polls woken then look at the queue again and sleep until its next
    /// `visible_at`, which covers `at`.
    fn schedule(self: Arc<Self>, at: u64, runtime: &Handle) {
        {
            let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
            if timer.is_some_and(|t| t <= at) {
                return;
            }
            *timer = Some(at);
        }
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
            {
                let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
                if *timer == Some(at) {
                    *timer = None;
                }
            }
            self.notify.notify_waiters();
        });
    }
}

/// Long polls to wake once a write is durable.
pub(super) enum Wake {
    /// `n` polls: one per message sent, so a burst of sends does not stampede
    /// every idle poll at each message.
    Some(Arc<Signal>, usize),
    /// Every poll: the change may open several messages or FIFO groups.
    All(Arc<Signal>),
    /// Every poll, at unix ms `at` (something becomes visible then).
    At(Arc<Signal>, u64),
}

impl Wake {
    pub(super) fn fire(self, runtime: &Handle) {
        match self {
            Self::Some(signal, n) => {
                for _ in 0..n {
                    signal.notify.notify_one();
                }
            }
            Self::All(signal) => signal.notify.notify_waiters(),
            Self::At(signal, at) => signal.schedule(at, runtime),
        }
    }
}
