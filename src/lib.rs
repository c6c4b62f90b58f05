//! tierlb: a TCP (layer-4) load balancer.
//!
//! Clients connect to a service's listener (one process serves several services, each with
//! its own node pool); each connection is spliced to the backend node with the fewest
//! active connections (weighted) among the healthy ones. Broken nodes are found two
//! ways at once: passively, from real connect failures, and actively, by probes. A failed
//! connect is retried on the next-best other node, so a dying node costs clients nothing.
//!
//! # Parts
//!
//! - [`config`]: TOML and flags into a validated [`config::Config`]; every error names file,
//!   line and key, and all of a file's errors are reported at once.
//! - [`cli`]: the command line, the admin token file and variable.
//! - [`node`]: [`node::Node`] and its health state machine, the one shared truth, with what
//!   the cluster's peers say about it.
//! - [`balancer`]: the pure pick by strategy: weighted least connections with strict turns
//!   among ties, weighted round robin, or source affinity (weighted rendezvous hashing), with
//!   up, suspect, backup and down nodes in that order.
//! - [`upstream`]: one service's settings, node set and strategy, as one snapshot.
//! - [`connect`]: one connect attempt (a named node's addresses in turn), its failure
//!   classified, retries on other nodes.
//! - [`splice`]: bytes both ways (copy for small messages, `splice(2)` for bulk), half-close,
//!   reset propagation, idle timeout, and whether the node answered at all.
//! - [`conn`]: one client from pick to close.
//! - [`queue`]: the first-come first-served wait for a slot while every node is full.
//! - [`proxy_protocol`]: PROXY protocol headers written to nodes and read from trusted
//!   clients.
//! - [`buffers`]: per-thread pools of copy buffers and pipes, held only while bytes move.
//! - [`limits`]: the descriptor budget that sets the default connection limit.
//! - [`state`]: the services and what the admin endpoint reads.
//! - [`service`]: one service's shared state (name, upstream, listener counters).
//! - [`admission`]: who may connect to a service and how much per client address (allow and
//!   deny ranges, per-source connection and rate limits, fleet-wide in a cluster).
//! - [`listener`]: a service's accept loop and connection limit.
//! - [`sni`]: services sharing one listen address, each client routed by the server name of
//!   its TLS ClientHello.
//! - [`udp`]: UDP services: flows keyed by client address and port, each through a socket
//!   connected to its node, replies sent back from the service's address.
//! - [`server`]: binds and wires every service, probes, reloads and the admin endpoint;
//!   drains.
//! - [`health`]: the active probe loop of each node.
//! - [`shutdown`]: the signals that stop, reload and upgrade tierlb.
//! - [`upgrade`]: binary upgrades (the listening sockets handed to a new process), the
//!   sockets systemd passes, the PID file and systemd's readiness.
//! - [`reload`]: the pure service diff and its application on SIGHUP.
//! - [`roster`]: a service's node list (listed and discovered) put in force, by address.
//! - [`dns`]: the process's DNS client (hickory-resolver), used only off the connect path.
//! - [`found`]: what a service's `discover` entries found, behind its writers' lock.
//! - [`discovery`]: the background lookups of `discover` entries and of named nodes.
//! - [`metrics`]: counters, the connect-latency histogram, recent samples, Prometheus text.
//! - [`cluster`]: several instances as one: gossip (chitchat) over a sealed UDP transport,
//!   what each publishes, and the merge rules that turn peers' reports into each node's
//!   suspect flag, cluster-wide load and drain.
//! - [`admin`]: the HTTP endpoint for metrics, status, the status page and node drain.
//! - [`persist`]: the state file, operator decisions kept across restarts.
//! - [`throttle`]: rate-limited log lines.
//! - [`timings`]: recorded durations (connect times, queue waits) as quantiles and buckets.
//! - [`net`]: socket options and which errors are this host's own.
//!
//! # How a connection flows
//!
//! 1. Each service's [`listener`] takes a slot of its `max_connections` (if set) and of the
//!    process-wide descriptor budget before accepting, so at a limit clients wait in the
//!    kernel's accept queue; it accepts and spawns one task per client ([`conn::handle`]).
//! 2. The task loads its service's [`upstream::Upstream`] (settings, nodes and strategy, one
//!    lock-free snapshot) and asks it for the best node ([`balancer::pick`]); in a cluster
//!    the pick counts every instance's connections and avoids suspect nodes, reading only
//!    atomics the cluster task keeps up to date.
//! 3. [`connect`] tries it with the connect timeout; a failure is counted on that node and the
//!    next-best untried node is tried, at most `retries` more times. A local failure (out of
//!    descriptors or ports) is neither counted on the node nor retried.
//! 4. The node's slot (its active count) is held by a guard for as long as the connection
//!    lives, and given back on every exit path.
//! 5. [`splice`] copies until both sides are done, the idle timeout, or an error. A node that
//!    ends the connection before answering has failed the client; if nothing moved yet, the
//!    client is handed back and retried on another node, as after a failed connect.
//! 6. The close is counted on the node and tells its health whether it answered.

//! # Errors
//!
//! Library modules return `thiserror` enums, so callers can tell a node's fault from a local
//! one (which drives retries and health); only `main` turns them into `anyhow` chains for the
//! operator.
//!
//! Modules are `pub` where `main`, the tests or the benches need them (the command line, the
//! config, the server, the pick and the node set, socket set-up, limits and signals), and
//! crate-internal otherwise.

// One system call no safe crate wraps (the SIOCOUTQ ioctl, in `net`) is the only `unsafe`;
// it is allowed there alone, with its SAFETY comment.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub(crate) mod admin;
pub(crate) mod admission;
pub mod balancer;
pub(crate) mod buffers;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod conn;
pub(crate) mod connect;
pub(crate) mod discovery;
pub(crate) mod dns;
pub(crate) mod found;
pub(crate) mod health;
pub mod limits;
pub(crate) mod listener;
pub(crate) mod metrics;
pub mod net;
pub mod node;
pub(crate) mod persist;
pub(crate) mod proxy_protocol;
pub(crate) mod queue;
pub(crate) mod reload;
pub(crate) mod roster;
pub mod server;
pub(crate) mod service;
pub mod shutdown;
pub(crate) mod sni;
pub(crate) mod splice;
pub(crate) mod state;
pub(crate) mod throttle;
pub(crate) mod timings;
pub(crate) mod udp;
pub mod upgrade;
pub(crate) mod upstream;

pub use config::Config;

/// Serves `config` until `shutdown` is cancelled, then drains; each configuration received
/// on `reloads` (or the error that kept it from loading) is put in force without dropping a connection. See [`server::run`].
pub async fn run(
    config: Config,
    shutdown: tokio_util::sync::CancellationToken,
    reloads: tokio::sync::mpsc::UnboundedReceiver<server::Reload>,
) -> std::io::Result<()> {
    server::run(config, shutdown, reloads).await
}
