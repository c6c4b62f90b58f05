//! The pick on the hot path: weighted least connections over 3, 100 and 1000 nodes, with
//! realistic loads (every node up, active counts spread over 0..8).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tierlb::balancer::pick;
use tierlb::config::NodeConfig;
use tierlb::node::{ActiveGuard, Node};

fn nodes(count: usize) -> (Vec<Arc<Node>>, Vec<ActiveGuard>) {
    let nodes: Vec<Arc<Node>> = (0..count)
        .map(|i| {
            let config = NodeConfig {
                address: format!("10.0.{}.{}:8080", i / 250, i % 250)
                    .parse()
                    .expect("node address"),
                weight: 1 + (i % 3) as u32,
                max_connections: None,
            };
            Arc::new(Node::new(&config, 2, 3))
        })
        .collect();
    // Give the nodes uneven loads, as a live balancer has.
    let guards = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, node)| (0..(i * 7) % 8).filter_map(|_| node.try_acquire()))
        .collect();
    (nodes, guards)
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for count in [3usize, 100, 1000] {
        let (nodes, _guards) = nodes(count);
        let mut rr = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(count), &nodes, |b, nodes| {
            b.iter(|| {
                rr = rr.wrapping_add(1);
                black_box(pick(black_box(nodes), rr, &[]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
