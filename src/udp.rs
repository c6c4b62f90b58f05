//! UDP services (`protocol = "udp"`): flows keyed by the client's address and port. The first
//! datagram of a flow picks a node as a TCP client would (least flows, round robin or source
//! affinity; health, drain, backup, slow start and cluster counts alike) and opens a socket
//! connected to it; the flow's datagrams go through that socket, and the node's replies go
//! back to the client from the service's own socket ([`flow::replies`]), so the client sees
//! one peer. A flow ends after `[timeouts] flow_idle` with no datagram either way, when its
//! node refuses a datagram (an ICMP port unreachable, reported when the client's next
//! datagram is sent: counted against the node, and that datagram goes to a new flow on
//! another node), or when its node is removed or down
//! at the client's next datagram. A datagram that would open a flow past `max_flows`, or that
//! no node can take, is dropped and counted: nothing is queued.
//!
//! One task per service reads the service's socket; one small task per flow waits for the
//! node's replies; one sweeper per service ends idle flows and counts silent nodes (a client
//! datagram unanswered for `[timeouts] response`). Datagrams are read into one buffer per
//! thread and sent on before the next read, so a flow holds no buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::node::{FailureKind, Observation, Source};
use crate::service::Service;

mod flow;
mod open;
pub mod probe;

use crate::metrics::UdpDrop;
use flow::Flow;

/// The largest datagram.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read in one turn before the reading task lets others run.
const TURN: usize = 256;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Runs `f` on this thread's datagram buffer.
fn with_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    BUFFER.with(|b| f(&mut b.borrow_mut()))
}

/// One UDP service's running state: its socket and its flows.
pub struct Udp {
    /// The service.
    pub service: Arc<Service>,
    /// The service's socket: clients' datagrams come in on it, replies go out from it.
    pub socket: UdpSocket,
    flows: Mutex<HashMap<SocketAddr, Arc<Flow>>>,
    max_flows: usize,
    /// The process's descriptor budget, shared with TCP clients: one slot per flow.
    process: Arc<Semaphore>,
    epoch: Instant,
}

impl Udp {
    /// Ms since the service began, the flows' clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Flow>>> {
        // Nothing panics while holding it, and its state is whole between calls.
        self.flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flows now.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Counts a dropped datagram.
    pub fn dropped(&self, why: UdpDrop) {
        self.service.udp.dropped(why);
    }

    /// Ends `flow` (once): out of the table, its reply task stopped, its client released
    /// from the admission count, its access-log line written.
    pub fn end(&self, flow: &Flow, why: &str) {
        if !flow.end() {
            return;
        }
        {
            let mut table = self.table();
            if table
                .get(&flow.client)
                .is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), flow))
            {
                table.remove(&flow.client);
            }
        }
        self.service.listener.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = flow.admitted {
            self.service.admission.left(ip);
        }
        if let Some(opened) = flow.opened {
            let m = flow.moved.each_ref().map(|c| c.load(Ordering::Relaxed));
            tracing::info!(
                target: "tierlb::access",
                service = %self.service.name,
                client = %flow.client,
                node = %flow.node().address,
                datagrams_to_node = m[0],
                client_to_node = m[1],
                datagrams_to_client = m[2],
                node_to_client = m[3],
                duration_ms = (opened.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                end = why,
                "flow"
            );
        }
        tracing::debug!(service = %self.service.name, client = %flow.client, node = %flow.node().address, reason = why, "flow ended");
    }

    /// Reads the clients' datagrams until the socket has none (or one turn is done), passing
    /// each on. `stopping`: only existing flows are carried.
    fn receive(self: &Arc<Self>, stopping: bool) -> bool {
        for _ in 0..TURN {
            let got = with_buffer(|buf| match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    self.forward(from, &buf[..n], stopping);
                    Ok(())
                }
                Err(e) => Err(e),
            });
            match got {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    // A previous reply's ICMP error, or the like: it concerns one datagram.
                    tracing::debug!(service = %self.service.name, error = %e, "receive error on the service socket");
                }
            }
        }
        false
    }

    /// Passes one datagram of `from` to its flow's node, opening the flow if needed; a node
    /// that refuses it (ICMP) loses the flow, and the datagram goes to a new one at once.
    fn forward(self: &Arc<Self>, from: SocketAddr, data: &[u8], stopping: bool) {
        for _ in 0..2 {
            let Some(flow) = self.flow_for(from, stopping) else {
                return;
            };
            // Straight to the socket: tokio's readiness of a socket just made is not known
            // yet (its `try_send` would report it busy), and a UDP send does not wait.
            match socket2::SockRef::from(&flow.socket).send(data) {
                Ok(_) => {
                    flow.sent(data.len(), self.now_ms());
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => flow.refused(self),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.dropped(UdpDrop::NodeBusy);
                }
                Err(e) => {
                    tracing::debug!(service = %self.service.name, client = %from, node = %flow.node().address, error = %e, "datagram not sent to the node");
                    return self.dropped(UdpDrop::NodeSend);
                }
            }
        }
    }

    /// The flow of `from`: its own while usable, else a new one (unless `stopping`).
    fn flow_for(self: &Arc<Self>, from: SocketAddr, stopping: bool) -> Option<Arc<Flow>> {
        let found = self.table().get(&from).cloned();
        if let Some(flow) = found {
            if flow.usable() {
                return Some(flow);
            }
            let why = if flow.is_ended() {
                "ended"
            } else if flow.node().removed.is_cancelled() {
                "node removed"
            } else {
                "node down"
            };
            self.end(&flow, why);
        }
        if stopping {
            self.dropped(UdpDrop::Stopping);
            return None;
        }
        self.open(from)
    }
}

/// Serves the UDP service on `socket` (at most `max_flows` flows, each holding a slot of the
/// process's descriptor budget `process`) until `stop` is cancelled, then carries its existing
/// flows until they end, for at most `[timeouts] drain` (after an upgrade's handover, without
/// reading the socket: the new process does).
pub async fn serve(
    service: Arc<Service>,
    socket: UdpSocket,
    max_flows: usize,
    process: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let udp = Arc::new(Udp {
        service,
        socket,
        flows: Mutex::new(HashMap::new()),
        max_flows,
        process,
        epoch: Instant::now(),
    });
    let sweeper = tokio::spawn(sweep(Arc::clone(&udp)));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            ready = udp.socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!(service = %udp.service.name, error = %e, "the UDP socket failed; the service stops");
                    break;
                }
                if !udp.receive(false) {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    let drain = udp.service.upstream().settings.timeouts.drain;
    let read = !crate::upgrade::handed_over();
    let draining = async {
        while udp.len() > 0 {
            if read {
                let wait = tokio::time::timeout(Duration::from_millis(100), udp.socket.readable());
                if let Ok(Ok(())) = wait.await {
                    if !udp.receive(true) {
                        tokio::task::yield_now().await;
                    }
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let _ = tokio::time::timeout(drain, draining).await;
    sweeper.abort();
    let left: Vec<Arc<Flow>> = udp.table().values().cloned().collect();
    for flow in left {
        udp.end(&flow, "stopped");
    }
}

/// Ends idle flows and counts silent nodes, four times per `flow_idle` or `response`,
/// whichever is shorter (at most once a second, at least every 10 ms).
async fn sweep(udp: Arc<Udp>) {
    loop {
        let upstream = udp.service.upstream();
        let t = &upstream.settings.timeouts;
        let finest = t.response.map_or(t.flow_idle, |r| r.min(t.flow_idle));
        let every = (finest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let idle_ms = u64::try_from(t.flow_idle.as_millis()).unwrap_or(u64::MAX);
        let response_ms = t
            .response
            .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX));
        drop(upstream);
        tokio::time::sleep(every).await;
        let now = udp.now_ms();
        let flows: Vec<Arc<Flow>> = udp.table().values().cloned().collect();
        for flow in flows {
            if now.saturating_sub(flow.last_ms()) >= idle_ms {
                udp.end(&flow, "idle");
                continue;
            }
            let silent = response_ms
                .zip(flow.asked_ms())
                .is_some_and(|(limit, asked)| now.saturating_sub(asked) >= limit);
            if silent {
                flow.forget_ask();
                let node = flow.node();
                node.stats.failed(FailureKind::Unanswered);
                let nodes = &udp.service.upstream().nodes;
                let limit = Duration::from_millis(response_ms.unwrap_or_default());
                let reason =
                    format_args!("no response within {}", crate::config::show_duration(limit));
                nodes.observe(node, Source::Client, Observation::Unanswered, &reason);
            }
        }
    }
}
