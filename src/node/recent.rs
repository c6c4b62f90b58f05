//! The last minutes of a node's traffic, one sample a second: new connections and their mean
//! connect time. The status page draws its charts and rates from these, so they are there from
//! the first load; Prometheus computes its own rates from the counters.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Samples kept: two minutes at one a second.
pub const SAMPLES: usize = 120;

/// One second of a node's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// New connections in that second.
    pub connections: u64,
    /// Their mean connect time in milliseconds (0 without connections).
    pub connect_ms: f64,
}

/// The ring of recent samples and the counter values of the last one.
#[derive(Debug, Default)]
pub struct Recent {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Counters at the last sample: connections, latency sum (µs).
    last: Option<(u64, u64)>,
    samples: VecDeque<Sample>,
}

impl Recent {
    /// Takes one sample from the counters as they are now: `connections` and the sum of
    /// their connect times in µs.
    pub fn sample(&self, connections: u64, latency_sum_us: u64) {
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        if let Some((c, l)) = ring.last {
            let n = connections.saturating_sub(c);
            let connect_ms = if n == 0 {
                0.0
            } else {
                latency_sum_us.saturating_sub(l) as f64 / n as f64 / 1000.0
            };
            if ring.samples.len() == SAMPLES {
                ring.samples.pop_front();
            }
            ring.samples.push_back(Sample {
                connections: n,
                connect_ms,
            });
        }
        ring.last = Some((connections, latency_sum_us));
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner
            .lock()
            .map(|ring| ring.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// New connections per second over the last `seconds` samples (fewer if fewer exist).
    pub fn rate(&self, seconds: usize) -> f64 {
        let samples = self.samples();
        let last = &samples[samples.len().saturating_sub(seconds)..];
        if last.is_empty() {
            return 0.0;
        }
        last.iter().map(|s| s.connections).sum::<u64>() as f64 / last.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deltas_and_the_ring_is_bounded() {
        let r = Recent::default();
        r.sample(0, 0);
        r.sample(10, 10_000);
        r.sample(10, 10_000);
        assert_eq!(
            r.samples(),
            [
                Sample {
                    connections: 10,
                    connect_ms: 1.0
                },
                Sample {
                    connections: 0,
                    connect_ms: 0.0
                }
            ]
        );
        assert_eq!(r.rate(2), 5.0);
        for i in 0..500 {
            r.sample(10 + i, 10_000);
        }
        assert_eq!(r.samples().len(), SAMPLES);
    }
}
