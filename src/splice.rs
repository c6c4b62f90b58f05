//! Moving bytes both ways between a client and its node, until both directions are done.
//!
//! [`splice`] returns one hand-written future that owns both sockets, two [`Direction`]
//! state machines and the idle timer: about 400 bytes per connection, instead of the
//! several KiB that nested `async fn`s and per-connection buffers would cost. A direction that
//! waits for bytes holds nothing else: bytes go through a pooled buffer or pipe
//! ([`crate::buffers`]), taken when they arrive and given back once written.
//!
//! How bytes move is decided per direction, from what it carries:
//! - **copy** (`read` + `write` through a 16 KiB buffer) to start with. For small messages
//!   it is the cheapest: two system calls and two short copies.
//! - **splice** (`splice(2)` socket → pipe → socket, Linux) once a read fills the whole buffer,
//!   i.e. the direction carries a bulk transfer. Pages then move by reference, never through
//!   user space, and each call moves up to a pipe's capacity (256 KiB) instead of 16 KiB.
//!   The switch is one-way for the connection's life: a stream that was bulk once tends to
//!   stay bulk, and splice costs little more than copy for a short read.
//!
//! EOF on one side becomes a write shutdown (half-close) on the other, so a client that closes
//! its sending side still gets its answer, for up to `fin`: a side that does not finish
//! within `fin` of the other's FIN is reset, with the other. The client's FIN is always passed
//! on and never taken as the end of the conversation: only the node knows whether it has more
//! to say, so the node side stays open for its answer until the node finishes (or `fin`, `idle`
//! or an error ends it, each with a reset, never a clean end of stream on a short answer). An
//! error on either side (a reset, usually) resets the other side too (SO_LINGER 0). A
//! connection with no bytes either way for `idle` is closed. Bytes are never reordered or lost:
//! each direction reads again only once the previous bytes are all written.
//!
//! The splice also tells when the node ended (closed or reset) before sending a byte while the
//! client was still sending ([`Outcome::unanswered`]): the node failed that client. When that
//! happens within `retry_window` of the start with no byte moved either way, nothing has been
//! delivered, so the client is handed back untouched ([`End::Dropped`]) to be tried elsewhere.
//! A later close with nothing exchanged is the node's own idle timeout, passed on as usual.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

mod direction;
mod response;

use direction::Direction;
pub use response::OnSilence;
use response::Watch;

use crate::net;

/// How a spliced connection ended, and what it carried.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from the client.
    pub client_to_node: u64,
    /// Bytes read from the node.
    pub node_to_client: u64,
    /// Why it ended.
    pub end: End,
    /// How the node ended before sending a byte while the client was still sending, if it
    /// did: the node failed this client.
    pub unanswered: Option<NodeEnd>,
}

/// How a node ended a connection before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEnd {
    /// It closed (sent a FIN).
    Closed,
    /// It reset the connection.
    Reset,
}

impl NodeEnd {
    /// The reason, as logged and shown in `/status`.
    pub fn reason(self) -> &'static str {
        match self {
            NodeEnd::Closed => "closed before responding",
            NodeEnd::Reset => "reset before responding",
        }
    }
}

/// Which side of a connection an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's socket.
    Client,
    /// The node's socket.
    Node,
}

/// Why a spliced connection ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished sending.
    Done,
    /// No bytes either way for the idle timeout.
    Idle,
    /// One side finished sending and the other did not finish within the `fin` timeout; both
    /// were reset.
    HalfClosed,
    /// A read or write on `Side` failed (a reset, usually); the other side was reset too.
    Error(io::Error, Side),
    /// The node closed or reset at once, before a byte moved either way: the client is given
    /// back untouched, to be tried on another node.
    Dropped(TcpStream),
}

/// Copies bytes both ways between `client` and `node` until both directions are done, the
/// connection is idle for `idle`, or an error ends it. Both streams are closed when the
/// returned future completes (or is dropped), except a client given back in [`End::Dropped`]
/// when the node drops it within `retry_window` with nothing exchanged.
///
/// `rules` are borrowed, not copied, so that a connection carries a pointer to its service's
/// rules rather than its own copy; `on_silence` is told of each `response` timeout.
pub fn splice(
    client: TcpStream,
    node: TcpStream,
    rules: &Rules,
    on_silence: Option<OnSilence>,
) -> Splice<'_> {
    let now = Instant::now();
    let response = rules
        .response
        .zip(on_silence)
        .map(|(limit, tell)| Box::new(Watch::new(limit, tell)));
    Splice {
        client: Some(client),
        node,
        up: Direction::default(),
        down: Direction::default(),
        rules,
        last_activity: now,
        half_closed: None,
        response,
        timer: tokio::time::sleep_until(now + rules.idle),
    }
}

/// The timeouts a splice keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// No bytes either way for this long ends the connection.
    pub idle: Duration,
    /// How soon after the start a node's close still counts as refusing the client.
    pub retry_window: Duration,
    /// Once one side has finished sending, how long the other has to finish.
    pub fin: Duration,
    /// Client bytes unanswered by the node for this long make the node silent (`None`: off).
    pub response: Option<Duration>,
}

pin_project_lite::pin_project! {
    /// The future returned by [`splice`].
    pub struct Splice<'a> {
        // Taken only to hand the client back (`End::Dropped`).
        client: Option<TcpStream>,
        node: TcpStream,
        // client -> node
        up: Direction,
        // node -> client
        down: Direction,
        rules: &'a Rules,
        // When a byte last moved either way.
        last_activity: Instant,
        // When the first side finished sending, while the other has not.
        half_closed: Option<Instant>,
        // The `response` watch, when the service sets that timeout.
        response: Option<Box<Watch>>,
        // Fires at `last_activity + idle` at the earliest; re-armed lazily when it fires.
        #[pin]
        timer: Sleep,
    }

    impl<'a> PinnedDrop for Splice<'a> {
        fn drop(this: Pin<&mut Self>) {
            // Cut by the drain deadline: both sides see a reset, not a clean end of stream.
            if CUT.load(Ordering::Relaxed) {
                let this = this.project();
                if let Some(client) = this.client.as_ref() {
                    net::reset_on_close(client);
                }
                net::reset_on_close(this.node);
            }
        }
    }
}

/// Set once the drain deadline has passed: connections still open are cut.
static CUT: AtomicBool = AtomicBool::new(false);

/// Makes every connection dropped from now on close with a reset (SO_LINGER 0), so that the
/// clients and nodes of connections cut by the drain deadline see the cut for what it is.
pub fn cut_open_connections() {
    CUT.store(true, Ordering::Relaxed);
}

impl Future for Splice<'_> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut this = self.project();
        let Some(client) = this.client.as_ref() else {
            // Polled again after handing the client back: nothing is left to do.
            return Poll::Pending;
        };
        let down_done = this.down.is_done();
        let up = this
            .up
            .poll(client, this.node, this.last_activity, down_done, false, cx);
        let client_done = this.up.is_done();
        // Nothing moved yet, the client still sending, and still early: a node that ends now
        // has refused the client, and its EOF is held back rather than passed on.
        let untouched = this.up.moved == 0 && this.down.moved == 0 && !client_done;
        let hold = untouched && this.last_activity.elapsed() < this.rules.retry_window;
        let down = this
            .down
            .poll(this.node, client, this.last_activity, client_done, hold, cx);
        // The node ended before answering while the client was still sending? (Late, with
        // nothing exchanged, it is the node's own idle timeout, not a failure.)
        let unanswered = if this.down.moved > 0 || client_done || (untouched && !hold) {
            None
        } else {
            match (&up, &down) {
                (_, Poll::Ready(Err(e))) if e.side_of_down() == Side::Node => Some(NodeEnd::Reset),
                (Poll::Ready(Err(e)), _) if e.side_of_up() == Side::Node => Some(NodeEnd::Reset),
                (_, Poll::Ready(Ok(()))) if !down_done => Some(NodeEnd::Closed),
                _ => None,
            }
        };
        if hold && unanswered.is_some() {
            let given_back = this.client.take();
            return Poll::Ready(Outcome {
                client_to_node: 0,
                node_to_client: 0,
                end: given_back.map_or(End::Done, End::Dropped),
                unanswered,
            });
        }
        let end = match (up, down) {
            (Poll::Ready(Err(e)), _) => Some(e.end(Side::Client, client, this.node)),
            (_, Poll::Ready(Err(e))) => Some(e.end(Side::Node, client, this.node)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Some(End::Done),
            _ => None,
        };
        if let Some(watch) = this.response.as_mut() {
            if let Some(silent_at) = watch.observe(this.up.written(), this.down.moved) {
                let idle_at = *this.last_activity + this.rules.idle;
                this.timer.as_mut().reset(idle_at.min(silent_at));
            }
        }
        if this.half_closed.is_none() && (this.up.is_done() || this.down.is_done()) {
            // One side is done: the other now has `fin` to finish.
            let now = Instant::now();
            *this.half_closed = Some(now);
            let deadline = (*this.last_activity + this.rules.idle).min(now + this.rules.fin);
            this.timer.as_mut().reset(deadline);
        }
        let end = match end {
            Some(end) => end,
            None => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    // Remembered for the outcome, which is built only when everything ends.
                    if unanswered.is_some() {
                        this.up.unanswered = unanswered;
                    }
                    return Poll::Pending;
                }
                let idle_at = *this.last_activity + this.rules.idle;
                let fin_at = this.half_closed.map(|t| t + this.rules.fin);
                let now = Instant::now();
                let node = &*this.node;
                let silent_at = this
                    .response
                    .as_mut()
                    .and_then(|w| w.check(now, || net::unacknowledged(node).unwrap_or(0)));
                if fin_at.is_some_and(|at| now >= at) {
                    net::reset_on_close(client);
                    net::reset_on_close(this.node);
                    break End::HalfClosed;
                }
                if now >= idle_at {
                    break End::Idle;
                }
                let deadline = [fin_at, silent_at]
                    .into_iter()
                    .flatten()
                    .fold(idle_at, Instant::min);
                // Bytes moved since the timer was set: wait for the rest of the idle period.
                this.timer.as_mut().reset(deadline);
            },
        };
        Poll::Ready(Outcome {
            client_to_node: this.up.moved,
            node_to_client: this.down.moved,
            end,
            unanswered: unanswered.or(this.up.unanswered),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splice_future_stays_small() {
        let size = std::mem::size_of::<Splice>();
        eprintln!("Splice is {size} bytes");
        assert!(
            size <= 384,
            "the per-connection future grew to {size} bytes"
        );
    }
}
