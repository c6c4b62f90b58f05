//! Reloading the configuration (SIGHUP) without dropping a connection.
//!
//! The pure part: [`diff_services`] says which services of the old list stay, which are new
//! and which go, by name and listen address (a service whose address changed is removed and
//! added again). [`apply`] puts the result in force: a kept service's node list and
//! `discover` entries through [`crate::roster`] (a node that stays keeps its health, active
//! count and counters; a new one starts up on probation with its own probe loop; a removed
//! one leaves the pick at once and its open connections run to their natural end). A removed
//! service stops accepting (its listener closes) and its connections drain; an added one serves on the listener the caller bound for it, so that a listen address
//! that cannot be bound fails the reload before anything changes. Timeouts, retries and
//! health settings apply to connections and probes that start after the reload.
//!
//! What cannot change without a restart is kept as it was, with a warning: the admin address,
//! `threads`, `[cluster]` and a kept service's `max_connections` (or `max_flows`). A service
//! that changes `protocol` is removed and added again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, Protocol};
use crate::roster::{self, Start};
use crate::service::{Bound, Service};
use crate::sni;
use crate::state::Shared;

/// How a new service list relates to the old one, by index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// `(old index, new index)` of services in both lists.
    pub kept: Vec<(usize, usize)>,
    /// New-list indices of services not in the old list.
    pub added: Vec<usize>,
    /// Old-list indices of services not in the new list.
    pub removed: Vec<usize>,
}

/// How a new service list relates to the old one, by index: kept (same key: name, listen
/// address and protocol), added, removed.
pub fn diff_services<K: PartialEq>(old: &[K], new: &[K]) -> Diff {
    let mut d = Diff::default();
    for (j, item) in new.iter().enumerate() {
        match old.iter().position(|o| o == item) {
            Some(i) => d.kept.push((i, j)),
            None => d.added.push(j),
        }
    }
    d.removed = (0..old.len())
        .filter(|i| !d.kept.iter().any(|(k, _)| k == i))
        .collect();
    d
}

/// The services of `config` as (name, listen address, protocol), for [`diff_services`]: a
/// service that moves or changes protocol is removed and added again.
pub fn service_keys(config: &Config) -> Vec<(&str, SocketAddr, Protocol)> {
    config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.listen, s.protocol))
        .collect()
}

/// Puts `new` in force. `own` are bound for the services [`diff_services`] lists as added
/// that have an address of their own, in that order; `fresh` for the addresses `new` shares
/// by `sni` that were not shared before. An address shared already keeps its listener: its
/// routes change.
pub fn apply(
    shared: &Shared,
    mut new: Config,
    own: Vec<Bound>,
    mut fresh: Vec<(SocketAddr, TcpListener)>,
    start: &impl Start,
) {
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    let old = shared.config();
    keep_fixed(&old, &mut new);
    let d = diff_services(&service_keys(&old), &service_keys(&new));
    let groups = sni::shared_groups(&new);
    let routers = shared.routers.load_full();
    let current = shared.services();
    let mut services: Vec<Arc<Service>> = Vec::with_capacity(new.services.len());
    let mut own = own.into_iter();
    for (j, config) in new.services.iter_mut().enumerate() {
        if let Some((i, _)) = d.kept.iter().find(|(_, k)| *k == j) {
            let service = Arc::clone(&current[*i]);
            if config.max_connections != old.services[*i].max_connections {
                tracing::warn!(service = %config.name, "max_connections cannot change by reload; restart to apply");
                config.max_connections = old.services[*i].max_connections;
            }
            if config.max_flows != old.services[*i].max_flows {
                tracing::warn!(service = %config.name, "max_flows cannot change by reload; restart to apply");
                config.max_flows = old.services[*i].max_flows;
            }
            roster::reconfigure(&service, config, start);
            services.push(service);
            continue;
        }
        let sharing = groups.iter().any(|(_, g)| g.contains(&j));
        let listener = if sharing { None } else { own.next() };
        let bound = match &listener {
            Some(listener) => listener.local_addr().unwrap_or(config.listen),
            None => routers
                .iter()
                .find(|r| r.listen == config.listen)
                .map(|r| r.bound)
                .or_else(|| {
                    let (_, l) = fresh.iter().find(|(a, _)| *a == config.listen)?;
                    l.local_addr().ok()
                })
                .unwrap_or(config.listen),
        };
        let service = Arc::new(Service::new(config, bound, start.stop_token()));
        tracing::info!(service = %config.name, addr = %bound, "service added; listening");
        for node in &service.upstream().nodes.nodes {
            start.probe(Arc::clone(node), &service);
        }
        roster::start_entries(&service, start);
        if let Some(listener) = listener {
            start.serve(Arc::clone(&service), listener);
        }
        services.push(service);
    }
    let mut kept_routers = Vec::with_capacity(groups.len());
    for (listen, group) in &groups {
        let members: Vec<Arc<Service>> = group.iter().map(|&j| Arc::clone(&services[j])).collect();
        if let Some(router) = routers.iter().find(|r| r.listen == *listen) {
            router.set(members, |s| start.limit(s));
            kept_routers.push(Arc::clone(router));
        } else if let Some(at) = fresh.iter().position(|(a, _)| a == listen) {
            let (_, listener) = fresh.swap_remove(at);
            kept_routers.push(start.serve_shared(*listen, listener, members));
        }
    }
    for router in routers.iter() {
        if !kept_routers.iter().any(|r| Arc::ptr_eq(r, router)) {
            router.stop.cancel();
        }
    }
    shared.routers.store(Arc::new(kept_routers));
    for &i in &d.removed {
        let service = &current[i];
        service.stop.cancel();
        for node in &service.upstream().nodes.nodes {
            node.removed.cancel();
        }
        let open = service
            .listener
            .active
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(service = %service.name, open, "service removed: it takes no new client; its open connections run to their end");
    }
    tracing::info!(
        kept = d.kept.len(),
        added = d.added.len(),
        removed = d.removed.len(),
        "configuration reloaded"
    );
    shared.replace(new, services);
}

/// Keeps the settings a reload cannot change, warning about each attempt to.
fn keep_fixed(old: &Config, new: &mut Config) {
    if new.admin.listen != old.admin.listen {
        tracing::warn!("the admin address cannot change by reload; restart to move it");
        new.admin.listen = old.admin.listen;
    }
    if new.threads != old.threads {
        tracing::warn!(
            old = old.threads,
            new = new.threads,
            "threads cannot change by reload; restart to apply"
        );
        new.threads = old.threads;
    }
    if new.cluster != old.cluster {
        tracing::warn!("[cluster] cannot change by reload; restart to apply");
        new.cluster.clone_from(&old.cluster);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_by_name_and_address() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let d = diff_services(
            &[("web", a), ("pg", b)],
            &[("pg", b), ("cache", a), ("web", b)],
        );
        assert_eq!(d.kept, [(1, 0)]);
        assert_eq!(d.added, [1, 2], "a moved service is added again");
        assert_eq!(d.removed, [0], "and removed from its old address");
    }
}
