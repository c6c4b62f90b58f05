//! The tierlb config file read into a [`Config`]: which keys exist, what each must hold, the
//! defaults, and the warnings for values that are legal but likely wrong. Every problem in the
//! file is collected (see the `walk` submodule) and reported together.

use std::net::SocketAddr;
use std::time::Duration;

use toml_edit::ImDocument;

use super::address::parse_listen;
use super::walk::{Section, Span, Walk};
use super::{
    duration, AdminConfig, Config, ConfigError, HealthConfig, NodeAddr, NodeConfig, Overrides,
    Timeouts, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DNS_TTL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FALL,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RISE,
};

/// Most runtime threads: far more than any machine's cores, far fewer than would exhaust it.
const MAX_THREADS: u32 = 1024;
/// Largest `rise` or `fall`: the health counters are 16-bit.
const MAX_RISE_FALL: u32 = u16::MAX as u32;

const TOP_KEYS: [&str; 9] = [
    "listen",
    "nodes",
    "retries",
    "dns_ttl",
    "max_connections",
    "threads",
    "health",
    "timeouts",
    "admin",
];
const HEALTH_KEYS: [&str; 6] = ["interval", "timeout", "rise", "fall", "send", "expect"];
const TIMEOUT_KEYS: [&str; 3] = ["connect", "idle", "drain"];
const ADMIN_KEYS: [&str; 3] = ["listen", "token", "hosts"];
const NODE_KEYS: [&str; 3] = ["address", "weight", "max_connections"];

/// What an address key must hold, for messages.
const ADDRESS: &str = "an address such as \"0.0.0.0:8000\" or \":8000\"";

/// Reads `text` (from `path`, for messages) with the command-line `overrides` applied.
pub(super) fn read(text: &str, path: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let doc = ImDocument::parse(text).map_err(|e| syntax(text, path, &e))?;
    let mut walk = Walk {
        text,
        path,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let top = Section {
        name: String::new(),
        table: doc.as_table(),
    };
    walk.unknown_keys(&top, &TOP_KEYS, "the top level");
    let listen = overrides
        .listen
        .or_else(|| address(&mut walk, &top, "listen"));
    let nodes = if overrides.nodes.is_empty() {
        nodes(&mut walk, &top)
    } else {
        flag_nodes(&overrides.nodes)?
    };
    let health = health(&mut walk, &top);
    let timeouts = timeouts(&mut walk, &top);
    let retries = walk.count(&top, "retries", 0, u32::MAX);
    let dns_ttl = walk.duration(&top, "dns_ttl", true).map(|(d, _)| d);
    let max_connections = walk.count(&top, "max_connections", 1, u32::MAX);
    let threads = walk.count(&top, "threads", 1, MAX_THREADS);
    let admin = admin(&mut walk, &top, overrides);
    if !walk.errors.is_empty() {
        return Err(ConfigError::many(walk.errors));
    }
    let listen = listen.ok_or(ConfigError::NoListen)?;
    let nodes = nodes.ok_or(ConfigError::NoNodes)?;
    let config = Config {
        listen,
        health,
        timeouts,
        retries: retries.unwrap_or(DEFAULT_RETRIES),
        dns_ttl: dns_ttl.unwrap_or(DEFAULT_DNS_TTL),
        max_connections,
        threads: threads.map_or_else(default_threads, |t| t as usize),
        admin,
        warnings: Vec::new(),
        nodes,
    };
    likely_wrong(&mut walk, &top, &config, retries.is_some());
    Ok(Config {
        warnings: walk.warnings,
        ..config
    })
}

/// The span of a value by its path of keys from the top level, e.g. `["health", "timeout"]`.
fn span_of(top: &Section<'_>, path: &[&str]) -> Span {
    let (last, tables) = path.split_last()?;
    let mut table = top.table;
    for key in tables {
        table = table.get(key)?.as_table_like()?;
    }
    table.get(last)?.span()
}

/// Warnings for values that are legal but likely wrong.
fn likely_wrong(walk: &mut Walk<'_>, top: &Section<'_>, c: &Config, retries_written: bool) {
    let h = &c.health;
    if h.timeout > h.interval {
        let message = format!(
            "({}) is above `health.interval` ({}): probes of one node overlap; make the timeout shorter than the interval",
            duration::show(h.timeout),
            duration::show(h.interval)
        );
        walk.warn(
            "health.timeout",
            &span_of(top, &["health", "timeout"]),
            message,
        );
    }
    if c.timeouts.connect < Duration::from_millis(1) {
        let message = format!(
            "({}) is under 1ms: connects to anything but loopback take longer; milliseconds are written \"ms\"",
            duration::show(c.timeouts.connect)
        );
        walk.warn(
            "timeouts.connect",
            &span_of(top, &["timeouts", "connect"]),
            message,
        );
    }
    let nodes = c.nodes.len();
    if retries_written && c.retries as usize >= nodes {
        let message = format!(
            "is {}, but with {nodes} node(s) a client can be retried at most {} time(s): each node is tried once per client",
            c.retries,
            nodes.saturating_sub(1)
        );
        walk.warn("retries", &span_of(top, &["retries"]), message);
    }
    if let Some(admin) = c.admin.listen {
        let (a, l) = (admin.ip(), c.listen.ip());
        let overlap = a == l || a.is_unspecified() || l.is_unspecified();
        if admin.port() != 0 && admin.port() == c.listen.port() && overlap {
            let message = format!(
                "({admin}) is the listen address {}: the admin endpoint cannot bind it; give it a port of its own, e.g. 127.0.0.1:9090",
                c.listen
            );
            walk.warn("admin.listen", &span_of(top, &["admin", "listen"]), message);
        }
    }
}

/// A syntax error: where, and what the parser expected, in tierlb's format.
fn syntax(text: &str, path: &str, e: &toml_edit::TomlError) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let line = text[..at].bytes().filter(|b| *b == b'\n').count() + 1;
    let message: Vec<&str> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        message: message.join("; "),
    }
}

/// A listen-style address (`IP:PORT`, or `:PORT` for all IPv4 addresses).
fn address(walk: &mut Walk<'_>, section: &Section<'_>, key: &str) -> Option<SocketAddr> {
    let (text, span) = walk.string(section, key, ADDRESS)?;
    match parse_listen(text) {
        Ok(addr) => Some(addr),
        Err(message) => {
            walk.error(&section.key(key), &span, message);
            None
        }
    }
}

/// The nodes given with `-p`: each once.
fn flag_nodes(flags: &[NodeAddr]) -> Result<Option<Vec<NodeConfig>>, ConfigError> {
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
        });
    }
    Ok(Some(nodes))
}

/// `nodes`: a non-empty list of `"host:port"` or node tables, each address once.
fn nodes(walk: &mut Walk<'_>, top: &Section<'_>) -> Option<Vec<NodeConfig>> {
    let (item, span) = walk.item(top, "nodes")?;
    let Some(list) = item.as_array() else {
        walk.wrong_type("nodes", &span, "a list of nodes", item);
        return None;
    };
    if list.is_empty() {
        let message =
            "is empty: list at least one node, e.g. [\"node1:8080\"], or pass -p host:port";
        walk.error("nodes", &span, message.to_owned());
        return None;
    }
    let mut nodes: Vec<NodeConfig> = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let key = format!("nodes[{i}]");
        let Some(node) = node(walk, &key, value) else {
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

/// One node entry, `"host:port"` or `{ address = "host:port", weight = N, max_connections = N }`.
fn node(walk: &mut Walk<'_>, key: &str, value: &toml_edit::Value) -> Option<NodeConfig> {
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
        });
    }
    let Some(table) = value.as_inline_table() else {
        let expected = "a node: \"host:port\" or { address = \"host:port\", weight = N }";
        walk.wrong_type(
            key,
            &value.span(),
            expected,
            &toml_edit::Item::Value(value.clone()),
        );
        return None;
    };
    let section = Section {
        name: key.to_owned(),
        table,
    };
    walk.unknown_keys(&section, &NODE_KEYS, "a node table");
    let weight = walk.count(&section, "weight", 1, u32::MAX);
    let max_connections = walk.count(&section, "max_connections", 1, u32::MAX);
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
        weight: weight.unwrap_or(1),
        max_connections,
    })
}

/// `[health]`, with defaults.
fn health(walk: &mut Walk<'_>, top: &Section<'_>) -> HealthConfig {
    let mut health = HealthConfig {
        interval: DEFAULT_INTERVAL,
        timeout: DEFAULT_PROBE_TIMEOUT,
        rise: DEFAULT_RISE,
        fall: DEFAULT_FALL,
        send: None,
        expect: None,
    };
    let Some(table) = walk.table(top, "health") else {
        return health;
    };
    let s = Section {
        name: "health".to_owned(),
        table,
    };
    walk.unknown_keys(&s, &HEALTH_KEYS, "[health]");
    if let Some((d, _)) = walk.duration(&s, "interval", false) {
        health.interval = d;
    }
    if let Some((d, _)) = walk.duration(&s, "timeout", false) {
        health.timeout = d;
    }
    health.rise = walk
        .count(&s, "rise", 1, MAX_RISE_FALL)
        .unwrap_or(DEFAULT_RISE);
    health.fall = walk
        .count(&s, "fall", 1, MAX_RISE_FALL)
        .unwrap_or(DEFAULT_FALL);
    let bytes = |v: Option<(&str, _)>| {
        v.map(|(s, _)| s.as_bytes().to_vec())
            .filter(|b| !b.is_empty())
    };
    health.send = bytes(walk.string(&s, "send", "a string"));
    health.expect = bytes(walk.string(&s, "expect", "a string"));
    health
}

/// `[timeouts]`, with defaults.
fn timeouts(walk: &mut Walk<'_>, top: &Section<'_>) -> Timeouts {
    let mut t = Timeouts {
        connect: DEFAULT_CONNECT_TIMEOUT,
        idle: DEFAULT_IDLE_TIMEOUT,
        drain: DEFAULT_DRAIN_TIMEOUT,
    };
    let Some(table) = walk.table(top, "timeouts") else {
        return t;
    };
    let s = Section {
        name: "timeouts".to_owned(),
        table,
    };
    walk.unknown_keys(&s, &TIMEOUT_KEYS, "[timeouts]");
    if let Some((d, _)) = walk.duration(&s, "connect", false) {
        t.connect = d;
    }
    if let Some((d, _)) = walk.duration(&s, "idle", false) {
        t.idle = d;
    }
    if let Some((d, _)) = walk.duration(&s, "drain", true) {
        t.drain = d;
    }
    t
}

/// `[admin]`, with the command line's address and token on top.
fn admin(walk: &mut Walk<'_>, top: &Section<'_>, overrides: &Overrides) -> AdminConfig {
    let mut admin = AdminConfig {
        listen: overrides.admin,
        token: None,
        hosts: Vec::new(),
    };
    if let Some(table) = walk.table(top, "admin") {
        let s = Section {
            name: "admin".to_owned(),
            table,
        };
        walk.unknown_keys(&s, &ADMIN_KEYS, "[admin]");
        let listen = address(walk, &s, "listen");
        admin.listen = admin.listen.or(listen);
        if let Some((token, span)) = walk.string(&s, "token", "a string") {
            match super::check_token(token) {
                Ok(()) => admin.token = Some(token.to_owned()),
                Err(message) => walk.error("admin.token", &span, message.to_owned()),
            }
        }
        if let Some(hosts) = walk.strings(&s, "hosts") {
            admin.hosts = hosts.into_iter().map(|(h, _)| h.to_owned()).collect();
        }
    }
    if let Some(token) = &overrides.admin_token {
        admin.token = Some(token.clone());
    }
    admin
}

/// The default of `threads`: one per core available to this process (its CPU affinity
/// included), or 1 when that cannot be known.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
