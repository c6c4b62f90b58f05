//! One service's table read into a [`ServiceConfig`]: its listen address and nodes, and its
//! `retries`, `dns_ttl`, `max_connections`, `access_log`, admission rules, `[health]` and `[timeouts]`, each key falling back
//! to the file's top-level default ([`Defaults`]) when the service does not set it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::address::parse_listen;
use super::nodes::{flag_nodes, nodes, sources, Inherit};
use super::walk::{Section, Span, Walk};
use super::{
    Balance, Cidr, ConfigError, HealthConfig, NodeAddr, ProxyProtocol, ServiceConfig, Timeouts,
};

/// Largest `rise` or `fall`: the health counters are 16-bit.
const MAX_RISE_FALL: u32 = u16::MAX as u32;

const HEALTH_KEYS: [&str; 8] = [
    "interval",
    "timeout",
    "rise",
    "fall",
    "send",
    "expect",
    "slow_start",
    "probe_port",
];
const TIMEOUT_KEYS: [&str; 8] = [
    "connect",
    "idle",
    "drain",
    "handshake",
    "fin",
    "response",
    "queue",
    "flow_idle",
];
/// The keys of a `[services.NAME]` table.
pub(super) const SERVICE_KEYS: [&str; 20] = [
    "listen",
    "protocol",
    "sni",
    "nodes",
    "discover",
    "balance",
    "retries",
    "dns_ttl",
    "max_connections",
    "max_flows",
    "access_log",
    "proxy_protocol",
    "accept_proxy_from",
    "source",
    "allow",
    "deny",
    "max_per_source",
    "rate_per_source",
    "health",
    "timeouts",
];

/// What an address key must hold, for messages.
pub(super) const ADDRESS: &str = "an address such as \"0.0.0.0:8000\" or \":8000\"";

/// The settings every service inherits unless it sets its own.
#[derive(Debug, Clone)]
pub(super) struct Defaults {
    pub retries: u32,
    pub dns_ttl: Duration,
    pub max_connections: Option<u32>,
    pub access_log: bool,
    pub proxy_protocol: ProxyProtocol,
    pub accept_proxy_from: Vec<Cidr>,
    pub source: Vec<IpAddr>,
    pub admission: super::AdmissionConfig,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
}

/// The service `name` described by `section` (the top level for the single-service form),
/// with `listen` and `nodes` from the command line when given. `None` when something is
/// wrong; what is wrong is in `walk`.
pub(super) fn service(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    name: &str,
    base: &Defaults,
    flags: (Option<SocketAddr>, &[NodeAddr]),
) -> Result<Option<ServiceConfig>, ConfigError> {
    let listen = flags.0.or_else(|| address(walk, section, "listen"));
    let proxy = proxy_protocol(walk, section, "proxy_protocol").unwrap_or(base.proxy_protocol);
    let inherit = Inherit {
        proxy_protocol: proxy,
        source: sources(walk, section).unwrap_or_else(|| base.source.clone()),
    };
    let nodes = if flags.1.is_empty() {
        nodes(walk, section, &inherit)
    } else {
        Some(flag_nodes(flags.1, &inherit)?)
    };
    let discover = super::discover::entries(walk, section, &inherit).unwrap_or_default();
    let sni = super::sni::names(walk, section).unwrap_or_default();
    // `discover` alone is enough: its nodes come from DNS.
    let nodes = match nodes {
        None if !discover.is_empty() && !section.table.contains_key("nodes") => Some(Vec::new()),
        nodes => nodes,
    };
    let accept_proxy_from = ranges(walk, section).unwrap_or_else(|| base.accept_proxy_from.clone());
    let admission = super::admission::read(walk, section, &base.admission);
    let protocol = super::udp::protocol(walk, section);
    let max_flows = super::udp::max_flows(walk, section);
    let balance = balance(walk, section);
    let retries = walk.count(section, "retries", 0, u32::MAX);
    let dns_ttl = walk.duration(section, "dns_ttl", true).map(|(d, _)| d);
    let max_connections = walk.count(section, "max_connections", 1, u32::MAX);
    let access_log = walk.flag(section, "access_log");
    let health = health(walk, section, &base.health);
    let timeouts = timeouts(walk, section, base.timeouts);
    let (Some(listen), Some(nodes)) = (listen, nodes) else {
        return Ok(None);
    };
    let found = ServiceConfig {
        name: name.to_owned(),
        listen,
        sni,
        nodes,
        discover,
        balance,
        retries: retries.unwrap_or(base.retries),
        dns_ttl: dns_ttl.unwrap_or(base.dns_ttl),
        max_connections: max_connections.or(base.max_connections),
        access_log: access_log.unwrap_or(base.access_log),
        proxy_protocol: proxy,
        accept_proxy_from,
        admission,
        protocol,
        max_flows,
        health,
        timeouts,
    };
    super::udp::check(walk, section, &found);
    Ok(Some(found))
}

/// A listen-style address (`IP:PORT`, or `:PORT` for all IPv4 addresses).
pub(super) fn address(walk: &mut Walk<'_>, section: &Section<'_>, key: &str) -> Option<SocketAddr> {
    let (text, span) = walk.string(section, key, ADDRESS)?;
    match parse_listen(text) {
        Ok(addr) => Some(addr),
        Err(message) => {
            walk.error(&section.key(key), &span, message);
            None
        }
    }
}

/// `balance`: how the service picks its nodes.
fn balance(walk: &mut Walk<'_>, section: &Section<'_>) -> Balance {
    let expected = "\"least-connections\", \"round-robin\" or \"source\"";
    let Some((text, span)) = walk.string(section, "balance", expected) else {
        return Balance::LeastConnections;
    };
    match text {
        "least-connections" => Balance::LeastConnections,
        "round-robin" => Balance::RoundRobin,
        "source" => Balance::Source,
        other => {
            let message = format!(
                "is \"{other}\"; use \"least-connections\" (the default), \"round-robin\" or \"source\""
            );
            walk.error(&section.key("balance"), &span, message);
            Balance::LeastConnections
        }
    }
}

/// The `[health]` of `section`, each key not set there taken from `base`.
pub(super) fn health(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    base: &HealthConfig,
) -> HealthConfig {
    let mut health = base.clone();
    let Some(table) = walk.table(section, "health") else {
        return health;
    };
    let s = Section {
        name: section.key("health"),
        table,
    };
    let what = format!("[{}]", s.name);
    walk.unknown_keys(&s, &HEALTH_KEYS, &what);
    if let Some((d, _)) = walk.duration(&s, "interval", false) {
        health.interval = d;
    }
    if let Some((d, _)) = walk.duration(&s, "timeout", false) {
        health.timeout = d;
    }
    health.rise = walk
        .count(&s, "rise", 1, MAX_RISE_FALL)
        .unwrap_or(health.rise);
    health.fall = walk
        .count(&s, "fall", 1, MAX_RISE_FALL)
        .unwrap_or(health.fall);
    // An empty string clears an inherited send or expect.
    let bytes = |v: (&str, Span)| Some(v.0.as_bytes().to_vec()).filter(|b| !b.is_empty());
    if let Some(send) = walk.string(&s, "send", "a string") {
        health.send = bytes(send);
    }
    if let Some(expect) = walk.string(&s, "expect", "a string") {
        health.expect = bytes(expect);
    }
    if let Some((d, _)) = walk.duration(&s, "slow_start", true) {
        health.slow_start = d;
    }
    if let Some(port) = walk.count(&s, "probe_port", 1, u32::from(u16::MAX)) {
        health.probe_port = u16::try_from(port).ok();
    }
    health
}

/// The `[timeouts]` of `section`, each key not set there taken from `base`.
pub(super) fn timeouts(walk: &mut Walk<'_>, section: &Section<'_>, base: Timeouts) -> Timeouts {
    let mut t = base;
    let Some(table) = walk.table(section, "timeouts") else {
        return t;
    };
    let s = Section {
        name: section.key("timeouts"),
        table,
    };
    let what = format!("[{}]", s.name);
    walk.unknown_keys(&s, &TIMEOUT_KEYS, &what);
    if let Some((d, _)) = walk.duration(&s, "connect", false) {
        t.connect = d;
    }
    if let Some((d, _)) = walk.duration(&s, "idle", false) {
        t.idle = d;
    }
    if let Some((d, _)) = walk.duration(&s, "drain", true) {
        t.drain = d;
    }
    if let Some((d, _)) = walk.duration(&s, "handshake", false) {
        t.handshake = d;
    }
    if let Some((d, _)) = walk.duration(&s, "fin", false) {
        t.fin = d;
    }
    // "0s" turns an inherited `response` off.
    if let Some((d, _)) = walk.duration(&s, "response", true) {
        t.response = Some(d).filter(|d| !d.is_zero());
    }
    // "0s": no queue, a client that finds every node full is closed at once.
    if let Some((d, _)) = walk.duration(&s, "queue", true) {
        t.queue = Some(d).filter(|d| !d.is_zero());
    }
    if let Some((d, _)) = walk.duration(&s, "flow_idle", false) {
        t.flow_idle = d;
    }
    t
}

/// A `proxy_protocol` value: `"v1"`, `"v2"` or `"off"`.
pub(super) fn proxy_protocol(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    key: &str,
) -> Option<ProxyProtocol> {
    let (text, span) = walk.string(section, key, "\"v1\", \"v2\" or \"off\"")?;
    match text {
        "v1" => Some(ProxyProtocol::V1),
        "v2" => Some(ProxyProtocol::V2),
        "off" => Some(ProxyProtocol::Off),
        other => {
            let message = format!("is \"{other}\"; use \"v1\", \"v2\" or \"off\"");
            walk.error(&section.key(key), &span, message);
            None
        }
    }
}

/// `accept_proxy_from`: source ranges whose clients must send a PROXY header.
pub(super) fn ranges(walk: &mut Walk<'_>, section: &Section<'_>) -> Option<Vec<Cidr>> {
    walk.ranges(section, "accept_proxy_from")
}
