//! Who gets an admin connection: the regular slots, of which one source address may hold only
//! a share, and beyond them a small probe lane, so that `/live` and `/ready` still answer while
//! other clients (or one abusive one) hold every regular slot.
//!
//! A connection over the regular cap or its source's share goes to the lane: it is served one
//! request with short deadlines ([`super::serve`]), answered only for `/live` and `/ready`
//! (anything else gets 503), and closed, so a lane slot turns over within milliseconds for a
//! client that asks at once, and within about a second and a quarter at worst. When the lane
//! is full, a connection may wait a moment for a lane slot in a small waiting room (a burst of
//! abusive connections accepted just before a probe cannot shut it out); past the waiting
//! room it is closed at once and counted. Every part comes out of the admin descriptor budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How an admin connection is to be served.
pub enum Admit {
    /// Every endpoint, with keep-alive.
    Regular(Slot),
    /// `/live` and `/ready` only, one request.
    Lane(OwnedSemaphorePermit),
    /// The lane is full: wait a moment for a lane slot ([`Waiting::lane`]).
    Wait(Waiting),
    /// Not at all: closed at once.
    Refused,
}

/// The admin endpoint's connection slots.
pub struct Slots {
    regular: u32,
    per_source: u32,
    taken: Mutex<Taken>,
    lane: Arc<Semaphore>,
    lane_size: u32,
    room: u32,
    waiting: AtomicU32,
}

/// Regular slots in use, in all and per source.
#[derive(Default)]
struct Taken {
    regular: u32,
    by_source: HashMap<IpAddr, u32>,
}

impl Slots {
    /// Slots for `max_connections` admin connections in all: a quarter (at least one) for the
    /// lane, half as many again for its waiting room, the rest regular, of which one source
    /// may hold a quarter (at least one).
    pub fn new(max_connections: u32) -> Arc<Slots> {
        let total = max_connections.max(2);
        let lane = (total / 4).max(1);
        let room = lane / 2;
        let regular = (total - lane - room).max(1);
        Arc::new(Slots {
            regular,
            per_source: (regular / 4).max(1),
            taken: Mutex::new(Taken::default()),
            lane: Arc::new(Semaphore::new(lane as usize)),
            lane_size: lane,
            room,
            waiting: AtomicU32::new(0),
        })
    }

    /// Regular slots, one source's share, the lane's and its waiting room's, for the log.
    pub fn sizes(&self) -> (u32, u32, u32, u32) {
        (self.regular, self.per_source, self.lane_size, self.room)
    }

    /// A slot for a connection from `source`: regular while one is free and the source is
    /// under its share, else on the lane while it has room, else a place in its waiting room,
    /// else none.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Admit {
        {
            let mut taken = self.lock();
            let from_source = taken.by_source.get(&source).copied().unwrap_or(0);
            if taken.regular < self.regular && from_source < self.per_source {
                taken.regular += 1;
                *taken.by_source.entry(source).or_insert(0) += 1;
                return Admit::Regular(Slot {
                    slots: Arc::clone(self),
                    source,
                });
            }
        }
        if let Ok(permit) = Arc::clone(&self.lane).try_acquire_owned() {
            return Admit::Lane(permit);
        }
        let took = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.room).then_some(w + 1)
            });
        match took {
            Ok(_) => Admit::Wait(Waiting {
                slots: Arc::clone(self),
            }),
            Err(_) => Admit::Refused,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        // The counts stay consistent whatever panicked while holding them.
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A regular slot held by one admin connection, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        taken.regular -= 1;
        if let Some(n) = taken.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                taken.by_source.remove(&self.source);
            }
        }
    }
}

/// A place in the lane's waiting room, given back when dropped.
pub struct Waiting {
    slots: Arc<Slots>,
}

impl Waiting {
    /// A lane slot, once one frees (the caller bounds the wait).
    pub async fn lane(self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots.lane).acquire_owned().await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn one_source_takes_its_share_then_the_lane_then_the_waiting_room() {
        let slots = Slots::new(32);
        assert_eq!(slots.sizes(), (20, 5, 8, 4));
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(slots.admit(ip(1)));
            assert!(matches!(held.last(), Some(Admit::Regular(_))));
        }
        for _ in 0..8 {
            held.push(slots.admit(ip(1)));
            assert!(matches!(held.last(), Some(Admit::Lane(_))));
        }
        for _ in 0..4 {
            held.push(slots.admit(ip(1)));
            assert!(matches!(held.last(), Some(Admit::Wait(_))));
        }
        assert!(matches!(slots.admit(ip(1)), Admit::Refused));
        // Another source still has regular slots.
        assert!(matches!(slots.admit(ip(2)), Admit::Regular(_)));
        // A waiter gets the lane slot the first lane connection gives back.
        let Some(Admit::Wait(waiter)) = held.pop() else {
            panic!("a waiter")
        };
        held.remove(5);
        let lane = waiter.lane().await;
        assert!(lane.is_some());
        // Its place in the waiting room is free again; the lane is full again.
        assert!(matches!(slots.admit(ip(1)), Admit::Wait(_)));
    }

    #[test]
    fn regular_slots_given_back_are_counted_back_per_source() {
        let slots = Slots::new(2);
        assert_eq!(slots.sizes(), (1, 1, 1, 0));
        let first = slots.admit(ip(1));
        assert!(matches!(first, Admit::Regular(_)));
        assert!(matches!(slots.admit(ip(2)), Admit::Lane(_)));
        drop(first);
        assert!(matches!(slots.admit(ip(2)), Admit::Regular(_)));
        assert!(!slots.lock().by_source.contains_key(&ip(1)));
    }
}
