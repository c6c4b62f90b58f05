//! The DNS cache of a named node: the addresses its name resolved to, kept for a while, and
//! used in turn.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::NodeAddr;

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    /// The name.
    pub host: String,
    /// What the resolver said.
    pub reason: String,
}

/// The addresses a node's name resolved to, kept for at most a given time, and used in
/// turn so a name with several addresses spreads its connections over them.
#[derive(Debug, Default)]
pub struct DnsCache {
    answer: Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
    next: AtomicUsize,
}

impl DnsCache {
    /// The next address for `addr`: the literal itself, or the next cached answer for a name,
    /// looked up again once older than `ttl`.
    pub async fn resolve(&self, addr: &NodeAddr, ttl: Duration) -> Result<SocketAddr, DnsError> {
        if let Some(literal) = addr.socket_addr() {
            return Ok(literal);
        }
        let cached = self.answer.lock().ok().and_then(|a| {
            a.as_ref()
                .filter(|(at, _)| at.elapsed() < ttl)
                .map(|(_, v)| Arc::clone(v))
        });
        let addrs = match cached {
            Some(addrs) => addrs,
            None => {
                let dns = |reason: String| DnsError {
                    host: addr.host().to_owned(),
                    reason,
                };
                let found: Arc<[SocketAddr]> = tokio::net::lookup_host((addr.host(), addr.port()))
                    .await
                    .map_err(|e| dns(e.to_string()))?
                    .collect();
                if found.is_empty() {
                    return Err(dns("no address found".to_owned()));
                }
                if let Ok(mut answer) = self.answer.lock() {
                    *answer = Some((Instant::now(), Arc::clone(&found)));
                }
                found
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        Ok(addrs[i])
    }
}
