//! A node's counters: connects (UDP flows), failures by kind, retries, bytes, datagrams, probe failures, state
//! changes, connect latency (recorded once per successful connect) and the recent one-second
//! samples of the status page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::recent::Recent;
use crate::timings::Timings;

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
    /// Datagrams of a UDP service's flows: sent to the node, received from it.
    pub datagrams: [AtomicU64; 2],
    /// Probes that failed (the node's fault).
    pub probe_failures: AtomicU64,
    /// Transitions to down.
    pub went_down: AtomicU64,
    /// Transitions to up.
    pub went_up: AtomicU64,
    /// Connect latency of successful connects.
    pub latency: Timings,
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
            datagrams: Default::default(),
            went_down: AtomicU64::new(0),
            went_up: AtomicU64::new(0),
            latency: Timings::default(),
            recent: Recent::default(),
        }
    }
}

impl NodeStats {
    /// Counts one successful connect that took `took`.
    pub fn connected(&self, took: Duration) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.latency.record(took);
    }

    /// Takes this second's sample for [`NodeStats::recent`].
    pub fn sample(&self) {
        self.recent.sample(
            self.connections.load(Ordering::Relaxed),
            self.latency.sum_us(),
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

    /// How many times the node has gone down, as a tag a connection keeps from its connect:
    /// an answer on a connection older than the node's last fall is no news of its health.
    pub fn falls(&self) -> u32 {
        self.went_down.load(Ordering::Relaxed) as u32
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
}
