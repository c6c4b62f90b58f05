//! SNI routing: services sharing one listen address, each client sent to the service whose
//! `sni` names the server name of its TLS ClientHello, without terminating TLS.
//!
//! A [`Router`] holds one shared address's routes. For each client: its PROXY header first,
//! where its source is trusted; then the ClientHello, read from as many segments as it takes
//! within the longest `[timeouts] handshake` of the sharing services, at most 16 KiB
//! ([`hello`]); then the route: an exact name, else a `*.` wildcard of one label, else the
//! default service (the one without `sni`). Every byte read goes to the chosen service's node
//! untouched, before the splice, and is then freed. A client with no route, or that sends no
//! hello in time, is closed and counted (`tierlb_sni_unmatched_total`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, ServiceConfig};
use crate::conn;
use crate::metrics::ActiveClient;
use crate::service::Service;

pub mod hello;

use hello::Seen;

/// The services of each listener, by index, in the order of their first service: one each,
/// but services sharing a listen address by `sni` share one (the config checked the rules;
/// port 0 without `sni` asks for a free port each).
pub fn groups(services: &[ServiceConfig]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let shares = |group: &&mut Vec<usize>| {
            let first = &services[group[0]];
            first.listen == service.listen
                && (service.listen.port() != 0
                    || !service.sni.is_empty()
                    || group.iter().any(|&j| !services[j].sni.is_empty()))
        };
        match groups.iter_mut().find(shares) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// A listen address shared by `sni`, with each service's name and server names.
pub type SharedAddress<'a> = (std::net::SocketAddr, Vec<(&'a str, &'a [String])>);

/// The listen addresses shared by `sni`: what a reload cannot change yet.
pub fn shared(config: &Config) -> Vec<SharedAddress<'_>> {
    groups(&config.services)
        .into_iter()
        .filter(|g| g.len() > 1 || !config.services[g[0]].sni.is_empty())
        .map(|g| {
            let listen = config.services[g[0]].listen;
            let members = g
                .iter()
                .map(|&i| {
                    (
                        config.services[i].name.as_str(),
                        config.services[i].sni.as_slice(),
                    )
                })
                .collect();
            (listen, members)
        })
        .collect()
}

/// Why a client of a shared address was closed unserved, for the metric's `reason` label.
#[derive(Debug, Default)]
pub struct Unmatched {
    /// A name (or none) that no service has, with no default service.
    pub no_route: AtomicU64,
    /// No whole ClientHello (nor anything else) within the handshake timeout.
    pub no_hello: AtomicU64,
}

/// One service on a shared address, with its own connection limit.
#[derive(Debug)]
struct Route {
    service: Arc<Service>,
    limit: Option<Arc<Semaphore>>,
}

/// The routes of one shared listen address.
#[derive(Debug)]
pub struct Router {
    /// The address the shared listener is bound to.
    pub bound: SocketAddr,
    routes: Vec<Route>,
    exact: HashMap<String, usize>,
    /// By the domain under the `*.` label.
    wild: HashMap<String, usize>,
    default: Option<usize>,
    /// Clients closed unserved.
    pub unmatched: Unmatched,
}

impl Router {
    /// The router of `services` (all on `bound`), each with its `max_connections` limit.
    pub fn new(bound: SocketAddr, services: Vec<(Arc<Service>, Option<Arc<Semaphore>>)>) -> Router {
        let mut router = Router {
            bound,
            routes: Vec::with_capacity(services.len()),
            exact: HashMap::new(),
            wild: HashMap::new(),
            default: None,
            unmatched: Unmatched::default(),
        };
        for (i, (service, limit)) in services.into_iter().enumerate() {
            let names = service.found.lock().config.sni.clone();
            if names.is_empty() {
                router.default = Some(i);
            }
            for name in names {
                match name.strip_prefix("*.") {
                    Some(domain) => router.wild.insert(domain.to_owned(), i),
                    None => router.exact.insert(name, i),
                };
            }
            router.routes.push(Route { service, limit });
        }
        router
    }

    /// The first service it routes to (whose listener counts failed accepts).
    pub fn first(&self) -> Option<&Arc<Service>> {
        self.routes.first().map(|r| &r.service)
    }

    /// The services it routes to, in the order of the config, each with its names.
    pub fn table(&self) -> Vec<(String, Vec<String>)> {
        self.routes
            .iter()
            .map(|r| {
                (
                    r.service.name.clone(),
                    r.service.found.lock().config.sni.clone(),
                )
            })
            .collect()
    }

    /// How long a client has to send its hello: the longest `[timeouts] handshake` of the
    /// sharing services, as in force now.
    fn handshake(&self) -> Duration {
        self.routes
            .iter()
            .map(|r| r.service.upstream().settings.timeouts.handshake)
            .max()
            .unwrap_or_default()
    }

    /// The route for a server name (`None`: the hello had none, or there was no hello).
    fn route(&self, name: Option<&str>) -> Option<&Route> {
        let found = name.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, domain) = name.split_once('.')?;
                self.wild.get(domain)
            })
        });
        self.routes.get(*found.or(self.default.as_ref())?)
    }
}

/// Serves one client of a shared address: its PROXY header (where trusted), its hello, its
/// route, then the routed service's connection as any other.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    process: OwnedSemaphorePermit,
) {
    // The PROXY sources are the same for every sharing service (checked by the config).
    let Some(first) = router.routes.first() else {
        return;
    };
    let accepted = Instant::now();
    let settings = &first.service.upstream().settings;
    let Some(who) = conn::greet(&mut client, peer, &first.service, settings).await else {
        return;
    };
    let (bytes, name) = match hello::read(&mut client, router.handshake()).await {
        Ok((bytes, Seen::Hello(name))) => (bytes, name),
        Ok((bytes, _)) => (bytes, None),
        Err(e) => {
            router.unmatched.no_hello.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %router.bound, client = %peer, error = %e, "closing client: no TLS ClientHello");
            return;
        }
    };
    let Some(route) = router.route(name.as_deref()) else {
        router.unmatched.no_route.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %router.bound, client = %peer, sni = name.as_deref().unwrap_or("(none)"), "closing client: no service for its server name, and no default service");
        return;
    };
    let service = &route.service;
    service.listener.accepted.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveClient::new(&service.listener);
    let own = match &route.limit {
        Some(limit) => match Arc::clone(limit).acquire_owned().await {
            Ok(permit) => Some(permit),
            Err(_) => return,
        },
        None => None,
    };
    let opened = service.upstream().settings.access_log.then_some(accepted);
    let routed = conn::Routed {
        hello: bytes,
        sni: name,
    };
    let permits = (own, process);
    conn::serve(client, peer, who, service, permits, Some(routed), opened).await;
}
