//! Rate-limited log lines: the first few events of each second are logged one by one, the
//! rest only counted, and a summary line per second gives the count. So a flood of failing
//! clients costs a few lines a second, never one per client.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Events logged one by one in each second before the rest are only counted.
pub const BURST: u32 = 5;

/// Counts events per second and says which may be logged on their own.
#[derive(Debug, Default)]
pub struct Throttle {
    /// The second (since the epoch) that `in_second` counts.
    second: AtomicU64,
    in_second: AtomicU32,
    /// Events not logged since the last [`Throttle::take_suppressed`].
    suppressed: AtomicU64,
}

impl Throttle {
    /// Counts one event; true if it may be logged on its own (one of the first [`BURST`] of
    /// this second).
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.in_second.store(0, Ordering::Relaxed);
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < BURST {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The events not logged since the last call, for the summary line.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_and_the_rest_counted() {
        let t = Throttle::default();
        let allowed = (0..100).filter(|_| t.allow()).count();
        // A second boundary in the middle may allow one more burst.
        assert!(
            allowed == BURST as usize || allowed == 2 * BURST as usize,
            "{allowed}"
        );
        assert_eq!(t.take_suppressed(), 100 - allowed as u64);
        assert_eq!(t.take_suppressed(), 0);
    }
}
