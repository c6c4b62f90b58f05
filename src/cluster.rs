//! Several tierlb instances acting as one: membership and state dissemination through
//! chitchat (scuttlebutt gossip with a phi-accrual failure detector) over a sealed UDP
//! transport, and what each instance publishes and learns about the nodes.
//!
//! Each instance publishes, per node of each service, its health verdict, its active count
//! and the latest operator decision it knows (`keys`); it reads the live peers' values and
//! applies the rules of `merge` onto each node's plain atomics, which is all the pick reads.
//! No leader, no quorum: an instance cut off from the others keeps serving on what it knows.
//! Membership changes, deaths and configuration drift are logged once per change.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::node::{epoch_ms, Decision, Node};
use crate::state::Shared;

mod keys;
mod members;
mod merge;
mod owners;
mod seal;
mod sources;
mod task;
mod transport;

pub use merge::{stamp, stamp_ms};
pub use transport::Traffic;

/// chitchat's cluster id: the same for every tierlb; the secret is what tells clusters apart.
const CLUSTER_ID: &str = "tierlb";
/// Failure detector threshold: a member silent for about this many mean heartbeat intervals
/// is dead (1.6 s at the default 200 ms).
pub const PHI_THRESHOLD: f64 = 8.0;
/// How long a dead member is still listed (and its state kept) before it is forgotten.
const DEAD_MEMBER_KEPT: Duration = Duration::from_secs(3600);

/// One member of the cluster as this instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its gossip address.
    pub address: SocketAddr,
    /// Whether the failure detector has it alive (always, for this instance).
    pub alive: bool,
    /// When it was last heard from (now, while alive).
    pub last_seen: SystemTime,
    /// The fingerprint of its services and nodes.
    pub fingerprint: String,
    /// Its fingerprint differs from this instance's.
    pub drift: bool,
    /// What it differs in (the services and nodes only one side runs), when it drifts.
    pub drift_detail: Option<String>,
    /// This instance.
    pub this: bool,
    /// Another live member has its name (at another address).
    pub duplicate: bool,
    /// How far its clock is ahead of this instance's (negative: behind), ms, from its last
    /// authentic datagram; `None` until one arrived.
    pub clock_offset_ms: Option<i64>,
}

/// A running cluster membership: this instance's name, clock and view of the members.
#[derive(Debug)]
pub struct Cluster {
    /// This instance's name.
    pub name: String,
    /// The address peers dial.
    pub advertise: SocketAddr,
    /// Gossip traffic counters.
    pub traffic: Arc<Traffic>,
    /// Hybrid logical clock of operator decisions (see `merge::stamp`).
    clock: AtomicU64,
    members: Mutex<Vec<Member>>,
    /// The gossip socket, listed for an upgrade's handover.
    _held: crate::upgrade::Held,
}

impl Cluster {
    /// Binds the gossip socket, joins through `config.peers` and keeps publishing and merging
    /// until `stop` is cancelled. Fails only if the socket cannot be bound.
    pub async fn start(
        config: &ClusterConfig,
        shared: Arc<Shared>,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Cluster>> {
        let socket = crate::upgrade::take_udp(crate::upgrade::Role::Gossip, config.listen)
            .with_context(|| format!("cannot bind the cluster address {} (UDP)", config.listen))?;
        let held = crate::upgrade::hold(crate::upgrade::Role::Gossip, config.listen, &socket)?;
        let bound = socket.local_addr()?;
        let advertise = config
            .advertise
            .unwrap_or_else(|| SocketAddr::new(bound.ip(), bound.port()));
        let traffic = Arc::new(Traffic::default());
        let keys: Vec<[u8; 32]> = config.secret.keys().map(seal::derive_key).collect();
        // A datagram may be as old as the clocks may differ, plus a few rounds in flight.
        let max_age = config.max_clock_skew + 4 * config.interval;
        let sealed =
            transport::Sealed::new(socket, &keys, Arc::clone(&traffic), advertise, max_age);
        let id = ChitchatId::new(config.name.as_str(), epoch_ms(SystemTime::now()), advertise);
        let chitchat_config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: CLUSTER_ID.to_owned(),
            gossip_interval: config.interval,
            listen_addr: bound,
            seed_nodes: config.peers.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10),
                initial_interval: config.interval,
                dead_node_grace_period: DEAD_MEMBER_KEPT,
            },
            marked_for_deletion_grace_period: DEAD_MEMBER_KEPT,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let fingerprint = keys::fingerprint(&shared.config().services);
        let initial = vec![(keys::FINGERPRINT.to_owned(), fingerprint)];
        let handle = spawn_chitchat(chitchat_config, initial, &sealed)
            .await
            .context("cannot start gossip")?;
        let cluster = Arc::new(Cluster {
            name: config.name.clone(),
            advertise,
            traffic,
            clock: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
            _held: held,
        });
        tracing::info!(
            name = %config.name,
            addr = %bound,
            advertise = %advertise,
            peers = config.peers.len(),
            "cluster gossip listening"
        );
        let run = task::Task::new(Arc::clone(&cluster), shared, handle, config);
        tokio::spawn(run.run(stop));
        Ok(cluster)
    }

    /// Drains (`drained`) or enables `node` by an operator's decision taken here (by `client`
    /// of the admin endpoint): stamped, applied at once and published for the others.
    pub fn decide(&self, node: &Node, drained: bool, weight: Option<u32>, client: &str) {
        let decision = Decision {
            drained,
            weight,
            stamp: self.stamp(),
            by: self.name.clone(),
        };
        node.peers.adopt(decision.clone(), merge::later);
        node.apply(&decision, &format!("{client} of {}", self.name));
    }

    /// The members, this instance first.
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn set_members(&self, members: Vec<Member>) {
        if let Ok(mut m) = self.members.lock() {
            *m = members;
        }
    }

    /// A new timestamp for a decision taken now.
    fn stamp(&self) -> u64 {
        let now = epoch_ms(SystemTime::now());
        let mut last = self.clock.load(Ordering::Relaxed);
        loop {
            let next = merge::stamp(last, now);
            match self
                .clock
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Moves the clock past a timestamp seen from a peer.
    fn witness(&self, remote: u64) {
        let mut last = self.clock.load(Ordering::Relaxed);
        while let Err(actual) = self.clock.compare_exchange_weak(
            last,
            merge::witness(last, remote),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            last = actual;
        }
    }
}
