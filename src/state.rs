//! The state every part of a running tierlb shares: the services (each with its upstream,
//! listener and counters), the configuration in force for what is not a service's (the
//! admin endpoint's token and hosts), and the process's counters. Readers take snapshots with
//! one atomic load and never lock; a reload swaps them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::ProcessStats;
use crate::service::Service;
use crate::sni::Router;

/// State shared by the accept loops, connection tasks, probes and the admin endpoint.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    services: ArcSwap<Vec<Arc<Service>>>,
    /// Process-wide counters.
    pub process: ProcessStats,
    /// The listen addresses shared by `sni`, with their routes.
    pub routers: ArcSwap<Vec<Arc<Router>>>,
    /// Set when shutdown begins: no longer accepting, draining.
    pub draining: AtomicBool,
    /// When serving started.
    pub started: SystemTime,
    /// Where operator decisions are kept across restarts (`state_file`, read at start).
    pub state_file: Option<crate::persist::StateFile>,
}

impl Shared {
    /// Shared state for `config` with its `services` (already built on their listeners), the
    /// decisions of its state file, if any, adopted on their nodes.
    pub fn new(config: Config, services: Vec<Arc<Service>>) -> Arc<Shared> {
        let state_file = config
            .state_file
            .as_deref()
            .map(crate::persist::StateFile::new);
        if let Some(file) = &state_file {
            file.restore(&services);
        }
        Arc::new(Shared {
            state_file,
            services: ArcSwap::from_pointee(services),
            config: ArcSwap::from_pointee(config),
            process: ProcessStats::default(),
            routers: ArcSwap::from_pointee(Vec::new()),
            draining: AtomicBool::new(false),
            started: SystemTime::now(),
        })
    }

    /// Puts a reloaded configuration and service list in force.
    pub fn replace(&self, config: Config, services: Vec<Arc<Service>>) {
        self.services.store(Arc::new(services));
        self.config.store(Arc::new(config));
    }

    /// Writes the decisions in force to the state file, if there is one and they changed.
    pub fn save_state(&self) {
        if let Some(file) = &self.state_file {
            file.save(&self.services());
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The services in force, in the order of the configuration.
    pub fn services(&self) -> Arc<Vec<Arc<Service>>> {
        self.services.load_full()
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services().iter().find(|s| s.name == name).cloned()
    }
}
