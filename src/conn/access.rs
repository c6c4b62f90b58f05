//! The access log line of one connection (`access_log = true`): one `tierlb::access` line per
//! client, at its close, and the text of how the connection ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::splice::{End, Side};

/// One access-log entry: a connection from accept to close.
pub(super) struct Access<'a> {
    pub(super) service: &'a str,
    /// The server name a client of a shared address asked for.
    pub(super) sni: Option<&'a str>,
    pub(super) client: SocketAddr,
    /// The node that served it, if any did.
    pub(super) node: Option<&'a Node>,
    /// Bytes client to node, node to client.
    pub(super) moved: (u64, u64),
    /// The successful connect's time.
    pub(super) took: Option<Duration>,
    pub(super) opened: Instant,
    /// Connect attempts after the first (on other nodes, or after a node dropped the client).
    pub(super) retries: u32,
}

impl Access<'_> {
    /// Writes the line, target `tierlb::access`, with how the connection ended.
    pub(super) fn log(&self, end: &dyn std::fmt::Display) {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let node = self
            .node
            .map_or_else(|| "-".to_owned(), |n| n.address.to_string());
        tracing::info!(
            target: "tierlb::access",
            service = %self.service,
            sni = self.sni,
            client = %self.client,
            node = %node,
            client_to_node = self.moved.0,
            node_to_client = self.moved.1,
            connect_ms = self.took.map_or(0.0, ms),
            duration_ms = ms(self.opened.elapsed()),
            retries = self.retries,
            end = %end,
            "access"
        );
    }
}

/// How a connection ended, for the log line (formatted only if the line is written).
pub(super) struct EndText<'a>(pub(super) &'a End);

impl std::fmt::Display for EndText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            End::Done => f.write_str("done"),
            End::Idle => f.write_str("idle timeout"),
            End::HalfClosed => f.write_str("half-closed too long (fin timeout)"),
            End::Error(e, Side::Client) => write!(f, "client: {e}"),
            End::Error(e, Side::Node) => write!(f, "node: {e}"),
            End::Dropped(_) => f.write_str("dropped"),
        }
    }
}
