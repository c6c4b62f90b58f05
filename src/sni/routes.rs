//! The routes of one shared listen address: which service takes which server name, and the
//! router that holds them, swapped whole by a reload while the listener stays bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Unmatched;
use crate::service::Service;

/// One service on a shared address, with its own connection limit.
#[derive(Debug)]
pub struct Route {
    /// The service.
    pub service: Arc<Service>,
    /// Its `max_connections`, if set.
    pub limit: Option<Arc<Semaphore>>,
}

/// Which service takes which name.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<Route>,
    exact: HashMap<String, usize>,
    /// By the domain under the `*.` label.
    wild: HashMap<String, usize>,
    default: Option<usize>,
}

impl Table {
    /// The table of `routes`, in the order of the config.
    fn new(routes: Vec<Route>) -> Table {
        let mut table = Table::default();
        for (i, route) in routes.iter().enumerate() {
            let names = route.service.found.lock().config.sni.clone();
            if names.is_empty() {
                table.default = Some(i);
            }
            for name in names {
                match name.strip_prefix("*.") {
                    Some(domain) => table.wild.insert(domain.to_owned(), i),
                    None => table.exact.insert(name, i),
                };
            }
        }
        table.routes = routes;
        table
    }

    /// The first service (whose listener counts failed accepts).
    pub fn first(&self) -> Option<&Arc<Service>> {
        self.routes.first().map(|r| &r.service)
    }

    /// Each service's name and server names, in the order of the config.
    pub fn names(&self) -> Vec<(String, Vec<String>)> {
        self.routes
            .iter()
            .map(|r| {
                let names = r.service.found.lock().config.sni.clone();
                (r.service.name.clone(), names)
            })
            .collect()
    }

    /// How long a client has to send its hello: the longest `[timeouts] handshake` of the
    /// sharing services, as in force now.
    pub fn handshake(&self) -> Duration {
        self.routes
            .iter()
            .map(|r| r.service.upstream().settings.timeouts.handshake)
            .max()
            .unwrap_or_default()
    }

    /// The route for a server name (`None`: the hello had none, or there was no hello): an
    /// exact name, else a wildcard of one label, else the default.
    pub fn route(&self, name: Option<&str>) -> Option<&Route> {
        let found = name.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, domain) = name.split_once('.')?;
                self.wild.get(domain)
            })
        });
        self.routes.get(*found.or(self.default.as_ref())?)
    }
}

/// One shared listen address: its routes, its counters, and what stops its listener.
#[derive(Debug)]
pub struct Router {
    /// The listen address as configured (the key a reload compares).
    pub listen: SocketAddr,
    /// The address the listener is bound to.
    pub bound: SocketAddr,
    table: ArcSwap<Table>,
    /// Clients closed unserved.
    pub unmatched: Unmatched,
    /// Stops its listener (when a reload removes every service sharing it, or at shutdown).
    pub stop: CancellationToken,
}

impl Router {
    /// The router of `routes` on `bound` (`listen` as configured), stopped by `stop`.
    pub fn new(
        listen: SocketAddr,
        bound: SocketAddr,
        routes: Vec<Route>,
        stop: CancellationToken,
    ) -> Router {
        Router {
            listen,
            bound,
            table: ArcSwap::from_pointee(Table::new(routes)),
            unmatched: Unmatched::default(),
            stop,
        }
    }

    /// The routes in force.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Puts the routes of `services` in force, each service with the limit it had here, or a
    /// new one from `limit` (a reload cannot change a kept service's `max_connections`).
    pub fn set(
        &self,
        services: Vec<Arc<Service>>,
        limit: impl Fn(&Service) -> Option<Arc<Semaphore>>,
    ) {
        let old = self.table();
        let routes = services
            .into_iter()
            .map(|service| {
                let kept = old
                    .routes
                    .iter()
                    .find(|r| Arc::ptr_eq(&r.service, &service));
                let limit = match kept {
                    Some(route) => route.limit.clone(),
                    None => limit(&service),
                };
                Route { service, limit }
            })
            .collect();
        self.table.store(Arc::new(Table::new(routes)));
    }
}
