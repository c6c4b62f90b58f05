//! Nodes and their health: the one shared truth read by picking, probing, metrics and the
//! admin endpoint.
//!
//! A [`Node`] holds its address, weight, active connection count, [`Health`] and the
//! cluster peers' view of it ([`PeerView`]). Health is a
//! small state machine ([`Health::observe`]) fed by every result about the node: real connect
//! attempts and client connections (passive) and probes (active) alike, so `fall` counts them
//! together. [`NodeSet::observe`] records a result and logs the state change it causes with
//! what the operator needs next: how many nodes are still up, how long the node was down. The state is
//! packed into one `AtomicU64` and updated with compare-and-swap, so the hot path never takes a
//! lock and concurrent results can never lose an update or log a transition twice.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::{NodeAddr, NodeConfig, ProxyProtocol};
mod dns;
mod observe;
mod peers;
mod probing;
mod ramp;
mod recent;
mod set;
mod slot;
mod source;
mod state;
mod stats;
mod turns;
mod weight;

pub use dns::{Addresses, DnsError, Order};
pub use peers::{Decision, PeerReport, PeerView, Verdict};
pub use probing::{Probing, Role};
pub use ramp::Ramp;
pub use recent::{Recent, Sample};
pub use set::NodeSet;
pub use slot::ActiveGuard;
pub use source::Sources;
pub use state::{Health, Observation, Transition};
pub use stats::{FailureKind, NodeStats};
pub use turns::{advance, later, STRIDE};
pub use weight::MAX_WEIGHT;

/// The last health result recorded for a node, for `/status`.
#[derive(Debug, Clone)]
pub struct Check {
    /// Whether it passed.
    pub passed: bool,
    /// Why (e.g. "probe passed", "connect: connection refused").
    pub reason: String,
    /// When.
    pub at: SystemTime,
}

/// Where a health result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An active probe.
    Probe,
    /// A client's connection: its connect, or what the node did with it.
    Client,
}

/// One backend node and its live state. Settings that a reload may change are atomics, so a
/// node keeps its identity (health, active count, counters) across reloads.
#[derive(Debug)]
pub struct Node {
    /// Where the node listens.
    pub address: NodeAddr,
    /// The service it belongs to, named on every log line about it.
    pub service: Arc<str>,
    /// A hash of the address as written, the same in every process: its identity for source
    /// affinity.
    identity: u64,
    /// Takes clients only while no primary node of its service is up.
    backup: AtomicBool,
    /// The PROXY header it is sent: 0 off, 1 v1, 2 v2.
    proxy: AtomicU8,
    /// Relative share of connections.
    weight: AtomicU32,
    /// Most connections at once, `u32::MAX` when unlimited.
    max_connections: AtomicU32,
    /// Connections open to the node, connect attempts in progress included.
    active: AtomicU32,
    /// Virtual pass for turns among equally loaded nodes (see [`advance`]).
    pass: AtomicU64,
    /// Packed [`Health`].
    health: AtomicU64,
    /// Thresholds for [`Health::observe`].
    rise: AtomicU32,
    fall: AtomicU32,
    /// Taken out of service by an operator: no new connections, open ones run on.
    drained: AtomicBool,
    /// `drained` as the configuration last said it.
    configured_drained: AtomicBool,
    /// The weight an operator set at run time ([`weight::NONE`]: none, the file's applies).
    runtime_weight: AtomicU32,
    /// When the node last changed state (up, down, drained, enabled), in ms since the epoch.
    since: AtomicU64,
    /// Cancelled when a reload removes the node: its probe loop ends.
    pub removed: CancellationToken,
    /// Counters for metrics.
    pub stats: NodeStats,
    /// The last probe result, or the last failed connect if more recent.
    last_check: Mutex<Option<Check>>,
    /// The addresses of a named node, kept by its background lookups.
    pub addresses: Addresses,
    /// The `discover` entry that found the node (`None` for a node of `nodes`).
    found_by: Mutex<Option<Arc<str>>>,
    /// What the other instances of the cluster say about the node.
    pub peers: PeerView,
    /// Its slow start.
    pub ramp: Ramp,
    /// The local addresses its connections are made from (`source`), in turn.
    pub source: Sources,
}

impl Node {
    /// A new node of `service`, up on probation, with the given health thresholds.
    pub fn new(config: &NodeConfig, service: &Arc<str>, rise: u32, fall: u32) -> Node {
        let node = Node {
            address: config.address.clone(),
            service: Arc::clone(service),
            identity: fnv1a(&config.address.to_string()),
            backup: AtomicBool::new(false),
            proxy: AtomicU8::new(0),
            weight: AtomicU32::new(1),
            max_connections: AtomicU32::new(u32::MAX),
            active: AtomicU32::new(0),
            pass: AtomicU64::new(0),
            health: AtomicU64::new(Health::NEW.pack()),
            rise: AtomicU32::new(rise),
            fall: AtomicU32::new(fall),
            drained: AtomicBool::new(config.drained),
            configured_drained: AtomicBool::new(config.drained),
            runtime_weight: AtomicU32::new(weight::NONE),
            since: AtomicU64::new(epoch_ms(SystemTime::now())),
            removed: CancellationToken::new(),
            stats: NodeStats::default(),
            last_check: Mutex::new(None),
            addresses: Addresses::default(),
            found_by: Mutex::new(None),
            peers: PeerView::default(),
            ramp: Ramp::default(),
            source: Sources::default(),
        };
        node.configure(config, rise, fall);
        node
    }

    /// Applies (re)loaded settings; health, active count and counters are kept.
    pub fn configure(&self, config: &NodeConfig, rise: u32, fall: u32) {
        let weight = config.weight.max(1);
        if self.weight.swap(weight, Ordering::Relaxed) != weight {
            self.reset_runtime_weight();
        }
        self.backup.store(config.backup, Ordering::Relaxed);
        let proxy = match config.proxy_protocol {
            ProxyProtocol::Off => 0,
            ProxyProtocol::V1 => 1,
            ProxyProtocol::V2 => 2,
        };
        self.proxy.store(proxy, Ordering::Relaxed);
        self.max_connections.store(
            config.max_connections.unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        self.rise.store(rise, Ordering::Relaxed);
        self.fall.store(fall, Ordering::Relaxed);
        self.source.set(&config.source);
        // `drained` in the file applies when it changes there; an operator's decision taken
        // since stays otherwise.
        if self
            .configured_drained
            .swap(config.drained, Ordering::Relaxed)
            != config.drained
        {
            self.set_drained(config.drained, "the configuration");
        }
    }

    /// The `discover` entry that found the node, as `dns name:port` or `srv name`.
    pub fn found_by(&self) -> Option<Arc<str>> {
        self.found_by.lock().ok().and_then(|f| f.clone())
    }

    /// Records which `discover` entry found the node (`None`: it is listed in `nodes`).
    pub fn set_found_by(&self, entry: Option<Arc<str>>) {
        if let Ok(mut found_by) = self.found_by.lock() {
            *found_by = entry;
        }
    }

    /// The PROXY header the node is sent before a client's bytes.
    pub fn proxy_protocol(&self) -> ProxyProtocol {
        match self.proxy.load(Ordering::Relaxed) {
            1 => ProxyProtocol::V1,
            2 => ProxyProtocol::V2,
            _ => ProxyProtocol::Off,
        }
    }

    /// Its `max_connections`, if it has one.
    pub fn max_connections(&self) -> Option<u32> {
        Some(self.max_connections.load(Ordering::Relaxed)).filter(|m| *m != u32::MAX)
    }

    /// Whether the node is a backup (`backup = true`).
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    /// The address's identity hash (see the field).
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Relative share of connections.
    pub fn weight(&self) -> u32 {
        match self.runtime_weight.load(Ordering::Relaxed) {
            weight::NONE => self.weight.load(Ordering::Relaxed),
            runtime => runtime.max(1),
        }
    }

    /// Its virtual pass, for turns among ties.
    pub fn pass(&self) -> u64 {
        self.pass.load(Ordering::Relaxed)
    }

    /// Connections open now (attempts in progress included).
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections open now cluster-wide: this instance's and the live peers' last counts.
    pub fn cluster_active(&self) -> u32 {
        self.active().saturating_add(self.peers.load())
    }

    /// Whether a live peer reports the node down and this instance has not checked since.
    pub fn is_suspect(&self) -> bool {
        self.peers.is_suspect()
    }

    /// How many connections this instance may have open to the node: its `max_connections`
    /// less the live cluster peers' published counts (the limit is the cluster's), or
    /// `u32::MAX` without a limit.
    fn budget(&self) -> u32 {
        match self.max_connections.load(Ordering::Relaxed) {
            u32::MAX => u32::MAX,
            max => max.saturating_sub(self.peers.load()),
        }
    }

    /// Whether the node takes no new connection now: its `max_connections` spent (in a
    /// cluster, by all instances together), or drained.
    pub fn is_full(&self) -> bool {
        self.active() >= self.budget()
            || self.drained.load(Ordering::Relaxed)
            || self.runtime_weight.load(Ordering::Relaxed) == 0
    }

    /// Whether an operator drained the node.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains the node (no new connections) or puts it back in service, as decided `by` an
    /// admin client of this instance or another instance of the cluster.
    pub fn set_drained(&self, drained: bool, by: &str) {
        if self.drained.swap(drained, Ordering::Relaxed) != drained {
            self.mark_change();
            let state = if drained { "drained" } else { "enabled" };
            let active = self.active();
            if !drained {
                self.ramp.start();
            }
            tracing::info!(service = %self.service, node = %self.address, active, by, "node {state} by the operator");
        }
    }

    /// When the node entered its current state (up, down, drained or enabled).
    pub fn since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.since.load(Ordering::Relaxed))
    }

    /// Records a state change now; returns how long the previous state lasted.
    fn mark_change(&self) -> Duration {
        let now = SystemTime::now();
        let before = self.since.swap(epoch_ms(now), Ordering::Relaxed);
        Duration::from_millis(epoch_ms(now).saturating_sub(before))
    }

    /// The current health.
    pub fn health(&self) -> Health {
        Health::unpack(self.health.load(Ordering::Acquire))
    }

    /// Whether the node is up.
    pub fn is_up(&self) -> bool {
        self.health().up
    }

    /// The last recorded health result.
    pub fn last_check(&self) -> Option<Check> {
        self.last_check.lock().ok().and_then(|c| c.clone())
    }

    /// Takes one connection slot, unless the node is full (see [`Node::is_full`]) or drained. The slot is given back
    /// when the returned guard drops, on every exit path.
    pub fn try_acquire(self: &Arc<Node>) -> Option<ActiveGuard> {
        if self.is_drained() {
            return None;
        }
        let max = self.budget();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ActiveGuard {
            node: Arc::clone(self),
        })
    }
}

/// FNV-1a of a text: a small, fixed hash, the same in every process.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
