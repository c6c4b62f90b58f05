//! What starts the tasks of services and nodes, at start, on reload and when a name's answer
//! changes: probe loops and lookups, and each service's serving loop (a TCP accept loop, an
//! SNI-shared one, or a UDP service's flows).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Target;
use crate::dns::Resolver;
use crate::limits::Budget;
use crate::listener::{self, Limits, Serves};
use crate::node::Node;
use crate::roster::Start;
use crate::service::{Bound, Service};
use crate::sni::{Route, Router};
use crate::upgrade;
use crate::{discovery, health, udp};

/// What starts the tasks of services and nodes, at start, on reload and when a name's
/// answer changes.
#[derive(Clone)]
pub(super) struct Tasks {
    pub resolver: Resolver,
    pub probes: TaskTracker,
    pub stop_probes: CancellationToken,
    pub loops: TaskTracker,
    pub connections: TaskTracker,
    pub shutdown: CancellationToken,
    pub budget: Budget,
    pub process_limit: Arc<Semaphore>,
}

impl Start for Tasks {
    fn probe(&self, node: Arc<Node>, service: &Arc<Service>) {
        // The probe's log lines (node down/up) name the service themselves: it is the node's.
        if node.address.socket_addr().is_none() {
            let follow = discovery::follow_name(
                Arc::clone(&node),
                Arc::clone(service),
                self.resolver.clone(),
                self.stop_probes.clone(),
            );
            self.probes.spawn(follow);
        }
        let run = health::run(node, Arc::clone(service), self.stop_probes.clone());
        self.probes.spawn(run);
    }

    fn discover(&self, service: &Arc<Service>, target: Target, stop: CancellationToken) {
        let run = discovery::run_entry(
            Arc::clone(service),
            target,
            stop,
            self.resolver.clone(),
            self.clone(),
        );
        self.probes.spawn(run);
    }

    fn stop_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    fn serve(&self, service: Arc<Service>, bound: Bound) {
        let (configured, max_connections, max_flows) = {
            let found = service.found.lock();
            let c = &found.config;
            (c.listen, c.max_connections, c.max_flows)
        };
        let held = upgrade::hold_service(configured, &bound);
        let listener = match bound {
            Bound::Tcp(listener) => listener,
            Bound::Udp(socket) => {
                let max = max_flows.map_or(self.budget.descriptors(), |m| m as usize);
                let process = Arc::clone(&self.process_limit);
                let stop = service.stop.clone();
                // Tracked as connections: the drain waits for the flows to end.
                self.connections.spawn(async move {
                    let name = service.name.clone();
                    udp::serve(service, socket, max, process, stop).await;
                    // Its copy for an upgrade's handover too, before the line says so.
                    drop(held);
                    tracing::info!(service = %name, "UDP socket closed");
                });
                return;
            }
        };
        let limits = Limits {
            service: listener::service_limit(&service.name, max_connections, &self.budget),
            process: Arc::clone(&self.process_limit),
        };
        let connections = self.connections.clone();
        self.loops.spawn(async move {
            let stop = service.stop.clone();
            let serves = Serves::One(Arc::clone(&service));
            listener::accept_loop(&listener, &serves, limits, &connections, &stop).await;
            // Closing the listener (and its copy listed for an upgrade's handover) makes new
            // clients see "connection refused" right away, before the line says so.
            drop((listener, held));
            tracing::info!(service = %service.name, "listener closed");
        });
    }

    fn serve_shared(
        &self,
        listen: SocketAddr,
        listener: TcpListener,
        services: Vec<Arc<Service>>,
    ) -> Arc<Router> {
        let routes = services
            .into_iter()
            .map(|service| Route {
                limit: self.limit(&service),
                service,
            })
            .collect();
        let bound = listener.local_addr().unwrap_or(listen);
        let router = Arc::new(Router::new(
            listen,
            bound,
            routes,
            self.shutdown.child_token(),
        ));
        for (name, names) in router.table().names() {
            tracing::info!(listener = %bound, service = %name, sni = %names.join(", "), "route");
        }
        let limits = Limits {
            service: None,
            process: Arc::clone(&self.process_limit),
        };
        let connections = self.connections.clone();
        let serving = Arc::clone(&router);
        let held = upgrade::hold_service(listen, &listener);
        self.loops.spawn(async move {
            let stop = serving.stop.clone();
            let serves = Serves::Shared(serving);
            listener::accept_loop(&listener, &serves, limits, &connections, &stop).await;
            drop((listener, held));
            tracing::info!(listener = %bound, "shared listener closed");
        });
        router
    }

    fn limit(&self, service: &Service) -> Option<Arc<Semaphore>> {
        let max = service.found.lock().config.max_connections;
        listener::service_limit(&service.name, max, &self.budget)
    }
}
