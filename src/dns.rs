//! The DNS client: one per process, through hickory-resolver, reading /etc/resolv.conf and
//! /etc/hosts (or asking the servers of `resolvers`). It keeps no cache of its own: the
//! callers look names up on their own schedule (the record's TTL capped by `dns_ttl`), and
//! a cache would hide a change until the record's TTL ran out (Docker's DNS says 600 s).
//!
//! Only background tasks call it; a client's connect never waits for it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// What a lookup found, and how long it stays true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The records, in the order of the answer, each once.
    pub found: Vec<T>,
    /// The shortest TTL among them.
    pub ttl: Duration,
}

/// One address of an SRV target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrvNode {
    /// The target's address and the record's port.
    pub addr: SocketAddr,
    /// The record's priority: the lowest in the answer wins, the others are backups.
    pub priority: u16,
    /// The record's weight.
    pub weight: u16,
}

/// Why a lookup gave nothing to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The server answered, with no record of the kind asked (or the name does not exist).
    #[error("no {kind} record for {name}")]
    Empty {
        /// What was asked for: `A/AAAA` or `SRV`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// No usable answer: the servers did not answer in time, refused, or were unreachable.
    #[error("looking up {name} failed: {reason}")]
    Failed {
        /// The name.
        name: String,
        /// What the resolver said.
        reason: String,
    },
}

/// The process's DNS client.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// The client for `servers` (`resolvers`), or for /etc/resolv.conf when empty. An
    /// unreadable resolv.conf is logged; names then resolve through /etc/hosts only.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read /etc/resolv.conf: names resolve through /etc/hosts only; set `resolvers` to name DNS servers");
                    TokioResolver::builder_with_config(ResolverConfig::default(), provider)
                }
            }
        } else {
            let servers = servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        let inner = builder
            .build()
            .map_err(|e| format!("the DNS client cannot start: {e}"))?;
        Ok(Resolver { inner })
    }

    /// The addresses of `host` (A and AAAA records, or /etc/hosts), each once.
    pub async fn addresses(&self, host: &str) -> Result<Answer<IpAddr>, LookupError> {
        let failed = |e: &dyn std::fmt::Display| LookupError::Failed {
            name: host.to_owned(),
            reason: e.to_string(),
        };
        let lookup = match self.inner.lookup_ip(host).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Err(empty("A/AAAA", host)),
            Err(e) => return Err(failed(&e)),
        };
        let mut found: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !found.contains(&ip) {
                found.push(ip);
            }
        }
        if found.is_empty() {
            return Err(empty("A/AAAA", host));
        }
        Ok(Answer {
            found,
            ttl: remaining(lookup.valid_until()),
        })
    }

    /// The nodes of the SRV records of `name`: every address of each target, on the record's
    /// port, with its priority and weight. A target that does not resolve is left out (and
    /// named in the error when none resolves).
    pub async fn srv(&self, name: &str) -> Result<Answer<SrvNode>, LookupError> {
        let lookup = match self.inner.srv_lookup(name).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Err(empty("SRV", name)),
            Err(e) => {
                return Err(LookupError::Failed {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        let mut ttl = remaining(lookup.valid_until());
        let records: Vec<(u16, u16, u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                // A target of "." says the service is not offered there (RFC 2782).
                RData::SRV(srv) if !srv.target.is_root() => {
                    Some((srv.priority, srv.weight, srv.port, srv.target.to_ascii()))
                }
                _ => None,
            })
            .collect();
        let mut found: Vec<SrvNode> = Vec::new();
        let mut last_error = None;
        for (priority, weight, port, target) in records {
            match self.addresses(&target).await {
                Ok(answer) => {
                    ttl = ttl.min(answer.ttl);
                    for ip in answer.found {
                        let addr = SocketAddr::new(ip, port);
                        if !found.iter().any(|n| n.addr == addr) {
                            found.push(SrvNode {
                                addr,
                                priority,
                                weight,
                            });
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (found.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(empty("SRV", name)),
            (false, _) => Ok(Answer { found, ttl }),
        }
    }
}

/// An empty answer for `name`.
fn empty(kind: &'static str, name: &str) -> LookupError {
    LookupError::Empty {
        kind,
        name: name.to_owned(),
    }
}

/// How long until `until`, zero if past.
fn remaining(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}
