//! The state every part of a running tierlb shares: the configuration and node set in
//! force, the listener's counters and the bound address. Readers take a snapshot with one
//! atomic load and never lock; a reload swaps the snapshots.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::{ListenerStats, ProcessStats};
use crate::node::NodeSet;
use crate::throttle::Throttle;

/// State shared by the accept loop, connection tasks and probes. Readers take a snapshot with
/// one atomic load and never lock.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    nodes: ArcSwap<NodeSet>,
    /// Grows by one per client: seeds the random draws of the pick in large node sets.
    pub next_pick: AtomicUsize,
    /// Client-visible failures, for rate-limited logging.
    pub client_failures: Throttle,
    /// Process-wide counters.
    pub process: ProcessStats,
    /// When serving started.
    pub started: std::time::SystemTime,
    /// Listener counters.
    pub listener: ListenerStats,
    /// The address the listener is bound to (the configured one may say port 0).
    pub bound: SocketAddr,
}

impl Shared {
    /// Shared state for `config` served on `bound`, every node new (up, on probation).
    pub fn new(config: Config, bound: SocketAddr) -> Arc<Shared> {
        let nodes = NodeSet::new(&config.nodes, config.health.rise, config.health.fall);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            nodes: ArcSwap::from_pointee(nodes),
            next_pick: AtomicUsize::new(0),
            client_failures: Throttle::default(),
            process: ProcessStats::default(),
            started: std::time::SystemTime::now(),
            listener: ListenerStats::default(),
            bound,
        })
    }

    /// Puts a reloaded configuration and its node set in force (the reload module builds them).
    pub fn replace(&self, config: Config, nodes: NodeSet) {
        self.nodes.store(Arc::new(nodes));
        self.config.store(Arc::new(config));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The nodes in service.
    pub fn nodes(&self) -> Arc<NodeSet> {
        self.nodes.load_full()
    }
}
