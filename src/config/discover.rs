//! `discover`: the DNS names whose every address is a node of its own (A/AAAA records of
//! `dns = "name:port"`, SRV records of `srv = "_svc._tcp.name"`), each entry with the settings
//! its nodes take; and `resolvers`, the DNS servers asked instead of /etc/resolv.conf's.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use toml_edit::Item;

use super::nodes::{node_settings, Inherit};
use super::walk::{Section, Walk};
use super::{NodeAddr, NodeConfig, ProxyProtocol};

/// Default most nodes one entry may find: bounds a runaway answer.
pub const DEFAULT_MAX_NODES: u32 = 256;
/// The largest `max_nodes` accepted.
const MAX_MAX_NODES: u32 = 4096;

const ENTRY_KEYS: [&str; 8] = [
    "dns",
    "srv",
    "max_nodes",
    "weight",
    "max_connections",
    "backup",
    "proxy_protocol",
    "source",
];

/// What one entry asks DNS for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `dns = "name:port"`: one node per A/AAAA address of the name, on that port.
    Dns(NodeAddr),
    /// `srv = "_svc._tcp.name"`: one node per address of each SRV target, on its port.
    Srv(String),
}

impl fmt::Display for Target {
    /// As written in the config: `dns node:8080` or `srv _web._tcp.example`; the `entry`
    /// label of metrics and the `entry` field of logs and `/status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dns(addr) => write!(f, "dns {addr}"),
            Target::Srv(name) => write!(f, "srv {name}"),
        }
    }
}

/// One `discover` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverConfig {
    /// The name to look up.
    pub target: Target,
    /// Most nodes taken from one answer (the first ones, in address order).
    pub max_nodes: u32,
    /// The weight of each node found by `dns` (SRV records carry their own).
    pub weight: u32,
    /// Most connections at once to each node found.
    pub max_connections: Option<u32>,
    /// Every node found is a backup.
    pub backup: bool,
    /// The PROXY header its nodes are sent.
    pub proxy_protocol: ProxyProtocol,
    /// The local addresses its nodes' connections are made from.
    pub source: Vec<IpAddr>,
}

impl DiscoverConfig {
    /// The node found at `addr`, with an SRV record's weight and whether its priority makes
    /// it a backup, if it came from one.
    pub fn node(&self, addr: SocketAddr, srv_weight: Option<u16>, srv_backup: bool) -> NodeConfig {
        NodeConfig {
            address: NodeAddr::from(addr),
            weight: srv_weight.map_or(self.weight, |w| u32::from(w).max(1)),
            max_connections: self.max_connections,
            backup: self.backup || srv_backup,
            proxy_protocol: self.proxy_protocol,
            source: self.source.clone(),
            drained: false,
        }
    }
}

/// `discover`: a list of entries, each target once.
pub(super) fn entries(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    inherit: &Inherit,
) -> Option<Vec<DiscoverConfig>> {
    let (item, span) = walk.item(section, "discover")?;
    let key = section.key("discover");
    let Some(list) = item.as_array() else {
        walk.wrong_type(&key, &span, "a list of entries", item);
        return None;
    };
    let mut out: Vec<DiscoverConfig> = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let Some(table) = value.as_inline_table() else {
            let expected = "an entry: { dns = \"name:port\" } or { srv = \"_svc._tcp.name\" }";
            walk.wrong_type(&key, &value.span(), expected, &Item::Value(value.clone()));
            continue;
        };
        let section = Section {
            name: key.clone(),
            table,
        };
        let Some(entry) = entry(walk, &section, &value.span(), inherit) else {
            continue;
        };
        if out.iter().any(|e| e.target == entry.target) {
            let message = format!("`{}` is given twice; give each name once", entry.target);
            walk.error(&key, &value.span(), message);
            continue;
        }
        out.push(entry);
    }
    Some(out)
}

/// One entry's table.
fn entry(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    span: &super::walk::Span,
    inherit: &Inherit,
) -> Option<DiscoverConfig> {
    walk.unknown_keys(section, &ENTRY_KEYS, "a discover entry");
    let max_nodes = walk.count(section, "max_nodes", 1, MAX_MAX_NODES);
    let settings = node_settings(walk, section, inherit);
    let dns = walk.string(section, "dns", "a name and port such as \"node:8080\"");
    let srv = walk.string(
        section,
        "srv",
        "an SRV name such as \"_web._tcp.example.internal\"",
    );
    let target = match (dns, srv) {
        (Some(_), Some(_)) => {
            let message = "has both `dns` and `srv`: give one per entry".to_owned();
            walk.error(&section.name, span, message);
            return None;
        }
        (Some((text, span)), None) => match text.parse::<NodeAddr>() {
            Ok(addr) => Target::Dns(addr),
            Err(message) => {
                walk.error(&section.key("dns"), &span, message);
                return None;
            }
        },
        (None, Some((text, span))) => {
            let name = srv_name(text).map_err(|m| walk.error(&section.key("srv"), &span, m));
            if settings.weight.is_some() {
                let message =
                    "is not for an srv entry: each SRV record gives its node's weight".to_owned();
                let at = walk.item(section, "weight").and_then(|(_, s)| s);
                walk.error(&section.key("weight"), &at, message);
            }
            Target::Srv(name.ok()?)
        }
        (None, None) => {
            if !(section.table.contains_key("dns") || section.table.contains_key("srv")) {
                let message =
                    "has neither `dns` nor `srv`: write { dns = \"name:port\" } or { srv = \"_svc._tcp.name\" }"
                        .to_owned();
                walk.error(&section.name, span, message);
            }
            return None;
        }
    };
    Some(DiscoverConfig {
        target,
        max_nodes: max_nodes.unwrap_or(DEFAULT_MAX_NODES),
        weight: settings.weight.unwrap_or(1),
        max_connections: settings.max_connections,
        backup: settings.backup,
        proxy_protocol: settings.proxy_protocol,
        source: settings.source,
    })
}

/// Checks an SRV name: a DNS name without a port or a scheme.
fn srv_name(text: &str) -> Result<String, String> {
    let name = text.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a DNS name; write the SRV name without a port, e.g. \"_web._tcp.example.internal\""
        ))
    }
}

/// `resolvers`: the DNS servers to ask (`IP` or `IP:PORT`, port 53 by default), instead of
/// those of /etc/resolv.conf.
pub(super) fn resolvers(walk: &mut Walk<'_>, top: &Section<'_>) -> Vec<SocketAddr> {
    let Some(list) = walk.strings(top, "resolvers") else {
        return Vec::new();
    };
    if list.is_empty() {
        let span = top.table.get("resolvers").and_then(Item::span);
        let message =
            "is empty: list DNS servers, or delete the line to use /etc/resolv.conf".to_owned();
        walk.error("resolvers", &span, message);
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, (text, span)) in list.into_iter().enumerate() {
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => out.push(addr),
            _ => {
                let message = format!(
                    "is \"{text}\": give a DNS server's IP address, with a port if not 53, e.g. \"10.0.0.2\" or \"127.0.0.1:8600\""
                );
                walk.error(&format!("resolvers[{i}]"), &span, message);
            }
        }
    }
    out
}
