//! The background lookups: one task per `discover` entry, turning each changed answer into
//! the service's node list (through [`crate::roster`]), and one per named node of `nodes`,
//! keeping its addresses. Each looks its name up again after the record's TTL, capped by
//! `dns_ttl`, at least a second apart. A failed or empty answer keeps the last good one
//! (DNS trouble never empties a pool): logged once per episode, counted, and tried again
//! every `dns_ttl`. A client's connect never waits for any of this.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Target;
use crate::dns::{LookupError, Resolver};
use crate::found::{EntryStats, Record};
use crate::node::Node;
use crate::roster::{self, Start};
use crate::service::Service;

/// The shortest time between two lookups of one name.
const FLOOR: Duration = Duration::from_secs(1);

/// How long to wait before the next lookup: the TTL, capped by `dns_ttl`, at least [`FLOOR`].
fn next_lookup(ttl: Duration, dns_ttl: Duration) -> Duration {
    ttl.min(dns_ttl).max(FLOOR)
}

/// What `target` resolves to now, sorted by address, and its TTL. SRV records of a priority
/// above the answer's lowest are backups.
async fn lookup(
    resolver: &Resolver,
    target: &Target,
) -> Result<(Vec<Record>, Duration), LookupError> {
    match target {
        Target::Dns(addr) => {
            let answer = resolver.addresses(addr.host()).await?;
            let records = answer
                .found
                .iter()
                .map(|ip| Record {
                    addr: SocketAddr::new(*ip, addr.port()),
                    weight: None,
                    backup: false,
                })
                .collect();
            Ok((sorted(records), answer.ttl))
        }
        Target::Srv(name) => {
            let answer = resolver.srv(name).await?;
            let first = answer.found.iter().map(|n| n.priority).min().unwrap_or(0);
            let records = answer
                .found
                .iter()
                .map(|n| Record {
                    addr: n.addr,
                    weight: Some(n.weight),
                    backup: n.priority > first,
                })
                .collect();
            Ok((sorted(records), answer.ttl))
        }
    }
}

/// `records` in address order: a server that rotates its answer changes nothing.
fn sorted(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_by_key(|r| r.addr);
    records
}

/// Runs the lookups of the entry `target` of `service` until `stop`.
pub async fn run_entry<S: Start>(
    service: Arc<Service>,
    target: Target,
    stop: CancellationToken,
    resolver: Resolver,
    start: S,
) {
    let Some(stats) = entry_stats(&service, &target) else {
        return;
    };
    loop {
        let dns_ttl = service.upstream().settings.dns_ttl;
        let result = tokio::select! {
            result = lookup(&resolver, &target) => result,
            () = stop.cancelled() => return,
        };
        stats.lookups.fetch_add(1, Ordering::Relaxed);
        let wait = match result {
            Ok((records, ttl)) => {
                recovered(&service, &target, &stats);
                found(&service, &target, records, &start);
                next_lookup(ttl, dns_ttl)
            }
            Err(error) => {
                failed(&service, &target, &stats, &error);
                next_lookup(dns_ttl, dns_ttl)
            }
        };
        stats.settled.cancel();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The counters of the entry `target` of `service`, while it has that entry.
fn entry_stats(service: &Service, target: &Target) -> Option<Arc<EntryStats>> {
    let roster = service.found.lock();
    let entry = roster.entries.iter().find(|e| e.target == *target)?;
    Some(Arc::clone(&entry.stats))
}

/// Puts a good answer in force, if it changed the entry's addresses.
fn found(service: &Arc<Service>, target: &Target, records: Vec<Record>, start: &impl Start) {
    let mut roster = service.found.lock();
    let max = roster
        .config
        .discover
        .iter()
        .find(|d| d.target == *target)
        .map_or(usize::MAX, |d| d.max_nodes as usize);
    let Some(entry) = roster.entries.iter_mut().find(|e| e.target == *target) else {
        return;
    };
    if entry.answer.as_ref() == Some(&records) {
        return;
    }
    if records.len() > max {
        tracing::warn!(service = %service.name, entry = %entry.name, found = records.len(), max_nodes = max, "the answer has more addresses than max_nodes: the first ones in address order are used");
    }
    tracing::info!(service = %service.name, entry = %entry.name, addresses = records.len(), "discover entry answered with a changed set of addresses");
    entry.answer = Some(records);
    roster::apply(service, &roster, start);
}

/// Logs the end of a failing episode, once.
fn recovered(service: &Service, target: &Target, stats: &EntryStats) {
    let was = stats.failing.lock().ok().and_then(|mut f| f.take());
    if was.is_some() {
        tracing::info!(service = %service.name, entry = %target, "discover entry answers again");
    }
}

/// Counts a failed or empty lookup; logs the first of an episode, with the nodes kept.
fn failed(service: &Service, target: &Target, stats: &EntryStats, error: &LookupError) {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    let first = stats
        .failing
        .lock()
        .ok()
        .is_some_and(|mut f| f.replace(error.to_string()).is_none());
    if first {
        let kept = service
            .upstream()
            .nodes
            .nodes
            .iter()
            .filter(|n| n.found_by().as_deref() == Some(target.to_string().as_str()))
            .count();
        if kept == 0 {
            tracing::warn!(service = %service.name, entry = %target, %error, "discover lookup failed: no node found yet; trying again every dns_ttl");
        } else {
            tracing::warn!(service = %service.name, entry = %target, %error, kept, "discover lookup failed: the nodes found before are kept; trying again every dns_ttl");
        }
    }
}

/// Keeps the addresses of the named node `node` of `service` until the node is removed or
/// `stop`.
pub async fn follow_name(
    node: Arc<Node>,
    service: Arc<Service>,
    resolver: Resolver,
    stop: CancellationToken,
) {
    let host = node.address.host().to_owned();
    let port = node.address.port();
    let mut failing = false;
    loop {
        let dns_ttl = service.upstream().settings.dns_ttl;
        let result = tokio::select! {
            result = resolver.addresses(&host) => result,
            () = stop.cancelled() => return,
            () = node.removed.cancelled() => return,
        };
        let wait = match result {
            Ok(answer) => {
                let addrs: Vec<SocketAddr> = answer
                    .found
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect();
                if std::mem::take(&mut failing) {
                    tracing::info!(service = %service.name, node = %node.address, "node's name resolves again");
                }
                if node.addresses.set(&addrs) {
                    tracing::debug!(service = %service.name, node = %node.address, addresses = addrs.len(), "node's name resolved");
                }
                next_lookup(answer.ttl, dns_ttl)
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(service = %service.name, node = %node.address, %error, "node's name does not resolve: its last addresses are kept");
                }
                node.addresses.lookup_failed(error.to_string());
                next_lookup(dns_ttl, dns_ttl)
            }
        };
        node.addresses.settled.cancel();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
            () = node.removed.cancelled() => return,
        }
    }
}

/// Waits, at most `within`, for the first lookup of every entry and named node of
/// `services` to end; returns whether they all did.
pub async fn settle(services: &[Arc<Service>], within: Duration) -> bool {
    let mut waits: Vec<CancellationToken> = Vec::new();
    for service in services {
        for (_, stats, _) in service.found.stats() {
            waits.push(stats.settled.clone());
        }
        for node in &service.upstream().nodes.nodes {
            if node.address.socket_addr().is_none() {
                waits.push(node.addresses.settled.clone());
            }
        }
    }
    let all = async {
        for token in waits {
            token.cancelled().await;
        }
    };
    tokio::time::timeout(within, all).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_the_ttl_capped_by_dns_ttl_at_least_a_second_apart() {
        let s = Duration::from_secs;
        assert_eq!(
            next_lookup(s(600), s(2)),
            s(2),
            "Docker's 600 s TTL is capped"
        );
        assert_eq!(next_lookup(s(5), s(30)), s(5), "a short TTL wins");
        assert_eq!(next_lookup(s(0), s(30)), s(1), "a zero TTL waits a second");
        assert_eq!(next_lookup(s(5), s(0)), s(1), "dns_ttl 0s waits a second");
    }
}
