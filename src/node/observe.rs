//! How results change a node's health: [`Node::observe`] runs one result through the state
//! machine (lock-free, exactly one caller sees each change), and [`Node::adopt`] takes a
//! verdict of the node's probing owners as it is.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::{epoch_ms, Check, Health, Node, Observation, Source, Transition};

impl Node {
    /// Records one result about the node; returns the state change it caused (exactly one
    /// caller sees each change) and how long the previous state lasted. A passing result from
    /// a client is not kept as the last check: it is the common case on the hot path, and
    /// costs only an atomic load here.
    pub fn observe(
        &self,
        source: Source,
        seen: Observation,
        reason: &dyn fmt::Display,
    ) -> Option<(Transition, Duration)> {
        let passed = matches!(seen, Observation::Accepted | Observation::Answered);
        if passed {
            self.peers.succeeded(epoch_ms(SystemTime::now()));
        }
        if !(passed && source == Source::Client) {
            self.record(passed, reason);
        }
        // A suspect node's own failure confirms the peer's report: down at once.
        let fall = if self.is_suspect() {
            1
        } else {
            self.fall.load(Ordering::Relaxed)
        };
        let rise = self.rise.load(Ordering::Relaxed);
        self.step(|health| health.observe(seen, rise, fall))
    }

    /// Takes an owner's verdict: the node is set up or down at once (no `rise` or `fall`: the
    /// owners counted already), recorded as the last check. Returns the change and how long
    /// the previous state lasted, or `None` if the node was already so.
    pub fn adopt(&self, up: bool, reason: &dyn fmt::Display) -> Option<(Transition, Duration)> {
        let (target, change) = if up {
            (Health::up(), Transition::Up)
        } else {
            (Health::down(false), Transition::Down)
        };
        let changed = self.step(|health| {
            if health.up == up {
                (health, None)
            } else {
                (target, Some(change))
            }
        })?;
        self.record(up, reason);
        Some(changed)
    }

    /// Moves the health by `next` (compare-and-swap, again until it holds, so concurrent
    /// results never lose an update); on a change of state counts it, starts slow start on
    /// the way up, and returns it with how long the previous state lasted. Exactly one caller
    /// sees each change.
    fn step(
        &self,
        next: impl Fn(Health) -> (Health, Option<Transition>),
    ) -> Option<(Transition, Duration)> {
        let mut current = self.health.load(Ordering::Acquire);
        let transition = loop {
            let (health, transition) = next(Health::unpack(current));
            let packed = health.pack();
            if packed == current {
                return None;
            }
            match self.health.compare_exchange_weak(
                current,
                packed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break transition?,
                Err(actual) => current = actual,
            }
        };
        match transition {
            Transition::Down => self.stats.went_down.fetch_add(1, Ordering::Relaxed),
            Transition::Up => {
                self.ramp.start();
                self.stats.went_up.fetch_add(1, Ordering::Relaxed)
            }
        };
        Some((transition, self.mark_change()))
    }

    fn record(&self, passed: bool, reason: &dyn fmt::Display) {
        if let Ok(mut last) = self.last_check.lock() {
            *last = Some(Check {
                passed,
                reason: reason.to_string(),
                at: SystemTime::now(),
            });
        }
    }
}
