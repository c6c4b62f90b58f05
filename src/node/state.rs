//! The health state machine of one node: a value, flipped by consecutive results. Pure; the
//! node stores it packed in one atomic.
//!
//! Results differ in what they prove. A completed connect (a client's, or a connect-only
//! probe's) proves the node listens, not that it answers: a crashed application behind a live
//! socket, or a server shedding load, accepts and then closes. So a node that failed that way
//! ([`Observation::Unanswered`]) is in *doubt*: a mere connect no longer clears its failures,
//! only an answer does (a byte to a client, a passing send/expect probe). A node marked down
//! while in doubt comes back after `rise` passing probes as usual, but on probation: its next
//! failure takes it down again at once.

/// One result about a node, by what it proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The node accepted a connection (a client's connect or a connect-only probe).
    Accepted,
    /// The node answered: it sent a byte to a client, or a send/expect probe passed.
    Answered,
    /// A connect or a probe failed.
    Failed,
    /// The node took a client and closed or reset before sending a byte, while the client was
    /// still sending ("dead on arrival").
    Unanswered,
}

impl Observation {
    fn passed(self) -> bool {
        matches!(self, Observation::Accepted | Observation::Answered)
    }
}

/// Health of one node, as a value: whether it is up, and the current run of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Whether the node takes new connections in the normal pick.
    pub up: bool,
    /// On probation (new, or back after failing to answer): one failure marks it down.
    pub probation: bool,
    /// The node took clients without answering: only an answer clears its failures.
    pub doubt: bool,
    /// Consecutive passing results while down.
    pub successes: u16,
    /// Consecutive failures while up.
    pub failures: u16,
}

/// A change of a node's state caused by one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The node was up and is now down.
    Down,
    /// The node was down and is now up.
    Up,
}

impl Health {
    /// The state of a node that has just been added: up, on probation.
    pub const NEW: Health = Health {
        up: true,
        probation: true,
        doubt: false,
        successes: 0,
        failures: 0,
    };

    /// The state after one more result, given the `rise` and `fall` thresholds.
    pub fn observe(self, seen: Observation, rise: u32, fall: u32) -> (Health, Option<Transition>) {
        let bump = |n: u16| n.saturating_add(1);
        let doubt = match seen {
            Observation::Answered => false,
            Observation::Unanswered => true,
            Observation::Accepted | Observation::Failed => self.doubt,
        };
        match (self.up, seen.passed()) {
            // A node in doubt is not cleared by a connect: only by an answer.
            (true, true) if doubt => (self, None),
            (true, true) => (Health::up(), None),
            (true, false) => {
                let failures = bump(self.failures);
                if self.probation || u32::from(failures) >= fall {
                    (Health::down(doubt), Some(Transition::Down))
                } else {
                    (
                        Health {
                            failures,
                            doubt,
                            ..self
                        },
                        None,
                    )
                }
            }
            (false, true) => {
                let successes = bump(self.successes);
                if u32::from(successes) >= rise {
                    let back = Health {
                        probation: doubt,
                        doubt,
                        ..Health::up()
                    };
                    (back, Some(Transition::Up))
                } else {
                    (
                        Health {
                            successes,
                            doubt,
                            ..self
                        },
                        None,
                    )
                }
            }
            (false, false) => (Health::down(doubt), None),
        }
    }

    pub(super) fn up() -> Health {
        Health {
            up: true,
            probation: false,
            doubt: false,
            successes: 0,
            failures: 0,
        }
    }

    pub(super) fn down(doubt: bool) -> Health {
        Health {
            up: false,
            probation: false,
            doubt,
            successes: 0,
            failures: 0,
        }
    }

    pub(super) fn pack(self) -> u64 {
        u64::from(self.up)
            | u64::from(self.probation) << 1
            | u64::from(self.doubt) << 2
            | u64::from(self.successes) << 16
            | u64::from(self.failures) << 32
    }

    pub(super) fn unpack(bits: u64) -> Health {
        Health {
            up: bits & 1 != 0,
            probation: bits & 2 != 0,
            doubt: bits & 4 != 0,
            successes: (bits >> 16) as u16,
            failures: (bits >> 32) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Observation::{Accepted, Answered, Failed, Unanswered};
    use super::*;

    fn run(
        start: Health,
        results: &[Observation],
        rise: u32,
        fall: u32,
    ) -> (Health, Vec<Transition>) {
        let mut h = start;
        let mut seen = Vec::new();
        for &r in results {
            let (next, t) = h.observe(r, rise, fall);
            h = next;
            seen.extend(t);
        }
        (h, seen)
    }

    #[test]
    fn new_node_goes_down_on_first_failure() {
        let (h, t) = run(Health::NEW, &[Failed], 2, 3);
        assert!(!h.up);
        assert_eq!(t, [Transition::Down]);
    }

    #[test]
    fn first_pass_ends_probation() {
        let (h, t) = run(Health::NEW, &[Accepted, Failed, Failed], 2, 3);
        assert!(h.up && !h.probation);
        assert!(t.is_empty());
        let (h, t) = run(h, &[Failed], 2, 3);
        assert!(!h.up);
        assert_eq!(t, [Transition::Down]);
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let up = Health::up();
        let (h, t) = run(up, &[Failed, Failed, Accepted, Failed, Failed], 2, 3);
        assert!(h.up, "a success in between resets the count");
        assert!(t.is_empty());
    }

    #[test]
    fn rise_needs_consecutive_passes() {
        let (h, t) = run(Health::down(false), &[Accepted, Failed, Accepted], 2, 3);
        assert!(!h.up);
        assert!(t.is_empty());
        let (h, t) = run(h, &[Accepted], 2, 3);
        assert!(h.up && !h.probation);
        assert_eq!(t, [Transition::Up]);
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let (h, t) = run(Health::up(), &[Failed, Accepted], 1, 1);
        assert!(h.up);
        assert_eq!(t, [Transition::Down, Transition::Up]);
    }

    #[test]
    fn connects_do_not_clear_unanswered_clients() {
        // Accept-and-close: every client connects, then gets nothing.
        let pattern = [
            Accepted, Unanswered, Accepted, Unanswered, Accepted, Unanswered,
        ];
        let (h, t) = run(Health::up(), &pattern, 2, 3);
        assert!(!h.up, "down after `fall` unanswered clients: {h:?}");
        assert_eq!(t, [Transition::Down]);
    }

    #[test]
    fn an_answer_clears_the_doubt() {
        let (h, _) = run(Health::up(), &[Unanswered, Unanswered, Answered], 2, 3);
        assert_eq!(h, Health::up());
        let (h, t) = run(h, &[Failed, Failed], 2, 3);
        assert!(h.up && t.is_empty(), "the count started again");
    }

    #[test]
    fn back_from_unanswered_on_probation_until_it_answers() {
        let (down, _) = run(Health::NEW, &[Unanswered], 2, 3);
        assert!(!down.up && down.doubt);
        let (h, t) = run(down, &[Accepted, Accepted], 2, 3);
        assert!(
            h.up && h.probation,
            "connect-only probes bring it back on probation"
        );
        assert_eq!(t, [Transition::Up]);
        let (still, _) = run(h, &[Accepted, Accepted], 2, 3);
        assert!(still.probation, "connects do not end that probation");
        let (again, t) = run(still, &[Unanswered], 2, 3);
        assert!(
            !again.up,
            "its next unanswered client takes it down at once"
        );
        assert_eq!(t, [Transition::Down]);
        let (h, _) = run(h, &[Answered], 2, 3);
        assert_eq!(h, Health::up(), "an answer ends probation and doubt");
    }

    #[test]
    fn pack_round_trips() {
        for h in [
            Health::NEW,
            Health::up(),
            Health::down(true),
            Health {
                up: false,
                probation: true,
                doubt: true,
                successes: 65535,
                failures: 7,
            },
        ] {
            assert_eq!(Health::unpack(h.pack()), h);
        }
    }
}
