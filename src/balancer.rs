//! The pick: weighted least connections among up nodes, round-robin among ties. Pure, no I/O.
//!
//! A node's load is `active / weight`; loads are compared by cross-multiplying
//! (`a.active * b.weight < b.active * a.weight`), so there is no division and no rounding.
//! The scan starts at a rotating offset and keeps the first node of the lowest load, so nodes
//! with equal loads take turns. Down nodes are only picked when no untried up node is left:
//! a wrong "down" must never turn into an outage. Nodes at their connection limit and nodes
//! already tried for this client are never picked.

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
        self.weight
    }
    fn is_up(&self) -> bool {
        Node::is_up(self)
    }
    fn is_full(&self) -> bool {
        Node::is_full(self)
    }
}

/// Index of the best node to try next, or `None` when every node is tried or full.
///
/// `start` rotates the scan (pass a counter that grows by one per pick); `tried` lists the
/// indices already attempted for this client.
pub fn pick<N: Load>(nodes: &[N], start: usize, tried: &[usize]) -> Option<usize> {
    let n = nodes.len();
    if n == 0 {
        return None;
    }
    let start = start % n;
    // Best so far: (index, up, active, weight).
    let mut best: Option<(usize, bool, u64, u64)> = None;
    for k in 0..n {
        let i = if start + k >= n {
            start + k - n
        } else {
            start + k
        };
        let node = &nodes[i];
        if node.is_full() || tried.contains(&i) {
            continue;
        }
        let (up, active, weight) = (
            node.is_up(),
            u64::from(node.active()),
            u64::from(node.weight().max(1)),
        );
        let better = match best {
            None => true,
            Some((_, b_up, b_active, b_weight)) => {
                (up && !b_up) || (up == b_up && active * b_weight < b_active * weight)
            }
        };
        if better {
            best = Some((i, up, active, weight));
        }
    }
    best.map(|(i, ..)| i)
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
