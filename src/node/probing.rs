//! Whether this instance probes a node, in a cluster that shares probing (`[cluster]
//! probe_owners`): the node's owners probe it; the others follow the owners' verdicts, until
//! their own clients fail on the node (their own results take it down while the owners call it
//! up), when they probe it themselves and their own results decide until it is up again.
//! Outside a cluster, and until the owners have published a verdict, every instance probes.
//! The cluster task assigns the role; the probe loop and the health state read it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// How this instance knows a node's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It probes the node (an owner, alone, or no owner's verdict heard yet).
    Probe,
    /// It takes the owners' verdicts and does not probe.
    Follow,
    /// A follower whose own results took the node down: it probes, and its results decide.
    SelfCheck,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Follow,
            2 => Role::SelfCheck,
            _ => Role::Probe,
        }
    }

    /// The name shown in `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Probe => "probes",
            Role::Follow => "follows owners",
            Role::SelfCheck => "probes (own clients failed)",
        }
    }
}

/// A node's probing role and owners, as the cluster task last assigned them.
#[derive(Debug, Default)]
pub struct Probing {
    role: AtomicU8,
    /// The instances that probe the node, best first (empty outside a cluster).
    owners: Mutex<Vec<String>>,
}

impl Probing {
    /// The role now.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Relaxed))
    }

    /// Whether this instance's probe loop probes the node on schedule.
    pub fn probes_here(&self) -> bool {
        self.role() != Role::Follow
    }

    /// The node's owners.
    pub fn owners(&self) -> Vec<String> {
        self.owners.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Assigns the role from the cluster's view: `owned` (this instance is an owner, or the
    /// only live member) and `heard` (an owner's verdict is known). A follower checking the
    /// node itself stays so until its own result brings the node up. Returns whether this
    /// instance now probes a node it did not (it takes over: probe at once).
    pub fn assign(&self, owners: Vec<String>, owned: bool, heard: bool) -> bool {
        if let Ok(mut o) = self.owners.lock() {
            if *o != owners {
                *o = owners;
            }
        }
        let want = if owned || !heard {
            Role::Probe
        } else {
            Role::Follow
        };
        let was = self.role();
        let next = match (was, want) {
            (Role::SelfCheck, Role::Follow) => Role::SelfCheck,
            (_, want) => want,
        };
        self.role.store(next as u8, Ordering::Relaxed);
        was == Role::Follow && next != Role::Follow
    }

    /// This instance's own result took the node down: a follower starts checking it itself.
    /// Returns whether it did.
    pub fn own_failure(&self) -> bool {
        self.role
            .compare_exchange(
                Role::Follow as u8,
                Role::SelfCheck as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// This instance's own result brought the node up: a self-checking follower follows again.
    pub fn own_recovery(&self) {
        let _ = self.role.compare_exchange(
            Role::SelfCheck as u8,
            Role::Follow as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Back to probing everything (gossip stopped).
    pub fn reset(&self) {
        self.role.store(Role::Probe as u8, Ordering::Relaxed);
        if let Ok(mut o) = self.owners.lock() {
            o.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> Vec<String> {
        vec!["lb1".to_owned(), "lb2".to_owned()]
    }

    #[test]
    fn a_follower_probes_only_after_its_own_failure_until_its_own_recovery() {
        let p = Probing::default();
        assert!(p.probes_here(), "alone, or before any verdict: probes");
        assert!(!p.assign(owners(), false, false), "no owner verdict yet");
        assert_eq!(p.role(), Role::Probe);
        p.assign(owners(), false, true);
        assert_eq!(p.role(), Role::Follow);
        assert!(p.own_failure());
        assert_eq!(p.role(), Role::SelfCheck);
        p.assign(owners(), false, true);
        assert_eq!(
            p.role(),
            Role::SelfCheck,
            "the owners do not end a self-check"
        );
        p.own_recovery();
        assert_eq!(p.role(), Role::Follow);
        assert!(p.own_failure(), "a new failure starts a new self-check");
    }

    #[test]
    fn becoming_an_owner_takes_over_at_once() {
        let p = Probing::default();
        p.assign(owners(), false, true);
        assert!(p.assign(owners(), true, true), "an owner died: probe now");
        assert_eq!(p.role(), Role::Probe);
        assert!(!p.own_failure(), "an owner's failure is no self-check");
        assert_eq!(p.owners(), owners());
        p.reset();
        assert!(p.owners().is_empty() && p.probes_here());
    }
}
