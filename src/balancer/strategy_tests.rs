//! Unit tests of round robin, source affinity and backup nodes.

use super::tests::{nodes, Fake};
use super::*;
use crate::node::advance;

/// `count` sequential picks by `strategy` with `client` hashes from `clients`, the picked
/// node's turn moved on and its connection kept open when `hold`; how many each node got.
fn run(strategy: Strategy, set: &mut [Fake], count: usize, hold: bool) -> Vec<u32> {
    let mut got = vec![0; set.len()];
    let mut vtime = 0;
    for seed in 0..count {
        let key = Key {
            seed,
            client: seed as u64,
        };
        let i = pick(strategy, set, vtime, key, &[]).expect("a node");
        (set[i].pass, vtime) = advance(set[i].pass, vtime, set[i].weight);
        if hold {
            set[i].active += 1;
        }
        got[i] += 1;
    }
    got
}

#[test]
fn round_robin_follows_the_weights_whatever_the_load() {
    let mut set = nodes(&[2, 1, 1]);
    set[0].active = 10;
    assert_eq!(run(Strategy::RoundRobin, &mut set, 40, false), [20, 10, 10]);
    let mut set = nodes(&[2, 1, 1]);
    let order: Vec<usize> = (0..8)
        .map(|_| {
            let i = pick(
                Strategy::RoundRobin,
                &set,
                0,
                Key { seed: 0, client: 0 },
                &[],
            )
            .expect("a node");
            (set[i].pass, _) = advance(set[i].pass, 0, set[i].weight);
            i
        })
        .collect();
    assert_eq!(
        order[..4].iter().filter(|i| **i == 0).count(),
        2,
        "smooth: {order:?}"
    );
    assert_ne!(
        order[0], order[1],
        "never twice in a row at 2:1:1: {order:?}"
    );
}

#[test]
fn round_robin_skips_down_nodes_and_fails_open() {
    let mut set = nodes(&[1, 1, 1]);
    set[1].up = false;
    assert_eq!(run(Strategy::RoundRobin, &mut set, 30, false), [15, 0, 15]);
    for n in &mut set {
        n.up = false;
    }
    assert!(pick(
        Strategy::RoundRobin,
        &set,
        0,
        Key { seed: 0, client: 0 },
        &[]
    )
    .is_some());
}

#[test]
fn source_keeps_each_client_on_its_node_and_spreads_by_weight() {
    let set = nodes(&[1, 1, 2, 1, 1]);
    let key = |c: u64| Key {
        seed: 0,
        client: splitmix64(c),
    };
    let mut got = [0u32; 5];
    for c in 0..6000u64 {
        let first = pick(Strategy::Source, &set, 0, key(c), &[]).expect("a node");
        assert_eq!(pick(Strategy::Source, &set, 0, key(c), &[]), Some(first));
        got[first] += 1;
    }
    // Shares 1/6, 1/6, 2/6, 1/6, 1/6 of 6000, within 10 %.
    for (i, want) in [1000, 1000, 2000, 1000, 1000].iter().enumerate() {
        let diff = (f64::from(got[i]) - f64::from(*want)).abs() / f64::from(*want);
        assert!(diff < 0.1, "node {i}: {} of 6000 ({got:?})", got[i]);
    }
}

#[test]
fn source_moves_only_the_clients_of_a_node_that_leaves() {
    let mut set = nodes(&[1, 1, 1, 1, 1]);
    let key = |c: u64| Key {
        seed: 0,
        client: splitmix64(c),
    };
    let before: Vec<usize> = (0..2000)
        .map(|c| pick(Strategy::Source, &set, 0, key(c), &[]).expect("a node"))
        .collect();
    set[2].up = false;
    let mut moved_to = [0u32; 5];
    for (c, was) in before.iter().enumerate() {
        let now = pick(Strategy::Source, &set, 0, key(c as u64), &[]).expect("a node");
        if *was == 2 {
            moved_to[now] += 1;
        } else {
            assert_eq!(now, *was, "client {c} kept its node");
        }
    }
    assert_eq!(moved_to[2], 0);
    assert!(
        moved_to.iter().enumerate().all(|(i, n)| i == 2 || *n > 50),
        "{moved_to:?}"
    );
    // The retry order is the client's own: its next node once the first is tried.
    let c = (0..2000)
        .find(|c| before[*c] == 0)
        .expect("a client of node 0") as u64;
    set[2].up = true;
    let next = pick(Strategy::Source, &set, 0, key(c), &[0]).expect("next");
    set[0].up = false;
    assert_eq!(pick(Strategy::Source, &set, 0, key(c), &[]), Some(next));
}

#[test]
fn backups_only_while_no_primary_is_up_and_last_when_failing_open() {
    for strategy in [
        Strategy::LeastConnections,
        Strategy::RoundRobin,
        Strategy::Source,
    ] {
        let mut set = nodes(&[1, 1, 1]);
        set[2].backup = true;
        set[0].active = 50;
        let got = run(strategy, &mut set, 30, true);
        assert_eq!(
            got[2], 0,
            "{strategy:?}: the backup idles while a primary is up"
        );
        set[0].up = false;
        set[1].up = false;
        let i = pick(strategy, &set, 0, Key { seed: 1, client: 1 }, &[]);
        assert_eq!(i, Some(2), "{strategy:?}: the backup takes over");
        set[2].up = false;
        let first = pick(strategy, &set, 0, Key { seed: 1, client: 1 }, &[]).expect("fail-open");
        assert!(
            first < 2,
            "{strategy:?}: failing open tries primaries first"
        );
        assert_eq!(
            pick(strategy, &set, 0, Key { seed: 1, client: 1 }, &[0, 1]),
            Some(2),
            "{strategy:?}: then the backup"
        );
    }
}

#[rstest::rstest]
#[case::least_connections(Strategy::LeastConnections)]
#[case::round_robin(Strategy::RoundRobin)]
#[case::source(Strategy::Source)]
fn a_full_up_node_is_waited_for_rather_than_a_down_node_tried(#[case] strategy: Strategy) {
    let key = Key { seed: 0, client: 7 };
    let mut set = nodes(&[1, 1]);
    set[0].full = true;
    set[1].up = false;
    assert_eq!(pick(strategy, &set, 0, key, &[]), None, "wait for node 0");
    assert_eq!(
        pick(strategy, &set, 0, key, &[0]),
        Some(1),
        "node 0 already tried for this client: fail open"
    );
    set[0].full = false;
    set[0].drained = true;
    assert_eq!(
        pick(strategy, &set, 0, key, &[]),
        Some(1),
        "a drained node frees no slot: fail open"
    );
    set[0].drained = false;
    set[0].up = false;
    set[0].full = true;
    assert_eq!(
        pick(strategy, &set, 0, key, &[]),
        Some(1),
        "a full down node is not waited for"
    );
}
