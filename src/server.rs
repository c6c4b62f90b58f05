//! The server: binds every service's listener, starts their accept loops and probes, the
//! admin endpoint and the once-a-second chores, puts reloads in force (binding an added
//! service's address first, so a taken address fails the reload before anything changes),
//! and drains at the end.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::{show_duration, Config, Protocol, ServiceConfig};
use crate::dns::Resolver;
use crate::limits::Budget;
use crate::listener;
use crate::reload;
use crate::roster::{self, Start};
pub use crate::service::Bound;
use crate::service::Service;
use crate::state::Shared;
use crate::upgrade::{self, Role};
use crate::{admin, buffers, discovery, health, net, sni, splice};

mod tasks;

use tasks::Tasks;

/// A configuration read again on SIGHUP, or why it could not be.
pub type Reload = Result<Config, crate::config::ConfigError>;

/// Binds every service's `listen`, then serves until `shutdown` is cancelled, then drains
/// open connections for up to the longest `timeouts.drain`. Each configuration received on
/// `reloads` is put in force without dropping a connection. Logs each bound address.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reloads: mpsc::UnboundedReceiver<Reload>,
) -> io::Result<()> {
    let listeners = sni::groups(&config.services)
        .iter()
        .map(|group| bind(&config.services[group[0]]))
        .collect::<io::Result<Vec<_>>>()?;
    serve(listeners, config, shutdown, reloads).await
}

/// Binds one service's listen address: a TCP listener, or a UDP service's socket.
fn bind(service: &ServiceConfig) -> io::Result<Bound> {
    let listen = service.listen;
    let bound = match service.protocol {
        Protocol::Tcp => upgrade::take_tcp(Role::Service, listen, net::BACKLOG)
            .and_then(TcpListener::from_std)
            .map(Bound::Tcp),
        Protocol::Udp => upgrade::take_udp(Role::Service, listen)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .map(Bound::Udp),
    };
    bound.map_err(|e| {
        io::Error::new(
            e.kind(),
            match service.protocol {
                Protocol::Tcp => {
                    format!("cannot listen on {listen} (service {}): {e}", service.name)
                }
                Protocol::Udp => format!(
                    "cannot listen on {listen} (UDP, service {}): {e}",
                    service.name
                ),
            },
        )
    })
}

/// How long serving waits at start for the first answers of DNS names, at most.
const FIRST_ANSWERS: Duration = Duration::from_secs(5);

/// Serves clients of already bound `listeners`, one per listener of `config` in order (a
/// service's own, or one per address shared by `sni`; their addresses win over the
/// configured ones), until `shutdown` is cancelled, then drains. Benchmarks and embedders
/// bind first, so they know the addresses before serving.
pub async fn serve(
    listeners: Vec<Bound>,
    config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
) -> io::Result<()> {
    // Each entry may find up to its max_nodes nodes, each probed.
    let nodes = config
        .services
        .iter()
        .map(|s| {
            s.nodes.len()
                + s.discover
                    .iter()
                    .map(|d| d.max_nodes as usize)
                    .sum::<usize>()
        })
        .sum();
    let budget = Budget::current(nodes);
    buffers::set_pipe_limit(budget.pipes as usize);
    let resolver = Resolver::new(&config.resolvers).map_err(io::Error::other)?;
    let tasks = Tasks {
        resolver,
        probes: TaskTracker::new(),
        stop_probes: CancellationToken::new(),
        loops: TaskTracker::new(),
        connections: TaskTracker::new(),
        shutdown: shutdown.clone(),
        process_limit: listener::process_limit(&budget),
        budget,
    };
    let groups = sni::groups(&config.services);
    let mut bound = vec![None; config.services.len()];
    for (group, listener) in groups.iter().zip(&listeners) {
        let addr = listener.local_addr()?;
        for &i in group {
            bound[i] = Some(addr);
        }
    }
    let mut services = Vec::with_capacity(config.services.len());
    for (service, bound) in config.services.iter().zip(bound) {
        let bound = bound.ok_or_else(|| io::Error::other("fewer listeners than services"))?;
        tracing::info!(
            service = %service.name,
            addr = %bound,
            nodes = service.nodes.len(),
            discover = service.discover.len(),
            protocol = service.protocol.name(),
            sni = service.sni.len(),
            retries = service.retries,
            connect_timeout = %show_duration(service.timeouts.connect),
            "listening"
        );
        services.push(Arc::new(Service::new(service, bound, tasks.stop_token())));
    }
    let admin = config.admin.listen;
    let cluster_config = config.cluster.clone();
    let shared = Shared::new(config, services.clone());
    // Gossip runs through the drain (publishing the draining connections) until this returns;
    // so does the admin endpoint, unless a handover stops it at once (`admin_only`).
    let admin_stop = CancellationToken::new();
    let admin_only = admin_stop.child_token();
    let _stop_admin_on_return = admin_stop.clone().drop_guard();
    let cluster = match &cluster_config {
        Some(c) => Some(
            Cluster::start(c, Arc::clone(&shared), admin_stop.clone())
                .await
                .map_err(|e| io::Error::other(format!("{e:#}")))?,
        ),
        None => None,
    };
    if let Some(addr) = admin {
        admin::start(
            addr,
            Arc::clone(&shared),
            cluster,
            tasks.budget.admin,
            admin_only.clone(),
        )?;
    }
    for service in &services {
        for node in &service.upstream().nodes.nodes {
            tasks.probe(Arc::clone(node), service);
        }
        roster::start_entries(service, &tasks);
    }
    // Clients wait in the accept queue meanwhile, rather than find no node.
    if !discovery::settle(&services, FIRST_ANSWERS).await {
        tracing::warn!(within = %show_duration(FIRST_ANSWERS), "some DNS names have not answered yet: serving with the nodes known; their lookups go on");
    }
    let mut routers = Vec::new();
    for (group, listener) in groups.iter().zip(listeners) {
        match listener {
            Bound::Tcp(listener) if sni::is_shared(group, &shared.config().services) => {
                let members = group.iter().map(|&i| Arc::clone(&services[i])).collect();
                let listen = shared.config().services[group[0]].listen;
                routers.push(tasks.serve_shared(listen, listener, members));
            }
            bound => tasks.serve(Arc::clone(&services[group[0]]), bound),
        }
    }
    shared.routers.store(Arc::new(routers));
    health::first_verdicts(&services, FIRST_ANSWERS).await;
    upgrade::ready();

    let reloading = async {
        while let Some(config) = reloads.recv().await {
            reload_one(&shared, config, &tasks);
        }
        // No more reloads can come: wait for the end.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = reloading => {}
        () = every_second(&shared) => {}
    }
    shared.draining.store(true, Ordering::Relaxed);
    if upgrade::handed_over() {
        admin_only.cancel();
    }
    tasks.loops.close();
    tasks.loops.wait().await;
    tasks.stop_probes.cancel();
    tasks.connections.close();
    tasks.probes.close();
    drain(&shared, &tasks.connections).await;
    tasks.probes.wait().await;
    Ok(())
}

/// Puts one reloaded configuration in force, or logs why it cannot be: a file that did not
/// validate, or an added service's address that cannot be bound (then nothing changes).
fn reload_one(shared: &Shared, config: Reload, tasks: &Tasks) {
    let failed = |e: &dyn std::fmt::Display| {
        shared
            .process
            .reloads_failed
            .fetch_add(1, Ordering::Relaxed);
        // One line per error, each with its own time and level (a file with several errors
        // is one error per line of it).
        for line in e.to_string().lines() {
            tracing::error!("reload failed, keeping the configuration in force: {line}");
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return failed(&e),
    };
    let old = shared.config();
    if let Err(why) = sni::reload_check(&old, &config) {
        return failed(&why);
    }
    let d = reload::diff_services(&reload::service_keys(&old), &reload::service_keys(&config));
    // A service of its own address is bound; a new shared address once; an address shared
    // already keeps its listener.
    let new_shared = sni::shared_groups(&config);
    let old_shared = sni::shared_groups(&old);
    let own: io::Result<Vec<Bound>> = d
        .added
        .iter()
        .filter(|&&j| !new_shared.iter().any(|(_, g)| g.contains(&j)))
        .map(|&j| bind(&config.services[j]))
        .collect();
    let fresh: io::Result<Vec<(SocketAddr, TcpListener)>> = new_shared
        .iter()
        .filter(|(addr, _)| !old_shared.iter().any(|(a, _)| a == addr))
        .map(|(addr, g)| match bind(&config.services[g[0]])? {
            Bound::Tcp(listener) => Ok((*addr, listener)),
            Bound::Udp(_) => Err(io::Error::other("a UDP service shares no address")),
        })
        .collect();
    match (own, fresh) {
        (Ok(own), Ok(fresh)) => {
            reload::apply(shared, config, own, fresh, tasks);
            shared.process.reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
        (Err(e), _) | (_, Err(e)) => failed(&e),
    }
}

/// Lets open connections finish for up to the longest drain of the services, then cuts the
/// rest with a reset.
async fn drain(shared: &Shared, connections: &TaskTracker) {
    let drain = shared
        .services()
        .iter()
        .map(|s| s.upstream().settings.timeouts.drain)
        .max()
        .unwrap_or_default();
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
}

/// Once a second: the state file, unlogged client failures, each node's traffic sample.
async fn every_second(shared: &Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.save_state(); // peers' decisions (this instance's are saved as taken)
        for service in shared.services().iter() {
            for node in &service.upstream().nodes.nodes {
                node.stats.sample();
            }
            let more = service.client_failures.take_suppressed();
            if more > 0 {
                tracing::warn!(service = %service.name, count = more, "more client failures in the last second (rate-limited: not logged one by one)");
            }
        }
    }
}
