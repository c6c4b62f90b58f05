//! The pick: weighted least connections among up nodes, round-robin among ties. Pure, no I/O.
//!
//! A node's load is `active / weight`; loads are compared by cross-multiplying
//! (`a.active * b.weight < b.active * a.weight`), so there is no division and no rounding.
//!
//! Up to [`EXACT_LIMIT`] nodes, the pick scans them all: exact least connections, and nodes
//! with equal loads take strict turns (by weight) whichever other nodes are down, drained,
//! full or already tried. With more nodes a full scan would cost O(n) per connection (about 2.5 µs at 1000
//! nodes), so the pick compares two nodes drawn at random instead ("power of two choices",
//! as Envoy's least-request balancer does): O(1) whatever the size, and known to keep the
//! busiest node within a small constant of the average. Should the draws find no eligible up
//! node, the full scan decides, so a mostly-down set is still handled exactly.
//!
//! Down nodes are only picked when no untried up node is left: a wrong "down" must never turn
//! into an outage. Nodes at their connection limit and nodes already tried for this client
//! are never picked.

use std::sync::Arc;

use crate::node::Node;

/// What the pick needs to know about a node.
pub trait Load {
    /// Connections open now.
    fn active(&self) -> u32;
    /// Relative share, at least 1.
    fn weight(&self) -> u32;
    /// Whether the node is up.
    fn is_up(&self) -> bool;
    /// Whether the node is at its connection limit.
    fn is_full(&self) -> bool;
}

impl Load for Arc<Node> {
    fn active(&self) -> u32 {
        Node::active(self)
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
}

/// Node counts up to this are scanned in full (exact); larger sets are sampled.
pub const EXACT_LIMIT: usize = 16;

/// Most random draws spent looking for two eligible up nodes before falling back to a scan.
const MAX_DRAWS: u32 = 8;

/// Index of the best node to try next, or `None` when every node is tried or full.
///
/// `turn` grows by one per pick (a shared counter): it decides whose turn it is among ties,
/// and seeds the draws of large sets. `tried` lists the indices already attempted for this
/// client.
pub fn pick<N: Load>(nodes: &[N], turn: usize, tried: &[usize]) -> Option<usize> {
    if nodes.len() > EXACT_LIMIT {
        if let Some(i) = sample(nodes, turn, tried) {
            return Some(i);
        }
    }
    scan(nodes, turn, tried)
}

/// Whether `a` (active, weight) carries less load than `b`.
fn lighter(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 * b.1 < b.0 * a.1
}

/// Whether `a` and `b` carry the same load.
fn equal(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 * b.1 == b.0 * a.1
}

/// The less loaded of two eligible up nodes drawn at random, if the draws find two.
fn sample<N: Load>(nodes: &[N], turn: usize, tried: &[usize]) -> Option<usize> {
    let n = nodes.len() as u64;
    let mut state = turn as u64;
    let mut best: Option<(usize, (u64, u64))> = None;
    let mut found = 0;
    for _ in 0..MAX_DRAWS {
        state = splitmix64(state);
        // Multiply-shift maps the draw onto 0..n without a division.
        let i = (((state >> 32) * n) >> 32) as usize;
        let node = &nodes[i];
        if !node.is_up() || node.is_full() || tried.contains(&i) {
            continue;
        }
        let load = (u64::from(node.active()), u64::from(node.weight().max(1)));
        if best.is_none_or(|(_, b)| lighter(load, b)) {
            best = Some((i, load));
        }
        found += 1;
        if found == 2 {
            break;
        }
    }
    best.map(|(i, _)| i)
}

/// One step of SplitMix64: a fast, well-mixed sequence from a counter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Exact: every eligible node (not full, not tried), up nodes first, then the lightest; among
/// equally light nodes, strict turns by weight.
///
/// The turns are taken over the tied nodes themselves, not over every configured node: a
/// rotation over all nodes would hand a missing node's turns to the node after it (with one
/// of three nodes down, a 2:1 split instead of 1:1). `turn` counts over the ties' total
/// weight, so ties of weights 2 and 1 take two turns and one.
fn scan<N: Load>(nodes: &[N], turn: usize, tried: &[usize]) -> Option<usize> {
    let eligible = |i: usize, node: &N| !node.is_full() && !tried.contains(&i);
    let load = |node: &N| (u64::from(node.active()), u64::from(node.weight().max(1)));
    // The best class (up beats down) and load, the first node there, and the total weight of
    // the nodes tied there.
    let mut best: Option<(bool, (u64, u64), usize)> = None;
    let mut tied_weight = 0u64;
    for (i, node) in nodes.iter().enumerate() {
        if !eligible(i, node) {
            continue;
        }
        let (up, l) = (node.is_up(), load(node));
        match best {
            Some((b_up, b, _)) if !((up && !b_up) || (up == b_up && lighter(l, b))) => {
                if up == b_up && equal(l, b) {
                    tied_weight += l.1;
                }
            }
            _ => {
                best = Some((up, l, i));
                tied_weight = l.1;
            }
        }
    }
    let (b_up, b, first) = best?;
    let mut target = turn as u64 % tied_weight;
    for (i, node) in nodes.iter().enumerate() {
        if !eligible(i, node) || node.is_up() != b_up {
            continue;
        }
        let l = load(node);
        if !equal(l, b) {
            continue;
        }
        if target < l.1 {
            return Some(i);
        }
        target -= l.1;
    }
    // Loads are live counters: connections opened or closed between the two passes can leave
    // no node at the load seen first. The first best node is then as good a pick as any.
    Some(first)
}

#[cfg(test)]
mod tests;
