//! SNI routing: services sharing one listen address, each client sent to the service whose
//! `sni` names the server name of its TLS ClientHello, without terminating TLS.
//!
//! A [`Router`] holds one shared address's routes. For each client: its PROXY header first,
//! where its source is trusted; then the ClientHello, read from as many segments as it takes
//! within the longest `[timeouts] handshake` of the sharing services, at most 16 KiB
//! ([`hello`]); then the route: an exact name, else a `*.` wildcard of one label, else the
//! default service (the one without `sni`). The hello is peeked at and stays in the socket
//! for the splice; where it had to be read (it came cut short), every byte read goes to the
//! chosen service's node untouched, before the splice, and is then freed. A client with no route, or that sends no
//! hello in time, is closed and counted (`tierlb_sni_unmatched_total`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, Protocol, ServiceConfig};
use crate::conn;
use crate::connect::Client;
use crate::service::{Active, Service};

pub mod hello;
mod routes;

use hello::Seen;
pub use routes::{Route, Router};

/// The services of each listener, by index, in the order of their first service: one each,
/// but services sharing a listen address by `sni` share one (the config checked the rules;
/// port 0 without `sni` asks for a free port each).
pub fn groups(services: &[ServiceConfig]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, service) in services.iter().enumerate() {
        // A UDP service has a socket of its own, beside any TCP listener on its port.
        let shares = |group: &&mut Vec<usize>| {
            let first = &services[group[0]];
            first.listen == service.listen
                && first.protocol == Protocol::Tcp
                && service.protocol == Protocol::Tcp
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

/// Whether the services of `group` share their address by `sni`.
pub fn is_shared(group: &[usize], services: &[ServiceConfig]) -> bool {
    group.len() > 1 || group.iter().any(|&i| !services[i].sni.is_empty())
}

/// The listen addresses of `config` shared by `sni`, each with its services (by index).
pub fn shared_groups(config: &Config) -> Vec<(SocketAddr, Vec<usize>)> {
    groups(&config.services)
        .into_iter()
        .filter(|g| is_shared(g, &config.services))
        .map(|g| (config.services[g[0]].listen, g))
        .collect()
}

/// Why a reload from `old` to `new` cannot be put in force: a listen address that would go
/// from one service's own to shared by `sni`, or back (its listener cannot change kind).
pub fn reload_check(old: &Config, new: &Config) -> Result<(), String> {
    let kind = |config: &Config, addr: SocketAddr| {
        if shared_groups(config).iter().any(|(a, _)| *a == addr) {
            Some(true)
        } else if config
            .services
            .iter()
            .any(|s| s.listen == addr && addr.port() != 0 && s.protocol == Protocol::Tcp)
        {
            Some(false)
        } else {
            None
        }
    };
    for service in new.services.iter().filter(|s| s.protocol == Protocol::Tcp) {
        let addr = service.listen;
        if let (Some(was), Some(is)) = (kind(old, addr), kind(new, addr)) {
            if was != is {
                return Err(format!(
                    "{addr} would change from one service's own address to one shared by sni, or back: a reload cannot change a listener's kind; restart to apply"
                ));
            }
        }
    }
    Ok(())
}

/// Why a client of a shared address was closed unserved, for the metric's `reason` label.
#[derive(Debug, Default)]
pub struct Unmatched {
    /// A name (or none) that no service has, with no default service.
    pub no_route: AtomicU64,
    /// No whole ClientHello (nor anything else) within the handshake timeout.
    pub no_hello: AtomicU64,
}

/// Serves one client of a shared address: its PROXY header (where trusted), its hello, its
/// route, then the routed service's connection as any other. Nothing of the routing (the
/// table, the greeting's settings) is held while the connection runs. (An `async move` block,
/// as [`conn::serve`] explains.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    process: OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Everything the routing needs lives in this block, so none of it is kept (beside
        // the connection's own future) while the connection runs.
        let serving = {
            let accepted = Instant::now();
            let Some((service, limit, who, routed)) = route(&mut client, peer, &router).await
            else {
                return;
            };
            drop(router);
            service.listener.accepted.fetch_add(1, Ordering::Relaxed);
            let mut active = Active::new(&service);
            let upstream = service.upstream();
            if active
                .admit(who.addr.ip(), &upstream.settings.admission)
                .is_err()
            {
                return;
            }
            let own = match limit {
                Some(limit) => match limit.acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
                None => None,
            };
            let opened = upstream.settings.access_log.then_some(accepted);
            drop(upstream);
            let permits = (own, process, active);
            conn::serve(client, who, service, permits, Some(routed), opened)
        };
        serving.await;
    }
}

/// Greets `client` and reads its hello; returns the service it is routed to, with that
/// service's limit, the client as its node is told of it, and what was read. `None` (the
/// client closed and counted) when there is no hello in time or no route.
async fn route(
    client: &mut TcpStream,
    peer: SocketAddr,
    router: &Router,
) -> Option<(Arc<Service>, Option<Arc<Semaphore>>, Client, conn::Routed)> {
    let table = router.table();
    // The PROXY sources are the same for every sharing service (checked by the config).
    let first = table.first()?;
    let who = conn::greet(client, peer, first, &first.upstream().settings).await?;
    let (hello, sni) = match hello::read(client, table.handshake()).await {
        Ok((bytes, Seen::Hello(name))) => (bytes, name),
        Ok((bytes, _)) => (bytes, None),
        Err(e) => {
            router.unmatched.no_hello.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %router.bound, client = %peer, error = %e, "closing client: no TLS ClientHello");
            return None;
        }
    };
    let Some(route) = table.route(sni.as_deref()) else {
        router.unmatched.no_route.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %router.bound, client = %peer, sni = sni.as_deref().unwrap_or("(none)"), "closing client: no service for its server name, and no default service");
        return None;
    };
    let routed = conn::Routed { hello, sni };
    Some((Arc::clone(&route.service), route.limit.clone(), who, routed))
}
