//! Reloading the configuration (SIGHUP) without dropping a connection.
//!
//! The pure part: [`diff`] says which nodes of a service's old list stay, which are new and
//! which go, by address; [`diff_services`] says the same of the services, by name and listen
//! address (a service whose address changed is removed and added again). [`apply`] puts the
//! result in force: a node that stays is the same [`Node`] (same health, active count and
//! counters) with its weight and limits updated; a new node starts up on probation with its
//! own probe loop; a removed node leaves the pick at once, its probe loop stops, and its open
//! connections run to their natural end (kept as "retired" for the status page while they
//! do). A removed service stops accepting (its listener closes) and its connections drain;
//! an added one serves on the listener the caller bound for it, so that a listen address
//! that cannot be bound fails the reload before anything changes. Timeouts, retries and
//! health settings apply to connections and probes that start after the reload.
//!
//! What cannot change without a restart is kept as it was, with a warning: the admin address,
//! `threads`, `[cluster]` and a kept service's `max_connections`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NodeAddr, NodeConfig, ServiceConfig};
use crate::node::{Node, NodeSet};
use crate::service::Service;
use crate::state::Shared;
use crate::upstream::Upstream;

/// What starts the tasks of new nodes and services.
pub trait Start {
    /// Starts the probe loop of `node`, a node of `service`.
    fn probe(&self, node: Arc<Node>, service: &Arc<Service>);
    /// A token that stops a new service's accept loop (cancelled at shutdown too).
    fn stop_token(&self) -> CancellationToken;
    /// Starts serving `service` on `listener`, with its own `max_connections`.
    fn serve(&self, service: Arc<Service>, listener: TcpListener, max_connections: Option<u32>);
}

/// How a new node list relates to the old one, by index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// `(old index, new index)` of nodes in both lists.
    pub kept: Vec<(usize, usize)>,
    /// New-list indices of nodes not in the old list.
    pub added: Vec<usize>,
    /// Old-list indices of nodes not in the new list.
    pub removed: Vec<usize>,
}

/// Compares two node lists by address.
pub fn diff(old: &[&NodeAddr], new: &[&NodeAddr]) -> Diff {
    diff_by(old, new)
}

/// How a new service list relates to the old one, by index: kept (same name and listen
/// address), added, removed.
pub fn diff_services(old: &[(&str, SocketAddr)], new: &[(&str, SocketAddr)]) -> Diff {
    diff_by(old, new)
}

/// Which items of `new` are in `old` (kept), which are not (added), and which of `old` are
/// gone (removed), by equality.
fn diff_by<T: PartialEq>(old: &[T], new: &[T]) -> Diff {
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

/// The services of `config` as (name, listen address), for [`diff_services`].
pub fn service_keys(config: &Config) -> Vec<(&str, SocketAddr)> {
    config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.listen))
        .collect()
}

/// Puts `new` in force. `listeners` are bound for the services [`diff_services`] lists as
/// added, in that order.
pub fn apply(shared: &Shared, mut new: Config, listeners: Vec<TcpListener>, start: &impl Start) {
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    let old = shared.config();
    keep_fixed(&old, &mut new);
    let d = diff_services(&service_keys(&old), &service_keys(&new));
    let current = shared.services();
    let mut services: Vec<Arc<Service>> = Vec::with_capacity(new.services.len());
    let mut listeners = listeners.into_iter();
    for (j, config) in new.services.iter_mut().enumerate() {
        if let Some((i, _)) = d.kept.iter().find(|(_, k)| *k == j) {
            let service = Arc::clone(&current[*i]);
            if config.max_connections != old.services[*i].max_connections {
                tracing::warn!(service = %config.name, "max_connections cannot change by reload; restart to apply");
                config.max_connections = old.services[*i].max_connections;
            }
            update(&service, config, start);
            services.push(service);
        } else if let Some(listener) = listeners.next() {
            let bound = listener.local_addr().unwrap_or(config.listen);
            let service = Arc::new(Service::new(config, bound, start.stop_token()));
            tracing::info!(service = %config.name, addr = %bound, "service added; listening");
            for node in &service.upstream().nodes.nodes {
                start.probe(Arc::clone(node), &service);
            }
            start.serve(Arc::clone(&service), listener, config.max_connections);
            services.push(service);
        }
    }
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
        tracing::info!(service = %service.name, open, "service removed: its listener is closed; its open connections run to their end");
    }
    tracing::info!(
        kept = d.kept.len(),
        added = d.added.len(),
        removed = d.removed.len(),
        "configuration reloaded"
    );
    shared.replace(new, services);
}

/// Applies a kept service's new settings and node list.
fn update(service: &Arc<Service>, new: &ServiceConfig, start: &impl Start) {
    let upstream = service.upstream();
    let current = &upstream.nodes;
    let old_addrs: Vec<&NodeAddr> = current.nodes.iter().map(|n| &n.address).collect();
    let new_addrs: Vec<&NodeAddr> = new.nodes.iter().map(|n| &n.address).collect();
    let d = diff(&old_addrs, &new_addrs);
    let (rise, fall) = (new.health.rise, new.health.fall);
    let current_service: Arc<str> = Arc::from(new.name.as_str());
    let nodes: Vec<Arc<Node>> = new
        .nodes
        .iter()
        .enumerate()
        .map(|(j, config)| match d.kept.iter().find(|(_, k)| *k == j) {
            Some((i, _)) => {
                let node = Arc::clone(&current.nodes[*i]);
                if let Some(changed) = changes(&node, config) {
                    tracing::info!(service = %new.name, node = %node.address, %changed, "node changed");
                }
                node.configure(config, rise, fall);
                node.ramp.set_window(new.health.slow_start);
                node
            }
            None => {
                let node = Arc::new(Node::new(config, &current_service, rise, fall));
                node.ramp.set_window(new.health.slow_start);
                node.ramp.start();
                tracing::info!(service = %new.name, node = %node.address, "node added; probing");
                start.probe(Arc::clone(&node), service);
                node
            }
        })
        .collect();
    let mut retired: Vec<Arc<Node>> = current
        .retired
        .iter()
        .filter(|n| n.active() > 0)
        .cloned()
        .collect();
    for &i in &d.removed {
        let node = &current.nodes[i];
        node.removed.cancel();
        tracing::info!(service = %new.name, node = %node.address, open = node.active(), "node removed; its open connections run to their end");
        if node.active() > 0 {
            retired.push(Arc::clone(node));
        }
    }
    if !d.added.is_empty() || !d.removed.is_empty() {
        tracing::info!(
            service = %new.name,
            kept = d.kept.len(),
            added = d.added.len(),
            removed = d.removed.len(),
            "nodes changed"
        );
    }
    let nodes = NodeSet::from_parts(nodes, retired, current);
    service.set_upstream(Upstream::with_nodes(new, nodes));
}

/// What a reload changes in a kept node's settings, as `weight 1 -> 3, backup false -> true`
/// (weight, max_connections, backup, proxy_protocol); `None` when nothing.
fn changes(node: &Node, new: &NodeConfig) -> Option<String> {
    let limit = |m: Option<u32>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
    let pairs = [
        (
            "weight",
            node.weight().to_string(),
            new.weight.max(1).to_string(),
        ),
        (
            "max_connections",
            limit(node.max_connections()),
            limit(new.max_connections),
        ),
        (
            "backup",
            node.is_backup().to_string(),
            new.backup.to_string(),
        ),
        (
            "proxy_protocol",
            node.proxy_protocol().name().to_owned(),
            new.proxy_protocol.name().to_owned(),
        ),
    ];
    let changed: Vec<String> = pairs
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(key, old, new)| format!("{key} {old} -> {new}"))
        .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
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

    fn addrs(list: &[&str]) -> Vec<NodeAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    fn run(old: &[&str], new: &[&str]) -> Diff {
        let (old, new) = (addrs(old), addrs(new));
        diff(
            &old.iter().collect::<Vec<_>>(),
            &new.iter().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn unchanged_list_keeps_everything() {
        let d = run(&["a:1", "b:2"], &["a:1", "b:2"]);
        assert_eq!(d.kept, [(0, 0), (1, 1)]);
        assert!(d.added.is_empty() && d.removed.is_empty());
    }

    #[test]
    fn add_remove_and_reorder() {
        let d = run(&["a:1", "b:2", "c:3"], &["c:3", "d:4", "a:1"]);
        assert_eq!(d.kept, [(2, 0), (0, 2)]);
        assert_eq!(d.added, [1]);
        assert_eq!(d.removed, [1]);
    }

    #[test]
    fn same_host_other_port_is_another_node() {
        let d = run(&["a:1"], &["a:2"]);
        assert_eq!(d.added, [0]);
        assert_eq!(d.removed, [0]);
    }

    #[test]
    fn from_and_to_empty() {
        assert_eq!(run(&[], &["a:1"]).added, [0]);
        assert_eq!(run(&["a:1"], &[]).removed, [0]);
    }

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
