//! A connection's outbound queue: wire bytes waiting for its transport, capped in bytes, handed
//! to one vectored write at a time and consumed as they are written.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Instant;

/// The most queued items handed to one vectored write (Linux's `IOV_MAX` is 1024).
pub const MAX_SLICES: usize = 64;

/// Wire bytes as queued: shared by every recipient on one shard, and counted without atomic
/// operations (a broadcast clones this once per recipient).
pub type Wire = Rc<[u8]>;

/// One queued item: wire bytes and, for published messages, when the publish happened.
pub struct Queued {
    pub bytes: Wire,
    pub published: Option<Instant>,
    /// A hub message stateful reconnect numbers (types 1 to 5), kept until acknowledged.
    pub trackable: bool,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection is closing; the message was dropped.
    Closing,
    /// The queue would pass its cap: the connection is now closing as a slow consumer.
    Overflow,
}

/// What a successful write drained from the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub bytes: usize,
    pub messages: usize,
}

/// The queue itself; the connection decides what may join it and what its draining means.
#[derive(Default)]
pub(super) struct Outbound {
    queue: VecDeque<Queued>,
    /// Bytes of the front item already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

impl Outbound {
    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `len` more bytes stay within `cap`. An empty queue takes any message, however
    /// large: a message bigger than the cap is not a slow client.
    pub fn fits(&self, len: usize, cap: usize) -> bool {
        self.queue.is_empty() || self.bytes + len <= cap
    }

    /// Queues `item`; returns the bytes queued now.
    pub fn push(&mut self, item: Queued) -> usize {
        self.bytes += item.bytes.len();
        self.queue.push_back(item);
        self.bytes
    }

    /// Calls `write` with the queued bytes, oldest first, as at most [`MAX_SLICES`] slices for
    /// one vectored write, and returns what it returns.
    pub fn with_slices<R>(&self, write: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        if self.queue.len() == 1 {
            // The common case of a broadcast: one message, no array to fill.
            return write(&[IoSlice::new(&self.queue[0].bytes[self.front_written..])]);
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        for (i, item) in self.queue.iter().take(MAX_SLICES).enumerate() {
            let start = if i == 0 { self.front_written } else { 0 };
            slices[n] = IoSlice::new(&item.bytes[start..]);
            n += 1;
        }
        write(&slices[..n])
    }

    /// The messages [`Outbound::with_slices`] would hand to one write, shared.
    pub fn peek(&self) -> Vec<Wire> {
        self.queue
            .iter()
            .take(MAX_SLICES)
            .map(|q| q.bytes.clone())
            .collect()
    }

    /// The transport went away: a message the old socket took in part is sent whole on the
    /// next one.
    pub fn rewind(&mut self) {
        self.bytes += self.front_written;
        self.front_written = 0;
    }

    /// Drops every message not yet started. A partly written front item stays, to be
    /// finished: the stream must stay framed.
    pub fn drop_unstarted(&mut self) {
        let front = if self.front_written > 0 {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.clear();
        self.bytes = 0;
        if let Some(front) = front {
            self.bytes = front.bytes.len() - self.front_written;
            self.queue.push_back(front);
        }
    }

    /// Removes `n` written bytes from the front; calls `written` with every item fully
    /// written.
    pub fn consume(&mut self, mut n: usize, mut written: impl FnMut(Queued)) -> Drained {
        let mut drained = Drained {
            bytes: n,
            messages: 0,
        };
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.queue.front() else {
                drained.bytes -= n;
                break;
            };
            let remaining = front.bytes.len() - self.front_written;
            if n >= remaining {
                n -= remaining;
                let item = self.queue.pop_front().expect("front exists");
                self.front_written = 0;
                drained.messages += 1;
                written(item);
            } else {
                self.front_written += n;
                n = 0;
            }
        }
        drained
    }
}
