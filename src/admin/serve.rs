//! The admin endpoint's own server: its thread and runtime, a cap on connections open at
//! once, and timeouts, so that slow or idle admin clients can never hold the descriptors the
//! data path needs.
//!
//! Each request's header must arrive within [`HEADER_TIMEOUT`] of the connection opening, or
//! of the previous response on a kept-alive connection; so an idle keep-alive connection is
//! closed after that long too. Past [`crate::limits::Budget::admin`] connections, new ones are
//! closed at once and counted (`tierlb_admin_rejected_total`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::net;
use crate::state::Shared;

/// Time a request's header may take to arrive, and an idle keep-alive connection may wait.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept queue of the admin listener: a burst of scrapes and page loads waits here.
const BACKLOG: i32 = 1024;

/// Binds `addr` now (so a taken port fails start-up), then serves `router` on a dedicated
/// thread until `stop` is cancelled, with at most `max_connections` connections at once.
pub fn start(
    addr: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    max_connections: u32,
    stop: CancellationToken,
) -> io::Result<()> {
    let listener = net::bind_std_listener(addr, BACKLOG)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot serve admin on {addr}: {e}")))?;
    tracing::info!(addr = %listener.local_addr()?, max_connections, "admin listening");
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
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        serve(listener, router, &shared, max_connections, stop).await;
                    }
                    Err(e) => tracing::error!(error = %e, "admin endpoint stopped"),
                }
            });
        })?;
    Ok(())
}

/// Accepts admin connections until `stop`; each is served on its own task while a slot is
/// free, and closed at once otherwise.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shared: &Shared,
    max_connections: u32,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let mut full_logged = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                if net::is_resource_exhaustion(&e) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared
                .process
                .admin_rejected
                .fetch_add(1, Ordering::Relaxed);
            if !full_logged {
                tracing::warn!(
                    max_connections,
                    "admin connection limit reached: further admin connections are closed at once"
                );
                full_logged = true;
            }
            continue;
        };
        full_logged = false;
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
            drop(slot);
        });
    }
}
