//! The queue of clients waiting for a node slot. When every node that could take a client is
//! at its `max_connections`, the client waits here, first come first served, for up to
//! `[timeouts] queue`: it is connected as soon as a slot frees (a connection to one of the
//! service's nodes closes), closed and counted once its wait runs out, and removed as soon as it
//! goes away. A new client does not overtake those already waiting.
//!
//! A service none of whose nodes has a `max_connections` never queues: its connections pay one
//! relaxed load of the queue's length when they close, and nothing else.
//!
//! Going away: a queued client that closes before sending anything is seen at once (its FIN
//! reads as end of stream). One that sent bytes and then its FIN may be a half-closing client
//! still waiting for its answer, so, as with HAProxy's default, it keeps its place; only a reset
//! removes it then.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::balancer::Key;
use crate::config::show_duration;
use crate::connect::{self, Attempts, Client, ConnectError, Connected};
use crate::timings::Timings;
use crate::upstream::Upstream;

/// How often the client at the head of the queue looks for a slot by itself (one pick, no I/O),
/// for slots that free without a close (a node enabled, a reload raising a limit, a failed
/// connect's slot), and how often a client with bytes pending is checked for a reset.
const RECHECK: Duration = Duration::from_millis(250);

/// One service's queue.
#[derive(Debug, Default)]
pub struct Queue {
    /// Waiting clients in arrival order: an id and the sender that wakes each.
    waiting: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    /// Clients queued now, including those woken and looking for their slot.
    len: AtomicU64,
    next_id: AtomicU64,
    /// Clients closed because their wait ran out.
    pub timeouts: AtomicU64,
    /// How long each client that left the queue (connected, timed out or gone) waited in it.
    pub waits: Timings,
}

impl Queue {
    /// Clients queued now.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no client waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The line. Nothing panics while holding it, and its state is whole between any two
    /// calls, so a poisoned lock is taken as it is.
    fn line(&self) -> MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot freed: wakes the first waiting client, if any.
    pub fn wake(&self) {
        if self.is_empty() {
            return;
        }
        let mut waiting = self.line();
        while let Some((_, wake)) = waiting.pop_front() {
            if wake.send(()).is_ok() {
                return;
            }
        }
    }

    /// Whether the client `id` is first in line.
    fn is_head(&self, id: u64) -> bool {
        self.line().front().is_some_and(|(first, _)| *first == id)
    }

    /// Takes `id` out of the line, if it is still in it.
    fn remove(&self, id: u64) {
        self.line().retain(|(other, _)| *other != id);
    }

    /// Puts a client in the queue for at most `limit`, until the ticket drops.
    fn join(&self, limit: Duration) -> Ticket<'_> {
        self.len.fetch_add(1, Ordering::Relaxed);
        Ticket {
            queue: self,
            since: Instant::now(),
            limit,
            waited: false,
        }
    }
}

/// Why a queued client left without a node.
#[derive(Debug)]
pub enum Left {
    /// No slot freed within the queue timeout.
    TimedOut(Duration),
    /// The client went away.
    Gone,
}

/// A client no node took: no node could (the connect's error), or its queue wait ended.
#[derive(Debug)]
pub enum Unserved {
    /// Connecting failed, or there is no node to wait for.
    Connect(ConnectError),
    /// The client waited in the queue and left it without a slot.
    Queue(Left),
}

impl fmt::Display for Unserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unserved::Connect(e) => e.fmt(f),
            Unserved::Queue(Left::TimedOut(limit)) => write!(
                f,
                "every node is at its max_connections and no slot freed within {} (queue timeout)",
                show_duration(*limit)
            ),
            Unserved::Queue(Left::Gone) => f.write_str("the client left the queue"),
        }
    }
}

/// A client's place in the queue, from joining until it drops (connected or not); its wait
/// is recorded then, and the next client is woken in case a slot is still free.
struct Ticket<'a> {
    queue: &'a Queue,
    since: Instant,
    limit: Duration,
    /// Whether it has waited before: then it was woken and lost the slot, and goes back first.
    waited: bool,
}

impl Ticket<'_> {
    /// Waits for the client's turn: woken by a freed slot, or first in line at a recheck.
    async fn turn(&mut self, client: &TcpStream) -> Result<(), Left> {
        let queue = self.queue;
        let id = queue.next_id.fetch_add(1, Ordering::Relaxed);
        let (wake, mut woken) = oneshot::channel();
        if self.waited {
            queue.line().push_front((id, wake));
        } else {
            queue.line().push_back((id, wake));
        }
        self.waited = true;
        let _out = OutOfLine { queue, id };
        let expired = tokio::time::sleep_until((self.since + self.limit).into());
        let gone = gone(client);
        tokio::pin!(expired, gone);
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.reset();
        // Bounded by the queue timeout.
        loop {
            tokio::select! {
                _ = &mut woken => return Ok(()),
                () = &mut expired => return Err(Left::TimedOut(self.limit)),
                () = &mut gone => return Err(Left::Gone),
                _ = recheck.tick() => {
                    if queue.is_head(id) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.queue.waits.record(self.since.elapsed());
        self.queue.len.fetch_sub(1, Ordering::Relaxed);
        self.queue.wake();
    }
}

/// Takes a client's entry out of the line however its wait ends.
struct OutOfLine<'a> {
    queue: &'a Queue,
    id: u64,
}

impl Drop for OutOfLine<'_> {
    fn drop(&mut self) {
        self.queue.remove(self.id);
    }
}

/// Resolves once the client has gone: closed before sending a byte, or reset.
async fn gone(client: &TcpStream) {
    let mut byte = [0u8; 1];
    match client.peek(&mut byte).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    // Bytes wait for the node, so the stream cannot tell a close; only a reset says it now.
    let mut check = tokio::time::interval(RECHECK);
    loop {
        check.tick().await;
        if reset(client) {
            return;
        }
    }
}

/// Whether the client's connection was reset (or shut both ways), without reading from it.
fn reset(client: &TcpStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(client, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP),
        Err(_) => false,
    }
}

/// Connects the client to a node as [`connect::connect`] does; when every node is full it
/// waits in `queue` for a slot (a new client first waits behind those already queued), if the
/// upstream queues at all.
pub async fn connect(
    queue: &Queue,
    upstream: &Upstream,
    key: Key,
    attempts: &mut Attempts,
    who: Client,
    client: &TcpStream,
) -> Result<Connected, Unserved> {
    let Some(limit) = upstream.queue_limit() else {
        return connect::connect(upstream, key, attempts, who)
            .await
            .map_err(Unserved::Connect);
    };
    let mut ticket = None;
    if attempts.made() == 0 && !queue.is_empty() {
        let ticket = ticket.insert(queue.join(limit));
        ticket.turn(client).await.map_err(Unserved::Queue)?;
    }
    // Bounded by the queue timeout: every round but the first waits for a turn.
    loop {
        match connect::connect(upstream, key, attempts, who).await {
            Err(ConnectError::NoneAvailable) => {}
            done => return done.map_err(Unserved::Connect),
        }
        let ticket = ticket.get_or_insert_with(|| queue.join(limit));
        ticket.turn(client).await.map_err(Unserved::Queue)?;
        *attempts = Attempts::default();
    }
}
