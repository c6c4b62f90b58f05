//! A node's source addresses (`source`): the local addresses its connections are made from,
//! taken in turn. Each source address has its own range of local ports towards the node, so
//! a list of N addresses gives N times the connections a single address can keep in
//! TIME_WAIT before connects run out of ports.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The addresses, replaced whole by a reload, and the turn.
#[derive(Debug, Default)]
pub struct Sources {
    list: ArcSwap<Vec<IpAddr>>,
    next: AtomicUsize,
}

impl Sources {
    /// Puts `list` in force.
    pub fn set(&self, list: &[IpAddr]) {
        if **self.list.load() != list {
            self.list.store(Arc::new(list.to_vec()));
        }
    }

    /// The next source address of `target`'s family, in turn; `None` when there is none (the
    /// kernel then picks the address, as without `source`).
    pub fn pick(&self, target: SocketAddr) -> Option<IpAddr> {
        let list = self.list.load();
        let same = || list.iter().filter(|ip| ip.is_ipv4() == target.is_ipv4());
        // Counted, not collected: a connect allocates nothing for its source.
        let count = same().count();
        if count == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        same().nth(turn % count).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_addresses_of_the_targets_family_in_turn() {
        let sources = Sources::default();
        let v4: SocketAddr = "10.0.0.9:80".parse().expect("addr");
        assert_eq!(sources.pick(v4), None, "none set");
        let list: Vec<IpAddr> = ["10.0.0.1", "::1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        sources.set(&list);
        let picks: Vec<String> = (0..4)
            .filter_map(|_| sources.pick(v4))
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(picks, ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]);
        let v6: SocketAddr = "[::2]:80".parse().expect("addr");
        assert_eq!(sources.pick(v6), Some("::1".parse().expect("ip")));
        sources.set(&list[..1]);
        assert_eq!(sources.pick(v6), None, "no IPv6 source left");
    }
}
