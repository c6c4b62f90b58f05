//! Operator decisions through the admin endpoint: drain, enable and the runtime weight of a
//! node, each behind the token. A decision carries the node's drain state and runtime weight
//! together; in a cluster it is stamped and published, so every instance applies it (the
//! later decision winning), and it is kept in the state file.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{guard, status, AdminClient, Client, Members};
use crate::node::{Decision, Node, MAX_WEIGHT};
use crate::state::Shared;

/// What an operator asks of a node.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Drain (true) or enable (false).
    Drained(bool),
    /// A runtime weight, 0 to [`MAX_WEIGHT`].
    Weight(u32),
}

/// The node a request names: `{service}` when the path has one, `{address}`, and for
/// drain and enable the `{action}`.
type Target = Path<HashMap<String, String>>;

/// `POST …/drain` and `POST …/enable` (the path's last segment, `{action}`).
pub(super) async fn drain_or_enable(
    state: State<Arc<Shared>>,
    members: Members,
    client: Client,
    Path(target): Target,
    headers: HeaderMap,
) -> Response {
    let change = match target.get("action").map(String::as_str) {
        Some("drain") => Change::Drained(true),
        Some("enable") => Change::Drained(false),
        _ => return (StatusCode::NOT_FOUND, super::NOT_FOUND).into_response(),
    };
    take(state, members, client, &target, &headers, change)
}

pub(super) async fn weight(
    state: State<Arc<Shared>>,
    members: Members,
    client: Client,
    Path(target): Target,
    headers: HeaderMap,
    body: String,
) -> Response {
    match parse_weight(&body) {
        Some(w) => take(state, members, client, &target, &headers, Change::Weight(w)),
        None => bad_weight(),
    }
}

/// The weight a request body holds, 0 to [`MAX_WEIGHT`].
fn parse_weight(body: &str) -> Option<u32> {
    body.trim().parse::<u32>().ok().filter(|w| *w <= MAX_WEIGHT)
}

/// The answer to a body that is no weight.
fn bad_weight() -> Response {
    let message = format!(
        "the body must be a weight, a whole number from 0 to {MAX_WEIGHT} (0 takes no new client)\n"
    );
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Applies `change` to a node of `service` (the only service, when `None`), after the token
/// check; in a cluster the decision is stamped and published.
fn take(
    State(shared): State<Arc<Shared>>,
    Extension(cluster): Members,
    Extension(AdminClient(client)): Client,
    target: &HashMap<String, String>,
    headers: &HeaderMap,
    change: Change,
) -> Response {
    let (service, address) = (
        target.get("service").cloned(),
        target.get("address").cloned().unwrap_or_default(),
    );
    if let Some(refusal) = guard::refusal(&shared, headers) {
        return refusal;
    }
    let found = match &service {
        Some(name) => shared.service(name),
        None => {
            let services = shared.services();
            if services.len() != 1 {
                let message = "there are several services: use /services/{service}/nodes/{address}/drain|enable|weight\n";
                return (StatusCode::BAD_REQUEST, message).into_response();
            }
            services.first().cloned()
        }
    };
    let Some(service) = found else {
        let name = service.unwrap_or_default();
        return (StatusCode::NOT_FOUND, format!("no service `{name}`\n")).into_response();
    };
    let upstream = service.upstream();
    let Some(node) = upstream.nodes.find(&address) else {
        let message = format!("no node `{address}` in service `{}`\n", service.name);
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let (drained, weight) = after(node, change);
    let by = format!("admin client {}", client.ip());
    match &cluster {
        Some(c) => c.decide(node, drained, weight, &by),
        None => {
            // Kept as a decision, as a cluster keeps its own: who took it, and when.
            let now = crate::node::epoch_ms(std::time::SystemTime::now());
            let decision = Decision {
                drained,
                weight,
                stamp: crate::cluster::stamp(0, now),
                by: by.clone(),
            };
            node.peers.adopt(decision.clone(), |_, _| true);
            node.apply(&decision, &by);
        }
    }
    shared.save_state();
    Json(status::node_json(node)).into_response()
}

/// The node's drain state and runtime weight once `change` is made.
fn after(node: &Node, change: Change) -> (bool, Option<u32>) {
    match change {
        Change::Drained(drained) => (drained, node.runtime_weight()),
        Change::Weight(weight) => (node.is_drained(), Some(weight)),
    }
}
