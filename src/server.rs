//! The listener: accept loop, connection limit, one task per client, reloads, and the drain
//! at the end.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::state::Shared;
use crate::{admin, conn, health, net, reload};

/// Longest pause of the accept loop while out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// First pause of the accept loop while out of descriptors or memory.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

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
        () = summarise_failures(&shared) => {}
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

/// Once a second, one line for the client failures that were not logged one by one.
async fn summarise_failures(shared: &Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let more = shared.client_failures.take_suppressed();
        if more > 0 {
            tracing::warn!(count = more, "{more} more client failures in the last second (rate-limited: not logged one by one)");
        }
    }
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
                    .spawn(conn::handle(client, peer, Arc::clone(shared), permit).instrument(span));
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
