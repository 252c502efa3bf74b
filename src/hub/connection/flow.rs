//! Flow control, as the connection takes part in it: its queue counts toward its hub's
//! [`Pressure`] (backed up above the high watermark, drained at the low one), and as a
//! publisher it may wait for its hub's backed-up recipients.

use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use super::Connection;
use crate::hub::node::Pressure;

/// How a connection's queue counts toward its hub's [`Pressure`]: backed up above `high`,
/// drained at `low`.
pub(super) struct Watch {
    pub(super) pressure: Arc<Pressure>,
    high: usize,
    low: usize,
}

impl Connection {
    /// Joins its hub's pressure: from now on a backed-up queue holds back the hub's
    /// publishers. `high` and `low` are the watermarks.
    pub fn watch(&self, pressure: Arc<Pressure>, high: usize, low: usize) {
        let _ = self.watch.set(Watch {
            pressure,
            high,
            low,
        });
        self.track_backlog(self.queued_bytes(), self.is_closing());
    }

    /// Notes whether the queue, now `queued` bytes, is backed up (a `closing` connection
    /// never is: it holds nobody back).
    pub(super) fn track_backlog(&self, queued: usize, closing: bool) {
        let Some(watch) = self.watch.get() else {
            return;
        };
        let backed_up = self.backed_up.get();
        if !backed_up && queued > watch.high && !closing {
            self.backed_up.set(true);
            watch.pressure.rise();
        } else if backed_up && (queued <= watch.low || closing) {
            self.backed_up.set(false);
            watch.pressure.fall();
        }
    }

    /// Whether the queue is backed up: above the high watermark, and not yet drained to the
    /// low one.
    pub fn is_backed_up(&self) -> bool {
        self.backed_up.get()
    }

    /// Backed-up connections of the hub other than this one.
    pub fn others_backed_up(&self) -> usize {
        self.watch.get().map_or(0, |w| {
            w.pressure.backed_up() - usize::from(self.backed_up.get())
        })
    }

    /// Wakes this connection's reader when a backed-up connection of the hub drains.
    pub fn wait_for_recipients(&self, waker: &Waker) {
        if let Some(w) = self.watch.get() {
            w.pressure.wait(waker);
        }
    }

    /// The connection published to other connections.
    pub fn mark_published(&self) {
        self.published.set(true);
    }

    /// Whether it published since Herald last looked (without looking).
    pub fn has_published(&self) -> bool {
        self.published.get()
    }

    /// Whether it published since the last call.
    pub fn take_published(&self) -> bool {
        self.published.replace(false)
    }

    /// The hub's backed-up connections' progress so far (see `Pressure::progress`).
    pub fn recipient_progress_count(&self) -> u64 {
        self.watch.get().map_or(0, |w| w.pressure.progress())
    }

    pub fn recipient_progress(&self) -> Option<(Instant, u64)> {
        self.recipient_progress.get()
    }

    pub fn set_recipient_progress(&self, progress: Option<(Instant, u64)>) {
        self.recipient_progress.set(progress);
    }

    pub fn pressure_exempt(&self) -> Option<u64> {
        self.pressure_exempt.get()
    }

    pub fn set_pressure_exempt(&self, exempt: Option<u64>) {
        self.pressure_exempt.set(exempt);
    }
}
