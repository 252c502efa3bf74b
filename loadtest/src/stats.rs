//! Counting what arrived: per-stream sequence tracking (loss, duplicates, reordering) and
//! latency histograms, mergeable across threads and worker processes.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One receiver's view of one publisher's numbered stream (sequence numbers start at 0).
#[derive(Debug, Default, Clone)]
pub struct Sequence {
    /// The next number expected in order.
    next: u64,
    /// Gaps not (yet) filled: start → end (exclusive).
    missing: BTreeMap<u64, u64>,
    pub unique: u64,
    pub duplicates: u64,
    /// Messages that arrived after a later one.
    pub reordered: u64,
}

impl Sequence {
    pub fn observe(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            self.missing.insert(self.next, seq);
            self.next = seq + 1;
            self.unique += 1;
        } else if self.fill(seq) {
            self.unique += 1;
            self.reordered += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Removes `seq` from the gaps; false if it was not missing (so it is a duplicate).
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq);
        }
        if seq + 1 < end {
            self.missing.insert(seq + 1, end);
        }
        true
    }

    /// Numbers below the highest seen that never arrived.
    pub fn gaps(&self) -> u64 {
        self.missing.iter().map(|(s, e)| e - s).sum()
    }
}

/// Latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A histogram as (value, count) pairs, for sending between processes as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn of(h: &Histogram<u64>) -> Buckets {
        Buckets(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for (value, count) in &self.0 {
            let _ = h.record_n(*value, *count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut s = Sequence::default();
        (0..100).for_each(|i| s.observe(i));
        assert_eq!(
            (s.unique, s.duplicates, s.reordered, s.gaps()),
            (100, 0, 0, 0)
        );
    }

    #[test]
    fn loss_duplicates_and_reordering() {
        let mut s = Sequence::default();
        for seq in [0, 1, 4, 2, 2, 7, 5, 1, 9] {
            s.observe(seq);
        }
        // Seen: 0 1 2 4 5 7 9; missing 3, 6, 8; 2 and 5 came late; 2 and 1 came twice.
        assert_eq!(s.unique, 7);
        assert_eq!(s.gaps(), 3);
        assert_eq!(s.reordered, 2);
        assert_eq!(s.duplicates, 2);
        // A late arrival of the first of a gap, its last, and its middle.
        let mut s = Sequence::default();
        s.observe(10);
        s.observe(0);
        s.observe(9);
        s.observe(5);
        assert_eq!((s.unique, s.gaps(), s.reordered), (4, 7, 3));
    }

    #[test]
    fn percentiles_and_round_trip() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 0.5).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 0.99).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 1.0).abs() < 0.01, "{p:?}");
        let mut back = histogram();
        Buckets::of(&h).add_to(&mut back);
        assert_eq!(Percentiles::of(&back), p);
    }
}
