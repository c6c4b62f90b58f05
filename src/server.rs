//! The listener: accept loop, connection limit, one task per client, reloads, and the drain
//! at the end.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::connect::{self, Connected};
use crate::metrics::{ActiveClient, ListenerStats};
use crate::node::NodeSet;
use crate::splice::{self, End};
use crate::{admin, health, net, reload};

/// Longest pause of the accept loop while out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// First pause of the accept loop while out of descriptors or memory.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// State shared by the accept loop, connection tasks and probes. Readers take a snapshot with
/// one atomic load and never lock.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    nodes: ArcSwap<NodeSet>,
    /// Grows by one per pick, so nodes with equal load take turns.
    next_pick: AtomicUsize,
    /// Listener counters.
    pub listener: ListenerStats,
    /// The address the listener is bound to (the configured one may say port 0).
    pub bound: SocketAddr,
}

impl Shared {
    /// Shared state for `config` served on `bound`, every node new (up, on probation).
    pub fn new(config: Config, bound: SocketAddr) -> Arc<Shared> {
        let nodes = NodeSet::new(&config.nodes, config.health.rise, config.health.fall);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            nodes: ArcSwap::from_pointee(nodes),
            next_pick: AtomicUsize::new(0),
            listener: ListenerStats::default(),
            bound,
        })
    }

    /// Puts a reloaded configuration and its node set in force (see [`crate::reload`]).
    pub fn replace(&self, config: Config, nodes: NodeSet) {
        self.nodes.store(Arc::new(nodes));
        self.config.store(Arc::new(config));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The nodes in service.
    pub fn nodes(&self) -> Arc<NodeSet> {
        self.nodes.load_full()
    }
}

/// Binds `config.listen`, then serves until `shutdown` is cancelled, then drains open
/// connections for up to `timeouts.drain`. Each configuration received on `reloads` is put in
/// force without dropping a connection. Logs the bound address once bound.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reloads: mpsc::UnboundedReceiver<Config>,
) -> io::Result<()> {
    let listen = config.listen;
    let listener = net::bind_listener(listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    serve(listener, config, shutdown, reloads).await
}

/// Serves clients of an already bound `listener` (its address wins over `config.listen`)
/// until `shutdown` is cancelled, then drains. Benchmarks and embedders bind first, so they
/// know the address before serving.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::UnboundedReceiver<Config>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        nodes = config.nodes.len(),
        retries = config.retries,
        connect_timeout = %humantime::format_duration(config.timeouts.connect),
        "listening"
    );
    let limit = config
        .max_connections
        .map(|max| Arc::new(Semaphore::new(max as usize)));
    let admin = config.admin.listen;
    let shared = Shared::new(config, local);
    // The admin endpoint keeps serving through the drain, and stops when this returns.
    let admin_stop = CancellationToken::new();
    let _stop_admin_on_return = admin_stop.clone().drop_guard();
    if let Some(addr) = admin {
        admin::start(addr, Arc::clone(&shared), admin_stop)?;
    }

    let probes = TaskTracker::new();
    let stop_probes = CancellationToken::new();
    let start_probe = |node| {
        probes.spawn(health::run(node, Arc::clone(&shared), stop_probes.clone()));
    };
    for node in &shared.nodes().nodes {
        start_probe(Arc::clone(node));
    }

    let connections = TaskTracker::new();
    let reloading = async {
        while let Some(config) = reloads.recv().await {
            reload::apply(&shared, config, start_probe);
        }
        // No more reloads can come: wait for the end.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = accept_loop(&listener, &shared, limit, &connections, &shutdown) => {}
        () = reloading => {}
    }
    // Closing the listener makes new clients see "connection refused" right away.
    drop(listener);
    stop_probes.cancel();
    connections.close();
    probes.close();

    let drain = shared.config().timeouts.drain;
    let open = connections.len();
    tracing::info!(open, drain = %humantime::format_duration(drain), "stopped accepting; draining");
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            cut = connections.len(),
            "drain deadline reached; closing the remaining connections"
        );
    } else {
        tracing::info!("drained");
    }
    probes.wait().await;
    Ok(())
}

/// Accepts clients until `shutdown`, one task each. Never gives up: out of descriptors or
/// memory, it backs off (doubling up to a second) and tries again; the kernel's backlog holds
/// waiting clients meanwhile.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    limit: Option<Arc<Semaphore>>,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut backoff = MIN_ACCEPT_BACKOFF;
    let mut exhausted = false;
    loop {
        // The slot is taken before accept(): at the limit, clients wait in the backlog.
        let permit = match &limit {
            Some(limit) => tokio::select! {
                permit = Arc::clone(limit).acquire_owned() => permit.ok(),
                () = shutdown.cancelled() => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                shared.listener.accepted.fetch_add(1, Ordering::Relaxed);
                if exhausted {
                    tracing::info!("accepting again");
                    exhausted = false;
                    backoff = MIN_ACCEPT_BACKOFF;
                }
                if let Err(e) = net::prepare_client(&client) {
                    tracing::debug!(client = %peer, error = %e, "cannot set TCP_NODELAY");
                }
                let span = tracing::debug_span!("conn", client = %peer);
                connections
                    .spawn(handle(client, peer, Arc::clone(shared), permit).instrument(span));
            }
            Err(e) if net::is_resource_exhaustion(&e) => {
                shared.listener.rejected.fetch_add(1, Ordering::Relaxed);
                if !exhausted {
                    tracing::warn!(error = %e, "cannot accept: out of resources; backing off until some are freed");
                    exhausted = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
            // The client went away between SYN and accept: nothing to do.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                tracing::debug!(error = %e, "accept: client gone");
            }
            // Anything else is unexpected: log it and pause briefly so it cannot spin.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(MIN_ACCEPT_BACKOFF) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// One client: connect to a node (with retries), splice, count and log the end. The permit
/// (if any), the node slot and the listener's active count are released when this returns,
/// on every path.
async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _active = ActiveClient::new(&shared.listener);
    let config = shared.config();
    let nodes = shared.nodes();
    let turn = shared.next_pick.fetch_add(1, Ordering::Relaxed);
    // The connect phase (retries, DNS, timeouts) is a larger future than the splice that
    // follows; boxing it keeps it out of this task's own state, so a long-lived connection
    // holds only what the splice needs. One short-lived allocation per connection buys about
    // half a KiB per open connection.
    let connected = Box::pin(connect::connect(
        &nodes.nodes,
        turn,
        config.retries,
        config.timeouts.connect,
        config.health.interval,
    ))
    .await;
    let Connected { stream, slot } = match connected {
        Ok(connected) => connected,
        Err(error) => {
            shared.listener.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, %error, "closing client: no node could take it");
            return;
        }
    };
    let idle = config.timeouts.idle;
    drop(config);
    drop(nodes);
    let outcome = splice::splice(client, stream, idle).await;
    // The slot goes back before the close is counted and logged, so whoever sees the log
    // line (or the counters) sees the node's active count already lowered.
    let node = Arc::clone(slot.node());
    drop(slot);
    node.stats
        .closed(outcome.client_to_node, outcome.node_to_client);
    let end: &dyn std::fmt::Display = match &outcome.end {
        End::Done => &"done",
        End::Idle => &"idle timeout",
        End::Error(e) => e,
    };
    tracing::debug!(
        node = %node.address,
        client_to_node = outcome.client_to_node,
        node_to_client = outcome.node_to_client,
        %end,
        "connection closed"
    );
}
