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
mod tests {
    use super::*;
    use rstest::rstest;

    #[derive(Clone, Copy)]
    struct Fake {
        active: u32,
        weight: u32,
        up: bool,
        full: bool,
    }

    impl Load for Fake {
        fn active(&self) -> u32 {
            self.active
        }
        fn weight(&self) -> u32 {
            self.weight
        }
        fn is_up(&self) -> bool {
            self.up
        }
        fn is_full(&self) -> bool {
            self.full
        }
    }

    fn nodes(weights: &[u32]) -> Vec<Fake> {
        weights
            .iter()
            .map(|&weight| Fake {
                active: 0,
                weight,
                up: true,
                full: false,
            })
            .collect()
    }

    /// Opens `count` connections one after another and returns how many each node got.
    fn fill(nodes: &mut [Fake], count: usize) -> Vec<u32> {
        for rr in 0..count {
            let i = pick(nodes, rr, &[]).expect("a node");
            nodes[i].active += 1;
        }
        nodes.iter().map(|n| n.active).collect()
    }

    #[rstest]
    #[case(&[1, 1, 1], 30, &[10, 10, 10])]
    #[case(&[2, 1, 1], 40, &[20, 10, 10])]
    #[case(&[1, 3], 8, &[2, 6])]
    #[case(&[5], 4, &[4])]
    fn weighted_least_connections_split(
        #[case] weights: &[u32],
        #[case] count: usize,
        #[case] want: &[u32],
    ) {
        let mut n = nodes(weights);
        assert_eq!(fill(&mut n, count), want);
    }

    #[test]
    fn ties_take_turns() {
        let n = nodes(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|rr| pick(&n, rr, &[])).collect();
        assert_eq!(
            picks,
            [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
        );
    }

    /// How an excluded node is out of the tie (`Full` stands for drained too: a drained node
    /// reports itself full).
    #[derive(Clone, Copy, Debug)]
    enum Out {
        Down,
        Full,
        Tried,
    }

    /// Sequential clients (each closes before the next) over `weights` with node `out` taken
    /// out as `how`: how many picks each node gets.
    fn sequential(weights: &[u32], out: usize, how: Out, clients: usize) -> Vec<u32> {
        let mut n = nodes(weights);
        match how {
            Out::Down => n[out].up = false,
            Out::Full => n[out].full = true,
            Out::Tried => {}
        }
        let tried: &[usize] = match how {
            Out::Tried => &[out][..],
            _ => &[],
        };
        let mut got = vec![0; weights.len()];
        for turn in 0..clients {
            got[pick(&n, turn, tried).expect("a node")] += 1;
        }
        got
    }

    #[rstest]
    fn ties_split_evenly_with_a_node_out_at_every_position(
        #[values(Out::Down, Out::Full, Out::Tried)] how: Out,
        #[values(0, 1, 2, 3)] out: usize,
    ) {
        let got = sequential(&[1, 1, 1, 1], out, how, 30);
        for (i, &count) in got.iter().enumerate() {
            let want = if i == out { 0 } else { 10 };
            assert_eq!(count, want, "node {i} with node {out} {how:?}: {got:?}");
        }
    }

    #[rstest]
    fn weighted_ties_split_by_weight_with_a_node_out(
        #[values(Out::Down, Out::Full, Out::Tried)] how: Out,
        #[values(0, 1, 2, 3)] out: usize,
    ) {
        let weights = [2, 1, 1, 3];
        let total: u32 = weights
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != out)
            .map(|(_, w)| w)
            .sum();
        let clients = total as usize * 10;
        let got = sequential(&weights, out, how, clients);
        for (i, &count) in got.iter().enumerate() {
            let want = if i == out { 0 } else { weights[i] * 10 };
            assert_eq!(count, want, "node {i} with node {out} {how:?}: {got:?}");
        }
    }

    #[test]
    fn ties_alternate_strictly() {
        let mut n = nodes(&[1, 1, 1]);
        n[1].up = false;
        let picks: Vec<_> = (0..6).filter_map(|turn| pick(&n, turn, &[])).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn down_ties_take_turns_when_no_node_is_up() {
        let mut n = nodes(&[1, 1, 1]);
        for node in &mut n {
            node.up = false;
        }
        let picks: Vec<_> = (0..3).filter_map(|turn| pick(&n, turn, &[])).collect();
        assert_eq!(picks, [0, 1, 2]);
    }

    #[test]
    fn least_loaded_wins_whatever_the_rotation() {
        let mut n = nodes(&[1, 1, 1]);
        n[0].active = 5;
        n[1].active = 1;
        n[2].active = 3;
        for rr in 0..3 {
            assert_eq!(pick(&n, rr, &[]), Some(1));
        }
    }

    #[test]
    fn down_nodes_only_when_no_up_node_is_left() {
        let mut n = nodes(&[1, 1]);
        n[0].up = false;
        n[1].active = 100;
        assert_eq!(
            pick(&n, 0, &[]),
            Some(1),
            "a busy up node beats an idle down one"
        );
        assert_eq!(pick(&n, 0, &[1]), Some(0), "then the down node is tried");
        assert_eq!(pick(&n, 0, &[0, 1]), None);
    }

    #[test]
    fn full_and_tried_nodes_are_skipped() {
        let mut n = nodes(&[1, 1]);
        n[0].full = true;
        assert_eq!(pick(&n, 0, &[]), Some(1));
        assert_eq!(pick(&n, 0, &[1]), None);
        assert_eq!(pick::<Fake>(&[], 0, &[]), None);
    }

    #[test]
    fn large_sets_stay_balanced() {
        let mut n = nodes(&[1; 1000]);
        let counts = fill(&mut n, 10_000);
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        // Two choices keep every node within a few connections of the average (10).
        assert!(min >= 6 && max <= 14, "min {min}, max {max}");
    }

    #[test]
    fn large_sets_respect_weights() {
        let weights: Vec<u32> = (0..100).map(|i| if i < 50 { 1 } else { 3 }).collect();
        let mut n = nodes(&weights);
        let counts = fill(&mut n, 20_000);
        let light: u32 = counts[..50].iter().sum();
        let heavy: u32 = counts[50..].iter().sum();
        let ratio = f64::from(heavy) / f64::from(light);
        assert!((2.7..3.3).contains(&ratio), "heavy/light = {ratio}");
    }

    #[test]
    fn large_mostly_down_set_still_finds_the_up_node() {
        let mut n = nodes(&[1; 500]);
        for node in &mut n {
            node.up = false;
        }
        n[321].up = true;
        n[321].active = 1000;
        for turn in 0..50 {
            assert_eq!(pick(&n, turn, &[]), Some(321));
        }
        assert_ne!(
            pick(&n, 0, &[321]),
            Some(321),
            "a tried node is never picked again"
        );
    }

    #[test]
    fn retry_order_is_next_best() {
        let mut n = nodes(&[1, 1, 1]);
        n[0].active = 2;
        n[1].active = 0;
        n[2].active = 1;
        let first = pick(&n, 0, &[]).expect("node");
        let second = pick(&n, 0, &[first]).expect("node");
        let third = pick(&n, 0, &[first, second]).expect("node");
        assert_eq!([first, second, third], [1, 2, 0]);
    }
}
