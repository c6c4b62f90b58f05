//! The node list of a service: `nodes` in the file (strings or node tables) or `-p` flags,
//! each node with what it inherits from its service (`proxy_protocol`, `source`) unless its
//! table says otherwise, and the `source` address lists.

use std::net::IpAddr;

use toml_edit::{Item, Value};

use super::service::proxy_protocol;
use super::walk::{Section, Span, Walk};
use super::{ConfigError, NodeAddr, NodeConfig, ProxyProtocol};

const NODE_KEYS: [&str; 7] = [
    "address",
    "weight",
    "max_connections",
    "backup",
    "proxy_protocol",
    "source",
    "drained",
];

/// What a node takes from its service unless its own table sets it.
#[derive(Debug, Clone)]
pub(super) struct Inherit {
    /// The service's `proxy_protocol`.
    pub proxy_protocol: ProxyProtocol,
    /// The service's `source` addresses.
    pub source: Vec<IpAddr>,
}

/// What a node table or a `discover` entry may set for its nodes, with the service's
/// `proxy_protocol` and `source` where it sets none (`weight` stays `None` when not given).
pub(super) struct NodeSettings {
    pub weight: Option<u32>,
    pub max_connections: Option<u32>,
    pub backup: bool,
    pub proxy_protocol: ProxyProtocol,
    pub source: Vec<IpAddr>,
}

/// Reads `weight`, `max_connections`, `backup`, `proxy_protocol` and `source` of `section`.
pub(super) fn node_settings(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    inherit: &Inherit,
) -> NodeSettings {
    NodeSettings {
        weight: walk.count(section, "weight", 1, u32::MAX),
        max_connections: walk.count(section, "max_connections", 1, u32::MAX),
        backup: walk.flag(section, "backup").unwrap_or(false),
        proxy_protocol: proxy_protocol(walk, section, "proxy_protocol")
            .unwrap_or(inherit.proxy_protocol),
        source: sources(walk, section).unwrap_or_else(|| inherit.source.clone()),
    }
}

/// `source`: a list of local IP addresses (no port) to connect to the nodes from, in turn.
pub(super) fn sources(walk: &mut Walk<'_>, section: &Section<'_>) -> Option<Vec<IpAddr>> {
    let list = walk.strings(section, "source")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, (text, span)) in list.into_iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => out.push(ip),
            _ => {
                let message = format!(
                    "is \"{text}\": give an IP address of this host, without a port, e.g. \"10.0.0.5\""
                );
                walk.error(&format!("{}[{i}]", section.key("source")), &span, message);
            }
        }
    }
    Some(out)
}

/// The nodes given with `-p`: each once.
pub(super) fn flag_nodes(
    flags: &[NodeAddr],
    inherit: &Inherit,
) -> Result<Vec<NodeConfig>, ConfigError> {
    let mut nodes: Vec<NodeConfig> = Vec::new();
    for address in flags {
        if nodes.iter().any(|n| &n.address == address) {
            return Err(ConfigError::Usage(format!(
                "-p {address} is given twice; give each node once"
            )));
        }
        nodes.push(NodeConfig {
            address: address.clone(),
            weight: 1,
            max_connections: None,
            backup: false,
            proxy_protocol: inherit.proxy_protocol,
            source: inherit.source.clone(),
            drained: false,
        });
    }
    Ok(nodes)
}

/// `nodes`: a non-empty list of `"host:port"` or node tables, each address once.
pub(super) fn nodes(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    inherit: &Inherit,
) -> Option<Vec<NodeConfig>> {
    let (item, span) = walk.item(section, "nodes")?;
    let key = section.key("nodes");
    let Some(list) = item.as_array() else {
        walk.wrong_type(&key, &span, "a list of nodes", item);
        return None;
    };
    if list.is_empty() {
        let message =
            "is empty: list at least one node, e.g. [\"node1:8080\"], or pass -p host:port";
        walk.error(&key, &span, message.to_owned());
        return None;
    }
    let mut nodes: Vec<NodeConfig> = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let Some(node) = node(walk, &key, value, inherit) else {
            continue;
        };
        if nodes.iter().any(|n| n.address == node.address) {
            let message = format!(
                "`{}` is listed twice; give each node once (use weight for a larger share)",
                node.address
            );
            walk.error(&key, &value.span(), message);
            continue;
        }
        nodes.push(node);
    }
    Some(nodes)
}

/// One node entry, `"host:port"` or
/// `{ address = "host:port", weight = N, max_connections = N, backup = true }`.
fn node(walk: &mut Walk<'_>, key: &str, value: &Value, inherit: &Inherit) -> Option<NodeConfig> {
    let parse = |walk: &mut Walk<'_>, text: &str, span: &Span, key: &str| {
        text.parse::<NodeAddr>()
            .map_err(|message| walk.error(key, span, message))
            .ok()
    };
    if let Some(text) = value.as_str() {
        let address = parse(walk, text, &value.span(), key)?;
        return Some(NodeConfig {
            address,
            weight: 1,
            max_connections: None,
            backup: false,
            proxy_protocol: inherit.proxy_protocol,
            source: inherit.source.clone(),
            drained: false,
        });
    }
    let Some(table) = value.as_inline_table() else {
        let expected = "a node: \"host:port\" or { address = \"host:port\", weight = N }";
        walk.wrong_type(key, &value.span(), expected, &Item::Value(value.clone()));
        return None;
    };
    let section = Section {
        name: key.to_owned(),
        table,
    };
    walk.unknown_keys(&section, &NODE_KEYS, "a node table");
    let settings = node_settings(walk, &section, inherit);
    let Some((text, span)) = walk.string(&section, "address", "an address such as \"node1:8080\"")
    else {
        if table.get("address").is_none() {
            let message = "has no `address`; write { address = \"host:port\" }".to_owned();
            walk.error(key, &value.span(), message);
        }
        return None;
    };
    let address = parse(walk, text, &span, &section.key("address"))?;
    Some(NodeConfig {
        address,
        weight: settings.weight.unwrap_or(1),
        max_connections: settings.max_connections,
        backup: settings.backup,
        proxy_protocol: settings.proxy_protocol,
        source: settings.source,
        drained: walk.flag(&section, "drained").unwrap_or(false),
    })
}
