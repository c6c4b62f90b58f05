//! How many events fell in the last period (one second or one minute), estimated from two
//! fixed buckets the way a sliding window is usually approximated: the current bucket's count
//! plus the previous one's, weighted by how much of it the sliding window still covers. Twelve
//! bytes and a few integer operations per event, where a true sliding log would keep every event's
//! time. Pure: times come in as arguments, in ms.

/// Events in the current and the previous bucket of one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// The current bucket's number (time / period).
    bucket: u32,
    current: u32,
    previous: u32,
}

impl Window {
    /// Records one event at `now_ms`.
    pub fn add(&mut self, now_ms: u64, period_ms: u64) {
        self.roll(now_ms, period_ms);
        self.current = self.current.saturating_add(1);
    }

    /// The events of the last period before `now_ms`, estimated.
    pub fn estimate(&self, now_ms: u64, period_ms: u64) -> f64 {
        let bucket = now_ms / period_ms;
        let covered = 1.0 - (now_ms % period_ms) as f64 / period_ms as f64;
        match bucket.checked_sub(u64::from(self.bucket)) {
            Some(0) => f64::from(self.previous) * covered + f64::from(self.current),
            Some(1) => f64::from(self.current) * covered,
            _ => 0.0,
        }
    }

    /// Whether no event of the window counts any more at `now_ms`.
    pub fn is_empty(&self, now_ms: u64, period_ms: u64) -> bool {
        now_ms / period_ms >= u64::from(self.bucket) + 2
            || (self.current == 0 && self.previous == 0)
    }

    fn roll(&mut self, now_ms: u64, period_ms: u64) {
        let bucket = now_ms / period_ms;
        match bucket.checked_sub(u64::from(self.bucket)) {
            Some(0) => {}
            Some(1) => {
                self.previous = self.current;
                self.current = 0;
            }
            _ => {
                self.previous = 0;
                self.current = 0;
            }
        }
        self.bucket = u32::try_from(bucket).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000;

    #[test]
    fn the_estimate_slides_from_one_bucket_to_the_next() {
        let mut w = Window::default();
        for i in 0..20 {
            w.add(10_000 + i * 10, S);
        }
        assert!((w.estimate(10_500, S) - 20.0).abs() < 1e-9);
        // Half way through the next second, half of the previous one still counts.
        assert!((w.estimate(11_500, S) - 10.0).abs() < 1e-9);
        w.add(11_500, S);
        assert!((w.estimate(11_500, S) - 11.0).abs() < 1e-9);
        assert_eq!(w.estimate(13_000, S), 0.0);
        assert!(w.is_empty(13_000, S) && !w.is_empty(12_000, S));
    }

    #[test]
    fn a_steady_rate_reads_as_itself() {
        // 20 a second, evenly: any look after the first second reads 20, give or take one.
        let mut w = Window::default();
        let mut t = 0;
        while t < 5_000 {
            w.add(t, S);
            t += 50;
            if t > 1_000 {
                let e = w.estimate(t, S);
                assert!((19.0..=21.0).contains(&e), "{e} at {t}");
            }
        }
    }

    #[test]
    fn a_long_silence_empties_the_window() {
        let mut w = Window::default();
        w.add(1_000, S);
        w.add(60_000, S);
        assert!((w.estimate(60_000, S) - 1.0).abs() < 1e-9);
        assert!(Window::default().is_empty(0, S));
    }
}
