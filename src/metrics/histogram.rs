//! Latency histograms in the Prometheus exposition: cumulative `_bucket{le}` counts at fixed
//! bounds, with `_sum` and `_count`, read off an HdrHistogram when `/metrics` is scraped.
//!
//! Why buckets rather than quantiles: a quantile computed by the server cannot be combined (the
//! p99 of two nodes is not the p99 of the cluster) and, over the process's lifetime, never
//! forgets. Bucket counts are counters: Prometheus adds them across nodes, takes `rate()` over
//! any window and estimates quantiles from that with `histogram_quantile()`.
//!
//! Recording stays what it was (an HdrHistogram per shard, no atomics): the buckets are a view,
//! computed in one pass over the recorded values on each scrape.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Writes one histogram: `name_bucket{le="…"}` for each bound in `bounds_us` (microseconds,
/// ascending) and `+Inf`, then `name_sum` (seconds, from `sum_us`) and `name_count`.
///
/// A recorded value counts towards a bound if the low end of its HdrHistogram bucket is at or
/// below it, so a count is exact to the histogram's precision (two significant digits: a value
/// within 1% above a bound may count as below it).
pub fn render(
    o: &mut String,
    name: &str,
    help: &str,
    bounds_us: &[u64],
    h: &Histogram<u64>,
    sum_us: u64,
) {
    super::header(o, name, "histogram", help);
    let counts = cumulative(h, bounds_us);
    for (bound, count) in bounds_us.iter().zip(&counts) {
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {count}", seconds(*bound));
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let _ = writeln!(o, "{name}_sum {:.6}", sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count {}", h.len());
}

/// The number of recorded values at or below each bound, in one pass over the values.
pub fn cumulative(h: &Histogram<u64>, bounds_us: &[u64]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(bounds_us.len());
    let mut below = 0u64;
    for v in h.iter_recorded() {
        let low = h.lowest_equivalent(v.value_iterated_to());
        while counts.len() < bounds_us.len() && bounds_us[counts.len()] < low {
            counts.push(below);
        }
        below += v.count_at_value();
    }
    counts.resize(bounds_us.len(), below);
    counts
}

/// A bound in microseconds as the `le` label, in seconds (`0.00025`, `1`, `2.5`).
fn seconds(us: u64) -> String {
    // Display for f64 never uses an exponent and prints the shortest exact form.
    format!("{}", us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 600_000_000, 2).unwrap();
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    #[test]
    fn counts_are_cumulative_and_inclusive() {
        let h = histogram(&[50, 100, 100, 101, 2_000, 7_000_000]);
        assert_eq!(
            cumulative(&h, &[10, 100, 1_000, 2_000, 1_000_000]),
            vec![0, 3, 4, 5, 5]
        );
        assert_eq!(cumulative(&histogram(&[]), &[10, 100]), vec![0, 0]);
    }

    #[test]
    fn renders_buckets_sum_and_count() {
        let h = histogram(&[200, 3_000]);
        let mut o = String::new();
        render(
            &mut o,
            "x_seconds",
            "X.",
            &[250, 1_000, 2_500_000],
            &h,
            3_200,
        );
        assert_eq!(
            o,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.00025\"} 1\n\
             x_seconds_bucket{le=\"0.001\"} 1\n\
             x_seconds_bucket{le=\"2.5\"} 2\n\
             x_seconds_bucket{le=\"+Inf\"} 2\n\
             x_seconds_sum 0.003200\n\
             x_seconds_count 2\n"
        );
    }
}
