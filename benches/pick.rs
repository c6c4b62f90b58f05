//! The pick on the hot path, as a connect makes it: weighted least connections over 3, 100
//! and 1000 nodes with realistic loads (every node up, active counts spread over 0..8), and
//! the picked node's turn moved on. `pick` is an instance alone; `pick_cluster` the same sets
//! in a cluster, with the peers' counts on every node and one node in fifty suspect.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use tierlb::balancer::{pick, Key, Strategy};
use tierlb::config::NodeConfig;
use tierlb::node::{ActiveGuard, NodeSet};

fn nodes(count: usize) -> (NodeSet, Vec<ActiveGuard>) {
    let configs: Vec<NodeConfig> = (0..count)
        .map(|i| NodeConfig {
            address: format!("10.0.{}.{}:8080", i / 250, i % 250)
                .parse()
                .expect("node address"),
            weight: 1 + (i % 3) as u32,
            max_connections: None,
            backup: false,
            proxy_protocol: tierlb::config::ProxyProtocol::Off,
            source: Vec::new(),
            drained: false,
        })
        .collect();
    let set = NodeSet::new(&configs, &std::sync::Arc::from("bench"), 2, 3);
    // Give the nodes uneven loads, as a live balancer has.
    let guards = set
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, node)| (0..(i * 7) % 8).filter_map(|_| node.try_acquire()))
        .collect();
    (set, guards)
}

fn bench_pick(c: &mut Criterion) {
    for cluster in [false, true] {
        let name = if cluster { "pick_cluster" } else { "pick" };
        let mut group = c.benchmark_group(name);
        for count in [3usize, 100, 1000] {
            let (set, _guards) = nodes(count);
            if cluster {
                for (i, node) in set.nodes.iter().enumerate() {
                    node.peers
                        .update(Vec::new(), ((i * 5) % 11) as u32, i % 50 == 1);
                }
            }
            run(&mut group, &set, count);
        }
        group.finish();
    }
}

/// Measures one pick (and the turn it moves on) over `set`.
fn run(group: &mut BenchmarkGroup<'_, WallTime>, set: &NodeSet, count: usize) {
    let mut seed = 0usize;
    group.bench_with_input(BenchmarkId::from_parameter(count), set, |b, set| {
        b.iter(|| {
            seed = seed.wrapping_add(1);
            let key = Key { seed, client: 0 };
            let picked = pick(
                Strategy::LeastConnections,
                black_box(&set.nodes),
                set.vtime(),
                key,
                &[],
            );
            if let Some(i) = picked {
                set.picked(i);
            }
            black_box(picked)
        })
    });
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
