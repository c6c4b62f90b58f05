//! Who gets an admin connection: the regular slots, of which one source address may hold only
//! a share, and beyond them a small probe lane, so that `/live` and `/ready` still answer while
//! other clients (or one abusive one) hold every regular slot.
//!
//! A connection over the regular cap or its source's share goes to the lane: it is served one
//! request with short deadlines ([`super::serve`]), answered only for `/live` and `/ready`
//! (anything else gets 503), and closed. Lane connections free their slot within about two
//! seconds, so a prober finds one free unless an attacker keeps reopening connections faster
//! than that from the prober's own address. Past the lane, a connection is closed at once and
//! counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// How an admin connection is to be served.
pub enum Admit {
    /// Every endpoint, with keep-alive.
    Regular(Slot),
    /// `/live` and `/ready` only, one request.
    Lane(Slot),
    /// Not at all: closed at once.
    Refused,
}

/// The admin endpoint's connection slots.
pub struct Slots {
    regular: u32,
    lane: u32,
    per_source: u32,
    taken: Mutex<Taken>,
}

/// Slots in use.
#[derive(Default)]
struct Taken {
    regular: u32,
    lane: u32,
    by_source: HashMap<IpAddr, u32>,
}

impl Slots {
    /// Slots for `max_connections` admin connections in all: a quarter (at least one) for the
    /// lane, the rest regular, of which one source may hold a quarter (at least one).
    pub fn new(max_connections: u32) -> Arc<Slots> {
        let total = max_connections.max(2);
        let lane = (total / 4).max(1);
        let regular = total - lane;
        Arc::new(Slots {
            regular,
            lane,
            per_source: (regular / 4).max(1),
            taken: Mutex::new(Taken::default()),
        })
    }

    /// Regular slots, the lane's, and one source's share, for the log.
    pub fn sizes(&self) -> (u32, u32, u32) {
        (self.regular, self.lane, self.per_source)
    }

    /// A slot for a connection from `source`: regular while one is free and the source is
    /// under its share, else on the lane while it has room, else none.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Admit {
        let mut taken = self.lock();
        let from_source = taken.by_source.get(&source).copied().unwrap_or(0);
        if taken.regular < self.regular && from_source < self.per_source {
            taken.regular += 1;
            *taken.by_source.entry(source).or_insert(0) += 1;
            return Admit::Regular(self.slot(Some(source)));
        }
        if taken.lane < self.lane {
            taken.lane += 1;
            return Admit::Lane(self.slot(None));
        }
        Admit::Refused
    }

    fn slot(self: &Arc<Self>, regular_from: Option<IpAddr>) -> Slot {
        Slot {
            slots: Arc::clone(self),
            regular_from,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        // The counts stay consistent whatever panicked while holding them.
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A slot held by one admin connection, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    /// The source, for a regular slot; `None` for the lane.
    regular_from: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        match self.regular_from {
            Some(source) => {
                taken.regular -= 1;
                if let Some(n) = taken.by_source.get_mut(&source) {
                    *n -= 1;
                    if *n == 0 {
                        taken.by_source.remove(&source);
                    }
                }
            }
            None => taken.lane -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_source_takes_its_share_then_the_lane_then_nothing() {
        let slots = Slots::new(32);
        assert_eq!(slots.sizes(), (24, 8, 6));
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(slots.admit(ip(1)));
            assert!(matches!(held.last(), Some(Admit::Regular(_))));
        }
        for _ in 0..8 {
            held.push(slots.admit(ip(1)));
            assert!(matches!(held.last(), Some(Admit::Lane(_))));
        }
        assert!(matches!(slots.admit(ip(1)), Admit::Refused));
        // Another source still has regular slots.
        assert!(matches!(slots.admit(ip(2)), Admit::Regular(_)));
        // A lane slot given back is free again.
        held.pop();
        assert!(matches!(slots.admit(ip(1)), Admit::Lane(_)));
    }

    #[test]
    fn regular_slots_given_back_are_counted_back_per_source() {
        let slots = Slots::new(2);
        assert_eq!(slots.sizes(), (1, 1, 1));
        let first = slots.admit(ip(1));
        assert!(matches!(first, Admit::Regular(_)));
        assert!(matches!(slots.admit(ip(2)), Admit::Lane(_)));
        drop(first);
        assert!(matches!(slots.admit(ip(2)), Admit::Regular(_)));
        assert!(!slots.lock().by_source.contains_key(&ip(1)));
    }
}
