//! One UDP flow: a client address:port bound to one node through a socket connected to that
//! node, its counters, and the task that passes the node's replies back to the client from
//! the service's own socket (so the client sees one peer). A flow holds its node's slot, so
//! the node's active count is its live flows, which is what least-connections balances and
//! what a cluster publishes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;

use super::{with_buffer, Udp};
use crate::metrics::UdpDrop;
use crate::node::{ActiveGuard, FailureKind, Node, Observation, Source};

/// One flow.
pub struct Flow {
    /// The client's address and port.
    pub client: SocketAddr,
    /// Connected to the node.
    pub socket: UdpSocket,
    slot: ActiveGuard,
    _permit: OwnedSemaphorePermit,
    /// The last datagram either way, ms since the service's epoch.
    last_ms: AtomicU64,
    /// When the client's oldest datagram still unanswered was sent, ms (0: none waits).
    asked_ms: AtomicU64,
    /// Datagrams and bytes: client to node, node to client.
    pub moved: [AtomicU64; 4],
    /// Set once the flow ends; its reply task is stopped.
    ended: AtomicBool,
    /// A reply came: the node's passive success is recorded once per flow.
    answered: AtomicBool,
    /// When it began, if flows are logged.
    pub opened: Option<Instant>,
    /// The client address counted by the admission rules, released when the flow goes.
    pub admitted: Option<IpAddr>,
    reply: Mutex<Option<AbortHandle>>,
}

impl Flow {
    /// A new flow of `client` to `slot`'s node over `socket`, holding `permit` of the
    /// descriptor budget, at `now_ms`.
    pub fn new(
        client: SocketAddr,
        (socket, slot, permit): (UdpSocket, ActiveGuard, OwnedSemaphorePermit),
        now_ms: u64,
        opened: Option<Instant>,
        admitted: Option<IpAddr>,
    ) -> Flow {
        Flow {
            client,
            socket,
            slot,
            _permit: permit,
            last_ms: AtomicU64::new(now_ms),
            asked_ms: AtomicU64::new(0),
            moved: Default::default(),
            ended: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            opened,
            admitted,
            reply: Mutex::new(None),
        }
    }

    /// Its node.
    pub fn node(&self) -> &Arc<Node> {
        self.slot.node()
    }

    /// Whether the flow may carry its client's next datagram: not ended, and its node still
    /// in service and not down (a flow to a removed or down node moves to another node at its
    /// next datagram; one to a drained node runs on).
    pub fn usable(&self) -> bool {
        let node = self.node();
        !self.ended.load(Ordering::Relaxed) && !node.removed.is_cancelled() && node.is_up()
    }

    /// Whether the flow has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Marks the flow ended and stops its reply task; true for the one caller that ended it.
    pub fn end(&self) -> bool {
        if self.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(task) = self.reply.lock().ok().and_then(|mut r| r.take()) {
            task.abort();
        }
        true
    }

    /// Records the reply task, to stop it when the flow ends.
    pub fn set_reply(&self, task: AbortHandle) {
        if let Ok(mut r) = self.reply.lock() {
            *r = Some(task);
        }
        if self.is_ended() {
            if let Some(task) = self.reply.lock().ok().and_then(|mut r| r.take()) {
                task.abort();
            }
        }
    }

    /// Ms of the last datagram either way.
    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// Since when the client has waited for an answer (ms), if it waits.
    pub fn asked_ms(&self) -> Option<u64> {
        Some(self.asked_ms.load(Ordering::Relaxed)).filter(|a| *a != 0)
    }

    /// Forgets the unanswered datagram once its silence has been counted.
    pub fn forget_ask(&self) {
        self.asked_ms.store(0, Ordering::Relaxed);
    }

    /// Counts a client datagram of `len` bytes sent to the node at `now_ms`.
    pub fn sent(&self, len: usize, now_ms: u64) {
        self.last_ms.store(now_ms, Ordering::Relaxed);
        if self.asked_ms.load(Ordering::Relaxed) == 0 {
            self.asked_ms.store(now_ms.max(1), Ordering::Relaxed);
        }
        self.moved[0].fetch_add(1, Ordering::Relaxed);
        self.moved[1].fetch_add(len as u64, Ordering::Relaxed);
        let stats = &self.node().stats;
        stats.datagrams[0].fetch_add(1, Ordering::Relaxed);
        stats.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts a node datagram of `len` bytes passed to the client at `now_ms`; the first one
    /// tells the node's health it answered.
    fn received(&self, len: usize, now_ms: u64, udp: &Udp) {
        self.last_ms.store(now_ms, Ordering::Relaxed);
        self.asked_ms.store(0, Ordering::Relaxed);
        self.moved[2].fetch_add(1, Ordering::Relaxed);
        self.moved[3].fetch_add(len as u64, Ordering::Relaxed);
        let stats = &self.node().stats;
        stats.datagrams[1].fetch_add(1, Ordering::Relaxed);
        stats
            .received_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        if !self.answered.swap(true, Ordering::Relaxed) {
            let nodes = &udp.service.upstream().nodes;
            nodes.observe(
                self.node(),
                Source::Client,
                Observation::Answered,
                &"answered",
            );
        }
    }

    /// The node refused a datagram (an ICMP port unreachable came back): counted against it,
    /// and the flow ends, so the client's next datagram goes to another node.
    pub fn refused(&self, udp: &Udp) {
        let node = self.node();
        node.stats.failed(FailureKind::Refused);
        let nodes = &udp.service.upstream().nodes;
        nodes.observe(
            node,
            Source::Client,
            Observation::Failed,
            &"udp: port unreachable (ICMP)",
        );
        udp.end(self, "node refused (ICMP port unreachable)");
    }
}

/// Passes the node's replies on `flow` to its client, until the flow ends. Polled for read
/// readiness alone, with no future of tokio's kept in between, so a flow's task stays small.
/// An ICMP port unreachable does not wake it: the error is taken by the client's next
/// datagram, whose send reports it (see `Udp::forward`), or by a read that meets it.
/// (An `async move` block: an `async fn` would keep a second copy of its arguments.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn replies(flow: Arc<Flow>, udp: Arc<Udp>) -> impl std::future::Future<Output = ()> + Send {
    async move {
        loop {
            let ready = std::future::poll_fn(|cx| flow.socket.poll_recv_ready(cx)).await;
            if ready.is_err() {
                return udp.end(&flow, "node socket error");
            }
            if !pass_replies(&flow, &udp) {
                return;
            }
        }
    }
}

/// Passes every reply waiting on the flow's socket to its client; false once the flow ended.
fn pass_replies(flow: &Flow, udp: &Udp) -> bool {
    loop {
        let got = with_buffer(|buf| match flow.socket.try_recv(buf) {
            Ok(n) => {
                let to = socket2::SockAddr::from(flow.client);
                let sent = socket2::SockRef::from(&udp.socket).send_to(&buf[..n], &to);
                Ok((n, sent))
            }
            Err(e) => Err(e),
        });
        match got {
            Ok((n, sent)) => {
                flow.received(n, udp.now_ms(), udp);
                if let Err(e) = sent {
                    udp.dropped(UdpDrop::ClientSend);
                    tracing::debug!(service = %udp.service.name, client = %flow.client, error = %e, "reply not sent to the client");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                flow.refused(udp);
                return false;
            }
            Err(e) => {
                tracing::debug!(service = %udp.service.name, client = %flow.client, node = %flow.node().address, error = %e, "cannot read from the node");
                udp.end(flow, "node socket error");
                return false;
            }
        }
    }
}
