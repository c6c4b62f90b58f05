//! Source affinity: weighted rendezvous (highest random weight) hashing. Each client address
//! ranks every node by a score drawn from the pair (client, node); the client goes to its
//! best-scoring eligible node. So a node that leaves (down, drained, full, removed) moves only
//! its own clients, each to the next node of that client's own order, and removing one of N
//! nodes moves about 1/N of the clients; when it comes back, they return. Weights scale the
//! score (`-weight / ln(u)`, u uniform in (0, 1)), which gives each node a share of clients
//! proportional to its weight. Scores depend only on the two hashes, so every instance of a
//! cluster sends one client to the same node. Tiers (see `tier`) come first: a client's best
//! up node wins over its best suspect or backup node.

use super::{eligible, pickable, splitmix64, tier, Load};

/// The index of the best node for the client hashed `client`, skipping `tried` and full
/// nodes; none when that would be a down node while an untried up node is only full.
pub fn pick<N: Load>(nodes: &[N], client: u64, tried: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, u8, f64)> = None;
    let mut wait = false;
    for (i, node) in nodes.iter().enumerate() {
        if !eligible(node, i, tried, &mut wait) {
            continue;
        }
        let (t, s) = (tier(node), score(client, node.identity(), node.weight()));
        if best.is_none_or(|(_, bt, bs)| t < bt || (t == bt && s > bs)) {
            best = Some((i, t, s));
        }
    }
    best.filter(|(_, t, _)| pickable(*t, wait))
        .map(|(i, _, _)| i)
}

/// The node's score for the client: `-weight / ln(u)` with u uniform in (0, 1) from the pair.
fn score(client: u64, node: u64, weight: u32) -> f64 {
    let h = splitmix64(client ^ splitmix64(node));
    // 53 random bits, offset by half a step so that u is never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}
