//! Metric names, the listener's and the process's counters, and the Prometheus text
//! rendering of everything through `prometheus-client` (the nodes' own counters live with
//! them, in [`crate::node::NodeStats`]).
//!
//! Every metric name is a constant below, following Prometheus naming: a `tierlb_` prefix,
//! base units (seconds, bytes) in the name, `_total` on counters. To add a metric: add its
//! name here, a field to [`crate::node::NodeStats`], [`ListenerStats`] or [`ProcessStats`],
//! count it where it happens, and encode it in the collector (`render.rs`) with its help text.
//!
//! Counters are relaxed atomics, bumped once per connection or per failure, never per byte:
//! bytes are added when a connection closes.

use std::sync::atomic::AtomicU64;

/// Whether a node takes new connections (1) or is down (0).
pub const NODE_UP: &str = "tierlb_node_up";
/// Whether an operator took the node out of service through the admin API.
pub const NODE_DRAINED: &str = "tierlb_node_drained";
/// The node's weight in force (the file's, or the one an operator set at run time).
pub const NODE_WEIGHT: &str = "tierlb_node_weight";
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
/// Time to connect to the node (successful connects), as a histogram.
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
/// Clients waiting in the service's queue now (every node full).
pub const QUEUE_LENGTH: &str = "tierlb_queue_length";
/// How long clients waited in the queue, as a histogram.
pub const QUEUE_WAIT: &str = "tierlb_queue_wait_seconds";
/// Clients closed because no slot freed within `[timeouts] queue`.
pub const QUEUE_TIMEOUTS: &str = "tierlb_queue_timeouts_total";
/// The version of the running binary, as a label on a constant 1.
pub const BUILD_INFO: &str = "tierlb_build_info";
/// SIGHUP reloads, by result (`ok`, `error`).
pub const RELOADS: &str = "tierlb_reloads_total";
/// Admin connections closed at once because the admin endpoint was at its limit.
pub const ADMIN_REJECTED: &str = "tierlb_admin_rejected_total";
/// CPU time spent by the process, user and system, in seconds (Prometheus' process metrics).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// Resident memory of the process, in bytes.
pub const PROCESS_RESIDENT: &str = "process_resident_memory_bytes";
/// Virtual memory of the process, in bytes.
pub const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";
/// Descriptors open now.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The open-files limit in force (soft).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// When the process started, in seconds since the Unix epoch.
pub const PROCESS_START: &str = "process_start_time_seconds";
/// Live cluster peers reporting the node down.
pub const NODE_PEER_DOWN: &str = "tierlb_node_peer_down";
/// Whether the node is suspect: up here, reported down by a peer, being checked.
pub const NODE_SUSPECT: &str = "tierlb_node_suspect";
/// The live cluster peers' connections open to the node (their last published counts).
pub const NODE_PEER_ACTIVE: &str = "tierlb_node_peer_active_connections";
/// Cluster members by state (`alive`, `dead`), this instance included.
pub const CLUSTER_MEMBERS: &str = "tierlb_cluster_members";
/// Gossip datagrams dropped before parsing: not sealed with the cluster secret, or malformed.
pub const CLUSTER_REJECTED: &str = "tierlb_cluster_packets_rejected_total";
/// Gossip datagrams by direction (`sent`, `received`).
pub const CLUSTER_PACKETS: &str = "tierlb_cluster_packets_total";
/// Gossip bytes (UDP payload) by direction (`sent`, `received`).
pub const CLUSTER_BYTES: &str = "tierlb_cluster_bytes_total";
/// Gossip datagrams that could not be sent (unreachable peer, firewall).
pub const CLUSTER_SEND_ERRORS: &str = "tierlb_cluster_send_errors_total";
/// Peers' drain decisions ignored for a stamp too far ahead of this instance's clock.
pub const CLUSTER_SKEWED: &str = "tierlb_cluster_decisions_rejected_total";

/// Lookups made by a `discover` entry.
pub const DISCOVERY_LOOKUPS: &str = "tierlb_discovery_lookups_total";
/// Lookups of a `discover` entry that failed or came back empty (the last good set was kept).
pub const DISCOVERY_ERRORS: &str = "tierlb_discovery_errors_total";
/// Addresses in a `discover` entry's last good answer.
pub const DISCOVERY_FOUND: &str = "tierlb_discovery_found_addresses";
/// 1 for each node a `discover` entry found, labelled with the entry.
pub const NODE_DISCOVERED: &str = "tierlb_node_discovered";

/// Live flows of a UDP service.
pub const UDP_FLOWS: &str = "tierlb_udp_flows";
/// Datagrams of a UDP service dropped, by reason.
pub const UDP_DROPPED: &str = "tierlb_udp_dropped_total";
/// Datagrams passed to or from a node of a UDP service.
pub const NODE_DATAGRAMS: &str = "tierlb_node_datagrams_total";

/// Clients refused by a service's admission rules, by reason.
pub const ADMISSION_REJECTED: &str = "tierlb_admission_rejected_total";
/// Client addresses a service's admission rules track now.
pub const ADMISSION_SOURCES: &str = "tierlb_admission_sources";

/// Clients of a listen address shared by `sni` closed unserved, by reason.
pub const SNI_UNMATCHED: &str = "tierlb_sni_unmatched_total";

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

/// Why a UDP service dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// It would have opened a flow past `max_flows`.
    MaxFlows,
    /// No node could take a new flow (all down and failing, drained or full, or none).
    NoNode,
    /// This host could not open a socket for a new flow (out of descriptors or memory).
    Local,
    /// A new flow while the service stops (shutdown, reload): only existing flows run on.
    Stopping,
    /// The flow's socket had no room for it (the node reads too slowly).
    NodeBusy,
    /// Sending it to the node failed otherwise.
    NodeSend,
    /// A node's reply could not be sent to the client.
    ClientSend,
}

impl UdpDrop {
    /// Every reason, in counter order.
    pub const ALL: [UdpDrop; 7] = [
        UdpDrop::MaxFlows,
        UdpDrop::NoNode,
        UdpDrop::Local,
        UdpDrop::Stopping,
        UdpDrop::NodeBusy,
        UdpDrop::NodeSend,
        UdpDrop::ClientSend,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            UdpDrop::MaxFlows => "max_flows",
            UdpDrop::NoNode => "no_node",
            UdpDrop::Local => "local",
            UdpDrop::Stopping => "stopping",
            UdpDrop::NodeBusy => "node_busy",
            UdpDrop::NodeSend => "node_send",
            UdpDrop::ClientSend => "client_send",
        }
    }
}

/// A UDP service's dropped datagrams, by reason.
#[derive(Debug, Default)]
pub struct UdpStats {
    drops: [AtomicU64; UdpDrop::ALL.len()],
}

impl UdpStats {
    /// Counts one dropped datagram.
    pub fn dropped(&self, why: UdpDrop) {
        self.drops[why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Datagrams dropped for `why`.
    pub fn drops(&self, why: UdpDrop) -> u64 {
        self.drops[why as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

mod render;

pub use render::{render, ClusterScrape, Scrape, ServiceScrape};
