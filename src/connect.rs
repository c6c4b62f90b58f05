//! Connecting to nodes: one attempt with a timeout, its failure classified, the node told, and
//! the retry on the next-best other node.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::balancer;
use crate::config::NodeAddr;
use crate::net;
use crate::node::{ActiveGuard, Node};

/// Why one connect attempt (or probe connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The name did not resolve to any address.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The node actively refused the connection.
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The node reset the connection during the handshake.
    #[error("connection reset")]
    Reset,
    /// No route to the node.
    #[error("unreachable ({0})")]
    Unreachable(io::Error),
    /// Any other error from the node's side.
    #[error("{0}")]
    Other(io::Error),
    /// tierlb itself is out of descriptors or memory: not the node's fault.
    #[error("cannot open a socket: {0}")]
    Local(io::Error),
}

impl AttemptError {
    /// Whether the failure says something about the node (and so counts toward `fall`).
    pub fn is_node_fault(&self) -> bool {
        !matches!(self, AttemptError::Local(_))
    }

    fn from_io(e: io::Error) -> AttemptError {
        if net::is_resource_exhaustion(&e) {
            return AttemptError::Local(e);
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => AttemptError::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                AttemptError::Reset
            }
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                AttemptError::Unreachable(e)
            }
            _ => AttemptError::Other(e),
        }
    }
}

/// Why a client could not be connected to any node.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every attempt failed; the last failure is given.
    #[error("all {attempts} connect attempts failed; last: {node}: {error}")]
    AllFailed {
        /// Attempts made.
        attempts: u32,
        /// The node of the last attempt.
        node: NodeAddr,
        /// Its failure.
        error: AttemptError,
    },
    /// Every node is at its `max_connections` (or there is no node).
    #[error("no node can take a connection: every node is at its max_connections")]
    NoneAvailable,
}

/// Resolves `addr` (IP literals need no lookup) and connects, all within `timeout`.
pub async fn open(addr: &NodeAddr, timeout: Duration) -> Result<TcpStream, AttemptError> {
    match tokio::time::timeout(timeout, open_inner(addr)).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout(timeout)),
    }
}

async fn open_inner(addr: &NodeAddr) -> Result<TcpStream, AttemptError> {
    let target = match addr.socket_addr() {
        Some(target) => target,
        None => {
            let dns = |reason: String| AttemptError::Dns {
                host: addr.host().to_owned(),
                reason,
            };
            tokio::net::lookup_host((addr.host(), addr.port()))
                .await
                .map_err(|e| dns(e.to_string()))?
                .next()
                .ok_or_else(|| dns("no address found".to_owned()))?
        }
    };
    let socket = net::node_socket(target).map_err(AttemptError::Local)?;
    socket.connect(target).await.map_err(AttemptError::from_io)
}

/// A connection to a node, with the node's slot held for as long as the connection lives.
#[derive(Debug)]
pub struct Connected {
    /// The stream to the node.
    pub stream: TcpStream,
    /// The node's connection slot.
    pub slot: ActiveGuard,
}

/// Connects to the best node, retrying up to `retries` times, each time on the next-best node
/// not yet tried. Every attempt's result is recorded on its node.
pub async fn connect(
    nodes: &[Arc<Node>],
    start: usize,
    retries: u32,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    // Allocated only once a node has been tried and failed (or was full).
    let mut tried: Vec<usize> = Vec::new();
    let mut attempts = 0u32;
    let mut last = None;
    while let Some(i) = balancer::pick(nodes, start, &tried) {
        let node = &nodes[i];
        // A node that filled up since the pick is skipped without spending an attempt.
        let Some(slot) = node.try_acquire() else {
            tried.push(i);
            continue;
        };
        attempts += 1;
        match open(&node.address, timeout).await {
            Ok(stream) => {
                node.observe(true, &"connect succeeded");
                return Ok(Connected { stream, slot });
            }
            Err(error) => {
                tried.push(i);
                tracing::debug!(node = %node.address, %error, attempt = attempts, "connect failed");
                let local = !error.is_node_fault();
                if !local {
                    node.observe(false, &format_args!("connect: {error}"));
                }
                last = Some((node.address.clone(), error));
                // Out of local resources, another node would fail the same way.
                if local || attempts > retries {
                    break;
                }
            }
        }
    }
    match last {
        Some((node, error)) => Err(ConnectError::AllFailed {
            attempts,
            node,
            error,
        }),
        None => Err(ConnectError::NoneAvailable),
    }
}
