//! A service's listener: the accept loop, the connection limit taken before each accept (so
//! at the limit clients wait in the kernel's accept queue), one `conn` task per client, and
//! one log line at each end of an episode at the limit or out of descriptors.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::show_duration;
use crate::limits::{Budget, CLIENT_DESCRIPTORS};
use crate::service::Service;
use crate::sni::Router;
use crate::{conn, net, sni};

/// What a listener serves: one service, or the services sharing its address by SNI.
#[derive(Debug, Clone)]
pub enum Serves {
    /// One service.
    One(Arc<Service>),
    /// Several services, chosen by each client's server name.
    Shared(Arc<Router>),
}

impl Serves {
    /// The service whose listener counters count what happens before a client is routed.
    fn counted(&self) -> Option<Arc<Service>> {
        match self {
            Serves::One(service) => Some(Arc::clone(service)),
            Serves::Shared(router) => router.table().first().cloned(),
        }
    }
}

/// Longest pause of the accept loop while out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// First pause of the accept loop while out of descriptors or memory.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

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

/// The limits a client slot is taken from before each accept: the service's own
/// `max_connections`, if set, and the process-wide budget every service shares (see
/// [`crate::limits`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The service's `max_connections`.
    pub service: Option<Arc<Semaphore>>,
    /// The descriptor budget, shared by all services: two per TCP client (its socket and
    /// its node's), one per UDP flow.
    pub process: Arc<Semaphore>,
}

/// The slots one client holds until its connection ends.
pub struct Permits {
    _service: Option<OwnedSemaphorePermit>,
    _process: OwnedSemaphorePermit,
}

/// The process-wide descriptor budget for clients and flows, logged once.
pub fn process_limit(budget: &Budget) -> Arc<Semaphore> {
    tracing::info!(
        nofile = budget.nofile,
        max_connections = budget.clients,
        "client limit set from the open-files limit; more clients wait in the accept queue"
    );
    Arc::new(Semaphore::new(budget.descriptors()))
}

/// A service's own limit from its `max_connections`, never above the budget.
pub fn service_limit(
    name: &str,
    configured: Option<u32>,
    budget: &Budget,
) -> Option<Arc<Semaphore>> {
    let max = configured?;
    if max > budget.clients {
        tracing::warn!(
            service = name,
            max_connections = max,
            allowed = budget.clients,
            nofile = budget.nofile,
            "max_connections is more than the open-files limit allows; at most {} clients are served at once: raise the limit (ulimit -n, LimitNOFILE=) to allow more",
            budget.clients
        );
    }
    Some(Arc::new(Semaphore::new(max.min(budget.clients) as usize)))
}

/// Takes a slot of `limit` at once if one is free, else waits for one (until `shutdown`),
/// counting the wait in `episode`. `None` when the limit closed or shutdown came.
async fn slot(
    limit: &Arc<Semaphore>,
    n: u32,
    episode: &mut Episode,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(limit).try_acquire_many_owned(n) {
        return Some(permit);
    }
    episode.begin(|| {
        tracing::warn!(
            "connection limit reached: new clients wait in the accept queue until a connection closes"
        );
    });
    let permit = tokio::select! {
        permit = Arc::clone(limit).acquire_many_owned(n) => permit.ok(),
        () = shutdown.cancelled() => None,
    };
    // The episode lasted at least until this wait ended.
    episode.touch();
    permit
}

/// Accepts clients until `shutdown`, one task each. Never gives up: out of descriptors or
/// memory, it backs off (doubling up to a second) and tries again; the kernel's backlog holds
/// waiting clients meanwhile, as it does while the connection limit is reached. Each such
/// episode is logged twice, when it starts and when it ends (with how long and how many),
/// never once per client.
pub async fn accept_loop(
    listener: &TcpListener,
    serves: &Serves,
    limits: Limits,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut backoff = MIN_ACCEPT_BACKOFF;
    let mut at_limit = Episode::default();
    let mut exhausted = Episode::default();
    loop {
        // The slots are taken before accept(): at a limit, clients wait in the backlog.
        let own = match &limits.service {
            Some(limit) => match slot(limit, 1, &mut at_limit, shutdown).await {
                Some(permit) => Some(permit),
                None => return,
            },
            None => None,
        };
        let Some(process) =
            slot(&limits.process, CLIENT_DESCRIPTORS, &mut at_limit, shutdown).await
        else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                exhausted.end(|count, lasted| {
                    tracing::info!(
                        failed_accepts = count,
                        "accepting again after {lasted} out of resources"
                    );
                });
                if limits.process.available_permits() >= CLIENT_DESCRIPTORS as usize {
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
                // Every line about a connection names its service and client itself: a span
                // would repeat them (and cost every connection its bookkeeping).
                match serves {
                    Serves::One(service) => {
                        service.listener.accepted.fetch_add(1, Ordering::Relaxed);
                        let permits = Permits {
                            _service: own,
                            _process: process,
                        };
                        connections.spawn(conn::handle(client, peer, Arc::clone(service), permits));
                    }
                    Serves::Shared(router) => {
                        connections.spawn(sni::serve(client, peer, Arc::clone(router), process));
                    }
                }
            }
            Err(e) if net::is_resource_exhaustion(&e) => {
                if let Some(service) = serves.counted() {
                    service.listener.rejected.fetch_add(1, Ordering::Relaxed);
                }
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
