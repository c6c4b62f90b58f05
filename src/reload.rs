//! Reloading the configuration (SIGHUP) without dropping a connection.
//!
//! [`diff`] is the pure part: which nodes of the old list stay, which are new, which go, by
//! address. [`apply`] builds the new node set from it: a node that stays is the same
//! [`Node`] (same health, active count and counters), with its weight and limits updated; a
//! new node starts up on probation with its own probe loop; a removed node leaves the pick at
//! once, its probe loop stops, and its open connections run to their natural end (it is kept
//! as "retired" for the status page while they do). Timeouts, retries and health settings
//! apply to connections and probes that start after the reload.
//!
//! What cannot change without a restart is kept as it was, with a warning: the listen
//! address, the admin address, `threads` and the listener's `max_connections`.

use std::sync::Arc;

use crate::config::{Config, NodeAddr};
use crate::node::{Node, NodeSet};
use crate::state::Shared;
use crate::upstream::{Settings, Upstream};

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
    let mut d = Diff::default();
    for (j, addr) in new.iter().enumerate() {
        match old.iter().position(|o| o == addr) {
            Some(i) => d.kept.push((i, j)),
            None => d.added.push(j),
        }
    }
    d.removed = (0..old.len())
        .filter(|i| !d.kept.iter().any(|(k, _)| k == i))
        .collect();
    d
}

/// Puts `new` in force. `start_probe` is called for each added node.
pub fn apply(shared: &Shared, mut new: Config, start_probe: impl Fn(Arc<Node>)) {
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    let old = shared.config();
    keep_fixed(&old, &mut new);
    let upstream = shared.service.upstream();
    let current = &upstream.nodes;
    let old_addrs: Vec<&NodeAddr> = current.nodes.iter().map(|n| &n.address).collect();
    let new_addrs: Vec<&NodeAddr> = new.nodes.iter().map(|n| &n.address).collect();
    let d = diff(&old_addrs, &new_addrs);

    let (rise, fall) = (new.health.rise, new.health.fall);
    let nodes: Vec<Arc<Node>> = new
        .nodes
        .iter()
        .enumerate()
        .map(|(j, config)| match d.kept.iter().find(|(_, k)| *k == j) {
            Some((i, _)) => {
                let node = Arc::clone(&current.nodes[*i]);
                node.configure(config, rise, fall);
                node
            }
            None => {
                let node = Arc::new(Node::new(config, rise, fall));
                tracing::info!(node = %node.address, "node added; probing");
                start_probe(Arc::clone(&node));
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
        tracing::info!(node = %node.address, open = node.active(), "node removed; its open connections run to their end");
        if node.active() > 0 {
            retired.push(Arc::clone(node));
        }
    }
    let nodes = NodeSet::from_parts(nodes, retired, current);
    let upstream = Upstream {
        settings: Settings::of(&new),
        nodes,
        strategy: upstream.strategy,
    };
    shared.service.set_upstream(upstream);
    shared.set_config(new);
    tracing::info!(
        kept = d.kept.len(),
        added = d.added.len(),
        removed = d.removed.len(),
        "configuration reloaded"
    );
}

/// Keeps the settings a reload cannot change, warning about each attempt to.
fn keep_fixed(old: &Config, new: &mut Config) {
    if new.listen != old.listen {
        tracing::warn!(old = %old.listen, new = %new.listen, "the listen address cannot change by reload; restart to move it");
        new.listen = old.listen;
    }
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
    if new.max_connections != old.max_connections {
        tracing::warn!("the listener's max_connections cannot change by reload; restart to apply");
        new.max_connections = old.max_connections;
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
}
