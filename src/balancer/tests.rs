//! Unit tests of the pick: splits, ties, retries, large sets.

use super::*;
use crate::node::{advance, STRIDE};
use rstest::rstest;

#[derive(Clone, Copy)]
pub(super) struct Fake {
    pub(super) active: u32,
    pub(super) weight: u32,
    pub(super) up: bool,
    pub(super) full: bool,
    pub(super) drained: bool,
    pub(super) pass: u64,
    pub(super) suspect: bool,
    pub(super) backup: bool,
    pub(super) identity: u64,
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
        self.full || self.drained
    }
    fn is_drained(&self) -> bool {
        self.drained
    }
    fn pass(&self) -> u64 {
        self.pass
    }
    fn is_suspect(&self) -> bool {
        self.suspect
    }
    fn is_backup(&self) -> bool {
        self.backup
    }
    fn identity(&self) -> u64 {
        self.identity
    }
}

/// A node set with its virtual time, picking as `connect` does: pick, then advance.
struct Set {
    nodes: Vec<Fake>,
    vtime: u64,
}

impl Set {
    fn new(weights: &[u32]) -> Set {
        Set {
            nodes: nodes(weights),
            vtime: 0,
        }
    }

    fn pick(&mut self, seed: usize, tried: &[usize]) -> Option<usize> {
        let i = least_connections(&self.nodes, self.vtime, seed, tried)?;
        let node = &mut self.nodes[i];
        (node.pass, self.vtime) = advance(node.pass, self.vtime, node.weight);
        Some(i)
    }
}

pub(super) fn nodes(weights: &[u32]) -> Vec<Fake> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Fake {
            active: 0,
            weight,
            up: true,
            full: false,
            drained: false,
            pass: 0,
            suspect: false,
            backup: false,
            identity: 1000 + i as u64,
        })
        .collect()
}

/// Opens `count` connections one after another, keeping them open, and returns how many each
/// node got.
fn fill(set: &mut Set, count: usize) -> Vec<u32> {
    for seed in 0..count {
        let i = set.pick(seed, &[]).expect("a node");
        set.nodes[i].active += 1;
    }
    set.nodes.iter().map(|n| n.active).collect()
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
    let mut set = Set::new(weights);
    assert_eq!(fill(&mut set, count), want);
}

#[test]
fn ties_take_turns() {
    let mut set = Set::new(&[1, 1, 1]);
    let picks: Vec<_> = (0..6).map(|seed| set.pick(seed, &[])).collect();
    assert_eq!(
        picks,
        [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
    );
}

#[test]
fn a_tie_set_that_changes_every_pick_starves_no_node() {
    // Each client arrives before the previous one's close is seen: the node picked last is
    // still busy, so the tie set is every node but that one, a different set each time.
    let mut set = Set::new(&[1, 1, 1]);
    let mut got = [0u32; 3];
    let mut busy: Option<usize> = None;
    for seed in 0..300 {
        let i = set.pick(seed, &[]).expect("a node");
        if let Some(b) = busy {
            set.nodes[b].active -= 1;
        }
        set.nodes[i].active += 1;
        busy = Some(i);
        got[i] += 1;
    }
    assert_eq!(got, [100, 100, 100]);
}

#[test]
fn a_node_back_from_a_long_absence_does_not_take_every_tie() {
    let mut set = Set::new(&[1, 1, 1]);
    set.nodes[2].up = false;
    for seed in 0..1000 {
        set.pick(seed, &[]);
    }
    set.nodes[2].up = true;
    let mut got = [0u32; 3];
    for seed in 0..30 {
        got[set.pick(seed, &[]).expect("a node")] += 1;
    }
    assert!(got[2] <= 11, "the returning node took {got:?}");
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
    let mut set = Set::new(weights);
    match how {
        Out::Down => set.nodes[out].up = false,
        Out::Full => set.nodes[out].full = true,
        Out::Tried => {}
    }
    let tried: &[usize] = match how {
        Out::Tried => &[out][..],
        _ => &[],
    };
    let mut got = vec![0; weights.len()];
    for seed in 0..clients {
        got[set.pick(seed, tried).expect("a node")] += 1;
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
    let mut set = Set::new(&[1, 1, 1]);
    set.nodes[1].up = false;
    let picks: Vec<_> = (0..6).filter_map(|seed| set.pick(seed, &[])).collect();
    assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
}

#[test]
fn down_ties_take_turns_when_no_node_is_up() {
    let mut set = Set::new(&[1, 1, 1]);
    for node in &mut set.nodes {
        node.up = false;
    }
    let picks: Vec<_> = (0..3).filter_map(|seed| set.pick(seed, &[])).collect();
    assert_eq!(picks, [0, 1, 2]);
}

#[test]
fn passes_wrap_around() {
    let near_end = u64::MAX - STRIDE / 2;
    let (pass, vtime) = advance(near_end, near_end, 1);
    assert!(pass < near_end, "wrapped");
    assert_eq!(later(pass, vtime), pass, "still later after wrapping");
}

#[test]
fn least_loaded_wins_whatever_the_rotation() {
    let mut n = nodes(&[1, 1, 1]);
    n[0].active = 5;
    n[1].active = 1;
    n[2].active = 3;
    for seed in 0..3 {
        assert_eq!(least_connections(&n, 0, seed, &[]), Some(1));
    }
}

#[test]
fn down_nodes_only_when_no_up_node_is_left() {
    let mut n = nodes(&[1, 1]);
    n[0].up = false;
    n[1].active = 100;
    assert_eq!(
        least_connections(&n, 0, 0, &[]),
        Some(1),
        "a busy up node beats an idle down one"
    );
    assert_eq!(
        least_connections(&n, 0, 0, &[1]),
        Some(0),
        "then the down node is tried"
    );
    assert_eq!(least_connections(&n, 0, 0, &[0, 1]), None);
}

#[rstest]
#[case(3)]
#[case(100)]
fn suspect_nodes_only_when_no_up_unsuspected_node_is_left(#[case] size: usize) {
    let mut n = nodes(&vec![1; size]);
    for node in &mut n[..size - 1] {
        node.suspect = true;
    }
    n[size - 1].active = 1000;
    n[0].up = false;
    assert_eq!(
        least_connections(&n, 0, 7, &[]),
        Some(size - 1),
        "a busy up node beats idle suspect ones"
    );
    assert_eq!(
        least_connections(&n, 0, 7, &[size - 1]),
        Some(1),
        "then a suspect node, before the down one"
    );
    let all_but_down: Vec<usize> = (1..size).collect();
    assert_eq!(
        least_connections(&n, 0, 7, &all_but_down),
        Some(0),
        "and the down node last: fail-open"
    );
}

#[test]
fn full_and_tried_nodes_are_skipped() {
    let mut n = nodes(&[1, 1]);
    n[0].full = true;
    assert_eq!(least_connections(&n, 0, 0, &[]), Some(1));
    assert_eq!(least_connections(&n, 0, 0, &[1]), None);
    assert_eq!(least_connections::<Fake>(&[], 0, 0, &[]), None);
}

#[test]
fn large_sets_stay_balanced() {
    let mut set = Set::new(&[1; 1000]);
    let counts = fill(&mut set, 10_000);
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
    let mut set = Set::new(&weights);
    let counts = fill(&mut set, 20_000);
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
    for seed in 0..50 {
        assert_eq!(least_connections(&n, 0, seed, &[]), Some(321));
    }
    assert_ne!(
        least_connections(&n, 0, 0, &[321]),
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
    let first = least_connections(&n, 0, 0, &[]).expect("node");
    let second = least_connections(&n, 0, 0, &[first]).expect("node");
    let third = least_connections(&n, 0, 0, &[first, second]).expect("node");
    assert_eq!([first, second, third], [1, 2, 0]);
}

#[test]
fn the_strategy_is_least_connections() {
    let mut n = nodes(&[1, 1]);
    n[0].active = 3;
    let key = Key { seed: 7, client: 0 };
    assert_eq!(pick(Strategy::LeastConnections, &n, 0, key, &[]), Some(1));
}
