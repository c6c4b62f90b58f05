//! Opening a flow: the admission rules for its client, a node picked as for a TCP client,
//! a socket connected to that node, and the task that carries its replies.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::flow::{self, Flow};
use super::Udp;
use crate::metrics::UdpDrop;
use crate::node::{ActiveGuard, FailureKind, Observation, Source};

impl Udp {
    /// Opens a flow for `from`: admission, a node, a socket connected to it, the reply task.
    pub(super) fn open(self: &Arc<Self>, from: SocketAddr) -> Option<Arc<Flow>> {
        if self.len() >= self.max_flows {
            self.dropped(UdpDrop::MaxFlows);
            return None;
        }
        let Ok(permit) = Arc::clone(&self.process).try_acquire_owned() else {
            self.dropped(UdpDrop::Local);
            return None;
        };
        let service = &self.service;
        let upstream = service.upstream();
        let settings = &upstream.settings;
        let admitted = match service.admission.admit(&settings.admission, from.ip()) {
            Ok(counted) => counted.then_some(from.ip()),
            Err(why) => {
                service.admission.log_refusal(&service.name, from.ip(), why);
                return None;
            }
        };
        let Some((slot, socket)) = self.connect(from.ip(), &upstream) else {
            if let Some(ip) = admitted {
                service.admission.left(ip);
            }
            return None;
        };
        slot.node()
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        service.listener.accepted.fetch_add(1, Ordering::Relaxed);
        service.listener.active.fetch_add(1, Ordering::Relaxed);
        let opened = settings.access_log.then(Instant::now);
        let flow = Arc::new(Flow::new(
            from,
            (socket, slot, permit),
            self.now_ms(),
            opened,
            admitted,
        ));
        self.table().insert(from, Arc::clone(&flow));
        let task = tokio::spawn(flow::replies(Arc::clone(&flow), Arc::clone(self)));
        flow.set_reply(task.abort_handle());
        Some(flow)
    }

    /// Picks a node for a client at `ip` and opens a socket connected to it: the node's slot
    /// and the socket, or `None` (counted) when no node can take a flow.
    fn connect(
        &self,
        ip: IpAddr,
        upstream: &crate::upstream::Upstream,
    ) -> Option<(ActiveGuard, UdpSocket)> {
        let nodes = &upstream.nodes;
        let list = &nodes.nodes;
        let key = upstream.key(self.service.next_pick.fetch_add(1, Ordering::Relaxed), ip);
        let mut tried = Vec::new();
        while let Some(i) = upstream.pick_ramped(key, &tried) {
            tried.push(i);
            let node = &list[i];
            let Some(slot) = node.try_acquire() else {
                continue;
            };
            nodes.picked(i);
            let target = match node.address.socket_addr() {
                Some(target) => target,
                None => match node
                    .addresses
                    .order(node.address.host())
                    .map(|mut o| o.next())
                {
                    Ok(Some(target)) => target,
                    Ok(None) => continue,
                    Err(e) => {
                        node.stats.failed(FailureKind::Dns);
                        nodes.observe(
                            node,
                            Source::Client,
                            Observation::Failed,
                            &format_args!("dns: {e}"),
                        );
                        continue;
                    }
                },
            };
            match connected(target) {
                Ok(socket) => return Some((slot, socket)),
                Err(e) if crate::net::is_local_failure(&e) => {
                    tracing::warn!(service = %self.service.name, node = %node.address, error = %e, "cannot open a UDP socket for a new flow (local failure, not the node's)");
                    self.dropped(UdpDrop::Local);
                    return None;
                }
                Err(e) => {
                    node.stats.failed(FailureKind::Other);
                    nodes.observe(
                        node,
                        Source::Client,
                        Observation::Failed,
                        &format_args!("udp: {e}"),
                    );
                }
            }
        }
        self.dropped(UdpDrop::NoNode);
        None
    }
}

/// A UDP socket on an ephemeral port, connected to `target`.
pub(super) fn connected(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
