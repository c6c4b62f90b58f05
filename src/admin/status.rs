//! The `/status` document: everything `/metrics` says, as JSON, and what an operator reads
//! next: each node's last check and why, how long it has been in its state, its recent
//! traffic, and the process's version and uptime.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::admission::Refusal;
use crate::cluster::{stamp_ms, Cluster};
use crate::config::{AdmissionConfig, Protocol};
use crate::metrics::UdpDrop;
use crate::node::FailureKind;
use crate::node::Node;
use crate::service::Service;
use crate::sni::Router;
use crate::state::Shared;

/// Seconds from `at` to now (0 if `at` is in the future).
fn seconds_since(at: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(at)
        .map_or(0, |d| d.as_secs())
}

/// Everything `/metrics` says, as JSON, plus each node's last check.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
pub fn status_json(shared: &Shared, cluster: Option<&Cluster>) -> Value {
    let services: Vec<Value> = shared.services().iter().map(|s| service_json(s)).collect();
    let mut status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": seconds_since(shared.started),
        "services": services,
        "shared_listeners": shared.routers.load().iter().map(|r| router_json(r)).collect::<Vec<_>>(),
        "cluster": cluster.map(cluster_json),
    });
    // With one service, its fields stand at the top level too, as before services existed.
    if let ([only], Some(map)) = (services.as_slice(), status.as_object_mut()) {
        if let Some(fields) = only.as_object() {
            for key in ["listen", "listener", "nodes", "retired"] {
                if let Some(v) = fields.get(key) {
                    map.insert(key.to_owned(), v.clone());
                }
            }
        }
    }
    status
}

/// A listen address shared by `sni`: its routes and the clients it closed unserved.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn router_json(router: &Router) -> Value {
    let routes: Vec<Value> = router
        .table()
        .names()
        .into_iter()
        .map(|(service, sni)| json!({ "service": service, "sni": sni }))
        .collect();
    json!({
        "listen": router.bound.to_string(),
        "routes": routes,
        "unmatched": {
            "no_route": router.unmatched.no_route.load(Relaxed),
            "no_hello": router.unmatched.no_hello.load(Relaxed),
        },
    })
}

/// The cluster: this instance's name and every member as the failure detector sees it.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn cluster_json(cluster: &Cluster) -> Value {
    let members: Vec<Value> = cluster
        .members()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "address": m.address.to_string(),
                "alive": m.alive,
                "self": m.this,
                "last_seen": humantime::format_rfc3339_seconds(m.last_seen).to_string(),
                "seconds_since_seen": seconds_since(m.last_seen),
                "fingerprint": m.fingerprint,
                "drift": m.drift,
                "differs": m.drift_detail,
                "duplicate": m.duplicate,
                "clock_offset_ms": m.clock_offset_ms,
            })
        })
        .collect();
    json!({ "name": cluster.name, "advertise": cluster.advertise.to_string(), "members": members })
}

/// One service: its listener, nodes and the removed nodes still draining.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn service_json(service: &Service) -> Value {
    let upstream = service.upstream();
    let nodes = &upstream.nodes;
    let l = &service.listener;
    json!({
        "name": service.name,
        "listen": service.bound.to_string(),
        "sni": service.found.lock().config.sni.clone(),
        "listener": {
            "accepted": l.accepted.load(Relaxed),
            "rejected": l.rejected.load(Relaxed),
            "failed": l.failed.load(Relaxed),
            "active": l.active.load(Relaxed),
            "queued": service.queue.len(),
            "queue_timeouts": service.queue.timeouts.load(Relaxed),
        },
        "protocol": upstream.settings.protocol.name(),
        "udp": udp_json(service, upstream.settings.protocol),
        "nodes": nodes.nodes.iter().map(|n| {
            let mut node = node_json(n);
            if upstream.settings.protocol == Protocol::Udp {
                add_flows(&mut node, n);
            }
            node
        }).collect::<Vec<_>>(),
        "discover": service.found.stats().iter().map(|(entry, stats, found)| json!({
            "entry": &**entry,
            "found": found,
            "lookups": stats.lookups(),
            "errors": stats.errors(),
            "failing": stats.failing(),
        })).collect::<Vec<_>>(),
        "retired": nodes.retired.iter().filter(|n| n.active() > 0).map(|n| json!({
            "address": n.address.to_string(),
            "active": n.active(),
        })).collect::<Vec<_>>(),
        "admission": admission_json(service, &upstream.settings.admission),
    })
}

/// A UDP service's flows now and the datagrams it dropped, by reason (`None` for TCP).
fn udp_json(service: &Service, protocol: Protocol) -> Option<Value> {
    if protocol != Protocol::Udp {
        return None;
    }
    let dropped: serde_json::Map<String, Value> = UdpDrop::ALL
        .iter()
        .map(|why| (why.label().to_owned(), service.udp.drops(*why).into()))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("flows".into(), service.listener.active.load(Relaxed).into());
    out.insert("dropped".into(), Value::Object(dropped));
    Some(Value::Object(out))
}

/// A UDP node's live flows and datagrams each way.
fn add_flows(node: &mut Value, n: &Node) {
    if let Value::Object(fields) = node {
        let d = &n.stats.datagrams;
        fields.insert("flows".into(), n.active().into());
        let mut datagrams = serde_json::Map::new();
        datagrams.insert("to_node".into(), d[0].load(Relaxed).into());
        datagrams.insert("to_client".into(), d[1].load(Relaxed).into());
        fields.insert("datagrams".into(), Value::Object(datagrams));
    }
}

/// A service's admission rules and what they refused (`None` when it has none).
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn admission_json(service: &Service, rules: &AdmissionConfig) -> Option<Value> {
    if rules.is_open() {
        return None;
    }
    let show =
        |ranges: &[crate::config::Cidr]| ranges.iter().map(ToString::to_string).collect::<Vec<_>>();
    let rejected: serde_json::Map<String, Value> = Refusal::ALL
        .iter()
        .map(|why| {
            (
                why.reason().to_owned(),
                json!(service.admission.rejected(*why)),
            )
        })
        .collect();
    Some(json!({
        "allow": show(&rules.allow),
        "deny": show(&rules.deny),
        "max_per_source": rules.max_per_source,
        "rate_per_source": rules.rate_per_source.map(|r| r.to_string()),
        "sources": service.admission.sources(),
        "rejected": rejected,
    }))
}

#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
pub(super) fn node_json(n: &Node) -> Value {
    let s = &n.stats;
    let health = n.health();
    let (quantiles, count) = s.latency.quantiles();
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
            "seconds_ago": seconds_since(c.at),
        })
    });
    let samples = s.recent.samples();
    let recent = json!({
        "connections_per_second": s.recent.rate(5),
        "connections": samples.iter().map(|x| x.connections).collect::<Vec<_>>(),
        "connect_ms": samples.iter().map(|x| (x.connect_ms * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
    });
    json!({
        "address": n.address.to_string(),
        "found_by": n.found_by().as_deref(),
        "addresses": n.address.socket_addr().is_none().then(|| {
            n.addresses.snapshot().iter().map(|(addr, set_aside)| json!({
                "address": addr.to_string(),
                "set_aside": set_aside,
            })).collect::<Vec<_>>()
        }),
        "state": state(n),
        "up": health.up,
        "probation": health.probation,
        "drained": n.is_drained(),
        "since": humantime::format_rfc3339_seconds(n.since()).to_string(),
        "seconds_in_state": seconds_since(n.since()),
        "weight": n.runtime_weight().unwrap_or_else(|| n.weight()),
        "runtime_weight": n.runtime_weight(),
        "backup": n.is_backup(),
        "active": n.active(),
        "connections": s.connections.load(Relaxed),
        "connect_failures": failures,
        "failures": s.failures_total(),
        "probe_failures": s.probe_failures.load(Relaxed),
        "retries": s.retries.load(Relaxed),
        "sent_bytes": s.sent_bytes.load(Relaxed),
        "received_bytes": s.received_bytes.load(Relaxed),
        "transitions": { "down": s.went_down.load(Relaxed), "up": s.went_up.load(Relaxed) },
        "connect_latency_seconds": latency,
        "last_check": last,
        "recent": recent,
        "suspect": n.is_suspect(),
        "slow_start": n.ramp.progress().map(|_| (n.ramp.share() * 100.0).round() / 100.0),
        "cluster_active": n.cluster_active(),
        "peers": peers_json(n),
        "probing": probing_json(n),
        "decision": n.peers.decision().map(|d| {
            let at = UNIX_EPOCH + Duration::from_millis(stamp_ms(d.stamp));
            json!({
                "drained": d.drained,
                "by": d.by,
                "at": humantime::format_rfc3339_millis(at).to_string(),
                "seconds_ago": seconds_since(at),
            })
        }),
    })
}

/// Who probes the node in a cluster: its owners and this instance's role (`None` outside one).
fn probing_json(n: &Node) -> Option<Value> {
    let owners = n.peers.probing.owners();
    if owners.is_empty() {
        return None;
    }
    let mut out = serde_json::Map::new();
    out.insert("here".into(), n.peers.probing.role().name().into());
    out.insert("owners".into(), owners.into());
    Some(Value::Object(out))
}

/// Each live peer's verdict about the node and its count there.
#[allow(
    clippy::disallowed_methods,
    reason = "json! unwraps serde_json::to_value, which cannot fail for numbers, strings and Values"
)]
fn peers_json(n: &Node) -> Vec<Value> {
    n.peers
        .reports()
        .iter()
        .map(|r| {
            let since = UNIX_EPOCH + Duration::from_millis(r.verdict.since_ms);
            json!({
                "name": r.peer,
                "up": r.verdict.up,
                "since": humantime::format_rfc3339_seconds(since).to_string(),
                "reason": r.verdict.reason,
                "active": r.active,
            })
        })
        .collect()
}

/// "drained", "up", "suspect" (up here, reported down by a peer, being checked) or "down":
/// what the operator sees first.
pub(super) fn state(n: &Node) -> &'static str {
    if n.is_drained() {
        "drained"
    } else if !n.is_up() {
        "down"
    } else if n.is_suspect() {
        "suspect"
    } else {
        "up"
    }
}
