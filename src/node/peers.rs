//! What the other instances of a cluster say about one node, as the node holds it: plain
//! atomics for the pick (their summed load, whether the node is suspect), and, behind a lock
//! that only `/status`, the cluster task and the admin endpoint take, each peer's report and
//! the latest operator decision. The rules that fill these in live in `cluster::merge`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// One live peer's report about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer instance's name.
    pub peer: String,
    /// Its health verdict.
    pub verdict: Verdict,
    /// Its connections open to the node.
    pub active: u32,
}

/// A health verdict as published: up or down, since when, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the instance has the node up.
    pub up: bool,
    /// When the node entered that state, in ms since the epoch (the publisher's clock).
    pub since_ms: u64,
    /// The last result's reason, e.g. "connect: connection refused".
    pub reason: String,
}

/// An operator's drain or enable, with the hybrid logical timestamp that orders it
/// cluster-wide and the instance that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Drained (true) or enabled (false).
    pub drained: bool,
    /// The runtime weight set with it (`None`: the file's).
    pub weight: Option<u32>,
    /// Hybrid logical timestamp: ms since the epoch in the high 48 bits, a counter below.
    pub stamp: u64,
    /// The instance whose admin endpoint took it.
    pub by: String,
}

impl Decision {
    /// Whether this decision is later than `other`: by timestamp, then by instance name, so
    /// that two decisions with one timestamp resolve the same way on every instance.
    pub fn later_than(&self, other: &Decision) -> bool {
        (self.stamp, &self.by) > (other.stamp, &other.by)
    }
}

/// The cluster's view of one node, as stored on it.
#[derive(Debug, Default)]
pub struct PeerView {
    /// Sum of live peers' published active counts.
    load: AtomicU32,
    /// A live peer reports the node down more recently than this instance's last success.
    suspect: AtomicBool,
    /// Live peers reporting the node down.
    down: AtomicU32,
    /// This instance's last passing result, ms since the epoch (0: none yet).
    last_success_ms: AtomicU64,
    /// Woken when the node turns suspect, or this instance takes over probing it: its probe
    /// loop probes at once.
    pub probe_now: Notify,
    /// Whether this instance probes the node or follows its owners' verdicts.
    pub probing: super::probing::Probing,
    /// Each live peer's report, for `/status`.
    reports: Mutex<Vec<PeerReport>>,
    /// The latest operator decision known, taken here or learned from a peer.
    decision: Mutex<Option<Decision>>,
}

impl PeerView {
    /// Live peers' active connections to the node.
    pub fn load(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }

    /// Whether the node is suspect (see `cluster::merge`).
    pub fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }

    /// How many live peers report the node down.
    pub fn down_reports(&self) -> u32 {
        self.down.load(Ordering::Relaxed)
    }

    /// This instance's last passing result, in ms since the epoch (0 for none).
    pub fn last_success_ms(&self) -> u64 {
        self.last_success_ms.load(Ordering::Relaxed)
    }

    /// Records a passing result at `now_ms`, and clears a suspicion: this instance's own
    /// result is newer than the report. On the hot path this is two loads, and a store at
    /// most once per millisecond (clocks only move forward here; a rare lost race leaves a
    /// time a millisecond old, which only costs one more probe).
    pub fn succeeded(&self, now_ms: u64) {
        if now_ms > self.last_success_ms.load(Ordering::Relaxed) {
            self.last_success_ms.store(now_ms, Ordering::Relaxed);
        }
        if self.suspect.load(Ordering::Relaxed) {
            self.suspect.store(false, Ordering::Relaxed);
        }
    }

    /// Stores what the peers say; wakes the probe loop when the node newly turns suspect, and
    /// then returns true.
    pub fn update(&self, reports: Vec<PeerReport>, load: u32, suspect: bool) -> bool {
        let down = reports.iter().filter(|r| !r.verdict.up).count();
        self.load.store(load, Ordering::Relaxed);
        self.down
            .store(u32::try_from(down).unwrap_or(u32::MAX), Ordering::Relaxed);
        let newly = !self.suspect.swap(suspect, Ordering::Relaxed) && suspect;
        if newly {
            self.probe_now.notify_one();
        }
        if let Ok(mut r) = self.reports.lock() {
            *r = reports;
        }
        newly
    }

    /// Each live peer's report.
    pub fn reports(&self) -> Vec<PeerReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The latest operator decision known.
    pub fn decision(&self) -> Option<Decision> {
        self.decision.lock().ok().and_then(|d| d.clone())
    }

    /// Keeps `decision` if it is later than the one known (or none is); returns whether it was.
    pub fn adopt(&self, decision: Decision, later: impl Fn(&Decision, &Decision) -> bool) -> bool {
        let Ok(mut current) = self.decision.lock() else {
            return false;
        };
        if current.as_ref().is_some_and(|c| !later(&decision, c)) {
            return false;
        }
        *current = Some(decision);
        true
    }
}
