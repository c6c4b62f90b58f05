//! Slow start: after a node comes back (up from down, enabled after a drain, added by a
//! reload), its share of new connections ramps up over `[health] slow_start`. A pick that
//! lands on a ramping node is kept with a probability rising linearly from 10 % to 100 %
//! over the window; otherwise the next-best node takes the client. A weight ramp alone
//! would not do: under least connections a node at 0 active wins every pick whatever its
//! weight. Nodes present at start-up do not ramp. Costs one relaxed load per pick when no
//! node ramps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::epoch_ms;

/// Where a node stands in its slow start.
#[derive(Debug, Default)]
pub struct Ramp {
    /// When the ramp began, ms since the epoch; 0 when not ramping.
    since_ms: AtomicU64,
    /// The window in ms; 0 turns slow start off.
    window_ms: AtomicU64,
}

/// The share a ramping node keeps at the start of its window.
const FLOOR: f64 = 0.1;

impl Ramp {
    /// Sets the window (`[health] slow_start`).
    pub fn set_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.window_ms.store(ms, Ordering::Relaxed);
    }

    /// Starts the ramp now, if slow start is on.
    pub fn start(&self) {
        if self.window_ms.load(Ordering::Relaxed) > 0 {
            let now = epoch_ms(SystemTime::now()).max(1);
            self.since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// How far along the ramp is (0 to 1), or `None` when the node is not ramping.
    pub fn progress(&self) -> Option<f64> {
        let since = self.since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let window = self.window_ms.load(Ordering::Relaxed);
        let elapsed = epoch_ms(SystemTime::now()).saturating_sub(since);
        if window == 0 || elapsed >= window {
            self.since_ms.store(0, Ordering::Relaxed);
            return None;
        }
        Some(elapsed as f64 / window as f64)
    }

    /// The share of picks the node keeps now: 1 when not ramping.
    pub fn share(&self) -> f64 {
        self.progress().map_or(1.0, |p| FLOOR + (1.0 - FLOOR) * p)
    }

    /// Whether a pick that landed on the node keeps it (a draw against [`Ramp::share`]).
    pub fn keeps(&self) -> bool {
        if self.since_ms.load(Ordering::Relaxed) == 0 {
            return true;
        }
        fastrand::f64() < self.share()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_rises_from_a_tenth_and_ends_with_the_window() {
        let ramp = Ramp::default();
        ramp.start();
        assert!(ramp.progress().is_none(), "off without a window");
        ramp.set_window(Duration::from_secs(3600));
        ramp.start();
        let share = ramp.share();
        assert!((0.1..0.11).contains(&share), "{share}");
        let kept = (0..10_000).filter(|_| ramp.keeps()).count();
        assert!((800..1200).contains(&kept), "about 10 % kept: {kept}");
        ramp.set_window(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            ramp.progress().is_none() && ramp.keeps(),
            "over after the window"
        );
    }
}
