//! Connecting to nodes: a named node's addresses in turn, one attempt with a timeout, its failure classified and
//! counted, the node told, and the retry on the next-best other node.

use std::io;
use std::net::SocketAddr;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balancer::Key;
use crate::config::NodeAddr;
use crate::node::{ActiveGuard, DnsError, FailureKind, Node, Observation, Source};
use crate::upstream::Upstream;
use crate::{net, proxy_protocol};

/// Why one connect attempt (or probe connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The name did not resolve to any address.
    #[error("dns: {0}")]
    Dns(#[from] DnsError),
    /// The node actively refused the connection.
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout.
    #[error("timed out after {}", crate::config::show_duration(*.0))]
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
    /// The connect succeeded, then the node closed or reset before sending a byte (the
    /// reason says which).
    #[error("{0}")]
    Unanswered(&'static str),
    /// A failure of this host, not of the node: out of descriptors, memory or local ports.
    #[error("local failure, not the node's: {}", local_hint(.0))]
    Local(io::Error),
}

/// What a local failure means and how to fix it on the host.
fn local_hint(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => format!(
            "no free local port to connect from, or a `source` address that is not this \
             host's ({e}); widen net.ipv4.ip_local_port_range, set net.ipv4.tcp_tw_reuse = 1, \
             or give `source` more addresses"
        ),
        Some(libc::EMFILE | libc::ENFILE) => format!(
            "out of file descriptors ({e}); raise the open-files limit (ulimit -n, \
             LimitNOFILE=) or lower max_connections"
        ),
        _ => format!("the kernel is out of memory or buffers ({e})"),
    }
}

impl AttemptError {
    /// The metric kind, or `None` for a local failure (which is not the node's).
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            AttemptError::Refused => Some(FailureKind::Refused),
            AttemptError::Timeout(_) => Some(FailureKind::Timeout),
            AttemptError::Dns(_) => Some(FailureKind::Dns),
            AttemptError::Reset | AttemptError::Unreachable(_) | AttemptError::Other(_) => {
                Some(FailureKind::Other)
            }
            AttemptError::Unanswered(_) => Some(FailureKind::Unanswered),
            AttemptError::Local(_) => None,
        }
    }

    fn from_io(e: io::Error) -> AttemptError {
        if net::is_local_failure(&e) {
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
    /// This host could not connect (out of descriptors or local ports): no node was blamed
    /// and no other node tried.
    #[error("cannot connect to {node}: {error}")]
    Local {
        /// The node it was connecting to.
        node: NodeAddr,
        /// The local failure.
        error: AttemptError,
    },
    /// Every node is full or drained (or there is no node).
    #[error("no node can take a connection: every node is drained or at its max_connections")]
    NoneAvailable,
}

/// Connects to `node` within `timeout`. A named node's addresses (kept by its background
/// lookups; a connect never waits for DNS) are tried in turn: one refused or timed out is
/// set aside and the next is tried, each within `timeout`, before the node is charged.
pub async fn open(node: &Node, timeout: Duration) -> Result<TcpStream, AttemptError> {
    if let Some(target) = node.address.socket_addr() {
        return open_at(node, target, timeout).await;
    }
    let mut last = None;
    for target in node.addresses.order(node.address.host())? {
        match open_at(node, target, timeout).await {
            Ok(stream) => return Ok(stream),
            Err(error) if error.kind().is_some() => {
                tracing::debug!(service = %node.service, node = %node.address, address = %target, %error, "address of a named node failed; trying its next one");
                node.addresses.mark(target, true);
                last = Some(error);
            }
            Err(local) => return Err(local),
        }
    }
    Err(last.unwrap_or(AttemptError::Unanswered("no address left to try")))
}

/// Connects to one address of `node` within `timeout`.
pub async fn open_at(
    node: &Node,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, AttemptError> {
    let attempt = async {
        let socket =
            net::node_socket(target, node.source.pick(target)).map_err(AttemptError::Local)?;
        net::connect(socket, target)
            .await
            .map_err(AttemptError::from_io)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout(timeout)),
    }
}

/// A connection to a node, with the node's slot held for as long as the connection lives.
#[derive(Debug)]
pub struct Connected {
    /// The stream to the node.
    pub stream: TcpStream,
    /// The node's connection slot.
    pub slot: ActiveGuard,
    /// The node's index in the set it was picked from.
    pub index: usize,
    /// How long the successful connect took.
    pub took: Duration,
    /// The node's [`crate::node::NodeStats::falls`] when it was connected.
    pub falls: u32,
}

/// What one client's connect attempts have spent so far: the nodes tried and the attempts
/// made, so that a retry after the node dropped the client goes on where connecting left off.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Indices already tried (or found full); allocated only once one is.
    tried: Vec<usize>,
    made: u32,
    /// The last failure, boxed: it is rare, and this lives as long as the connection.
    last: Option<Box<(NodeAddr, AttemptError)>>,
}

impl Attempts {
    /// Connect attempts made so far, on every node.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// Records that the node at `index` took the client and dropped it before answering; it
    /// is not tried again for this client. The failure is counted on the node by the caller.
    pub fn dropped(&mut self, index: usize, node: &Node, error: AttemptError) {
        self.tried.push(index);
        self.last = Some(Box::new((node.address.clone(), error)));
    }
}

/// Who the client is, for the PROXY header a node may be sent: the real client (from an
/// accepted header, else the peer) and the address it connected to.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
}

/// Writes the node's PROXY header for `client`, if it takes one, within `timeout`.
async fn introduce(
    stream: &mut TcpStream,
    node: &Node,
    client: Client,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let Some(header) = proxy_protocol::header(node.proxy_protocol(), client.addr, client.local)
    else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, stream.write_all(&header)).await {
        Ok(result) => result.map_err(AttemptError::from_io),
        Err(_) => Err(AttemptError::Timeout(timeout)),
    }
}

/// Connects the client with `key` to the best node of `upstream`, retrying up to its
/// `retries` times in all (counting the attempts already in `attempts`), each time on the
/// next-best node not yet tried. Every attempt's
/// result is recorded on its node and counted. A local failure (out of descriptors or ports)
/// is not the node's: it is not counted on it, and not retried on another node, which would
/// fail the same way. A node that takes a PROXY header is sent it for `client` before
/// anything else; failing to write it fails the attempt.
pub async fn connect(
    upstream: &Upstream,
    key: Key,
    attempts: &mut Attempts,
    client: Client,
) -> Result<Connected, ConnectError> {
    let nodes = &upstream.nodes;
    let list = &nodes.nodes;
    let settings = &upstream.settings;
    let timeout = settings.timeouts.connect;
    while attempts.made <= settings.retries {
        let Some(i) = upstream.pick_ramped(key, &attempts.tried) else {
            break;
        };
        let node = &list[i];
        // A node that filled up since the pick is skipped without spending an attempt.
        let Some(slot) = node.try_acquire() else {
            attempts.tried.push(i);
            continue;
        };
        nodes.picked(i);
        if attempts.made > 0 {
            node.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        attempts.made += 1;
        let started = Instant::now();
        let opened = match open(node, timeout).await {
            Ok(mut stream) => introduce(&mut stream, node, client, timeout)
                .await
                .map(|()| stream),
            Err(e) => Err(e),
        };
        match opened {
            Ok(stream) => {
                let took = started.elapsed();
                node.stats.connected(took);
                nodes.observe(
                    node,
                    Source::Client,
                    Observation::Accepted,
                    &"connect succeeded",
                );
                return Ok(Connected {
                    stream,
                    slot,
                    index: i,
                    took,
                    falls: node.stats.falls(),
                });
            }
            Err(error) => {
                attempts.tried.push(i);
                tracing::debug!(service = %node.service, client = %client.addr, node = %node.address, %error, attempt = attempts.made, "connect failed");
                let kind = error.kind();
                if let Some(kind) = kind {
                    node.stats.failed(kind);
                    nodes.observe(
                        node,
                        Source::Client,
                        Observation::Failed,
                        &format_args!("connect: {error}"),
                    );
                }
                if kind.is_none() {
                    return Err(ConnectError::Local {
                        node: node.address.clone(),
                        error,
                    });
                }
                attempts.last = Some(Box::new((node.address.clone(), error)));
            }
        }
    }
    match attempts.last.take().map(|last| *last) {
        Some((node, error)) => Err(ConnectError::AllFailed {
            attempts: attempts.made,
            node,
            error,
        }),
        None => Err(ConnectError::NoneAvailable),
    }
}
