//! The `[timeouts] response` watch of one connection: once client bytes have been written to
//! the node, the node has the limit, counted from the **last** of them, to send its next byte;
//! a longer wait makes the node silent (the connection itself goes on).
//!
//! An upload the node keeps reading is never silence, however long it takes. The kernel's
//! buffers take a slow reader's upload well ahead of the reader, so the last write is no
//! measure of its progress: at the end of a wait the watch also asks how many bytes the node
//! has yet to acknowledge ([`crate::net::unacknowledged`]). Fewer than at the last look means
//! the node took bytes meanwhile, and the wait starts again. So a node that stops taking bytes
//! mid-upload is silent within twice the limit, and one that has every byte and says nothing
//! within the limit.
//!
//! The watch lives in its own allocation, made only for a service that sets the timeout, so a
//! connection without it carries one pointer for it.

use std::time::Duration;

use tokio::time::Instant;

/// What the watch tells when a wait outlasts the limit.
pub type OnSilence = Box<dyn FnMut(Duration) + Send>;

/// The response watch: byte counts last seen, and the wait running, if any.
pub(super) struct Watch {
    limit: Duration,
    /// Client bytes written to the node, and node bytes read, when last looked at.
    asked: u64,
    answered: u64,
    /// When the last client byte not yet answered was written to the node, or the node was
    /// last seen taking bytes.
    waiting: Option<Instant>,
    /// Bytes the node had yet to acknowledge at the last look, since the last write.
    queued: Option<u64>,
    /// Told once per wait that outlasts `limit`.
    tell: OnSilence,
}

impl Watch {
    /// A watch with `limit`, telling `tell` of each silence.
    pub fn new(limit: Duration, tell: OnSilence) -> Watch {
        Watch {
            limit,
            asked: 0,
            answered: 0,
            waiting: None,
            queued: None,
            tell,
        }
    }

    /// Takes in the client bytes written to the node and the node bytes read so far; when a
    /// wait starts now, returns when it runs out, for the timer. More client bytes written
    /// while a wait runs restart it from now: the timer, armed for the earlier end, finds the
    /// later one at [`Watch::check`].
    pub fn observe(&mut self, written: u64, node_bytes: u64) -> Option<Instant> {
        let mut started = None;
        if node_bytes > self.answered {
            // The node answered: no wait is running.
            self.answered = node_bytes;
            self.waiting = None;
        } else if written > self.asked {
            let now = Instant::now();
            if self.waiting.is_none() {
                started = Some(now + self.limit);
            }
            self.waiting = Some(now);
            self.queued = None;
        }
        self.asked = written;
        started
    }

    /// At a timer wake-up at `now`: a wait that has run its limit ends, told as silence,
    /// unless `queued` (bytes the node has yet to acknowledge) shows that the node took bytes
    /// since the last look, when it starts again. Returns when the wait still running runs out.
    pub fn check(&mut self, now: Instant, queued: impl FnOnce() -> u64) -> Option<Instant> {
        if let Some(since) = self.waiting {
            if now >= since + self.limit {
                let queued = queued();
                let took_bytes = match self.queued {
                    Some(before) => queued < before,
                    // First look since the last write: bytes still on their way are the
                    // node's to take; a node that has them all had the whole wait.
                    None => queued > 0,
                };
                if took_bytes {
                    self.queued = Some(queued);
                    self.waiting = Some(now);
                } else {
                    self.waiting = None;
                    (self.tell)(self.limit);
                }
            }
        }
        self.waiting.map(|since| since + self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn watch(limit_ms: u64) -> (Watch, Arc<AtomicU32>) {
        let told = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&told);
        let tell: OnSilence = Box::new(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        (Watch::new(Duration::from_millis(limit_ms), tell), told)
    }

    async fn later(ms: u64) -> Instant {
        tokio::time::advance(Duration::from_millis(ms)).await;
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_runs_from_the_last_byte_written() {
        let (mut w, told) = watch(500);
        let first = w.observe(100, 0).expect("a wait starts");
        // The node keeps taking bytes, 400 ms apart: never silent, however long the upload.
        for i in 2..10u64 {
            let now = later(400).await;
            assert_eq!(w.observe(i * 100, 0), None, "the wait goes on, restarted");
            let next = w.check(now, || 0).expect("still waiting");
            assert!(next > first);
        }
        assert_eq!(told.load(Ordering::Relaxed), 0);
        // The upload ends, fully acknowledged; 500 ms later with no answer the node is silent.
        let now = later(500).await;
        assert_eq!(w.check(now, || 0), None);
        assert_eq!(told.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_still_taking_buffered_bytes_is_not_silent() {
        let (mut w, told) = watch(500);
        assert!(w.observe(6_000_000, 0).is_some());
        // The kernel took the whole upload; the node reads 1 MB every 500 ms.
        for left in [4_000_000, 3_000_000, 2_000_000, 1_000_000, 0] {
            let now = later(500).await;
            assert!(w.check(now, || left).is_some(), "{left} bytes left");
        }
        // Everything taken, then nothing said for the limit: silent.
        let now = later(500).await;
        assert_eq!(w.check(now, || 0), None);
        assert_eq!(told.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_stops_taking_bytes_is_silent_within_twice_the_limit() {
        let (mut w, told) = watch(500);
        assert!(w.observe(6_000_000, 0).is_some());
        let now = later(500).await;
        assert!(
            w.check(now, || 2_000_000).is_some(),
            "first look: bytes on their way"
        );
        let now = later(500).await;
        assert_eq!(w.check(now, || 2_000_000), None, "none taken since");
        assert_eq!(told.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ends_the_wait() {
        let (mut w, told) = watch(500);
        assert!(w.observe(10, 0).is_some());
        later(400).await;
        assert_eq!(w.observe(10, 5), None);
        let now = later(400).await;
        assert_eq!(w.check(now, || 0), None);
        assert_eq!(told.load(Ordering::Relaxed), 0);
    }
}
