//! A service's node list put in force: the nodes of `nodes` followed by those its `discover`
//! entries found, compared by address with the nodes in service. A node that stays is the
//! same [`Node`] (health, active count, counters, drain) with its settings updated; a new one
//! starts up on probation, in slow start, with its own probe loop; a node that goes leaves the
//! pick at once and its open connections run to their end ("retired" while they do). Both
//! a reload and an entry's changed answer come here, one at a time (the service's
//! [`crate::found::Found`] lock).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{DiscoverConfig, NodeAddr, NodeConfig, ServiceConfig, Target};
use crate::found::{Entry, Roster};
use crate::node::{Node, NodeSet};
use crate::service::{Bound, Service};
use crate::sni::Router;
use crate::upstream::Upstream;

/// What starts the tasks of new nodes, entries and services.
pub trait Start {
    /// Starts the tasks of `node`, a node of `service`: its probe loop, and for a named node
    /// the lookups of its name.
    fn probe(&self, node: Arc<Node>, service: &Arc<Service>);
    /// Starts the lookups of the entry `target` of `service`, until `stop`.
    fn discover(&self, service: &Arc<Service>, target: Target, stop: CancellationToken);
    /// A token that stops a new service's accept loop (cancelled at shutdown too).
    fn stop_token(&self) -> CancellationToken;
    /// Starts serving `service` on `bound` (a TCP listener or a UDP socket of its own), with
    /// the limits of its configuration in force.
    fn serve(&self, service: Arc<Service>, bound: Bound);
    /// Starts serving `services`, sharing `listener` (bound for `listen`) by `sni`; returns
    /// their router.
    fn serve_shared(
        &self,
        listen: std::net::SocketAddr,
        listener: TcpListener,
        services: Vec<Arc<Service>>,
    ) -> Arc<Router>;
    /// The connection limit of a service on a shared address (its `max_connections`).
    fn limit(&self, service: &Service) -> Option<Arc<tokio::sync::Semaphore>>;
}

/// Starts the lookups of every entry of a service that is starting to serve.
pub fn start_entries(service: &Arc<Service>, start: &impl Start) {
    for entry in &service.found.lock().entries {
        start.discover(service, entry.target.clone(), entry.stop.clone());
    }
}

/// Puts a reloaded configuration of a kept service in force: entries kept by target keep
/// their answers, new ones start their lookups, removed ones stop; then the node list.
pub fn reconfigure(service: &Arc<Service>, new: &ServiceConfig, start: &impl Start) {
    let mut roster = service.found.lock();
    let mut old: Vec<Entry> = std::mem::take(&mut roster.entries);
    for d in &new.discover {
        match old.iter().position(|e| e.target == d.target) {
            Some(i) => roster.entries.push(old.swap_remove(i)),
            None => {
                let entry = Entry::new(&d.target, &service.stop);
                start.discover(service, d.target.clone(), entry.stop.clone());
                roster.entries.push(entry);
            }
        }
    }
    for gone in old {
        gone.stop.cancel();
        tracing::info!(service = %new.name, entry = %gone.name, "discover entry removed; its nodes are removed");
    }
    roster.config = new.clone();
    apply(service, &roster, start);
}

/// The nodes the roster asks for, each with the entry that found it: the listed nodes, then
/// each entry's (at most its `max_nodes`), an address taken once, by the first to give it.
pub fn compose(roster: &Roster) -> Vec<(NodeConfig, Option<Arc<str>>)> {
    let mut out: Vec<(NodeConfig, Option<Arc<str>>)> = roster
        .config
        .nodes
        .iter()
        .map(|n| (n.clone(), None))
        .collect();
    for entry in &roster.entries {
        let Some(d) = roster
            .config
            .discover
            .iter()
            .find(|d| d.target == entry.target)
        else {
            continue;
        };
        let found = entry.answer.iter().flatten().take(d.max_nodes as usize);
        for record in found {
            let node = DiscoverConfig::node(d, record.addr, record.weight, record.backup);
            if !out.iter().any(|(n, _)| n.address == node.address) {
                out.push((node, Some(Arc::clone(&entry.name))));
            }
        }
    }
    out
}

/// Puts the roster's node list in force on `service`.
pub fn apply(service: &Arc<Service>, roster: &Roster, start: &impl Start) {
    let new = &roster.config;
    let wanted = compose(roster);
    let upstream = service.upstream();
    let current = &upstream.nodes;
    let (rise, fall) = (new.health.rise, new.health.fall);
    let name: Arc<str> = Arc::from(new.name.as_str());
    let (mut kept, mut added) = (0, 0);
    let nodes: Vec<Arc<Node>> = wanted
        .iter()
        .map(|(config, found_by)| {
            let node = match current.nodes.iter().find(|n| n.address == config.address) {
                Some(node) => {
                    kept += 1;
                    if let Some(changed) = changes(node, config) {
                        tracing::info!(service = %new.name, node = %node.address, %changed, "node changed");
                    }
                    node.configure(config, rise, fall);
                    Arc::clone(node)
                }
                None => {
                    added += 1;
                    let node = Arc::new(Node::new(config, &name, rise, fall));
                    node.ramp.set_window(new.health.slow_start);
                    node.ramp.start();
                    match found_by {
                        Some(entry) => {
                            tracing::info!(service = %new.name, node = %node.address, %entry, "node found; probing");
                        }
                        None => tracing::info!(service = %new.name, node = %node.address, "node added; probing"),
                    }
                    start.probe(Arc::clone(&node), service);
                    node
                }
            };
            node.ramp.set_window(new.health.slow_start);
            node.set_found_by(found_by.clone());
            node
        })
        .collect();
    let mut retired: Vec<Arc<Node>> = current
        .retired
        .iter()
        .filter(|n| n.active() > 0)
        .cloned()
        .collect();
    let stays = |a: &NodeAddr| wanted.iter().any(|(n, _)| n.address == *a);
    let gone: Vec<Arc<Node>> = current
        .nodes
        .iter()
        .filter(|n| !stays(&n.address))
        .cloned()
        .collect();
    for node in &gone {
        node.removed.cancel();
        if node.active() > 0 {
            retired.push(Arc::clone(node));
        }
    }
    let nodes = NodeSet::from_parts(nodes, retired, current);
    service.set_upstream(Upstream::with_nodes(new, nodes));
    // Logged once in force: whoever reads a line sees the pick without the node.
    for node in &gone {
        let open = node.active();
        match node.found_by() {
            Some(entry) => {
                tracing::info!(service = %new.name, node = %node.address, %entry, open, "node no longer found; removed, its open connections run to their end")
            }
            None => {
                tracing::info!(service = %new.name, node = %node.address, open, "node removed; its open connections run to their end")
            }
        }
    }
    if added > 0 || !gone.is_empty() {
        tracing::info!(service = %new.name, kept, added, removed = gone.len(), "nodes changed");
    }
}

/// What changes in a kept node's settings, as `weight 1 -> 3, backup false -> true` (weight,
/// max_connections, backup, proxy_protocol); `None` when nothing.
fn changes(node: &Node, new: &NodeConfig) -> Option<String> {
    let limit = |m: Option<u32>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
    let pairs = [
        (
            "weight",
            node.configured_weight().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::found::{Entry, Record};

    fn roster(text: &str, answers: &[Vec<Record>]) -> Roster {
        let config = Config::parse(text, "test.toml", &Default::default()).expect("config");
        let service = config.services[0].clone();
        let stop = CancellationToken::new();
        let entries = service
            .discover
            .iter()
            .zip(answers)
            .map(|(d, answer)| Entry {
                answer: Some(answer.clone()),
                ..Entry::new(&d.target, &stop)
            })
            .collect();
        Roster {
            config: service,
            entries,
        }
    }

    fn record(addr: &str, weight: Option<u16>, backup: bool) -> Record {
        Record {
            addr: addr.parse().expect("addr"),
            weight,
            backup,
        }
    }

    #[test]
    fn listed_nodes_come_first_and_an_address_is_taken_once() {
        let r = roster(
            "listen = \"127.0.0.1:1\"\nnodes = [\"10.0.0.1:80\"]\ndiscover = [{ dns = \"a:80\", max_nodes = 2 }, { srv = \"_b._tcp.b\" }]\n",
            &[
                vec![
                    record("10.0.0.1:80", None, false),
                    record("10.0.0.2:80", None, false),
                    record("10.0.0.3:80", None, false),
                ],
                vec![
                    record("10.0.0.2:80", Some(5), false),
                    record("10.0.0.4:81", Some(0), false),
                    record("10.0.0.5:81", Some(3), true),
                ],
            ],
        );
        let nodes = compose(&r);
        let shown: Vec<(String, u32, bool, Option<&str>)> = nodes
            .iter()
            .map(|(n, by)| (n.address.to_string(), n.weight, n.backup, by.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.0.0.1:80".to_owned(), 1, false, None),
                ("10.0.0.2:80".to_owned(), 1, false, Some("dns a:80")),
                ("10.0.0.4:81".to_owned(), 1, false, Some("srv _b._tcp.b")),
                ("10.0.0.5:81".to_owned(), 3, true, Some("srv _b._tcp.b")),
            ],
            "the listed node wins its address, max_nodes 2 takes the first two (one of them \
             listed), an address two entries found is the first's, SRV weight 0 counts as 1 \
             and a higher priority is a backup"
        );
    }
}
