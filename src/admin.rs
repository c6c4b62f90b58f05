//! The admin endpoint (`--admin ADDR` or `[admin] listen`): metrics, status and node drain
//! over HTTP, on its own thread and runtime so it never takes time from the data path.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics::render`]).
//! - `GET /status`: the same as JSON, plus each node's last health result and why.
//! - `GET /`: a self-contained HTML status page that refreshes itself.
//! - `POST /nodes/{address}/drain` and `/enable`: take a node out of service (no new
//!   connections, open ones finish) and back. Refused unless `[admin] token` is set and sent
//!   as `Authorization: Bearer TOKEN`; the token is compared in constant time.
//!
//! Read endpoints change nothing; the write endpoints change only a node's drain flag.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::connect::FailureKind;
use crate::metrics;
use crate::node::Node;
use crate::state::Shared;

mod guard;
mod serve;

pub use serve::HEADER_TIMEOUT;

/// Binds `addr` now (so a taken port fails start-up), then serves on a dedicated thread until
/// `stop` is cancelled, with at most `max_connections` admin connections at once.
pub fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    max_connections: u32,
    stop: CancellationToken,
) -> io::Result<()> {
    serve::start(
        addr,
        router(Arc::clone(&shared)),
        shared,
        max_connections,
        stop,
    )
}

/// The routes; unknown paths get a 404 that lists the known ones, wrong methods a 405.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(prometheus))
        .route("/status", get(status))
        .route("/nodes/{address}/drain", post(drain))
        .route("/nodes/{address}/enable", post(enable))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found; try GET /, /metrics, /status or POST /nodes/{address}/drain|enable\n",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard::check_host,
        ))
        .with_state(shared)
}

async fn prometheus(State(shared): State<Arc<Shared>>) -> Response {
    let nodes = shared.nodes();
    let text = metrics::render(
        &nodes.nodes,
        &shared.listener,
        &shared.process,
        &shared.bound.to_string(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(status_json(&shared))
}

/// Everything `/metrics` says, as JSON, plus each node's last check.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
pub fn status_json(shared: &Shared) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let nodes = shared.nodes();
    let l = &shared.listener;
    json!({
        "listen": shared.bound.to_string(),
        "listener": {
            "accepted": l.accepted.load(Relaxed),
            "rejected": l.rejected.load(Relaxed),
            "failed": l.failed.load(Relaxed),
            "active": l.active.load(Relaxed),
        },
        "nodes": nodes.nodes.iter().map(|n| node_json(n)).collect::<Vec<_>>(),
        "retired": nodes.retired.iter().filter(|n| n.active() > 0).map(|n| json!({
            "address": n.address.to_string(),
            "active": n.active(),
        })).collect::<Vec<_>>(),
    })
}

#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn node_json(n: &Node) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &n.stats;
    let health = n.health();
    let (quantiles, count) = s.latency();
    let latency: serde_json::Map<String, Value> = quantiles
        .iter()
        .map(|(q, seconds)| {
            let name = if *q >= 1.0 {
                "max".to_owned()
            } else {
                format!("p{}", (q * 100.0).round())
            };
            (name, json!(seconds))
        })
        .chain([("count".to_owned(), json!(count))])
        .collect();
    let failures: serde_json::Map<String, Value> = FailureKind::ALL
        .iter()
        .map(|k| {
            (
                k.label().to_owned(),
                json!(s.failures[k.index()].load(Relaxed)),
            )
        })
        .collect();
    let last = n.last_check().map(|c| {
        json!({
            "passed": c.passed,
            "reason": c.reason,
            "at": humantime::format_rfc3339_seconds(c.at).to_string(),
            "seconds_ago": SystemTime::now().duration_since(c.at).map(|d| d.as_secs()).unwrap_or(0),
        })
    });
    json!({
        "address": n.address.to_string(),
        "state": state(n),
        "up": health.up,
        "probation": health.probation,
        "drained": n.is_drained(),
        "weight": n.weight(),
        "active": n.active(),
        "connections": s.connections.load(Relaxed),
        "connect_failures": failures,
        "retries": s.retries.load(Relaxed),
        "sent_bytes": s.sent_bytes.load(Relaxed),
        "received_bytes": s.received_bytes.load(Relaxed),
        "transitions": { "down": s.went_down.load(Relaxed), "up": s.went_up.load(Relaxed) },
        "connect_latency_seconds": latency,
        "last_check": last,
    })
}

/// "drained", "up" or "down": what the operator sees first.
fn state(n: &Node) -> &'static str {
    if n.is_drained() {
        "drained"
    } else if n.is_up() {
        "up"
    } else {
        "down"
    }
}

async fn drain(state: State<Arc<Shared>>, address: Path<String>, headers: HeaderMap) -> Response {
    set_drained(state, address, headers, true)
}

async fn enable(state: State<Arc<Shared>>, address: Path<String>, headers: HeaderMap) -> Response {
    set_drained(state, address, headers, false)
}

fn set_drained(
    State(shared): State<Arc<Shared>>,
    Path(address): Path<String>,
    headers: HeaderMap,
    drained: bool,
) -> Response {
    if let Some(refusal) = guard::refusal(&shared, &headers) {
        return refusal;
    }
    let nodes = shared.nodes();
    match nodes.find(&address) {
        Some(node) => {
            node.set_drained(drained);
            Json(node_json(node)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no node `{address}` in service\n"),
        )
            .into_response(),
    }
}

async fn page(State(shared): State<Arc<Shared>>) -> Html<String> {
    let nodes = shared.nodes();
    let rows: String = nodes
        .nodes
        .iter()
        .map(|n| {
            let reason = n.last_check().map(|c| c.reason).unwrap_or_default();
            format!(
                "<tr class=\"{state}\"><td>{addr}</td><td>{state}</td><td>{active}</td><td>{total}</td><td>-</td><td>{reason}</td></tr>",
                state = state(n),
                addr = html_escape(&n.address.to_string()),
                active = n.active(),
                total = n.stats.connections.load(std::sync::atomic::Ordering::Relaxed),
                reason = html_escape(&reason),
            )
        })
        .collect();
    Html(
        PAGE.replace("{{ROWS}}", &rows)
            .replace("{{LISTEN}}", &html_escape(&shared.bound.to_string())),
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: rendered with the current state, then refreshed every 2 s from
/// `/status`, with connection rates computed from the counters' growth.
const PAGE: &str = include_str!("status.html");
