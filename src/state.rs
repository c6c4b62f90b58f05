//! The state every part of a running tierlb shares: the service's upstream (settings, node
//! set and strategy, one snapshot), the configuration in force for what is not the
//! service's (the admin endpoint's token and hosts), the listener's counters and the bound
//! address. Readers take a snapshot with one atomic load and never lock; a reload swaps them.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::{ListenerStats, ProcessStats};
use crate::throttle::Throttle;
use crate::upstream::Upstream;

/// State shared by the accept loop, connection tasks and probes. Readers take a snapshot with
/// one atomic load and never lock.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    upstream: ArcSwap<Upstream>,
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
        Arc::new(Shared {
            upstream: ArcSwap::from_pointee(Upstream::new(&config)),
            config: ArcSwap::from_pointee(config),
            next_pick: AtomicUsize::new(0),
            client_failures: Throttle::default(),
            process: ProcessStats::default(),
            started: std::time::SystemTime::now(),
            listener: ListenerStats::default(),
            bound,
        })
    }

    /// Puts a reloaded configuration and its upstream in force (the reload module builds
    /// them). Connections and probes read only the upstream, which is swapped whole.
    pub fn replace(&self, config: Config, upstream: Upstream) {
        self.upstream.store(Arc::new(upstream));
        self.config.store(Arc::new(config));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The service's upstream: settings, nodes and strategy.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream.load_full()
    }
}
