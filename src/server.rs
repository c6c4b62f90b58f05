//! The server: binds the listener, starts the service's accept loop, its probes, the admin
//! endpoint and the once-a-second chores, puts reloads in force, and drains at the end.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{show_duration, Config};
use crate::limits::Budget;
use crate::state::Shared;
use crate::{admin, buffers, health, listener, net, reload, splice};

/// A configuration read again on SIGHUP, or why it could not be.
pub type Reload = Result<Config, crate::config::ConfigError>;

/// Binds `config.listen`, then serves until `shutdown` is cancelled, then drains open
/// connections for up to `timeouts.drain`. Each configuration received on `reloads` is put in
/// force without dropping a connection. Logs the bound address once bound.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reloads: mpsc::UnboundedReceiver<Reload>,
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
    mut reloads: mpsc::UnboundedReceiver<Reload>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        nodes = config.nodes.len(),
        retries = config.retries,
        connect_timeout = %show_duration(config.timeouts.connect),
        "listening"
    );
    let budget = Budget::current(config.nodes.len());
    buffers::set_pipe_limit(budget.pipes as usize);
    let limit = listener::connection_limit(config.max_connections, &budget);
    let admin = config.admin.listen;
    let shared = Shared::new(config, local);
    // The admin endpoint keeps serving through the drain, and stops when this returns.
    let admin_stop = CancellationToken::new();
    let _stop_admin_on_return = admin_stop.clone().drop_guard();
    if let Some(addr) = admin {
        admin::start(addr, Arc::clone(&shared), budget.admin, admin_stop)?;
    }

    let probes = TaskTracker::new();
    let stop_probes = CancellationToken::new();
    let start_probe = |node| {
        probes.spawn(health::run(
            node,
            Arc::clone(&shared.service),
            stop_probes.clone(),
        ));
    };
    for node in &shared.service.upstream().nodes.nodes {
        start_probe(Arc::clone(node));
    }

    let connections = TaskTracker::new();
    let reloading = async {
        while let Some(config) = reloads.recv().await {
            match config {
                Ok(config) => {
                    reload::apply(&shared, config, start_probe);
                    shared.process.reloads_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    shared
                        .process
                        .reloads_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!("reload failed, keeping the configuration in force: {e}");
                }
            }
        }
        // No more reloads can come: wait for the end.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = listener::accept_loop(&listener, &shared.service, limit, &connections, &shutdown) => {}
        () = reloading => {}
        () = every_second(&shared) => {}
    }
    // Closing the listener makes new clients see "connection refused" right away.
    drop(listener);
    stop_probes.cancel();
    connections.close();
    probes.close();

    let drain = shared.service.upstream().settings.timeouts.drain;
    let open = connections.len();
    tracing::info!(open, drain = %show_duration(drain), "stopped accepting; draining");
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            cut = connections.len(),
            "drain deadline reached; resetting the remaining connections"
        );
        splice::cut_open_connections();
    } else {
        tracing::info!("drained");
    }
    probes.wait().await;
    Ok(())
}

/// Once a second: one line for the client failures that were not logged one by one, and each
/// node's traffic sample for the status page.
async fn every_second(shared: &Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for node in &shared.service.upstream().nodes.nodes {
            node.stats.sample();
        }
        let more = shared.service.client_failures.take_suppressed();
        if more > 0 {
            tracing::warn!(count = more, "{more} more client failures in the last second (rate-limited: not logged one by one)");
        }
    }
}
