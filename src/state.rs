//! The state every part of a running tierlb shares: the service (its upstream, listener and
//! counters), the configuration in force for what is not the service's (the admin
//! endpoint's token and hosts), and the process's counters. Readers take snapshots with one
//! atomic load and never lock; a reload swaps them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::ProcessStats;
use crate::service::Service;

/// State shared by the accept loop, connection tasks, probes and the admin endpoint.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    /// The service.
    pub service: Arc<Service>,
    /// Process-wide counters.
    pub process: ProcessStats,
    /// When serving started.
    pub started: SystemTime,
}

impl Shared {
    /// Shared state for `config` served on `bound`, every node new (up, on probation).
    pub fn new(config: Config, bound: SocketAddr) -> Arc<Shared> {
        Arc::new(Shared {
            service: Arc::new(Service::new(&config, bound)),
            config: ArcSwap::from_pointee(config),
            process: ProcessStats::default(),
            started: SystemTime::now(),
        })
    }

    /// Puts a reloaded configuration in force (the service's upstream is swapped separately).
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }
}
