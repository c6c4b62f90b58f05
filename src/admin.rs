//! The admin endpoint (`--admin ADDR` or `[admin] listen`): metrics, status and node drain
//! over HTTP, on its own thread and runtime so it never takes time from the data path.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics::render`]).
//! - `GET /status`: the same as JSON, plus each node's last health result and why.
//! - `GET /`: a self-contained HTML status page that refreshes itself.
//! - `GET /live`: 200 while the process runs; `GET /ready`: 200 when accepting and every
//!   service has an up node, 503 (saying why) while draining or when one has none.
//! - `POST /nodes/{address}/drain` and `/enable`: take a node out of service (no new
//!   connections, open ones finish) and back. Refused unless `[admin] token` is set and sent
//!   as `Authorization: Bearer TOKEN`; the token is compared in constant time.
//!
//! Read endpoints change nothing; the write endpoints change only a node's drain flag (in a
//! cluster, on every instance: the decision is published).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::metrics;
use crate::state::Shared;

/// The cluster membership, when `[cluster]` is set: handlers reach it as an extension.
type Members = Extension<Option<Arc<Cluster>>>;

/// The address of the admin client a request came from, set on each connection's routes.
#[derive(Debug, Clone, Copy)]
pub struct AdminClient(pub std::net::SocketAddr);

/// The admin client, as handlers extract it.
type Client = Extension<AdminClient>;

mod deadline;
mod decide;
mod guard;
mod serve;
mod slots;
mod status;

/// Binds `addr` now (so a taken port fails start-up), then serves on a dedicated thread until
/// `stop` is cancelled, with at most `max_connections` admin connections at once.
pub fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    cluster: Option<Arc<Cluster>>,
    max_connections: u32,
    stop: CancellationToken,
) -> io::Result<()> {
    let routes = serve::Routes {
        full: router(Arc::clone(&shared), cluster),
        lane: lane_router(Arc::clone(&shared)),
    };
    serve::start(addr, routes, shared, max_connections, stop)
}

/// The probe lane's routes ([`slots`]): `/live` and `/ready`; anything else is told that the
/// endpoint is busy.
fn lane_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "the admin endpoint is busy: only /live and /ready are answered now\n",
            )
        })
        .with_state(shared)
}

/// What an unknown path is told.
const NOT_FOUND: &str = "not found; try GET /, /metrics, /status, /live, /ready, POST /services/{service}/nodes/{address}/drain|enable or PUT /services/{service}/nodes/{address}/weight\n";

/// The routes; unknown paths get a 404 that lists the known ones, wrong methods a 405.
pub fn router(shared: Arc<Shared>, cluster: Option<Arc<Cluster>>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(prometheus))
        .route("/status", get(status))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route(
            "/services/{service}/nodes/{address}/weight",
            put(decide::weight),
        )
        .route(
            "/services/{service}/nodes/{address}/{action}",
            post(decide::drain_or_enable),
        )
        .route("/nodes/{address}/weight", put(decide::weight))
        .route("/nodes/{address}/{action}", post(decide::drain_or_enable))
        .fallback(|| async { (StatusCode::NOT_FOUND, NOT_FOUND) })
        .layer(Extension(cluster))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard::check_host,
        ))
        .with_state(shared)
}

async fn prometheus(State(shared): State<Arc<Shared>>, Extension(cluster): Members) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &shared.process;
    let services = shared
        .services()
        .iter()
        .map(|service| {
            let l = &service.listener;
            metrics::ServiceScrape {
                name: service.name.clone(),
                listen: service.bound.to_string(),
                nodes: service.upstream().nodes.nodes.clone(),
                listener: [
                    l.accepted.load(Relaxed),
                    l.rejected.load(Relaxed),
                    l.failed.load(Relaxed),
                    l.active.load(Relaxed),
                ],
                queue: Arc::clone(&service.queue),
                entries: service.found.stats(),
                rejected: crate::admission::Refusal::ALL
                    .map(|why| (why.reason(), service.admission.rejected(why))),
                sources: service.admission.sources(),
                udp: (service.upstream().settings.protocol == crate::config::Protocol::Udp).then(
                    || {
                        metrics::UdpDrop::ALL
                            .iter()
                            .map(|why| (why.label(), service.udp.drops(*why)))
                            .collect()
                    },
                ),
            }
        })
        .collect();
    let unmatched = shared
        .routers
        .load()
        .iter()
        .map(|r| {
            let u = &r.unmatched;
            (
                r.bound.to_string(),
                u.no_route.load(Relaxed),
                u.no_hello.load(Relaxed),
            )
        })
        .collect();
    let scrape = metrics::Scrape {
        unmatched,
        services,
        process: [
            p.reloads_ok.load(Relaxed),
            p.reloads_failed.load(Relaxed),
            p.admin_rejected.load(Relaxed),
        ],
        cluster: cluster.as_deref().map(cluster_scrape),
    };
    match metrics::render(scrape) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the metrics\n",
        )
            .into_response(),
    }
}

/// The cluster's part of a scrape.
fn cluster_scrape(cluster: &Cluster) -> metrics::ClusterScrape {
    use std::sync::atomic::Ordering::Relaxed;
    let members = cluster.members();
    let alive = members.iter().filter(|m| m.alive).count() as u64;
    let t = &cluster.traffic;
    metrics::ClusterScrape {
        alive,
        dead: members.len() as u64 - alive,
        rejected: t.rejected.load(Relaxed),
        sent: [t.sent.load(Relaxed), t.sent_bytes.load(Relaxed)],
        received: [t.received.load(Relaxed), t.received_bytes.load(Relaxed)],
        send_errors: t.send_errors.load(Relaxed),
        skewed: t.skewed.load(Relaxed),
    }
}

/// 200 while the process runs: it answers at all.
async fn live() -> &'static str {
    "live\n"
}

/// 200 when accepting and every service has an up node; 503, saying why, while draining or
/// when a service has none.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n").into_response();
    }
    let down: Vec<String> = shared
        .services()
        .iter()
        .filter(|s| !s.upstream().nodes.nodes.iter().any(|n| n.is_up()))
        .map(|s| s.name.clone())
        .collect();
    if down.is_empty() {
        "ready\n".into_response()
    } else {
        let message = format!("not ready: no node is up in {}\n", down.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>, Extension(cluster): Members) -> Json<Value> {
    Json(status::status_json(&shared, cluster.as_deref()))
}

async fn page(State(shared): State<Arc<Shared>>, Extension(cluster): Members) -> Html<String> {
    // The page renders itself from this snapshot at once, then polls `/status`. Inside a
    // script element only `</` could end it early; JSON never needs it unescaped.
    let snapshot = status::status_json(&shared, cluster.as_deref())
        .to_string()
        .replace("</", "<\\/");
    Html(PAGE.replace("{{STATUS}}", &snapshot))
}

/// The status page: drawn by its script from `/status`, refreshed every 2 s.
const PAGE: &str = include_str!("status.html");
