//! A node's counters: connects, failures by kind, retries, bytes, probe failures, state
//! changes, connect latency (an hdrhistogram behind a mutex taken once per successful
//! connect) and the recent one-second samples of the status page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::recent::Recent;

/// Kinds of connect failure, as counted in metrics (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The node refused the connection.
    Refused,
    /// No answer within the connect timeout.
    Timeout,
    /// The node's name did not resolve.
    Dns,
    /// Reset, unreachable, or anything else from the node's side.
    Other,
    /// The node took a client and closed or reset before sending a byte.
    Unanswered,
}

impl FailureKind {
    /// Every kind, in metric order.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::Dns,
        FailureKind::Other,
        FailureKind::Unanswered,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Dns => "dns",
            FailureKind::Other => "other",
            FailureKind::Unanswered => "unanswered",
        }
    }

    /// Position in [`FailureKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Quantiles of the connect-latency summary; 1 is the maximum.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 1.0];

/// Per-node counters.
#[derive(Debug)]
pub struct NodeStats {
    /// Successful connects.
    pub connections: AtomicU64,
    /// Failed connects, indexed by [`FailureKind::index`].
    pub failures: [AtomicU64; FailureKind::ALL.len()],
    /// Attempts on this node that were retries.
    pub retries: AtomicU64,
    /// Client-to-node bytes of closed connections.
    pub sent_bytes: AtomicU64,
    /// Node-to-client bytes of closed connections.
    pub received_bytes: AtomicU64,
    /// Probes that failed (the node's fault).
    pub probe_failures: AtomicU64,
    /// Transitions to down.
    pub went_down: AtomicU64,
    /// Transitions to up.
    pub went_up: AtomicU64,
    /// Connect latency in microseconds (`None` only if the histogram could not be built),
    /// with the sum for the summary.
    latency: Mutex<Option<Histogram<u64>>>,
    latency_sum_us: AtomicU64,
    /// The last minutes, one sample a second, for the status page.
    pub recent: Recent,
}

impl Default for NodeStats {
    fn default() -> Self {
        NodeStats {
            connections: AtomicU64::new(0),
            failures: Default::default(),
            retries: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            went_up: AtomicU64::new(0),
            // Three significant figures; the histogram grows to fit any latency.
            latency: Mutex::new(Histogram::new(3).ok()),
            latency_sum_us: AtomicU64::new(0),
            recent: Recent::default(),
        }
    }
}

impl NodeStats {
    /// Counts one successful connect that took `took`.
    pub fn connected(&self, took: Duration) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        if let Ok(mut guard) = self.latency.lock() {
            if let Some(histogram) = guard.as_mut() {
                histogram.saturating_record(us);
            }
        }
    }

    /// Takes this second's sample for [`NodeStats::recent`].
    pub fn sample(&self) {
        self.recent.sample(
            self.connections.load(Ordering::Relaxed),
            self.latency_sum_us.load(Ordering::Relaxed),
        );
    }

    /// Every failure counted on the node: failed connects, clients it failed, failed probes.
    pub fn failures_total(&self) -> u64 {
        let clients: u64 = self
            .failures
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .sum();
        clients + self.probe_failures.load(Ordering::Relaxed)
    }

    /// Counts one failed connect.
    pub fn failed(&self, kind: FailureKind) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed probe.
    pub fn probe_failed(&self) {
        self.probe_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the bytes of a closed connection.
    pub fn closed(&self, sent: u64, received: u64) {
        self.sent_bytes.fetch_add(sent, Ordering::Relaxed);
        self.received_bytes.fetch_add(received, Ordering::Relaxed);
    }

    /// Connect latency quantiles in seconds (see `QUANTILES`), and the count.
    pub fn latency(&self) -> (Vec<(f64, f64)>, u64) {
        let guard = self.latency.lock();
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

    /// For a latency histogram: how many connects took at most each of `bounds` (seconds,
    /// ascending), cumulative, and how many there were in all.
    pub fn latency_buckets(&self, bounds: &[f64]) -> (Vec<u64>, u64) {
        let guard = self.latency.lock();
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

    /// The sum of the connect latencies, in seconds.
    pub fn latency_sum_seconds(&self) -> f64 {
        self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}
