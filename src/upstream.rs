//! One service's upstream as its connections and probes see it: the settings they read, the
//! node set and the balancing strategy, in ONE snapshot that a reload swaps whole. A reader
//! loads it once per connection (or probe) and so never sees new settings with an old node
//! set, or the other way round.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::balancer::{self, Key, Strategy};
use crate::config::{Balance, Cidr, HealthConfig, ServiceConfig, Timeouts};
use crate::node::NodeSet;
use crate::splice;

/// The settings of one service that connections and probes read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Extra connect attempts after the first, each on another node.
    pub retries: u32,
    /// Connect, idle and drain timeouts.
    pub timeouts: Timeouts,
    /// Probe settings.
    pub health: HealthConfig,
    /// How long a node name's addresses are kept before it is looked up again.
    pub dns_ttl: Duration,
    /// One `tierlb::access` line per closed connection.
    pub access_log: bool,
    /// Sources whose connections start with a PROXY header.
    pub accept_proxy_from: Vec<Cidr>,
    /// Who may connect, and how much per client address.
    pub admission: crate::config::AdmissionConfig,
    /// TCP connections or UDP flows (how the nodes are probed).
    pub protocol: crate::config::Protocol,
    /// Whether any node is sent a PROXY header (then a client's local address is needed).
    pub sends_proxy: bool,
    /// What each connection's splice keeps to (its timeouts, how the node side closes),
    /// borrowed by the splice for the connection's life.
    pub rules: splice::Rules,
}

impl Settings {
    /// The settings of the service `config`.
    pub fn of(config: &ServiceConfig) -> Settings {
        Settings {
            retries: config.retries,
            timeouts: config.timeouts,
            health: config.health.clone(),
            dns_ttl: config.dns_ttl,
            access_log: config.access_log,
            accept_proxy_from: config.accept_proxy_from.clone(),
            admission: config.admission.clone(),
            protocol: config.protocol,
            rules: splice::Rules {
                idle: config.timeouts.idle,
                // A node that drops a client within the connect timeout, before a byte moved
                // either way, has refused it as surely as a failed connect: it is retried.
                retry_window: config.timeouts.connect,
                fin: config.timeouts.fin,
                response: config.timeouts.response,
            },
            sends_proxy: config
                .nodes
                .iter()
                .map(|n| n.proxy_protocol)
                .chain(config.discover.iter().map(|d| d.proxy_protocol))
                .any(|p| p != crate::config::ProxyProtocol::Off),
        }
    }
}

/// One service's settings, nodes and strategy.
#[derive(Debug)]
pub struct Upstream {
    /// What connections and probes read.
    pub settings: Settings,
    /// The nodes in service (and those a reload removed that still drain).
    pub nodes: NodeSet,
    /// How a node is picked.
    pub strategy: Strategy,
    /// How long a client may wait for a slot when every node is full: `[timeouts] queue`,
    /// `None` when it is off or no node has a `max_connections` (nothing to wait for).
    queue: Option<Duration>,
}

impl Upstream {
    /// The upstream of the service `config`, every node new (up, on probation).
    pub fn new(config: &ServiceConfig) -> Upstream {
        let service: Arc<str> = Arc::from(config.name.as_str());
        let nodes = NodeSet::new(
            &config.nodes,
            &service,
            config.health.rise,
            config.health.fall,
        );
        for node in &nodes.nodes {
            node.ramp.set_window(config.health.slow_start);
        }
        Upstream::with_nodes(config, nodes)
    }

    /// The upstream of the service `config` over `nodes` (carried over by a reload).
    pub fn with_nodes(config: &ServiceConfig, nodes: NodeSet) -> Upstream {
        Upstream {
            settings: Settings::of(config),
            nodes,
            strategy: strategy(config.balance),
            queue: config.timeouts.queue.filter(|_| {
                let limits = config.nodes.iter().map(|n| n.max_connections);
                limits
                    .chain(config.discover.iter().map(|d| d.max_connections))
                    .any(|m| m.is_some())
            }),
        }
    }

    /// How long a client may wait in the queue for a slot, if this upstream queues at all.
    pub fn queue_limit(&self) -> Option<Duration> {
        self.queue
    }

    /// The pick's key for a client at `ip`, `seed` differing from client to client: only
    /// source affinity orders nodes by the client's address.
    pub fn key(&self, seed: usize, ip: IpAddr) -> Key {
        Key {
            seed,
            client: match self.strategy {
                Strategy::Source => balancer::client_hash(ip),
                _ => 0,
            },
        }
    }

    /// The index of the best node to try next for a client with `key`, skipping `tried`.
    pub fn pick(&self, key: Key, tried: &[usize]) -> Option<usize> {
        balancer::pick(
            self.strategy,
            &self.nodes.nodes,
            self.nodes.vtime(),
            key,
            tried,
        )
    }

    /// [`Upstream::pick`], with slow start: a node in slow start keeps only its rising share
    /// of the picks that land on it; the rest go to the next-best node, if there is one
    /// (hashing does not ramp).
    pub fn pick_ramped(&self, key: Key, tried: &[usize]) -> Option<usize> {
        let i = self.pick(key, tried)?;
        if self.strategy == Strategy::Source || self.nodes.nodes[i].ramp.keeps() {
            return Some(i);
        }
        let mut passed = tried.to_vec();
        passed.push(i);
        Some(self.pick(key, &passed).unwrap_or(i))
    }
}

/// The pick's strategy for a configured `balance`.
fn strategy(balance: Balance) -> Strategy {
    match balance {
        Balance::LeastConnections => Strategy::LeastConnections,
        Balance::RoundRobin => Strategy::RoundRobin,
        Balance::Source => Strategy::Source,
    }
}
