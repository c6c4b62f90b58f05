//! The admin endpoint's own server: its thread and runtime, its connection slots
//! ([`super::slots`]) and deadlines, so that slow, idle or abusive admin clients can never
//! hold the descriptors the data path needs, nor keep `/live` and `/ready` from answering.
//!
//! Deadlines on a regular connection: each request's header within [`HEADER_TIMEOUT`] of the
//! connection opening or of the previous response (so an idle keep-alive connection is closed
//! after that long too); each response taken by the client within [`RESPONSE_TIMEOUT`]
//! ([`super::deadline`]); the connection itself ends after [`LIFETIME`] (the request in
//! hand is answered first). On the probe lane: one request, its header within
//! [`LANE_HEADER_TIMEOUT`] (a probe sends it at once; a lane slot must turn over fast), its
//! response taken within [`LANE_RESPONSE_TIMEOUT`], then the connection closes.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::deadline::Deadline;
use super::slots::{Admit, Slot, Slots};
use super::AdminClient;
use crate::net;
use crate::state::Shared;
use axum::Extension;
use tokio::sync::OwnedSemaphorePermit;

/// Time a request's header may take to arrive, and an idle keep-alive connection may wait.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take a whole response, from its first byte written.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one regular admin connection may last; then it closes after the request in hand.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// On the probe lane: time for the request's header.
pub const LANE_HEADER_TIMEOUT: Duration = Duration::from_millis(250);
/// On the probe lane: time for the client to take the response.
pub const LANE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The send buffer of an admin connection: a client that asks and does not read stalls the
/// endpoint after this much (a handful of `/metrics` pages), not after the megabytes that the
/// kernel would otherwise queue, each one a page rendered for nobody.
const SEND_BUFFER: usize = 64 * 1024;

/// Accept queue of the admin listener: a burst of scrapes and page loads waits here.
const BACKLOG: i32 = 1024;

/// The routes of a regular connection and of the probe lane.
pub struct Routes {
    /// Every endpoint.
    pub full: Router,
    /// `/live` and `/ready` only.
    pub lane: Router,
}

/// Binds `addr` now (so a taken port fails start-up), then serves `routes` on a dedicated
/// thread until `stop` is cancelled, with at most `max_connections` connections at once.
pub fn start(
    addr: SocketAddr,
    routes: Routes,
    shared: Arc<Shared>,
    max_connections: u32,
    stop: CancellationToken,
) -> io::Result<()> {
    let listener = crate::upgrade::take_tcp(crate::upgrade::Role::Admin, addr, BACKLOG)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot serve admin on {addr}: {e}")))?;
    let held = crate::upgrade::hold(crate::upgrade::Role::Admin, addr, &listener)?;
    let slots = Slots::new(max_connections);
    let (regular, per_source, lane, waiting_room) = slots.sizes();
    tracing::info!(
        addr = %listener.local_addr()?,
        max_connections = regular,
        per_source,
        probe_lane = lane,
        waiting_room,
        "admin listening"
    );
    std::thread::Builder::new()
        .name("tierlb-admin".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "admin endpoint cannot start its runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let _held = held;
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, routes, &shared, &slots, stop).await,
                    Err(e) => tracing::error!(error = %e, "admin endpoint stopped"),
                }
            });
        })?;
    Ok(())
}

/// Accepts admin connections until `stop`; each is served on its own task in the slot it
/// was given, or closed at once when there is none.
async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    shared: &Arc<Shared>,
    slots: &Arc<Slots>,
    stop: CancellationToken,
) {
    let mut full_logged = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                net::cap_send_buffer(&accepted.0, SEND_BUFFER);
                accepted
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                if net::is_resource_exhaustion(&e) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        match slots.admit(peer.ip()) {
            Admit::Regular(slot) => {
                full_logged = false;
                let router = routes.full.clone().layer(Extension(AdminClient(peer)));
                tokio::spawn(regular(stream, router, slot));
            }
            Admit::Lane(slot) => {
                tokio::spawn(lane(stream, routes.lane.clone(), slot));
            }
            Admit::Wait(waiting) => {
                let (router, shared) = (routes.lane.clone(), Arc::clone(shared));
                tokio::spawn(async move {
                    match tokio::time::timeout(LANE_HEADER_TIMEOUT, waiting.lane()).await {
                        Ok(Some(slot)) => lane(stream, router, slot).await,
                        _ => {
                            shared
                                .process
                                .admin_rejected
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            Admit::Refused => {
                shared
                    .process
                    .admin_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if !full_logged {
                    tracing::warn!(
                        client = %peer,
                        "admin connection limit reached, probe lane included: further admin connections are closed at once"
                    );
                    full_logged = true;
                }
            }
        }
    }
}

/// Serves a regular connection: keep-alive, every endpoint, until it ends or its lifetime
/// does (the request in hand is answered first).
async fn regular(stream: TcpStream, router: Router, slot: Slot) {
    let io = TokioIo::new(Deadline::new(stream, RESPONSE_TIMEOUT));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(router));
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        () = tokio::time::sleep(LIFETIME) => {
            // The request in hand is answered, within the response deadline; a client that
            // stalls mid-request is not waited for longer than that.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(RESPONSE_TIMEOUT, connection).await.ok()
        }
    };
    match ended {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(error = %e, "admin connection ended"),
        None => tracing::debug!("admin connection cut at the end of its lifetime"),
    }
    drop(slot);
}

/// Serves one request on the probe lane, then closes.
async fn lane(stream: TcpStream, router: Router, slot: OwnedSemaphorePermit) {
    let io = TokioIo::new(Deadline::new(stream, LANE_RESPONSE_TIMEOUT));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(LANE_HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(io, TowerToHyperService::new(router));
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "admin probe-lane connection ended");
    }
    drop(slot);
}
