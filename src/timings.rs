//! Recorded durations (a node's connect times, a service's queue waits): an hdrhistogram behind
//! a mutex taken once per recorded value, with the running sum kept apart in an atomic, read
//! as quantiles (for `/status`) and as cumulative buckets (for Prometheus histograms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Quantiles reported by [`Timings::quantiles`]; 1 is the maximum.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 1.0];

/// The longest duration told apart, in microseconds (an hour); longer ones count as an hour.
const LONGEST_US: u64 = 3_600_000_000;

/// Durations recorded in microseconds, to two significant figures (1 %), up to an hour: a
/// fixed 27 KB, allocated once, so recording never grows it.
#[derive(Debug)]
pub struct Timings {
    /// `None` only if the histogram could not be built.
    histogram: Mutex<Option<Histogram<u64>>>,
    sum_us: AtomicU64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            histogram: Mutex::new(Histogram::new_with_bounds(1, LONGEST_US, 2).ok()),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Timings {
    /// Records one duration (at least 1 µs).
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Ok(mut guard) = self.histogram.lock() {
            if let Some(histogram) = guard.as_mut() {
                histogram.saturating_record(us);
            }
        }
    }

    /// The sum of every recorded duration, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// The sum of every recorded duration, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us() as f64 / 1e6
    }

    /// Each of [`QUANTILES`] with its value in seconds, and how many were recorded.
    pub fn quantiles(&self) -> (Vec<(f64, f64)>, u64) {
        let guard = self.histogram.lock();
        match guard.as_deref() {
            Ok(Some(h)) => (
                QUANTILES
                    .iter()
                    .map(|&q| (q, h.value_at_quantile(q) as f64 / 1e6))
                    .collect(),
                h.len(),
            ),
            _ => (QUANTILES.iter().map(|&q| (q, 0.0)).collect(), 0),
        }
    }

    /// How many took at most each of `bounds` (seconds, ascending), cumulative, and how many
    /// were recorded in all.
    pub fn buckets(&self, bounds: &[f64]) -> (Vec<u64>, u64) {
        let guard = self.histogram.lock();
        match guard.as_deref() {
            Ok(Some(h)) => {
                let counts = bounds
                    .iter()
                    .map(|b| h.count_between(0, (b * 1e6) as u64))
                    .collect();
                (counts, h.len())
            }
            _ => (vec![0; bounds.len()], 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sum_quantiles_and_cumulative_buckets_beyond_the_first_milliseconds() {
        let t = Timings::default();
        for ms in [1, 2, 3, 400] {
            t.record(Duration::from_millis(ms));
        }
        assert_eq!(t.sum_us(), 406_000);
        let (quantiles, count) = t.quantiles();
        assert_eq!(count, 4);
        let max = quantiles.last().map(|q| q.1).unwrap_or_default();
        assert!((max - 0.4).abs() < 0.004, "max within 1 %: {max}");
        let (buckets, all) = t.buckets(&[0.0025, 0.01, 1.0]);
        assert_eq!((buckets, all), (vec![2, 3, 4], 4));
        t.record(Duration::from_secs(7200));
        let (quantiles, _) = t.quantiles();
        let max = quantiles.last().map(|q| q.1).unwrap_or_default();
        assert!((max - 3600.0).abs() < 36.0, "clamped to an hour: {max}");
    }
}
