//! Active health probes: one loop per node, up or down, every `health.interval` (±10 % jitter).
//!
//! A probe connects within `health.timeout`; with `send` it writes those bytes, with `expect`
//! it passes only if the reply starts with those bytes. `probe_port` probes that TCP port of
//! the node's address instead; a UDP service's nodes are otherwise probed over UDP
//! (`udp::probe`). The result feeds the same
//! [`Node::observe`] as real connects do. A named node is probed at every address of its
//! last answer at once; each address's result sets it aside or takes it back for connects. A node that turns suspect (a cluster peer reports it
//! down) is probed at once, out of turn. In a cluster that shares probing, a node whose
//! probing owners are other instances is not probed here on schedule (see
//! `node::Probing`). Probes run as their own tasks and never hold anything the data path
//! waits on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Protocol;
use crate::connect::{self, AttemptError};
use crate::node::{Node, Observation, Source};
use crate::proxy_protocol;
use crate::service::Service;
use crate::udp::{self, probe::UdpProbeError};
use crate::upstream::{Settings, Upstream};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The connect failed.
    #[error("{0}")]
    Connect(#[from] AttemptError),
    /// Sending or reading failed after the connect.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A UDP node's probe failed.
    #[error("{0}")]
    Udp(#[from] UdpProbeError),
    /// The whole probe took longer than the timeout.
    #[error("no reply within {}", crate::config::show_duration(*.0))]
    Timeout(Duration),
    /// The node closed before sending the expected bytes.
    #[error("node closed after {got} of {want} expected bytes")]
    Closed {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The reply did not start with the expected bytes.
    #[error("reply {got:?} does not start with {want:?}")]
    Mismatch {
        /// What came back (lossy UTF-8).
        got: String,
        /// What was expected (lossy UTF-8).
        want: String,
    },
}

impl ProbeError {
    fn is_node_fault(&self) -> bool {
        match self {
            ProbeError::Connect(e) => e.kind().is_some(),
            ProbeError::Udp(e) => e.is_node_fault(),
            _ => true,
        }
    }
}

/// Probes `node` once. A node at an IP address is probed there; a named node at every address
/// of its last answer at once, each address set aside or taken back by its own result; it
/// passes when one of them does.
pub async fn probe(node: &Arc<Node>, upstream: &Arc<Upstream>) -> Result<(), ProbeError> {
    if let Some(target) = node.address.socket_addr() {
        return probe_at(node, target, &upstream.settings).await;
    }
    // No answer yet: the probe fails with the lookup's reason.
    node.addresses
        .order(node.address.host())
        .map_err(AttemptError::from)?;
    let mut probes = JoinSet::new();
    for (target, _) in node.addresses.snapshot() {
        let (node, upstream) = (Arc::clone(node), Arc::clone(upstream));
        probes.spawn(async move {
            let result = probe_at(&node, target, &upstream.settings).await;
            node.addresses.mark(target, result.is_err());
            result
        });
    }
    // Every address's result is waited for, so each is marked.
    let (mut passed, mut last) = (false, None);
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok(Ok(())) => passed = true,
            Ok(Err(e)) => last = Some(e),
            Err(e) => last = Some(ProbeError::Io(std::io::Error::other(e))),
        }
    }
    match last {
        Some(e) if !passed => Err(e),
        _ => Ok(()),
    }
}

/// Probes one address of `node` with the given settings: over TCP (at `probe_port`, when
/// set), or for a UDP service over UDP.
async fn probe_at(node: &Node, target: SocketAddr, settings: &Settings) -> Result<(), ProbeError> {
    let health = &settings.health;
    let target = match health.probe_port {
        Some(port) => SocketAddr::new(target.ip(), port),
        None if settings.protocol == Protocol::Udp => {
            let (send, expect) = (health.send.as_deref(), health.expect.as_deref());
            return Ok(udp::probe::probe(target, send, expect, health.timeout).await?);
        }
        None => target,
    };
    let exchange = async {
        let mut stream = connect::open_at(node, target, health.timeout).await?;
        // A node that reads PROXY headers is told this is no client (v2 LOCAL, v1 UNKNOWN).
        if let Some(header) = proxy_protocol::probe_header(node.proxy_protocol()) {
            stream.write_all(&header).await?;
        }
        if let Some(send) = &health.send {
            stream.write_all(send).await?;
        }
        if let Some(want) = &health.expect {
            let mut got = vec![0; want.len()];
            let mut filled = 0;
            while filled < got.len() {
                let n = stream.read(&mut got[filled..]).await?;
                if n == 0 {
                    return Err(ProbeError::Closed {
                        got: filled,
                        want: want.len(),
                    });
                }
                filled += n;
                if got[..filled] != want[..filled] {
                    return Err(ProbeError::Mismatch {
                        got: String::from_utf8_lossy(&got[..filled]).into_owned(),
                        want: String::from_utf8_lossy(want).into_owned(),
                    });
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(health.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(health.timeout)),
    }
}

/// `interval` scaled by a random factor in [0.9, 1.1], so probes of many nodes spread out.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Runs the probe loop of `node` until `stop` is cancelled or a reload removes the node. The
/// first probe runs within the first tenth of an interval, so a new node's state is known
/// quickly.
pub async fn run(node: Arc<Node>, service: Arc<Service>, stop: CancellationToken) {
    tokio::select! {
        () = probe_loop(&node, &service) => {}
        () = stop.cancelled() => {}
        () = node.removed.cancelled() => {}
    }
}

async fn probe_loop(node: &Arc<Node>, service: &Service) {
    // A named node is first probed once its first lookup has ended: a probe before would
    // find no address and fail a node that may well be fine.
    if node.address.socket_addr().is_none() {
        node.addresses.settled.cancelled().await;
    }
    let first = service
        .upstream()
        .settings
        .health
        .interval
        .mul_f64(0.1 * fastrand::f64());
    let mut next = Instant::now() + first;
    loop {
        // A node a cluster peer reports down is probed at once (see `cluster`), and so is one
        // this instance takes over from a dead owner; one whose owners probe it for this
        // instance is not probed on schedule.
        let now = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = node.peers.probe_now.notified() => true,
        };
        let upstream = service.upstream();
        if !now && !node.peers.probing.probes_here() {
            next = (next + jittered(upstream.settings.health.interval)).max(Instant::now());
            continue;
        }
        let settings = &upstream.settings;
        // A probe that only connects proves the node listens; one that got the expected reply
        // proves it answers (see `Observation`).
        let passed = if settings.health.expect.is_some() {
            Observation::Answered
        } else {
            Observation::Accepted
        };
        let result = probe(node, &upstream).await;
        let nodes = &upstream.nodes;
        match result {
            Ok(()) => {
                nodes.observe(node, Source::Probe, passed, &"probe passed");
            }
            Err(e) if e.is_node_fault() => {
                node.stats.probe_failed();
                nodes.observe(
                    node,
                    Source::Probe,
                    Observation::Failed,
                    &format_args!("probe: {e}"),
                );
            }
            Err(e) => {
                tracing::debug!(service = %node.service, node = %node.address, error = %e, "probe not run")
            }
        }
        next = (next + jittered(settings.health.interval)).max(Instant::now());
    }
}

/// Waits until every node of `services` has had its first probe, at most `within`: a process
/// that takes over from another (an upgrade) says it is ready with its own view of the nodes.
pub async fn first_verdicts(services: &[Arc<Service>], within: Duration) {
    let deadline = Instant::now() + within;
    let all_seen = || {
        services.iter().all(|s| {
            s.upstream()
                .nodes
                .nodes
                .iter()
                .all(|n| n.last_check().is_some())
        })
    };
    while !all_seen() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
