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

use crate::config::{show_duration, Config};
use crate::limits::Budget;
use crate::state::Shared;
use crate::{admin, buffers, conn, health, net, reload, splice};

/// Longest pause of the accept loop while out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// First pause of the accept loop while out of descriptors or memory.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

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
    let limit = connection_limit(config.max_connections, &budget);
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
        probes.spawn(health::run(node, Arc::clone(&shared), stop_probes.clone()));
    };
    for node in &shared.upstream().nodes.nodes {
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
        () = accept_loop(&listener, &shared, limit, &connections, &shutdown) => {}
        () = reloading => {}
        () = every_second(&shared) => {}
    }
    // Closing the listener makes new clients see "connection refused" right away.
    drop(listener);
    stop_probes.cancel();
    connections.close();
    probes.close();

    let drain = shared.upstream().settings.timeouts.drain;
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

/// One stretch of time in a condition worth one log line at each end (at the connection
/// limit, out of descriptors), with the number of events during it. It ends only after a
/// quiet second, so a limit that is reached again and again under load is one episode.
#[derive(Default)]
struct Episode {
    /// When it started, when the last event was, and how many there were.
    state: Option<(std::time::Instant, std::time::Instant, u64)>,
}

/// How long an episode must go without an event to be over.
const EPISODE_QUIET: Duration = Duration::from_secs(1);

impl Episode {
    /// Counts one event; calls `log` if this starts the episode.
    fn begin(&mut self, log: impl FnOnce()) {
        let now = std::time::Instant::now();
        match &mut self.state {
            Some((_, last, count)) => {
                *last = now;
                *count += 1;
            }
            None => {
                log();
                self.state = Some((now, now, 1));
            }
        }
    }

    /// Notes that the condition still held just now (a wait ended), without counting.
    fn touch(&mut self) {
        if let Some((_, last, _)) = &mut self.state {
            *last = std::time::Instant::now();
        }
    }

    /// Ends the episode if one is running and has been quiet for a second, calling `log`
    /// with its event count and length.
    fn end(&mut self, log: impl FnOnce(u64, &str)) {
        if let Some((started, last, count)) = self.state {
            if last.elapsed() >= EPISODE_QUIET {
                self.state = None;
                let lasted = Duration::from_millis(started.elapsed().as_millis() as u64);
                log(count, &show_duration(lasted));
            }
        }
    }
}

/// The listener's connection limit: `max_connections` if set, and never more than the
/// descriptor budget allows (see [`crate::limits`]).
fn connection_limit(configured: Option<u32>, budget: &Budget) -> Arc<Semaphore> {
    let limit = match configured {
        Some(max) if max > budget.clients => {
            tracing::warn!(
                max_connections = max,
                allowed = budget.clients,
                nofile = budget.nofile,
                "max_connections is more than the open-files limit allows; using {}: raise the limit (ulimit -n, LimitNOFILE=) to allow more",
                budget.clients
            );
            budget.clients
        }
        Some(max) => max,
        None => budget.clients,
    };
    tracing::info!(
        nofile = budget.nofile,
        max_connections = limit,
        "at most {limit} clients at once; more wait in the accept queue"
    );
    Arc::new(Semaphore::new(limit as usize))
}

/// Once a second: one line for the client failures that were not logged one by one, and each
/// node's traffic sample for the status page.
async fn every_second(shared: &Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for node in &shared.upstream().nodes.nodes {
            node.stats.sample();
        }
        let more = shared.client_failures.take_suppressed();
        if more > 0 {
            tracing::warn!(count = more, "{more} more client failures in the last second (rate-limited: not logged one by one)");
        }
    }
}

/// Accepts clients until `shutdown`, one task each. Never gives up: out of descriptors or
/// memory, it backs off (doubling up to a second) and tries again; the kernel's backlog holds
/// waiting clients meanwhile, as it does while the connection limit is reached. Each such
/// episode is logged twice, when it starts and when it ends (with how long and how many),
/// never once per client.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    limit: Arc<Semaphore>,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut backoff = MIN_ACCEPT_BACKOFF;
    let mut at_limit = Episode::default();
    let mut exhausted = Episode::default();
    loop {
        // The slot is taken before accept(): at the limit, clients wait in the backlog.
        let permit = match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                at_limit.begin(|| {
                    tracing::warn!(
                        "connection limit reached: new clients wait in the accept queue until a connection closes"
                    );
                });
                let permit = tokio::select! {
                    permit = Arc::clone(&limit).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    () = shutdown.cancelled() => return,
                };
                // The episode lasted at least until this wait ended.
                at_limit.touch();
                permit
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                shared.listener.accepted.fetch_add(1, Ordering::Relaxed);
                exhausted.end(|count, lasted| {
                    tracing::info!(
                        failed_accepts = count,
                        "accepting again after {lasted} out of resources"
                    );
                });
                if limit.available_permits() > 0 {
                    at_limit.end(|count, lasted| {
                        tracing::info!(
                            waited = count,
                            "below the connection limit again after {lasted}"
                        );
                    });
                }
                backoff = MIN_ACCEPT_BACKOFF;
                if let Err(e) = net::prepare_client(&client) {
                    tracing::debug!(client = %peer, error = %e, "cannot set TCP_NODELAY");
                }
                let span = tracing::debug_span!("conn", client = %peer);
                connections
                    .spawn(conn::handle(client, peer, Arc::clone(shared), permit).instrument(span));
            }
            Err(e) if net::is_resource_exhaustion(&e) => {
                shared.listener.rejected.fetch_add(1, Ordering::Relaxed);
                exhausted.begin(|| {
                    tracing::warn!(error = %e, "cannot accept: out of resources; backing off until some are freed");
                });
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
