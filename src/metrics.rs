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

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::connect::FailureKind;
use crate::node::Node;

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

/// One value per node: a family with one sample per node and no other label.
struct PerNode {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Node) -> u64,
}

/// The per-node families without extra labels, in the order they are rendered.
const PER_NODE: [PerNode; 8] = [
    PerNode {
        name: NODE_UP,
        kind: "gauge",
        help: "Whether the node is up (1) or down (0).",
        value: |n| u64::from(n.is_up()),
    },
    PerNode {
        name: NODE_DRAINED,
        kind: "gauge",
        help: "Whether an operator drained the node (1).",
        value: |n| u64::from(n.is_drained()),
    },
    PerNode {
        name: NODE_ACTIVE,
        kind: "gauge",
        help: "Connections open to the node.",
        value: |n| u64::from(n.active()),
    },
    PerNode {
        name: NODE_CONNECTIONS,
        kind: "counter",
        help: "Connections made to the node.",
        value: |n| n.stats.connections.load(Ordering::Relaxed),
    },
    PerNode {
        name: NODE_RETRIES,
        kind: "counter",
        help: "Connect attempts on the node that retried another node's failure.",
        value: |n| n.stats.retries.load(Ordering::Relaxed),
    },
    PerNode {
        name: NODE_PROBE_FAILURES,
        kind: "counter",
        help: "Probes of the node that failed.",
        value: |n| n.stats.probe_failures.load(Ordering::Relaxed),
    },
    PerNode {
        name: NODE_SENT_BYTES,
        kind: "counter",
        help: "Bytes from clients to the node, counted at close.",
        value: |n| n.stats.sent_bytes.load(Ordering::Relaxed),
    },
    PerNode {
        name: NODE_RECEIVED_BYTES,
        kind: "counter",
        help: "Bytes from the node to clients, counted at close.",
        value: |n| n.stats.received_bytes.load(Ordering::Relaxed),
    },
];

/// Renders every metric in the Prometheus text exposition format (version 0.0.4).
///
/// `writeln!` into a `String` cannot fail, so its `fmt::Result` is ignored throughout.
pub fn render(
    nodes: &[Arc<Node>],
    listener: &ListenerStats,
    process: &ProcessStats,
    listen: &str,
) -> String {
    let mut out = String::with_capacity(1024 + nodes.len() * 2048);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    family(
        &mut out,
        BUILD_INFO,
        "gauge",
        "The running tierlb, by version.",
    );
    let _ = writeln!(
        out,
        "{BUILD_INFO}{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(&mut out, RELOADS, "counter", "SIGHUP reloads, by result.");
    let _ = writeln!(
        out,
        "{RELOADS}{{result=\"ok\"}} {}",
        get(&process.reloads_ok)
    );
    let _ = writeln!(
        out,
        "{RELOADS}{{result=\"error\"}} {}",
        get(&process.reloads_failed)
    );
    family(
        &mut out,
        ADMIN_REJECTED,
        "counter",
        "Admin connections closed at once: the admin endpoint was at its connection limit.",
    );
    let _ = writeln!(out, "{ADMIN_REJECTED} {}", get(&process.admin_rejected));
    for family_of in &PER_NODE {
        family(&mut out, family_of.name, family_of.kind, family_of.help);
        for n in nodes {
            sample(
                &mut out,
                family_of.name,
                &n.address,
                "",
                (family_of.value)(n),
            );
        }
    }
    family(
        &mut out,
        NODE_CONNECT_FAILURES,
        "counter",
        "Failed connect attempts, by kind.",
    );
    for n in nodes {
        for kind in FailureKind::ALL {
            let labels = format!(",kind=\"{}\"", kind.label());
            sample(
                &mut out,
                NODE_CONNECT_FAILURES,
                &n.address,
                &labels,
                get(&n.stats.failures[kind.index()]),
            );
        }
    }
    family(
        &mut out,
        NODE_TRANSITIONS,
        "counter",
        "Health state changes, by new state.",
    );
    for n in nodes {
        sample(
            &mut out,
            NODE_TRANSITIONS,
            &n.address,
            ",to=\"down\"",
            get(&n.stats.went_down),
        );
        sample(
            &mut out,
            NODE_TRANSITIONS,
            &n.address,
            ",to=\"up\"",
            get(&n.stats.went_up),
        );
    }
    family(
        &mut out,
        NODE_CONNECT_LATENCY,
        "summary",
        "Time to connect to the node; quantile 1 is the maximum.",
    );
    for n in nodes {
        let (quantiles, count) = n.stats.latency();
        for (q, seconds) in quantiles {
            let _ = writeln!(
                out,
                "{NODE_CONNECT_LATENCY}{{node=\"{}\",quantile=\"{q}\"}} {seconds}",
                escape(&n.address.to_string())
            );
        }
        let _ = writeln!(
            out,
            "{NODE_CONNECT_LATENCY}_sum{{node=\"{}\"}} {}",
            escape(&n.address.to_string()),
            n.stats.latency_sum_seconds()
        );
        let _ = writeln!(
            out,
            "{NODE_CONNECT_LATENCY}_count{{node=\"{}\"}} {count}",
            escape(&n.address.to_string())
        );
    }
    let listener_metrics: [(&str, &str, &str, &AtomicU64); 4] = [
        (
            LISTENER_ACCEPTED,
            "counter",
            "Clients accepted.",
            &listener.accepted,
        ),
        (
            LISTENER_REJECTED,
            "counter",
            "Failed accept() calls (the client waits in the backlog).",
            &listener.rejected,
        ),
        (
            LISTENER_FAILED,
            "counter",
            "Clients closed because no node could take them.",
            &listener.failed,
        ),
        (
            LISTENER_ACTIVE,
            "gauge",
            "Client connections open.",
            &listener.active,
        ),
    ];
    for (name, kind, help, value) in listener_metrics {
        family(&mut out, name, kind, help);
        let _ = writeln!(
            out,
            "{name}{{listener=\"{}\"}} {}",
            escape(listen),
            get(value)
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, node: &impl std::fmt::Display, labels: &str, value: u64) {
    let _ = writeln!(
        out,
        "{name}{{node=\"{}\"{labels}}} {value}",
        escape(&node.to_string())
    );
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
