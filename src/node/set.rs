//! The nodes of one service as the pick sees them: in configured order, with the virtual time
//! of turns, and the logging of state changes across the set.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{advance, Node, Observation, PeerReport, Source, Transition};
use crate::config::{show_duration, NodeConfig};

/// The nodes in service, in configured order, and the nodes a reload removed that still have
/// connections running. Shared behind an `ArcSwap`, so readers never lock.
#[derive(Debug, Default)]
pub struct NodeSet {
    /// The nodes in service.
    pub nodes: Vec<Arc<Node>>,
    /// Removed by a reload, draining their open connections; no new connection goes there.
    pub retired: Vec<Arc<Node>>,
    /// Set while no node is up, so that "no node is up" and "service resumed" are each
    /// logged once.
    all_down: AtomicBool,
    /// The virtual time of turns among ties: the pass of the last pick.
    vtime: AtomicU64,
}

impl NodeSet {
    /// Builds the set of `service` for a list of node configs, every node new.
    pub fn new(nodes: &[NodeConfig], service: &Arc<str>, rise: u32, fall: u32) -> NodeSet {
        NodeSet {
            nodes: nodes
                .iter()
                .map(|n| Arc::new(Node::new(n, service, rise, fall)))
                .collect(),
            retired: Vec::new(),
            all_down: AtomicBool::new(false),
            vtime: AtomicU64::new(0),
        }
    }

    /// The set for nodes carried over from `previous` by a reload (with its virtual time).
    pub fn from_parts(
        nodes: Vec<Arc<Node>>,
        retired: Vec<Arc<Node>>,
        previous: &NodeSet,
    ) -> NodeSet {
        let all_down = !nodes.is_empty() && !nodes.iter().any(|n| n.is_up());
        NodeSet {
            nodes,
            retired,
            all_down: AtomicBool::new(all_down),
            vtime: AtomicU64::new(previous.vtime()),
        }
    }

    /// The virtual time of turns among ties.
    pub fn vtime(&self) -> u64 {
        self.vtime.load(Ordering::Relaxed)
    }

    /// Records that the node at `index` was picked: its pass moves on by its stride. Two
    /// picks at once may both see the old values; turns are then off by one, never stuck.
    pub fn picked(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            let (pass, vtime) = advance(node.pass(), self.vtime(), node.weight());
            node.pass.store(pass, Ordering::Relaxed);
            self.vtime.store(vtime, Ordering::Relaxed);
        }
    }

    /// Records one result about `node` (one of this set's) and logs the state change it
    /// causes, once: `node down` with the reason and how many nodes are still up, `node up`
    /// with how long it was down, and one warning when no node is up any more (clients are
    /// then tried on down nodes anyway) and one line when service resumes. A follower of the
    /// node's probing owners whose own result takes it down checks it itself from then on.
    pub fn observe(
        &self,
        node: &Node,
        source: Source,
        seen: Observation,
        reason: &dyn fmt::Display,
    ) -> Option<Transition> {
        let (transition, lasted) = node.observe(source, seen, reason)?;
        match transition {
            Transition::Down if node.peers.probing.own_failure() => {
                tracing::info!(service = %node.service, node = %node.address, "node down by this instance's own results while its probing owners report it up: probing it here until it is back");
            }
            Transition::Up => node.peers.probing.own_recovery(),
            Transition::Down => {}
        }
        self.log(node, transition, lasted, reason);
        Some(transition)
    }

    /// Takes the verdict `up` of the node's probing owners (this instance follows them): up
    /// or down at once, logged as any change with the owners who said so (from `reports`).
    /// Returns the change, if any.
    pub fn follow(&self, node: &Node, up: bool, reports: &[PeerReport]) -> Option<Transition> {
        if node.is_up() == up {
            return None;
        }
        let owners = node.peers.probing.owners();
        let said: Vec<&PeerReport> = reports
            .iter()
            .filter(|r| r.verdict.up == up && owners.contains(&r.peer))
            .collect();
        let names: Vec<&str> = said.iter().map(|r| r.peer.as_str()).collect();
        let state = if up { "up" } else { "down" };
        let mut reason = format!("{state} by its probing owner {}", names.join(", "));
        let why = said.first().map(|r| r.verdict.reason.as_str());
        if let Some(why) = why.filter(|w| !up && !w.is_empty()) {
            reason = format!("{reason}: {why}");
        }
        let (transition, lasted) = node.adopt(up, &reason)?;
        self.log(node, transition, lasted, &reason);
        Some(transition)
    }

    fn log(
        &self,
        node: &Node,
        transition: Transition,
        lasted: Duration,
        reason: &dyn fmt::Display,
    ) {
        let up = self.nodes.iter().filter(|n| n.is_up()).count();
        let total = self.nodes.len();
        let lasted = show_duration(Duration::from_millis(lasted.as_millis() as u64));
        match transition {
            Transition::Down => {
                let service = &node.service;
                tracing::warn!(%service, node = %node.address, %reason, up, total, "node down");
                if up == 0 && !self.all_down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %service,
                        total,
                        "no node is up: clients are still tried on the down nodes, in order"
                    );
                }
            }
            Transition::Up => {
                let service = &node.service;
                let message = if node.health().probation {
                    "node up on probation: one failure takes it down again"
                } else {
                    "node up"
                };
                tracing::info!(%service, node = %node.address, %reason, down_for = %lasted, up, total, "{message}");
                if self.all_down.swap(false, Ordering::Relaxed) {
                    tracing::info!(%service, node = %node.address, "service resumed: a node is up again");
                }
            }
        }
    }

    /// The node in service with this address, as written in the config or as displayed.
    pub fn find(&self, address: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.address.to_string() == address)
    }
}
