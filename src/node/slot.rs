//! A connection slot on a node: its active count taken by [`Node::try_acquire`] and given
//! back when the guard drops, on every exit path.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Node;

/// One connection slot on a node; dropping it gives the slot back.
#[derive(Debug)]
pub struct ActiveGuard {
    pub(super) node: Arc<Node>,
}

impl ActiveGuard {
    /// The node this slot belongs to.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.node.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeConfig, ProxyProtocol};

    #[test]
    fn guard_gives_the_slot_back_and_limit_holds() {
        let config = NodeConfig {
            address: "a:1".parse().expect("addr"),
            weight: 1,
            max_connections: Some(1),
            backup: false,
            proxy_protocol: ProxyProtocol::Off,
            source: Vec::new(),
            drained: false,
        };
        let node = Arc::new(Node::new(&config, &Arc::from("web"), 2, 3));
        let guard = node.try_acquire().expect("first slot");
        assert!(node.try_acquire().is_none(), "limit of one");
        assert!(node.is_full());
        drop(guard);
        assert_eq!(node.active(), 0);
        assert!(node.try_acquire().is_some());
    }
}
