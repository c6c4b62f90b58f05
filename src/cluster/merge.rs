//! The cluster's merge rules, pure and in one place: how peers' reports about a node combine
//! with this instance's own knowledge. No I/O, no clock: times come in as arguments.
//!
//! - **Suspect.** A node this instance has up is suspect when a live peer reports it down and
//!   that report arrived here after this instance's last success with the node. Arrival is
//!   judged on this instance's clock, so the rule needs no clock agreement between machines.
//!   A suspect node is picked only when no up, unsuspected node can take the client, and is
//!   probed at once; its next result decides (a failure takes it down at once, a success is
//!   newer than the report and so clears it until the peer's verdict changes).
//! - **Shared probing.** A node's owners (see `owners`) probe it and judge it by the rule
//!   above. An instance that follows them takes their verdict: down when every owner heard
//!   reports it down, up when one reports it up; only an owner's down report makes the node
//!   suspect there (a follower's own probe then decides, as above).
//! - **Load.** A node's cluster-wide load is this instance's count plus the last counts of the
//!   live peers; a dead peer's count is not in the sum.
//! - **Drain.** Decisions are ordered by hybrid logical timestamp, then by instance name: the
//!   later one wins everywhere, whatever order they arrive in.

use std::time::Duration;

use crate::node::Decision;

/// Bits of the hybrid logical timestamp below the milliseconds: a counter for events within
/// one millisecond.
const COUNTER_BITS: u32 = 16;

/// The next local timestamp after `last` at wall time `now_ms`: never below the wall clock,
/// always above every timestamp seen before.
pub fn stamp(last: u64, now_ms: u64) -> u64 {
    (now_ms << COUNTER_BITS).max(last.saturating_add(1))
}

/// The clock after seeing `remote`: above it, so a decision taken here after learning of
/// another is ordered after it even if this machine's clock is behind.
pub fn witness(last: u64, remote: u64) -> u64 {
    last.max(remote)
}

/// The wall time of a timestamp, ms since the epoch.
pub fn stamp_ms(stamp: u64) -> u64 {
    stamp >> COUNTER_BITS
}

/// How far `stamp` is ahead of `now_ms`, when that is more than `max_skew`: a decision so
/// stamped is not to be trusted (it would win over every later one until the clocks met).
pub fn too_far_ahead(stamp: u64, now_ms: u64, max_skew: Duration) -> Option<u64> {
    let ahead = stamp_ms(stamp).saturating_sub(now_ms);
    (u128::from(ahead) > max_skew.as_millis()).then_some(ahead)
}

/// Whether decision `a` is later than `b`: by timestamp, then by instance name so that two
/// decisions with one timestamp resolve the same way on every instance.
pub fn later(a: &Decision, b: &Decision) -> bool {
    a.later_than(b)
}

/// One live peer's verdict about a node, as this instance judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The peer has the node up.
    pub up: bool,
    /// When this verdict first arrived here, ms since the epoch on this instance's clock.
    pub arrived_ms: u64,
    /// The peer's active connections to the node.
    pub active: u32,
    /// The peer is one of the node's probing owners.
    pub owner: bool,
}

/// What the peers' reports mean for a node here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// Not picked while an up, unsuspected node can take the client; probed at once.
    pub suspect: bool,
    /// The live peers' summed active connections.
    pub load: u32,
    /// For a follower: the owners' verdict to take (up or down), when an owner was heard.
    pub follow: Option<bool>,
}

/// Applies the rules to one node: `up_here` is this instance's own health verdict,
/// `last_success_ms` its last passing result (0 for none), `heard` the live peers' reports,
/// `follower` whether this instance follows the node's owners instead of probing it.
pub fn judge(up_here: bool, last_success_ms: u64, heard: &[Heard], follower: bool) -> Judgement {
    let mut owners = heard.iter().filter(|h| h.owner).peekable();
    let follow = match owners.peek() {
        Some(_) if follower => Some(owners.any(|h| h.up)),
        _ => None,
    };
    // A follower told down by every owner goes down with them: nothing to probe.
    let counts = |h: &&Heard| !follower || h.owner;
    let suspect = up_here
        && follow != Some(false)
        && heard
            .iter()
            .filter(counts)
            .any(|h| !h.up && h.arrived_ms > last_success_ms);
    let load = heard
        .iter()
        .fold(0u32, |sum, h| sum.saturating_add(h.active));
    Judgement {
        suspect,
        load,
        follow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(up: bool, arrived_ms: u64, active: u32) -> Heard {
        Heard {
            up,
            arrived_ms,
            active,
            owner: false,
        }
    }

    fn owner(up: bool, arrived_ms: u64) -> Heard {
        Heard {
            owner: true,
            ..heard(up, arrived_ms, 0)
        }
    }

    fn decision(drained: bool, stamp: u64, by: &str) -> Decision {
        Decision {
            drained,
            weight: None,
            stamp,
            by: by.to_owned(),
        }
    }

    #[test]
    fn a_down_report_newer_than_the_last_success_makes_the_node_suspect() {
        let j = judge(
            true,
            1_000,
            &[heard(true, 500, 0), heard(false, 1_500, 0)],
            false,
        );
        assert!(j.suspect);
    }

    #[test]
    fn a_success_after_the_report_clears_it_until_the_verdict_changes() {
        assert!(!judge(true, 2_000, &[heard(false, 1_500, 0)], false).suspect);
        // The peer's verdict changed (down again, later): suspect again.
        assert!(judge(true, 2_000, &[heard(false, 2_500, 0)], false).suspect);
    }

    #[test]
    fn a_node_down_here_is_not_suspect_and_up_reports_never_make_one() {
        assert!(!judge(false, 0, &[heard(false, 1_500, 0)], false).suspect);
        assert!(!judge(true, 0, &[heard(true, 1_500, 0)], false).suspect);
        assert!(!judge(true, 0, &[], false).suspect);
    }

    #[test]
    fn a_follower_takes_the_owners_verdict_and_only_their_reports_make_it_suspect() {
        // Every owner heard says down: down. One says up: up.
        let all_down = judge(true, 0, &[owner(false, 10), owner(false, 20)], true);
        assert_eq!((all_down.follow, all_down.suspect), (Some(false), false));
        let one_up = judge(true, 0, &[owner(false, 10), owner(true, 20)], true);
        assert_eq!(one_up.follow, Some(true));
        assert!(one_up.suspect, "the owners disagree: its own probe decides");
        // A follower's down report (another follower) neither moves nor suspects it.
        let j = judge(true, 0, &[owner(true, 10), heard(false, 30, 4)], true);
        assert_eq!((j.follow, j.suspect, j.load), (Some(true), false, 4));
        // No owner heard: nothing to follow (it probes itself).
        assert_eq!(judge(true, 0, &[heard(false, 30, 0)], true).follow, None);
        // An owner follows no one, and every peer's report counts for it.
        let j = judge(true, 0, &[owner(false, 10), heard(false, 30, 0)], false);
        assert_eq!((j.follow, j.suspect), (None, true));
    }

    #[test]
    fn load_is_the_sum_of_the_live_peers_counts() {
        let j = judge(true, 0, &[heard(true, 1, 10), heard(false, 1, 3)], false);
        assert_eq!(j.load, 13);
        assert_eq!(
            judge(
                true,
                0,
                &[heard(true, 1, u32::MAX), heard(true, 1, 5)],
                false
            )
            .load,
            u32::MAX
        );
    }

    #[test]
    fn the_later_decision_wins_whatever_the_order() {
        let (a, b) = (decision(true, 10, "lb1"), decision(false, 11, "lb2"));
        assert!(later(&b, &a) && !later(&a, &b));
        let (c, d) = (decision(true, 10, "lb1"), decision(false, 10, "lb2"));
        assert!(
            later(&d, &c) && !later(&c, &d),
            "ties go to the larger name"
        );
        assert!(!later(&a, &a), "a decision is not later than itself");
    }

    #[test]
    fn a_stamp_beyond_the_skew_is_not_trusted() {
        let now = 1_800_000_000_000;
        let five = Duration::from_secs(5);
        assert_eq!(too_far_ahead(stamp(0, now + 5_000), now, five), None);
        assert_eq!(too_far_ahead(stamp(0, now - 60_000), now, five), None);
        assert_eq!(
            too_far_ahead(stamp(0, now + 3_600_000), now, five),
            Some(3_600_000)
        );
    }

    #[test]
    fn stamps_grow_and_stay_above_what_was_seen() {
        let s1 = stamp(0, 1_000);
        assert_eq!(stamp_ms(s1), 1_000);
        let s2 = stamp(s1, 1_000);
        assert!(s2 > s1, "same millisecond: the counter moves");
        let s3 = stamp(s2, 900);
        assert!(s3 > s2, "a clock that steps back does not reorder");
        let remote = stamp(0, 5_000);
        let after = stamp(witness(s3, remote), 1_001);
        assert!(
            after > remote,
            "a decision after learning of another is later than it"
        );
    }
}
