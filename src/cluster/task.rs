//! The cluster's one task: every interval it publishes this instance's facts (only those that
//! changed) and merges the live peers' facts into the nodes; it also merges as soon as a peer's
//! state changes. It keeps the member list and logs joins, deaths and drift once per change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chitchat::{ChitchatHandle, ChitchatId, NodeState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keys::{self, Fact};
use super::members::{self, Roster};
use super::merge::{self, Heard};
use super::owners::Owners;
use super::sources;
use super::{Cluster, Member};
use crate::config::ClusterConfig;
use crate::node::{epoch_ms, Node, PeerReport, Role, Verdict};
use crate::state::Shared;
use crate::throttle::Throttle;

/// Where a peer's verdict about a node stands here: which verdict, and when it arrived.
type Arrivals = HashMap<(ChitchatId, String), ((bool, u64), u64)>;

/// The cluster task's state.
pub struct Task {
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    handle: ChitchatHandle,
    interval: Duration,
    /// What this instance published last, key by key.
    published: HashMap<String, String>,
    arrivals: Arrivals,
    /// The members as last shown, for logging changes.
    roster: Roster,
    /// How far ahead of this instance's clock a peer's decision may be stamped.
    max_clock_skew: Duration,
    /// Peers (by name) whose too-early decisions were logged, and the decisions counted.
    skewed: HashSet<(String, u64)>,
    bad_value_log: Throttle,
    /// Each node's probing owners among the live members.
    owners: Owners,
}

impl Task {
    /// The task for `cluster`, over the running chitchat `handle`.
    pub fn new(
        cluster: Arc<Cluster>,
        shared: Arc<Shared>,
        handle: ChitchatHandle,
        config: &ClusterConfig,
    ) -> Task {
        Task {
            cluster,
            shared,
            handle,
            interval: config.interval,
            published: HashMap::new(),
            arrivals: HashMap::new(),
            roster: Roster::new(!config.peers.is_empty(), config.max_clock_skew),
            max_clock_skew: config.max_clock_skew,
            skewed: HashSet::new(),
            bad_value_log: Throttle::default(),
            owners: Owners::new(config.probe_owners),
        }
    }

    /// Runs until `stop` is cancelled, then stops gossip.
    pub async fn run(mut self, stop: CancellationToken) {
        let chitchat = self.handle.chitchat();
        let mut live = chitchat.lock().await.live_nodes_watcher();
        let mut tick = tokio::time::interval(self.interval);
        let ended = self.handle.termination_watcher();
        tokio::pin!(ended);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                result = &mut ended => {
                    tracing::error!(error = ?result.err(), "cluster gossip stopped; serving on this instance's own view");
                    self.forget_peers();
                    return;
                }
                _ = tick.tick() => {
                    self.publish().await;
                    // Members first, merge second, shown last: the live-nodes watcher is at
                    // least as new as the member list, so no one sees a member dead whose
                    // counts still weigh.
                    let members = self.members().await;
                    self.merge(&mut live);
                    self.cluster.set_members(members);
                }
                changed = live.changed() => {
                    if changed.is_err() {
                        self.forget_peers();
                        return;
                    }
                    self.merge(&mut live);
                }
            }
        }
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "cluster gossip did not stop cleanly");
        }
    }

    /// Publishes the facts that changed since the last round, deletes those that are gone.
    async fn publish(&mut self) {
        let mut facts = HashMap::new();
        facts.insert(
            keys::FINGERPRINT.to_owned(),
            keys::fingerprint(&self.shared.config().services),
        );
        for service in self.shared.services().iter() {
            facts.extend(sources::fact(service));
            for node in &service.upstream().nodes.nodes {
                let address = node.address.to_string();
                let key = |fact| keys::key(fact, &service.name, &address);
                facts.insert(key(Fact::Verdict), keys::verdict_value(&verdict(node)));
                facts.insert(key(Fact::Count), node.active().to_string());
                if let Some(d) = node.peers.decision() {
                    facts.insert(key(Fact::Decision), keys::decision_value(&d));
                }
            }
        }
        let changed: Vec<(&String, &String)> = facts
            .iter()
            .filter(|(k, v)| self.published.get(*k) != Some(*v))
            .collect();
        let gone: Vec<&String> = self
            .published
            .keys()
            .filter(|k| !facts.contains_key(*k))
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return;
        }
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        // The fingerprint last, after the node keys are set and deleted: chitchat sends a
        // member's keys in the order of their versions, so a peer that sees a new fingerprint
        // already has the node keys it describes (a drift is never judged, nor logged, on
        // half of them).
        let (fingerprint, facts_first): (Vec<_>, Vec<_>) = changed
            .into_iter()
            .partition(|(k, _)| *k == keys::FINGERPRINT);
        for (k, v) in facts_first {
            state.set(k, v);
        }
        for k in gone {
            state.delete(k);
        }
        for (k, v) in fingerprint {
            state.set(k, v);
        }
        drop(guard);
        self.published = facts;
    }

    /// Merges the live peers' facts into every node.
    fn merge(&mut self, live: &mut watch::Receiver<BTreeMap<ChitchatId, NodeState>>) {
        let me = self.handle.chitchat_id().clone();
        let states = live.borrow_and_update();
        let peers: Vec<(&ChitchatId, &NodeState)> =
            states.iter().filter(|(id, _)| **id != me).collect();
        self.arrivals
            .retain(|(id, _), _| peers.iter().any(|(p, _)| *p == id));
        let mut names: Vec<String> = peers.iter().map(|(id, _)| id.node_id.to_string()).collect();
        names.push(me.node_id.to_string());
        self.owners.set_members(names);
        let now = epoch_ms(SystemTime::now());
        let mut count = 0;
        for service in self.shared.services().iter() {
            sources::merge(service, &peers, |id, why| self.bad_value(id, why));
            let upstream = service.upstream();
            for node in &upstream.nodes.nodes {
                count += 1;
                let address = node.address.to_string();
                let owners = self
                    .owners
                    .of(&keys::node_key(&service.name, &address))
                    .to_vec();
                let owned = owners.iter().any(|o| **o == *me.node_id);
                let owner_heard = peers.iter().any(|(id, state)| {
                    owners.iter().any(|o| **o == *id.node_id)
                        && state
                            .get(&keys::key(Fact::Verdict, &service.name, &address))
                            .is_some()
                });
                if node
                    .peers
                    .probing
                    .assign(owners.clone(), owned, owner_heard)
                {
                    tracing::info!(service = %service.name, node = %node.address, "probing node: this instance is one of its owners now");
                    node.peers.probe_now.notify_one();
                }
                let mut reports = Vec::with_capacity(peers.len());
                let mut heard = Vec::with_capacity(peers.len());
                for (id, state) in &peers {
                    let get = |fact| state.get(&keys::key(fact, &service.name, &address));
                    if let Some(value) = get(Fact::Decision) {
                        match keys::parse_decision(value) {
                            Ok(d) => self.learn(id, node, d, now),
                            Err(why) => self.bad_value(id, &why),
                        }
                    }
                    let Some(value) = get(Fact::Verdict) else {
                        continue;
                    };
                    let verdict = match keys::parse_verdict(value) {
                        Ok(v) => v,
                        Err(why) => {
                            self.bad_value(id, &why);
                            continue;
                        }
                    };
                    let active = match get(Fact::Count).map(keys::parse_count) {
                        Some(Ok(n)) => n,
                        Some(Err(why)) => {
                            self.bad_value(id, &why);
                            0
                        }
                        None => 0,
                    };
                    let which = (verdict.up, verdict.since_ms);
                    let slot = (
                        (*id).clone(),
                        keys::key(Fact::Verdict, &service.name, &address),
                    );
                    let arrived = match self.arrivals.get(&slot) {
                        Some((seen, at)) if *seen == which => *at,
                        _ => {
                            self.arrivals.insert(slot, (which, now));
                            now
                        }
                    };
                    heard.push(Heard {
                        up: verdict.up,
                        arrived_ms: arrived,
                        active,
                        owner: owners.iter().any(|o| **o == *id.node_id),
                    });
                    reports.push(PeerReport {
                        peer: id.node_id.to_string(),
                        verdict,
                        active,
                    });
                }
                let follower = node.peers.probing.role() == Role::Follow;
                let j = merge::judge(node.is_up(), node.peers.last_success_ms(), &heard, follower);
                if let Some(up) = j.follow {
                    upstream.nodes.follow(node, up, &reports);
                }
                let by: Vec<String> = reports
                    .iter()
                    .filter(|r| !r.verdict.up)
                    .map(|r| r.peer.clone())
                    .collect();
                let before = node.peers.load();
                if node.peers.update(reports, j.load, j.suspect) {
                    tracing::info!(service = %service.name, node = %node.address, by = %by.join(", "), "node suspect: reported down by other instances; probing it now");
                }
                // Slots freed by peers (a cluster-wide max_connections): the queue looks again.
                if j.load < before && node.max_connections().is_some() {
                    service.queue.wake();
                }
            }
        }
        self.owners.trim(count);
    }

    /// Drops every peer's report, load, suspicion and sources: without gossip they would only
    /// go stale; this instance probes every node again.
    fn forget_peers(&self) {
        for service in self.shared.services().iter() {
            service
                .admission
                .set_peers(std::collections::HashMap::new());
            for node in &service.upstream().nodes.nodes {
                node.peers.update(Vec::new(), 0, false);
                node.peers.probing.reset();
            }
        }
    }

    /// Adopts a peer's decision about `node` if it is later than the one known, unless it is
    /// stamped more than `max_clock_skew` ahead of this instance's clock (`now_ms`): such a
    /// decision would win over every later one until the clocks met, and its stamp would
    /// drag this instance's clock ahead. It is ignored, counted once and logged once per peer.
    fn learn(&mut self, peer: &ChitchatId, node: &Node, decision: super::Decision, now_ms: u64) {
        if let Some(ahead) = merge::too_far_ahead(decision.stamp, now_ms, self.max_clock_skew) {
            let name = peer.node_id.to_string();
            let first_from_peer = !self.skewed.iter().any(|(n, _)| *n == name);
            if self.skewed.insert((name.clone(), decision.stamp)) {
                self.cluster.traffic.skewed.fetch_add(1, Ordering::Relaxed);
            }
            if first_from_peer {
                tracing::warn!(
                    member = %name,
                    service = %node.service,
                    node = %node.address,
                    ahead = %humantime::format_duration(Duration::from_millis(ahead)),
                    "cluster member's decision is stamped ahead of this instance's clock by more than max_clock_skew: ignored (fix the clock of one of them)"
                );
            }
            return;
        }
        self.skewed.retain(|(n, _)| **n != *peer.node_id);
        self.cluster.witness(decision.stamp);
        let applied = decision.clone();
        if node.peers.adopt(decision, merge::later) {
            node.apply(&applied, &format!("{} (another instance)", applied.by));
        }
    }

    fn bad_value(&self, peer: &ChitchatId, why: &str) {
        if self.bad_value_log.allow() {
            tracing::warn!(member = %peer.node_id, "cluster member published a value this version cannot read: {why}");
        }
    }

    /// The member list from the failure detector's view; logs what changed.
    async fn members(&mut self) -> Vec<Member> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let live: HashSet<ChitchatId> = guard.live_nodes().cloned().collect();
        let mine = self
            .published
            .get(keys::FINGERPRINT)
            .cloned()
            .unwrap_or_default();
        let my_nodes = keys::published_nodes(self.published.keys().map(String::as_str));
        // What a drifted member differs in, from the nodes it publishes verdicts for.
        let mut drifts: HashMap<ChitchatId, String> = HashMap::new();
        let all: Vec<members::Entry> = guard
            .live_nodes()
            .chain(guard.dead_nodes())
            .map(|id| {
                let state = guard.node_state(id);
                let fp = state
                    .and_then(|s| s.get(keys::FINGERPRINT))
                    .unwrap_or_default()
                    .to_owned();
                if let Some(state) = state.filter(|_| !fp.is_empty() && fp != mine) {
                    let theirs = keys::published_nodes(state.key_values().map(|(k, _)| k));
                    drifts.insert(id.clone(), keys::differs(&my_nodes, &theirs));
                }
                (id.clone(), live.contains(id), fp)
            })
            .collect();
        drop(guard);
        let traffic = &self.cluster.traffic;
        self.roster.update(
            &me,
            all,
            &mine,
            |addr| traffic.offset(addr),
            |id| drifts.remove(id),
        )
    }
}

/// This instance's verdict about `node`.
fn verdict(node: &Node) -> Verdict {
    let up = node.is_up();
    Verdict {
        up,
        since_ms: epoch_ms(node.since()),
        reason: if up {
            String::new()
        } else {
            node.last_check().map(|c| c.reason).unwrap_or_default()
        },
    }
}
