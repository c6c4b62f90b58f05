//! The active probe of a UDP node: a datagram (`[health] send`, or an empty one) sent from a
//! socket connected to the node. With `expect`, the probe passes when a reply starting with
//! those bytes comes back within the timeout; without, it passes unless the node's host
//! answers with an ICMP port unreachable (nothing listens there) within the timeout. A
//! service may instead probe a TCP port beside each node (`probe_port`): see `health`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a UDP probe failed.
#[derive(Debug, thiserror::Error)]
pub enum UdpProbeError {
    /// The node's host said nothing listens on the port (ICMP port unreachable).
    #[error("udp: port unreachable (ICMP)")]
    Refused,
    /// No reply within the timeout, where one was expected.
    #[error("udp: no reply within {}", crate::config::show_duration(*.0))]
    Timeout(Duration),
    /// The reply did not start with the expected bytes.
    #[error("udp: reply {got:?} does not start with {want:?}")]
    Mismatch {
        /// What came back (lossy UTF-8).
        got: String,
        /// What was expected (lossy UTF-8).
        want: String,
    },
    /// Any other error of the socket.
    #[error("udp: {0}")]
    Io(io::Error),
}

impl UdpProbeError {
    /// Whether the failure is the node's, not this host's (out of descriptors, say).
    pub fn is_node_fault(&self) -> bool {
        !matches!(self, UdpProbeError::Io(e) if crate::net::is_local_failure(e))
    }
}

fn io(e: io::Error) -> UdpProbeError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        UdpProbeError::Refused
    } else {
        UdpProbeError::Io(e)
    }
}

/// Probes the UDP node at `target`: sends `send`, and waits up to `timeout` for a reply
/// starting with `expect` (or, without `expect`, for no ICMP error).
pub async fn probe(
    target: SocketAddr,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
    timeout: Duration,
) -> Result<(), UdpProbeError> {
    let socket = super::open::connected(target).map_err(io)?;
    socket.send(send.unwrap_or_default()).await.map_err(io)?;
    let mut buf = vec![0u8; expect.map_or(1, |e| e.len().max(1))];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Err(_) if expect.is_none() => Ok(()),
        Err(_) => Err(UdpProbeError::Timeout(timeout)),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(n)) => match expect {
            Some(want) if !buf[..n].starts_with(want) => Err(UdpProbeError::Mismatch {
                got: String::from_utf8_lossy(&buf[..n]).into_owned(),
                want: String::from_utf8_lossy(want).into_owned(),
            }),
            _ => Ok(()),
        },
    }
}
