//! The outbox: cluster messages on their way to Redis, and the ones recently written.
//!
//! Every message gets the next sequence number of its partition when it is queued, and stays
//! queued until a write of it succeeds, so a Redis outage loses nothing that fits in the
//! bound. Written messages are kept for a while (the replay window): if Redis comes back
//! without its streams, they are queued again, and receivers drop the copies they already
//! have by (origin, partition, sequence).
//!
//! Pure: no clocks of its own (callers pass `now`), no I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One entry, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub partition: usize,
    pub seq: u64,
    pub bytes: Bytes,
}

#[derive(Debug, Default)]
struct Partition {
    /// The last sequence number handed out.
    seq: u64,
    queued: VecDeque<Entry>,
    /// Written entries with the time they were written, oldest first.
    written: VecDeque<(Instant, Entry)>,
}

/// The outbox is full: the message was dropped (and must be counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the backplane outbox is full")]
pub struct Full;

#[derive(Debug)]
pub struct Outbox {
    partitions: Vec<Partition>,
    queued: usize,
    max_queued: usize,
    window: Duration,
    /// Written entries kept per partition (the configured total shared out).
    window_max: usize,
}

impl Outbox {
    /// An outbox for `partitions` partitions that queues at most `max_queued` messages and
    /// keeps the written ones for `window`, at most `window_max` in all.
    pub fn new(partitions: usize, max_queued: usize, window: Duration, window_max: usize) -> Self {
        Outbox {
            partitions: (0..partitions).map(|_| Partition::default()).collect(),
            queued: 0,
            max_queued,
            window,
            window_max: window_max.div_ceil(partitions.max(1)),
        }
    }

    /// Queues the message `make` builds from its sequence number.
    pub fn push(
        &mut self,
        partition: usize,
        make: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(), Full> {
        if self.queued >= self.max_queued {
            return Err(Full);
        }
        let p = &mut self.partitions[partition];
        p.seq += 1;
        let seq = p.seq;
        p.queued.push_back(Entry {
            partition,
            seq,
            bytes: Bytes::from(make(seq)),
        });
        self.queued += 1;
        Ok(())
    }

    /// Messages waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Up to `max` of the oldest queued entries of `partitions`, in order per partition; they
    /// stay queued until [`Outbox::written`] confirms them.
    pub fn peek(&self, partitions: &[usize], max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        // Round-robin over partitions so one busy partition does not starve the others.
        let mut depth = 0;
        loop {
            let before = out.len();
            for &p in partitions {
                if out.len() >= max {
                    return out;
                }
                if let Some(e) = self.partitions[p].queued.get(depth) {
                    out.push(e.clone());
                }
            }
            if out.len() == before {
                return out;
            }
            depth += 1;
        }
    }

    /// The entries `peek` returned were written: they move to the replay window.
    pub fn written(&mut self, entries: &[Entry], now: Instant) {
        for e in entries {
            let p = &mut self.partitions[e.partition];
            if p.queued.front().is_some_and(|q| q.seq == e.seq) {
                let entry = p.queued.pop_front().expect("front exists");
                self.queued -= 1;
                p.written.push_back((now, entry));
            }
        }
        self.prune(now);
    }

    /// Forgets written entries older than the window or beyond its size.
    pub fn prune(&mut self, now: Instant) {
        for p in &mut self.partitions {
            while p.written.len() > self.window_max
                || p.written
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
            {
                p.written.pop_front();
            }
        }
    }

    /// Redis lost (or may have lost) what was written to `partitions`: the replay window goes
    /// back in front of the queue, in order. Returns how many entries were requeued.
    pub fn replay(&mut self, partitions: &[usize], now: Instant) -> usize {
        self.prune(now);
        let mut n = 0;
        for &p in partitions {
            let p = &mut self.partitions[p];
            while let Some((_, entry)) = p.written.pop_back() {
                p.queued.push_front(entry);
                n += 1;
            }
        }
        self.queued += n;
        n
    }
}

/// What a receiver makes of an entry's (origin, partition, sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and in order.
    New,
    /// New, but `missing` entries before it never arrived (trimmed, or lost with Redis
    /// beyond the replay window).
    Gap { missing: u64 },
    /// Already delivered.
    Duplicate,
}

/// The highest sequence seen per (origin, partition).
#[derive(Debug, Default)]
pub struct Seen {
    last: std::collections::HashMap<(u64, u32), u64>,
}

impl Seen {
    pub fn check(&mut self, origin: u64, partition: u32, seq: u64) -> Verdict {
        match self.last.get_mut(&(origin, partition)) {
            // The first entry of an origin this node sees: whatever came before it was
            // before this node's time.
            None => {
                self.last.insert((origin, partition), seq);
                Verdict::New
            }
            Some(last) if seq <= *last => Verdict::Duplicate,
            Some(last) => {
                let missing = seq - *last - 1;
                *last = seq;
                if missing == 0 {
                    Verdict::New
                } else {
                    Verdict::Gap { missing }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max: usize) -> Outbox {
        Outbox::new(2, max, Duration::from_secs(10), 100)
    }

    fn seqs(entries: &[Entry]) -> Vec<(usize, u64)> {
        entries.iter().map(|e| (e.partition, e.seq)).collect()
    }

    #[test]
    fn numbers_per_partition_and_keeps_until_written() {
        let now = Instant::now();
        let mut o = outbox(10);
        for p in [0, 0, 1, 0] {
            o.push(p, |seq| vec![seq as u8]).unwrap();
        }
        let batch = o.peek(&[0, 1], 10);
        assert_eq!(seqs(&batch), vec![(0, 1), (1, 1), (0, 2), (0, 3)]);
        // A failed write confirms nothing: the same entries come back.
        assert_eq!(o.peek(&[0, 1], 10), batch);
        o.written(&batch[..2], now);
        assert_eq!(seqs(&o.peek(&[0, 1], 10)), vec![(0, 2), (0, 3)]);
        assert_eq!(o.queued(), 2);
        assert_eq!(seqs(&o.peek(&[1], 10)), vec![]);
    }

    #[test]
    fn full_outbox_drops_without_using_a_sequence_number() {
        let mut o = outbox(2);
        o.push(0, |_| vec![]).unwrap();
        o.push(0, |_| vec![]).unwrap();
        assert_eq!(o.push(0, |_| vec![]), Err(Full));
        let batch = o.peek(&[0], 10);
        o.written(&batch, Instant::now());
        o.push(0, |_| vec![]).unwrap();
        assert_eq!(seqs(&o.peek(&[0], 10)), vec![(0, 3)]);
    }

    #[test]
    fn replay_requeues_the_window_in_order() {
        let t0 = Instant::now();
        let mut o = Outbox::new(1, 100, Duration::from_secs(10), 3);
        for _ in 0..5 {
            o.push(0, |_| vec![]).unwrap();
        }
        let batch = o.peek(&[0], 4);
        o.written(&batch, t0);
        // Only the last 3 written stay in the window; entry 5 is still queued.
        assert_eq!(o.replay(&[0], t0), 3);
        assert_eq!(
            seqs(&o.peek(&[0], 10)),
            vec![(0, 2), (0, 3), (0, 4), (0, 5)]
        );
        // Entries older than the window are not replayed.
        let batch = o.peek(&[0], 10);
        o.written(&batch, t0);
        assert_eq!(o.replay(&[0], t0 + Duration::from_secs(11)), 0);
    }

    #[test]
    fn seen_drops_duplicates_and_counts_gaps() {
        let mut s = Seen::default();
        assert_eq!(s.check(1, 0, 5), Verdict::New);
        assert_eq!(s.check(1, 0, 6), Verdict::New);
        assert_eq!(s.check(1, 0, 6), Verdict::Duplicate);
        assert_eq!(s.check(1, 0, 3), Verdict::Duplicate);
        assert_eq!(s.check(1, 1, 1), Verdict::New);
        assert_eq!(s.check(1, 0, 9), Verdict::Gap { missing: 2 });
    }
}
