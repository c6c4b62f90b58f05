//! The health state machine of one node: a value, flipped by consecutive results. Pure; the
//! node stores it packed in one atomic.

/// Health of one node, as a value: whether it is up, and the current run of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Whether the node takes new connections in the normal pick.
    pub up: bool,
    /// A new node is on probation until its first passing result: one failure marks it down.
    pub probation: bool,
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
        successes: 0,
        failures: 0,
    };

    /// The state after one more result (`passed`), given the `rise` and `fall` thresholds.
    pub fn observe(self, passed: bool, rise: u32, fall: u32) -> (Health, Option<Transition>) {
        let bump = |n: u16| n.saturating_add(1);
        match (self.up, passed) {
            (true, true) => (
                Health {
                    up: true,
                    probation: false,
                    successes: 0,
                    failures: 0,
                },
                None,
            ),
            (true, false) => {
                let failures = bump(self.failures);
                if self.probation || u32::from(failures) >= fall {
                    (Health::down(), Some(Transition::Down))
                } else {
                    (Health { failures, ..self }, None)
                }
            }
            (false, true) => {
                let successes = bump(self.successes);
                if u32::from(successes) >= rise {
                    (Health::up(), Some(Transition::Up))
                } else {
                    (Health { successes, ..self }, None)
                }
            }
            (false, false) => (Health::down(), None),
        }
    }

    fn up() -> Health {
        Health {
            up: true,
            probation: false,
            successes: 0,
            failures: 0,
        }
    }

    fn down() -> Health {
        Health {
            up: false,
            probation: false,
            successes: 0,
            failures: 0,
        }
    }

    pub(super) fn pack(self) -> u64 {
        u64::from(self.up)
            | u64::from(self.probation) << 1
            | u64::from(self.successes) << 16
            | u64::from(self.failures) << 32
    }

    pub(super) fn unpack(bits: u64) -> Health {
        Health {
            up: bits & 1 != 0,
            probation: bits & 2 != 0,
            successes: (bits >> 16) as u16,
            failures: (bits >> 32) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: Health, results: &[bool], rise: u32, fall: u32) -> (Health, Vec<Transition>) {
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
        let (h, t) = run(Health::NEW, &[false], 2, 3);
        assert!(!h.up);
        assert_eq!(t, [Transition::Down]);
    }

    #[test]
    fn first_pass_ends_probation() {
        let (h, t) = run(Health::NEW, &[true, false, false], 2, 3);
        assert!(h.up && !h.probation);
        assert!(t.is_empty());
        let (h, t) = run(h, &[false], 2, 3);
        assert!(!h.up);
        assert_eq!(t, [Transition::Down]);
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let up = Health::up();
        let (h, t) = run(up, &[false, false, true, false, false], 2, 3);
        assert!(h.up, "a success in between resets the count");
        assert!(t.is_empty());
    }

    #[test]
    fn rise_needs_consecutive_passes() {
        let (h, t) = run(Health::down(), &[true, false, true], 2, 3);
        assert!(!h.up);
        assert!(t.is_empty());
        let (h, t) = run(h, &[true], 2, 3);
        assert!(h.up);
        assert_eq!(t, [Transition::Up]);
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let (h, t) = run(Health::up(), &[false, true], 1, 1);
        assert!(h.up);
        assert_eq!(t, [Transition::Down, Transition::Up]);
    }

    #[test]
    fn pack_round_trips() {
        for h in [
            Health::NEW,
            Health::up(),
            Health::down(),
            Health {
                up: false,
                probation: false,
                successes: 65535,
                failures: 7,
            },
        ] {
            assert_eq!(Health::unpack(h.pack()), h);
        }
    }
}
