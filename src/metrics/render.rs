//! The Prometheus text exposition of every metric (format version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    ListenerStats, ProcessStats, ADMIN_REJECTED, BUILD_INFO, LISTENER_ACCEPTED, LISTENER_ACTIVE,
    LISTENER_FAILED, LISTENER_REJECTED, NODE_ACTIVE, NODE_CONNECTIONS, NODE_CONNECT_FAILURES,
    NODE_CONNECT_LATENCY, NODE_DRAINED, NODE_PROBE_FAILURES, NODE_RECEIVED_BYTES, NODE_RETRIES,
    NODE_SENT_BYTES, NODE_TRANSITIONS, NODE_UP, RELOADS,
};
use crate::node::FailureKind;
use crate::node::Node;

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
