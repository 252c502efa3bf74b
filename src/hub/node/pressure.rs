//! Flow control the shards share: the node's budget for unfinished client messages, and each
//! hub's backed-up recipients.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Bytes of unfinished hub messages the node holds for all its clients, against
/// `connections.input_budget_bytes`: past it, clients holding one are not read (see
/// `transport::inflow`).
pub struct InputBudget {
    held: AtomicUsize,
    limit: usize,
}

impl InputBudget {
    pub fn new(limit: usize) -> InputBudget {
        InputBudget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// A connection's held bytes went from `before` to `after`.
    pub fn change(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn is_over(&self) -> bool {
        self.held() > self.limit
    }
}

/// One hub's connections whose outbound queue is backed up — above
/// `connections.outbound_high_watermark_bytes`, until it drains to the low watermark — and the
/// publishers holding back for them. Shared by every shard: a recipient on one shard slows a
/// publisher on another.
#[derive(Default)]
pub struct Pressure {
    backed_up: AtomicUsize,
    /// Writes to backed-up connections, and their draining or closing: the progress that
    /// keeps publishers waiting rather than going on.
    progress: AtomicU64,
    waiters: Mutex<Vec<std::task::Waker>>,
}

impl Pressure {
    /// A connection's queue backed up.
    pub fn rise(&self) {
        self.backed_up.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's queue drained (or it closed): the publishers waiting look again.
    pub fn fall(&self) {
        self.backed_up.fetch_sub(1, Ordering::Relaxed);
        self.progressed();
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            w.wake();
        }
    }

    /// Connections of the hub backed up now.
    pub fn backed_up(&self) -> usize {
        self.backed_up.load(Ordering::Relaxed)
    }

    /// A backed-up connection's socket took some of its queue.
    pub fn progressed(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Progress so far: it moves whenever a backed-up connection is written to, drains or
    /// closes.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Wakes `waker` at the next fall.
    pub fn wait(&self, waker: &std::task::Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }
}
