//! Counters, gauges and the connect-latency histogram, and their Prometheus text rendering.
//!
//! Every metric name is a constant below, following Prometheus naming: a `tierlb_` prefix,
//! base units (seconds, bytes) in the name, `_total` on counters. To add a metric: add its
//! name here, a field to [`NodeStats`] or [`ListenerStats`], count it where it happens, and
//! render it in [`render`] with its `# HELP` and `# TYPE` lines.
//!
//! Counters are relaxed atomics, bumped once per connection or per failure, never per byte:
//! bytes are added when a connection closes. The latency histogram sits behind a mutex taken
//! once per successful connect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::connect::FailureKind;

/// Whether a node takes new connections (1) or is down (0).
pub const NODE_UP: &str = "tierlb_node_up";
/// Whether an operator took the node out of service through the admin API.
pub const NODE_DRAINED: &str = "tierlb_node_drained";
/// Connections open to the node now.
pub const NODE_ACTIVE: &str = "tierlb_node_active_connections";
/// Connections made to the node.
pub const NODE_CONNECTIONS: &str = "tierlb_node_connections_total";
/// Failed connect attempts to the node, by kind.
pub const NODE_CONNECT_FAILURES: &str = "tierlb_node_connect_failures_total";
/// Connect attempts to the node that were retries after another node failed.
pub const NODE_RETRIES: &str = "tierlb_node_retries_total";
/// Bytes sent from clients to the node (counted when each connection closes).
pub const NODE_SENT_BYTES: &str = "tierlb_node_sent_bytes_total";
/// Bytes received from the node for clients (counted when each connection closes).
pub const NODE_RECEIVED_BYTES: &str = "tierlb_node_received_bytes_total";
/// Health state changes of the node, by new state.
pub const NODE_TRANSITIONS: &str = "tierlb_node_health_transitions_total";
/// Time to connect to the node (successful connects), as a summary.
pub const NODE_CONNECT_LATENCY: &str = "tierlb_node_connect_latency_seconds";
/// Clients accepted.
pub const LISTENER_ACCEPTED: &str = "tierlb_listener_accepted_total";
/// accept() calls that failed (out of descriptors, say); the client waits in the backlog.
pub const LISTENER_REJECTED: &str = "tierlb_listener_rejected_total";
/// Clients closed because no node could take them (a client-visible failure).
pub const LISTENER_FAILED: &str = "tierlb_listener_failed_total";
/// Client connections open now.
pub const LISTENER_ACTIVE: &str = "tierlb_listener_active_connections";
/// Probes that failed, the node's fault.
pub const NODE_PROBE_FAILURES: &str = "tierlb_node_probe_failures_total";
/// The version of the running binary, as a label on a constant 1.
pub const BUILD_INFO: &str = "tierlb_build_info";
/// SIGHUP reloads, by result (`ok`, `error`).
pub const RELOADS: &str = "tierlb_reloads_total";
/// Admin connections closed at once because the admin endpoint was at its limit.
pub const ADMIN_REJECTED: &str = "tierlb_admin_rejected_total";

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

    fn latency_sum_seconds(&self) -> f64 {
        self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct ProcessStats {
    /// Admin connections closed at once because the admin endpoint was at its limit.
    pub admin_rejected: AtomicU64,
    /// Reloads put in force.
    pub reloads_ok: AtomicU64,
    /// Reloads refused (the file did not validate).
    pub reloads_failed: AtomicU64,
}

/// Listener counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Clients accepted.
    pub accepted: AtomicU64,
    /// Failed accept() calls.
    pub rejected: AtomicU64,
    /// Clients closed because no node could take them.
    pub failed: AtomicU64,
    /// Client connections open now.
    pub active: AtomicU64,
}

/// Keeps [`ListenerStats::active`] right on every exit path of a connection.
pub struct ActiveClient<'a>(&'a ListenerStats);

impl<'a> ActiveClient<'a> {
    /// Counts one more open client connection, until the guard drops.
    pub fn new(listener: &'a ListenerStats) -> ActiveClient<'a> {
        listener.active.fetch_add(1, Ordering::Relaxed);
        ActiveClient(listener)
    }
}

impl Drop for ActiveClient<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

mod recent;
mod render;

pub use recent::{Recent, Sample};
pub use render::render;
