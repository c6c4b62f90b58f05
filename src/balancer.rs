//! The pick, by strategy: weighted least connections among up nodes with weighted turns
//! among ties (the default), weighted round robin (the turns alone), or source affinity
//! (weighted rendezvous hashing of the client address, in the `rendezvous` submodule). Pure,
//! no I/O.
//!
//! A node's load is `active / weight`; loads are compared by cross-multiplying
//! (`a.active * b.weight < b.active * a.weight`), so there is no division and no rounding.
//!
//! Ties (equal loads) are broken by stride scheduling: each node has a virtual *pass*, and
//! the tied node with the lowest pass wins; picking a node moves its pass on by a stride of
//! `STRIDE / weight` ([`crate::node::advance`]), so over sequential clients the nodes take strict turns in
//! proportion to their weights (2:1:1 gives two, one, one). Turns belong to the nodes, not to
//! positions or to a shared counter, so they stay exact whichever nodes are down, drained,
//! full or tried, and a node can never be starved by a tie set that changes from one pick to
//! the next. A node's pass is lifted to the set's virtual time (the pass of the last pick)
//! when it is compared, so a node that sat out (down, or just added) does not collect turns
//! it missed and then take every tied client at once.
//!
//! Up to [`EXACT_LIMIT`] nodes, the pick scans them all: exact least connections. With more
//! nodes a full scan would cost O(n) per connection (about 2.5 µs at 1000 nodes), so the pick
//! compares two nodes drawn at random instead ("power of two choices", as Envoy's
//! least-request balancer does): O(1) whatever the size, and known to keep the busiest node
//! within a small constant of the average. Should the draws find no eligible up node, the
//! full scan decides, so a mostly-down set is still handled exactly.
//!
//! A node's load counts its connections on every live instance of a cluster (this one's, plus
//! the peers' last published counts). Suspect nodes (reported down by a peer, not yet checked
//! here) are only picked when no untried up, unsuspected node is left; backup nodes only when
//! no untried up primary is; and down nodes only when no untried up or suspect node is: a
//! wrong "down" must never turn into an outage (see [`tier`]). Every strategy keeps this order
//! and decides only within a tier. Nodes at their connection limit and nodes already tried for
//! this client are never picked; and while an up or suspect node is merely full (not drained),
//! no down node is picked either: there is none to pick, and the client waits in the queue for
//! the full node's next free slot rather than try one known to be broken.
//!
//! Round robin is the same stride scheduling as the tie-break with the load left out: the
//! eligible node with the earliest pass goes next, so weights 2:1:1 give a, b, a, c — as
//! smooth as nginx's smooth weighted round robin, and, like the tie-break, exact whichever
//! nodes are out. It scans every node (O(n): about 1 µs at 1000 nodes).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::node::{later, Node};

/// What the pick needs to know about a node.
pub trait Load {
    /// Connections open now: in a cluster, on every live instance.
    fn active(&self) -> u32;
    /// Relative share, at least 1.
    fn weight(&self) -> u32;
    /// Whether the node is up.
    fn is_up(&self) -> bool;
    /// Whether a cluster peer reports the node down and this instance has not checked since:
    /// picked only when no up, unsuspected node can take the client.
    fn is_suspect(&self) -> bool {
        false
    }
    /// Whether the node is a backup: picked only while no primary node is up.
    fn is_backup(&self) -> bool {
        false
    }
    /// A hash of the node's address, the same on every instance: its identity for
    /// [`Strategy::Source`].
    fn identity(&self) -> u64 {
        0
    }
    /// Whether the node takes no new connection: at its connection limit, or drained.
    fn is_full(&self) -> bool;
    /// Whether an operator drained the node (then it is full, and no slot will free).
    fn is_drained(&self) -> bool {
        false
    }
    /// Its virtual pass, for turns among ties (see [`crate::node::advance`]).
    fn pass(&self) -> u64;
}

impl Load for Arc<Node> {
    fn active(&self) -> u32 {
        Node::cluster_active(self)
    }
    fn weight(&self) -> u32 {
        Node::weight(self)
    }
    fn is_up(&self) -> bool {
        Node::is_up(self)
    }
    fn is_full(&self) -> bool {
        Node::is_full(self)
    }
    fn is_drained(&self) -> bool {
        Node::is_drained(self)
    }
    fn pass(&self) -> u64 {
        Node::pass(self)
    }
    fn is_suspect(&self) -> bool {
        Node::is_suspect(self)
    }
    fn is_backup(&self) -> bool {
        Node::is_backup(self)
    }
    fn identity(&self) -> u64 {
        Node::identity(self)
    }
}

/// Node counts up to this are scanned in full (exact); larger sets are sampled.
pub const EXACT_LIMIT: usize = 16;

/// Most random draws spent looking for two eligible up nodes before falling back to a scan.
const MAX_DRAWS: u32 = 8;

/// How a service picks its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted least connections, weighted turns among ties.
    LeastConnections,
    /// Weighted turns, whatever the load: smooth (a 2:1:1 set goes a, b, a, c).
    RoundRobin,
    /// Weighted rendezvous hashing of the client's address: each client has its own order
    /// of the nodes, and keeps its first eligible one.
    Source,
}

/// What a pick knows about the client it picks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Differs from client to client: seeds the random draws of large sets.
    pub seed: usize,
    /// A hash of the client's address ([`client_hash`]), for [`Strategy::Source`].
    pub client: u64,
}

/// The hash of a client address that [`Strategy::Source`] orders nodes by: the same on every
/// instance and every run.
pub fn client_hash(ip: std::net::IpAddr) -> u64 {
    let bits = match ip {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6),
        },
    };
    splitmix64(splitmix64(bits as u64) ^ (bits >> 64) as u64)
}

/// Index of the best node to try next by `strategy`, or `None` when every node is tried or
/// full.
///
/// `vtime` is the set's virtual time (see [`crate::node::advance`]); `tried` lists the
/// indices already attempted for this client.
pub fn pick<N: Load>(
    strategy: Strategy,
    nodes: &[N],
    vtime: u64,
    key: Key,
    tried: &[usize],
) -> Option<usize> {
    match strategy {
        Strategy::LeastConnections => least_connections(nodes, vtime, key.seed, tried),
        Strategy::RoundRobin => best(nodes, tried, |n| Rank::of(n, vtime).turn()),
        Strategy::Source => rendezvous::pick(nodes, key.client, tried),
    }
}

/// Weighted least connections: exact up to [`EXACT_LIMIT`] nodes, two random choices beyond.
fn least_connections<N: Load>(
    nodes: &[N],
    vtime: u64,
    seed: usize,
    tried: &[usize],
) -> Option<usize> {
    if nodes.len() > EXACT_LIMIT {
        if let Some(i) = sample(nodes, vtime, seed, tried) {
            return Some(i);
        }
    }
    scan(nodes, vtime, tried)
}

/// How a candidate ranks: its [`tier`] first, then the lighter load, then the earlier pass.
#[derive(Clone, Copy)]
struct Rank {
    /// See [`tier`]: lower is better.
    tier: u8,
    /// (active, weight)
    load: (u64, u64),
    /// The pass lifted to the virtual time.
    pass: u64,
}

impl Rank {
    fn of<N: Load>(node: &N, vtime: u64) -> Rank {
        Rank {
            tier: tier(node),
            load: (u64::from(node.active()), u64::from(node.weight().max(1))),
            pass: later(node.pass(), vtime),
        }
    }

    /// The same rank with the load left out: turns alone decide within a tier.
    fn turn(self) -> Rank {
        Rank {
            load: (0, 1),
            ..self
        }
    }

    /// Whether `self` should be picked before `other`.
    fn beats(&self, other: &Rank) -> bool {
        if self.tier != other.tier {
            return self.tier < other.tier;
        }
        let (a, b) = (self.load, other.load);
        match (a.0 * b.1).cmp(&(b.0 * a.1)) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => (self.pass.wrapping_sub(other.pass) as i64) < 0,
        }
    }
}

/// The first [`tier`] of down nodes.
const DOWN: u8 = 4;

/// Whether the node at `i` may be picked for this client: not tried, not full. A full node
/// worth waiting for (up or suspect, only at its limit: a drained node frees no slot) sets
/// `wait`, and then no down node is picked (see [`pickable`]).
fn eligible<N: Load>(node: &N, i: usize, tried: &[usize], wait: &mut bool) -> bool {
    if tried.contains(&i) {
        return false;
    }
    if node.is_full() {
        *wait = *wait || (!node.is_drained() && tier(node) < DOWN);
        return false;
    }
    true
}

/// Whether the best eligible node, of `tier`, is taken: not a down node while an up one
/// only waits for a free slot.
fn pickable(tier: u8, wait: bool) -> bool {
    !(wait && tier >= DOWN)
}

/// Which nodes go first, lower first: up primaries (0), suspect primaries (1), up backups
/// (2), suspect backups (3), then, failing open, down primaries (4) and down backups (5).
fn tier<N: Load>(node: &N) -> u8 {
    let backup = u8::from(node.is_backup());
    if node.is_up() {
        2 * backup + u8::from(node.is_suspect())
    } else {
        DOWN + backup
    }
}

/// The better of two eligible up, unsuspected nodes drawn at random, if the draws find two.
fn sample<N: Load>(nodes: &[N], vtime: u64, seed: usize, tried: &[usize]) -> Option<usize> {
    let n = nodes.len() as u64;
    let mut state = seed as u64;
    let mut best: Option<(usize, Rank)> = None;
    let mut found = 0;
    for _ in 0..MAX_DRAWS {
        state = splitmix64(state);
        // Multiply-shift maps the draw onto 0..n without a division.
        let i = (((state >> 32) * n) >> 32) as usize;
        let node = &nodes[i];
        if tier(node) != 0 || node.is_full() || tried.contains(&i) {
            continue;
        }
        let rank = Rank::of(node, vtime);
        if best.is_none_or(|(_, b)| rank.beats(&b)) {
            best = Some((i, rank));
        }
        found += 1;
        if found == 2 {
            break;
        }
    }
    best.map(|(i, _)| i)
}

/// One step of SplitMix64: a fast, well-mixed sequence from a counter.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Exact: the best eligible node (not full, not tried) in one pass over all of them.
fn scan<N: Load>(nodes: &[N], vtime: u64, tried: &[usize]) -> Option<usize> {
    best(nodes, tried, |n| Rank::of(n, vtime))
}

/// The eligible node (not full, not tried) that ranks best by `rank`, in one pass; none when
/// that would be a down node while an untried up node is only full.
fn best<N: Load>(nodes: &[N], tried: &[usize], rank: impl Fn(&N) -> Rank) -> Option<usize> {
    let mut best: Option<(usize, Rank)> = None;
    let mut wait = false;
    for (i, node) in nodes.iter().enumerate() {
        if !eligible(node, i, tried, &mut wait) {
            continue;
        }
        let rank = rank(node);
        if best.is_none_or(|(_, b)| rank.beats(&b)) {
            best = Some((i, rank));
        }
    }
    best.filter(|(_, r)| pickable(r.tier, wait)).map(|(i, _)| i)
}

mod rendezvous;
#[cfg(test)]
mod strategy_tests;
#[cfg(test)]
mod tests;
