//! The member list shown in `/status` and the lines logged about members: joins, deaths,
//! drift, two live members with one name, and a cluster in which no peer is heard.
//!
//! chitchat lists one entry per process run (name, generation, address). Which entries are
//! shown ([`select`]): this instance always; for each other name, its live entries (the
//! newest one per address: a restart at the same address is one member), or its newest
//! entry when none is alive. A generation is the start time on the member's clock, so a
//! member restarted with a clock set back still shows alive, whatever an older run claimed.
//! Two live entries of one name at two addresses are two instances given one name: both
//! are shown, marked `duplicate`, and an error is logged on each instance once it has lasted
//! [`DUPLICATE_GRACE`] (a member restarted at a new address overlaps its old run for a
//! failure detector's window, which is not a duplicate).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use chitchat::ChitchatId;

use super::Member;

/// How long two live members with one name must last before it is logged as an error.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(3);
/// How long an instance with seed peers may hear no peer before it warns.
pub const LONELY_AFTER: Duration = Duration::from_secs(30);

/// One chitchat entry: its id, whether the failure detector has it alive, its fingerprint.
pub type Entry = (ChitchatId, bool, String);

/// The entries to show, this instance's first, each with whether it shares its name with
/// another live entry at another address.
pub fn select(me: &ChitchatId, mut entries: Vec<Entry>) -> Vec<(Entry, bool)> {
    entries
        .sort_by(|a, b| (&a.0.node_id, b.0.generation_id).cmp(&(&b.0.node_id, a.0.generation_id)));
    let mut shown: Vec<Entry> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let name = entries[i].0.node_id.clone();
        let group: Vec<&Entry> = entries[i..]
            .iter()
            .take_while(|e| e.0.node_id == name)
            .collect();
        i += group.len();
        let mut addresses: Vec<SocketAddr> = Vec::new();
        for entry in &group {
            let this = entry.0 == *me;
            let other_run_of_me = name == me.node_id && !this;
            // Newest first: the first live entry per address stands for that address.
            let live_elsewhere = entry.1 && !addresses.contains(&entry.0.gossip_advertise_addr);
            if this
                || (live_elsewhere
                    && !(other_run_of_me
                        && entry.0.gossip_advertise_addr == me.gossip_advertise_addr))
            {
                addresses.push(entry.0.gossip_advertise_addr);
                shown.push((*entry).clone());
            }
        }
        if addresses.is_empty() {
            if let Some(newest) = group.first() {
                shown.push((*newest).clone());
            }
        }
    }
    let live_per_name = |name: &str| {
        shown
            .iter()
            .filter(|e| e.1 && &*e.0.node_id == name)
            .count()
    };
    let mut out: Vec<(Entry, bool)> = shown
        .iter()
        .map(|e| (e.clone(), e.1 && live_per_name(&e.0.node_id) > 1))
        .collect();
    out.sort_by_key(|(e, _)| (e.0 != *me, e.0.node_id.clone(), e.0.gossip_advertise_addr));
    out
}

/// What the roster last knew of a member name.
struct Seen {
    alive: bool,
    /// Ever seen alive: a member first seen dead (before its second heartbeat) has not joined.
    joined: bool,
    /// The difference seen in the last round, if it drifts.
    drift: Option<String>,
    /// Whether its drift was logged (and not yet its end).
    drift_logged: bool,
    last_seen: SystemTime,
}

/// The roster: what was last known of each name, for logging changes once.
pub struct Roster {
    known: HashMap<String, Seen>,
    /// Names with two live members at two addresses, since when, and whether it was logged.
    duplicates: HashMap<String, (Instant, bool)>,
    /// Since when no peer has been alive, and whether that was logged.
    lonely: (Instant, bool),
    /// Whether seed peers were configured (an instance with none waits for others to join).
    has_seeds: bool,
    /// `[cluster] max_clock_skew`, in ms: a member whose clock is further off is logged.
    max_skew_ms: i64,
    /// Members whose clock was logged as off, until it is back within the bound.
    skewed: HashSet<String>,
}

impl Roster {
    /// A roster for an instance with (or without) seed peers, allowing `max_clock_skew`.
    pub fn new(has_seeds: bool, max_clock_skew: Duration) -> Roster {
        Roster {
            known: HashMap::new(),
            duplicates: HashMap::new(),
            lonely: (Instant::now(), false),
            has_seeds,
            max_skew_ms: i64::try_from(max_clock_skew.as_millis()).unwrap_or(i64::MAX),
            skewed: HashSet::new(),
        }
    }

    /// The members to show, from chitchat's `entries`; `mine` is this instance's fingerprint
    /// and `offset` tells a member's clock offset from its address. Logs what changed.
    pub fn update(
        &mut self,
        me: &ChitchatId,
        entries: Vec<Entry>,
        mine: &str,
        offset: impl Fn(SocketAddr) -> Option<i64>,
        mut differs: impl FnMut(&ChitchatId) -> Option<String>,
    ) -> Vec<Member> {
        let now = SystemTime::now();
        let selected = select(me, entries);
        let mut members = Vec::with_capacity(selected.len());
        for ((id, alive, fingerprint), duplicate) in selected {
            let this = id == *me;
            let name = id.node_id.to_string();
            let drift = !this && !fingerprint.is_empty() && fingerprint != mine;
            let drift_detail = if drift { differs(&id) } else { None };
            if !this && !duplicate {
                self.log_change(&name, &id, alive);
                let seen = self.known.entry(name.clone()).or_insert(Seen {
                    alive,
                    joined: false,
                    drift: None,
                    drift_logged: false,
                    last_seen: now,
                });
                seen.alive = alive;
                seen.joined |= alive;
                log_drift(seen, &name, drift_detail.as_deref());
                if alive {
                    seen.last_seen = now;
                }
            }
            let last_seen = match self.known.get(&name) {
                Some(seen) if !this && !alive => seen.last_seen,
                _ => now,
            };
            members.push(Member {
                name,
                address: id.gossip_advertise_addr,
                alive,
                last_seen,
                fingerprint,
                drift,
                drift_detail,
                this,
                duplicate,
                clock_offset_ms: if this {
                    Some(0)
                } else {
                    offset(id.gossip_advertise_addr)
                },
            });
        }
        self.duplicates_and_solitude(&members);
        self.clocks(&members);
        members
    }

    /// Logs once a member whose clock is off by more than `max_clock_skew` (its datagrams are
    /// then too old here, or this instance's too old there), and once when it is back.
    fn clocks(&mut self, members: &[Member]) {
        for m in members.iter().filter(|m| !m.this && m.alive) {
            let Some(offset) = m.clock_offset_ms else {
                continue;
            };
            let off = offset.unsigned_abs();
            let way = if offset > 0 { "ahead of" } else { "behind" };
            if offset.abs() > self.max_skew_ms {
                if self.skewed.insert(m.name.clone()) {
                    tracing::warn!(
                        member = %m.name,
                        offset = %humantime::format_duration(Duration::from_millis(off)),
                        "cluster member's clock is {way} this instance's by more than max_clock_skew: the two drop each other's gossip as too old or ignore each other's decisions until one clock is fixed (NTP)"
                    );
                }
            } else if self.skewed.remove(&m.name) {
                tracing::info!(member = %m.name, "cluster member's clock is within max_clock_skew again");
            }
        }
    }

    /// Logs two live members with one name once it lasts, and a lone instance with seeds.
    fn duplicates_and_solitude(&mut self, members: &[Member]) {
        let at = Instant::now();
        let mut named: HashMap<&str, Vec<&Member>> = HashMap::new();
        for m in members.iter().filter(|m| m.duplicate) {
            named.entry(m.name.as_str()).or_default().push(m);
        }
        self.duplicates
            .retain(|name, _| named.contains_key(name.as_str()));
        for (name, list) in named {
            let (since, logged) = self
                .duplicates
                .entry(name.to_owned())
                .or_insert((at, false));
            if !*logged && at.duration_since(*since) >= DUPLICATE_GRACE {
                *logged = true;
                let addresses: Vec<String> = list.iter().map(|m| m.address.to_string()).collect();
                tracing::error!(
                    member = %name,
                    addresses = %addresses.join(", "),
                    "two live cluster members share one name: give each instance a name of its own ([cluster] name); their facts are mixed up until then"
                );
            }
        }
        if members.iter().any(|m| m.alive && !m.this) {
            if self.lonely.1 {
                tracing::info!("a cluster peer is heard again");
            }
            self.lonely = (at, false);
        } else if self.has_seeds
            && !self.lonely.1
            && at.duration_since(self.lonely.0) >= LONELY_AFTER
        {
            self.lonely.1 = true;
            tracing::warn!(
                "no cluster peer heard from for {}s: check that the [cluster] peers are reachable over UDP and share this instance's secret; serving alone meanwhile",
                LONELY_AFTER.as_secs()
            );
        }
    }

    /// Logs a member joining, dying or coming back, once per change.
    fn log_change(&self, name: &str, id: &ChitchatId, alive: bool) {
        let address = id.gossip_advertise_addr;
        match self.known.get(name) {
            None if alive => tracing::info!(member = name, %address, "cluster member joined"),
            Some(s) if !s.joined && alive => {
                tracing::info!(member = name, %address, "cluster member joined");
            }
            Some(s) if s.alive && !alive => tracing::warn!(
                member = name,
                %address,
                "cluster member dead: not heard from for about {} gossip intervals; its counts no longer count",
                super::PHI_THRESHOLD
            ),
            Some(s) if !s.alive && alive => {
                tracing::info!(member = name, %address, "cluster member alive again")
            }
            _ => {}
        }
    }
}

/// Logs a member's drift (what it differs in, `differs`) once it has been the same two rounds
/// running, and its end once: a member's fingerprint can reach this instance a round before
/// the node keys it describes, and the first difference seen may be only half of it.
fn log_drift(seen: &mut Seen, name: &str, differs: Option<&str>) {
    match differs {
        Some(differs) => {
            if !seen.drift_logged && seen.drift.as_deref() == Some(differs) {
                tracing::warn!(member = name, differs, "cluster member runs other services or nodes than this instance (configuration drift)");
                seen.drift_logged = true;
            }
            seen.drift = Some(differs.to_owned());
        }
        None => {
            if seen.drift_logged {
                tracing::info!(
                    member = name,
                    "cluster member's services and nodes match this instance's again"
                );
            }
            seen.drift = None;
            seen.drift_logged = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, generation: u64, port: u16) -> ChitchatId {
        ChitchatId::new(name.to_owned(), generation, ([127, 0, 0, 1], port).into())
    }

    fn entry(name: &str, generation: u64, port: u16, alive: bool) -> Entry {
        (id(name, generation, port), alive, String::new())
    }

    fn shown(me: &ChitchatId, entries: Vec<Entry>) -> Vec<(String, u64, bool, bool)> {
        select(me, entries)
            .into_iter()
            .map(|((id, alive, _), dup)| (id.node_id.to_string(), id.generation_id, alive, dup))
            .collect()
    }

    #[test]
    fn a_member_restarted_with_its_clock_set_back_is_shown_alive() {
        let me = id("b", 10, 2);
        // "a" ran with a clock an hour ahead (generation 3_600_000), then restarted at 500.
        let got = shown(
            &me,
            vec![
                entry("b", 10, 2, true),
                entry("a", 3_600_000, 1, false),
                entry("a", 500, 3, true),
            ],
        );
        assert_eq!(
            got,
            [
                ("b".into(), 10, true, false),
                ("a".into(), 500, true, false)
            ]
        );
    }

    #[test]
    fn the_newest_dead_run_stands_for_a_member_with_none_alive() {
        let me = id("b", 10, 2);
        let got = shown(
            &me,
            vec![
                entry("b", 10, 2, true),
                entry("a", 7, 1, false),
                entry("a", 9, 1, false),
            ],
        );
        assert_eq!(got[1], ("a".into(), 9, false, false));
    }

    #[test]
    fn a_restart_at_the_same_address_is_one_member() {
        let me = id("b", 10, 2);
        let got = shown(
            &me,
            vec![
                entry("b", 10, 2, true),
                entry("a", 7, 1, true),
                entry("a", 9, 1, true),
            ],
        );
        assert_eq!(got[1], ("a".into(), 9, true, false));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn two_live_instances_with_one_name_are_both_shown_as_duplicates() {
        // Seen from one of them: itself and the other, both marked.
        let me = id("a", 10, 1);
        let got = shown(&me, vec![entry("a", 10, 1, true), entry("a", 11, 2, true)]);
        assert_eq!(
            got,
            [("a".into(), 10, true, true), ("a".into(), 11, true, true)]
        );
        // Seen from a third: both, marked.
        let third = id("c", 5, 9);
        let got = shown(
            &third,
            vec![
                entry("c", 5, 9, true),
                entry("a", 10, 1, true),
                entry("a", 11, 2, true),
            ],
        );
        assert_eq!(got.iter().filter(|g| g.3).count(), 2);
        // This instance is always shown, even beside a newer run of its name elsewhere.
        let got = shown(&me, vec![entry("a", 10, 1, true), entry("a", 99, 2, false)]);
        assert_eq!(got, [("a".into(), 10, true, false)]);
    }
}
