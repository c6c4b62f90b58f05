//! The `[timeouts] response` watch of one connection: client bytes that wait longer than the
//! limit for the node's next byte make the node silent (the connection itself goes on). It
//! lives in its own allocation, made only for a service that sets the timeout, so a
//! connection without it carries one pointer for it.

use std::time::Duration;

use tokio::time::Instant;

/// What the watch tells when a wait outlasts the limit.
pub type OnSilence = Box<dyn FnMut(Duration) + Send>;

/// The response watch: byte counts last seen, and the wait running, if any.
pub(super) struct Watch {
    limit: Duration,
    /// Client bytes and node bytes counted when last looked at.
    asked: u64,
    answered: u64,
    /// Since when client bytes wait for the node's first byte after them.
    waiting: Option<Instant>,
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
            tell,
        }
    }

    /// Takes in the bytes moved so far each way; when client bytes start a wait now, returns
    /// when it runs out, for the timer.
    pub fn observe(&mut self, client_bytes: u64, node_bytes: u64) -> Option<Instant> {
        let mut started = None;
        if node_bytes > self.answered {
            // The node answered: no wait is running.
            self.answered = node_bytes;
            self.waiting = None;
        } else if client_bytes > self.asked && self.waiting.is_none() {
            let now = Instant::now();
            self.waiting = Some(now);
            started = Some(now + self.limit);
        }
        self.asked = client_bytes;
        started
    }

    /// At a timer wake-up at `now`: tells of a wait that has outlasted the limit (and ends it);
    /// returns when the wait still running runs out.
    pub fn check(&mut self, now: Instant) -> Option<Instant> {
        if let Some(since) = self.waiting {
            if now >= since + self.limit {
                self.waiting = None;
                (self.tell)(self.limit);
            }
        }
        self.waiting.map(|since| since + self.limit)
    }
}
