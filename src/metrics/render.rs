//! The Prometheus text exposition (format 0.0.4) of every metric, through `prometheus-client`:
//! one collector reads the counters at scrape time (the data path only bumps atomics) and
//! encodes them with typed label sets. Every node family has `service` and `node` labels,
//! every listener family `service` and `listener`. Connect latency is a histogram, so the
//! series of several instances can be summed; its buckets come from the node's hdrhistogram.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{
    ADMIN_REJECTED, BUILD_INFO, LISTENER_ACCEPTED, LISTENER_ACTIVE, LISTENER_FAILED,
    LISTENER_REJECTED, NODE_ACTIVE, NODE_CONNECTIONS, NODE_CONNECT_FAILURES, NODE_CONNECT_LATENCY,
    NODE_DRAINED, NODE_PEER_ACTIVE, NODE_PEER_DOWN, NODE_PROBE_FAILURES, NODE_RECEIVED_BYTES,
    NODE_RETRIES, NODE_SENT_BYTES, NODE_SUSPECT, NODE_TRANSITIONS, NODE_UP, NODE_WEIGHT, RELOADS,
};
use crate::found::EntryStats;
use crate::node::{FailureKind, Node};
use crate::queue::Queue;
use crate::timings::Timings;

mod admission;
mod cluster;
mod discovery;
mod process;
mod queue;
mod udp;

pub use cluster::ClusterScrape;

/// Upper bounds (seconds) of the connect-latency histogram's buckets, +Inf implied.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// What one scrape reports: the values are read now, the nodes' counters while encoding.
#[derive(Debug)]
pub struct Scrape {
    /// Every service.
    pub services: Vec<ServiceScrape>,
    /// Reloads put in force and refused, admin connections rejected.
    pub process: [u64; 3],
    /// The cluster's figures, when `[cluster]` is set.
    pub cluster: Option<ClusterScrape>,
    /// Per listen address shared by `sni`: the address, clients with no route, clients
    /// that sent no hello in time.
    pub unmatched: Vec<(String, u64, u64)>,
}

/// One service's part of a scrape.
#[derive(Debug)]
pub struct ServiceScrape {
    /// The service's name.
    pub name: String,
    /// The address its listener is bound to.
    pub listen: String,
    /// Its nodes in service.
    pub nodes: Vec<Arc<Node>>,
    /// Listener counters: accepted, rejected, failed, active.
    pub listener: [u64; 4],
    /// Its queue.
    pub queue: Arc<Queue>,
    /// Its `discover` entries: name, counters, addresses in the last good answer.
    pub entries: Vec<(Arc<str>, Arc<EntryStats>, usize)>,
    /// Clients refused by its admission rules, per reason.
    pub rejected: [(&'static str, u64); 3],
    /// Sources its admission rules track now.
    pub sources: usize,
    /// For a UDP service: its datagrams dropped, per reason (its flows are `listener[3]`).
    pub udp: Option<Vec<(&'static str, u64)>>,
}

/// Renders a scrape in the Prometheus text format (version 0.0.4).
pub fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A counter's family name as prometheus-client wants it: without `_total`, which it adds.
pub(super) fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Starts the family `name` of `kind` (a counter's name given with its `_total`).
pub(super) fn family<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &'a str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, fmt::Error> {
    let name = if kind == MetricType::Counter {
        counter_name(name)
    } else {
        name
    };
    encoder.encode_descriptor(name, help, None, kind)
}

/// The per-node families with no label but `service` and `node`: name, help, type, value.
type PerNode = (&'static str, &'static str, MetricType, fn(&Node) -> u64);

const PER_NODE: [PerNode; 9] = [
    (
        NODE_UP,
        "Whether the node is up (1) or down (0).",
        MetricType::Gauge,
        |n| u64::from(n.is_up()),
    ),
    (
        NODE_DRAINED,
        "Whether an operator drained the node (1).",
        MetricType::Gauge,
        |n| u64::from(n.is_drained()),
    ),
    (
        NODE_WEIGHT,
        "The node's weight in force: the file's, or the one an operator set at run time (0: no new client).",
        MetricType::Gauge,
        |n| u64::from(n.runtime_weight().unwrap_or_else(|| n.weight())),
    ),
    (
        NODE_ACTIVE,
        "Connections open to the node.",
        MetricType::Gauge,
        |n| u64::from(n.active()),
    ),
    (
        NODE_CONNECTIONS,
        "Connections made to the node.",
        MetricType::Counter,
        |n| n.stats.connections.load(Relaxed),
    ),
    (
        NODE_RETRIES,
        "Connect attempts on the node that retried another node's failure.",
        MetricType::Counter,
        |n| n.stats.retries.load(Relaxed),
    ),
    (
        NODE_PROBE_FAILURES,
        "Probes of the node that failed.",
        MetricType::Counter,
        |n| n.stats.probe_failures.load(Relaxed),
    ),
    (
        NODE_SENT_BYTES,
        "Bytes from clients to the node, counted at close.",
        MetricType::Counter,
        |n| n.stats.sent_bytes.load(Relaxed),
    ),
    (
        NODE_RECEIVED_BYTES,
        "Bytes from the node to clients, counted at close.",
        MetricType::Counter,
        |n| n.stats.received_bytes.load(Relaxed),
    ),
];

/// The per-node families that only a cluster has: reported with `[cluster]` alone.
const PER_NODE_CLUSTER: [PerNode; 3] = [
    (
        NODE_SUSPECT,
        "Whether the node is suspect (1): up here, reported down by a cluster peer, being checked.",
        MetricType::Gauge,
        |n| u64::from(n.is_suspect()),
    ),
    (
        NODE_PEER_DOWN,
        "Live cluster peers that report the node down.",
        MetricType::Gauge,
        |n| u64::from(n.peers.down_reports()),
    ),
    (
        NODE_PEER_ACTIVE,
        "The live cluster peers' connections open to the node, as they last published.",
        MetricType::Gauge,
        |n| u64::from(n.peers.load()),
    ),
];

/// Encodes one sample of a counter or gauge.
pub(super) fn value(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    v: u64,
) -> fmt::Result {
    match kind {
        MetricType::Counter => encoder.encode_counter::<NoLabelSet, u64, u64>(&v, None),
        _ => encoder.encode_gauge(&v),
    }
}

/// Encodes recorded durations as one histogram sample with buckets at `bounds` (seconds).
pub(super) fn histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    timings: &Timings,
    bounds: &[f64],
) -> fmt::Result {
    let (cumulative, count) = timings.buckets(bounds);
    // The encoder wants each bucket's own count; it adds them up again.
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = bounds
        .iter()
        .zip(&cumulative)
        .map(|(&bound, &c)| {
            let own = c.saturating_sub(below);
            below = c.max(below);
            (bound, own)
        })
        .collect();
    buckets.push((f64::INFINITY, count.saturating_sub(below)));
    encoder.encode_histogram::<NoLabelSet>(timings.sum_seconds(), count, &buckets, None)
}

impl Scrape {
    fn process(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            BUILD_INFO,
            "The running tierlb, by version.",
            None,
            MetricType::Gauge,
        )?;
        family
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1u64)?;
        let mut family = encoder.encode_descriptor(
            counter_name(RELOADS),
            "SIGHUP reloads, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, v) in [("ok", self.process[0]), ("error", self.process[1])] {
            let labels = [("result", result)];
            value(&mut family.encode_family(&labels)?, MetricType::Counter, v)?;
        }
        let mut sample = encoder.encode_descriptor(
            counter_name(ADMIN_REJECTED),
            "Admin connections closed at once: the admin endpoint was at its connection limit.",
            None,
            MetricType::Counter,
        )?;
        value(&mut sample, MetricType::Counter, self.process[2])
    }

    fn nodes(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let nodes: Vec<&Arc<Node>> = self.services.iter().flat_map(|s| &s.nodes).collect();
        let labels: Vec<[(&str, String); 2]> = self
            .services
            .iter()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .map(|n| [("service", s.name.clone()), ("node", n.address.to_string())])
            })
            .collect();
        let cluster: &[PerNode] = if self.cluster.is_some() {
            &PER_NODE_CLUSTER
        } else {
            &[]
        };
        for &(name, help, kind, read) in PER_NODE.iter().chain(cluster) {
            let mut family = family(encoder, name, help, kind)?;
            for (node, labels) in nodes.iter().zip(&labels) {
                value(&mut family.encode_family(labels)?, kind, read(node))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            counter_name(NODE_CONNECT_FAILURES),
            "Failed connect attempts and clients the node failed, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (node, labels) in nodes.iter().zip(&labels) {
            for kind in FailureKind::ALL {
                let [s, n] = labels;
                let with_kind = [s.clone(), n.clone(), ("kind", kind.label().to_owned())];
                let v = node.stats.failures[kind.index()].load(Relaxed);
                value(
                    &mut family.encode_family(&with_kind)?,
                    MetricType::Counter,
                    v,
                )?;
            }
        }
        let mut family = encoder.encode_descriptor(
            counter_name(NODE_TRANSITIONS),
            "Health state changes, by new state.",
            None,
            MetricType::Counter,
        )?;
        for (node, labels) in nodes.iter().zip(&labels) {
            let [s, n] = labels;
            for (to, v) in [
                ("down", node.stats.went_down.load(Relaxed)),
                ("up", node.stats.went_up.load(Relaxed)),
            ] {
                let with_to = [s.clone(), n.clone(), ("to", to.to_owned())];
                value(&mut family.encode_family(&with_to)?, MetricType::Counter, v)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            NODE_CONNECT_LATENCY,
            "Time to connect to the node, successful connects.",
            None,
            MetricType::Histogram,
        )?;
        for (node, labels) in nodes.iter().zip(&labels) {
            histogram(
                &mut family.encode_family(labels)?,
                &node.stats.latency,
                &LATENCY_BUCKETS,
            )?;
        }
        Ok(())
    }

    fn listener(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let labels: Vec<[(&str, &str); 2]> = self
            .services
            .iter()
            .map(|s| {
                [
                    ("service", s.name.as_str()),
                    ("listener", s.listen.as_str()),
                ]
            })
            .collect();
        let families = [
            (LISTENER_ACCEPTED, "Clients accepted.", MetricType::Counter),
            (
                LISTENER_REJECTED,
                "Failed accept() calls (the client waits in the backlog).",
                MetricType::Counter,
            ),
            (
                LISTENER_FAILED,
                "Clients closed because no node could take them.",
                MetricType::Counter,
            ),
            (
                LISTENER_ACTIVE,
                "Client connections open.",
                MetricType::Gauge,
            ),
        ];
        for (k, (name, help, kind)) in families.into_iter().enumerate() {
            let mut family = family(encoder, name, help, kind)?;
            for (service, labels) in self.services.iter().zip(&labels) {
                value(
                    &mut family.encode_family(labels)?,
                    kind,
                    service.listener[k],
                )?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.process(&mut encoder)?;
        process::encode(&mut encoder)?;
        if let Some(c) = &self.cluster {
            c.encode_into(&mut encoder)?;
        }
        self.nodes(&mut encoder)?;
        self.listener(&mut encoder)?;
        queue::encode(&self.services, &mut encoder)?;
        admission::encode(&self.services, &mut encoder)?;
        udp::encode(&self.services, &mut encoder)?;
        discovery::encode(&self.services, &mut encoder)?;
        discovery::encode_unmatched(&self.unmatched, &mut encoder)
    }
}
