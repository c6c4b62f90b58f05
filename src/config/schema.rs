//! The tierlb config file read into a [`Config`]: which keys exist, what each must hold, the
//! defaults, and the warnings for values that are legal but likely wrong. Every problem in the
//! file is collected (see the `walk` submodule) and reported together.

use std::time::Duration;

use toml_edit::ImDocument;

use super::service::{self, Defaults, SERVICE_KEYS};
use super::walk::{Section, Span, Walk};
use super::{
    duration, AdminConfig, Config, ConfigError, HealthConfig, Overrides, ServiceConfig, Timeouts,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DNS_TTL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FALL,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RISE,
};

/// Most runtime threads: far more than any machine's cores, far fewer than would exhaust it.
const MAX_THREADS: u32 = 1024;

const TOP_KEYS: [&str; 25] = [
    "listen",
    "protocol",
    "nodes",
    "discover",
    "resolvers",
    "state_file",
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
    "threads",
    "health",
    "timeouts",
    "admin",
    "cluster",
    "services",
];
const ADMIN_KEYS: [&str; 3] = ["listen", "token", "hosts"];

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
    let threads = walk.count(&top, "threads", 1, MAX_THREADS);
    let admin = admin(&mut walk, &top, overrides);
    let cluster = super::cluster::read(&mut walk, &top, path, overrides.cluster_advertise);
    let resolvers = super::discover::resolvers(&mut walk, &top);
    let state_file = walk
        .string(
            &top,
            "state_file",
            "a file path such as \"/var/lib/tierlb/state.json\"",
        )
        .map(|(path, _)| std::path::PathBuf::from(path));
    let services = if top.table.contains_key("services") {
        several(&mut walk, &top, overrides)?
    } else {
        single(&mut walk, &top, overrides)?
    };
    admin_clash(&mut walk, &top, &admin, &services);
    if !walk.errors.is_empty() {
        return Err(ConfigError::many(walk.errors));
    }
    let config = Config {
        services,
        threads: threads.map_or_else(default_threads, |t| t as usize),
        admin,
        cluster,
        resolvers,
        state_file,
        warnings: Vec::new(),
    };
    likely_wrong(&mut walk, &top, &config);
    Ok(Config {
        warnings: walk.warnings,
        ..config
    })
}

/// The built-in defaults of every service setting.
fn built_in() -> Defaults {
    Defaults {
        retries: DEFAULT_RETRIES,
        dns_ttl: DEFAULT_DNS_TTL,
        max_connections: None,
        access_log: false,
        proxy_protocol: crate::config::ProxyProtocol::Off,
        accept_proxy_from: Vec::new(),
        source: Vec::new(),
        admission: crate::config::AdmissionConfig::default(),
        health: HealthConfig {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_PROBE_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            send: None,
            expect: None,
            slow_start: Duration::ZERO,
            probe_port: None,
        },
        timeouts: Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            drain: DEFAULT_DRAIN_TIMEOUT,
            handshake: crate::config::DEFAULT_HANDSHAKE_TIMEOUT,
            fin: crate::config::DEFAULT_FIN_TIMEOUT,
            response: None,
            queue: Some(crate::config::DEFAULT_QUEUE_TIMEOUT),
            flow_idle: crate::config::DEFAULT_FLOW_IDLE,
        },
    }
}

/// The single-service form: the top level is the service `default`.
fn single(
    walk: &mut Walk<'_>,
    top: &Section<'_>,
    overrides: &Overrides,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let flags = (overrides.listen, overrides.nodes.as_slice());
    let found = service::service(walk, top, "default", &built_in(), flags)?;
    if !walk.errors.is_empty() {
        return Ok(Vec::new());
    }
    if overrides.listen.is_none() && !top.table.contains_key("listen") {
        return Err(ConfigError::NoListen);
    }
    found.map(|s| vec![s]).ok_or(ConfigError::NoNodes)
}

/// The `[services.NAME]` form: top-level `retries`, `dns_ttl`, `[health]` and `[timeouts]` are
/// defaults every service inherits; `listen` and `nodes` belong to the services.
fn several(
    walk: &mut Walk<'_>,
    top: &Section<'_>,
    overrides: &Overrides,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    for key in [
        "listen",
        "nodes",
        "discover",
        "max_connections",
        "balance",
        "protocol",
        "max_flows",
    ] {
        if let Some((_, span)) = walk.item(top, key) {
            let message = "belongs in a service when there are [services] tables: move it into each [services.NAME]".to_owned();
            walk.error(key, &span, message);
        }
    }
    let mut base = built_in();
    base.retries = walk
        .count(top, "retries", 0, u32::MAX)
        .unwrap_or(base.retries);
    if let Some((d, _)) = walk.duration(top, "dns_ttl", true) {
        base.dns_ttl = d;
    }
    if let Some(on) = walk.flag(top, "access_log") {
        base.access_log = on;
    }
    if let Some(p) = service::proxy_protocol(walk, top, "proxy_protocol") {
        base.proxy_protocol = p;
    }
    if let Some(r) = service::ranges(walk, top) {
        base.accept_proxy_from = r;
    }
    if let Some(s) = super::nodes::sources(walk, top) {
        base.source = s;
    }
    base.admission = super::admission::read(walk, top, &base.admission);
    base.health = service::health(walk, top, &base.health);
    base.timeouts = service::timeouts(walk, top, base.timeouts);
    let Some(table) = walk.table(top, "services") else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = table.iter().map(|(name, _)| name).collect();
    let flags = (overrides.listen, overrides.nodes.as_slice());
    if (flags.0.is_some() || !flags.1.is_empty()) && names.len() != 1 {
        return Err(ConfigError::Usage(format!(
            "-l and -p apply to a single service, and this file has {} ({}): set listen and nodes in each [services.NAME] instead",
            names.len(),
            names.join(", ")
        )));
    }
    if names.is_empty() {
        let span = top.table.get("services").and_then(|i| i.span());
        let message =
            "has no service: add a [services.NAME] table with listen and nodes".to_owned();
        walk.error("services", &span, message);
    }
    let mut services: Vec<ServiceConfig> = Vec::new();
    for name in names {
        let outer = Section {
            name: "services".to_owned(),
            table,
        };
        let key = format!("services.{name}");
        let Some(item_table) = walk.table(&outer, name) else {
            continue;
        };
        let span = table.get(name).and_then(|i| i.span());
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            let message = "is not a service name: use letters, digits, - and _".to_owned();
            walk.error(&key, &span, message);
            continue;
        }
        let section = Section {
            name: key.clone(),
            table: item_table,
        };
        walk.unknown_keys(&section, &SERVICE_KEYS, &format!("[{key}]"));
        for required in ["listen", "nodes"] {
            let from_flags = match required {
                "listen" => flags.0.is_some(),
                _ => !flags.1.is_empty(),
            };
            let discovers = required == "nodes" && item_table.contains_key("discover");
            if !(item_table.contains_key(required) || from_flags || discovers) {
                let message = if required == "nodes" {
                    "has no `nodes` and no `discover`".to_owned()
                } else {
                    format!("has no `{required}`")
                };
                walk.error(&key, &span, message);
            }
        }
        let Some(found) = service::service(walk, &section, name, &base, flags)? else {
            continue;
        };
        if super::sni::may_share(walk, &section, &found, &services) {
            services.push(found);
        }
    }
    Ok(services)
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

/// Where `path` (e.g. `["health", "timeout"]`) is written for a service: in its own table
/// (`prefix`, e.g. `["services", "web"]`) or else at the top level; its dotted key and span.
fn written(top: &Section<'_>, prefix: &[&str], path: &[&str]) -> (String, Span) {
    let own: Vec<&str> = prefix.iter().chain(path).copied().collect();
    match span_of(top, &own) {
        Some(span) => (own.join("."), Some(span)),
        None => (path.join("."), span_of(top, path)),
    }
}

/// Warnings for values that are legal but likely wrong, service by service.
fn likely_wrong(walk: &mut Walk<'_>, top: &Section<'_>, c: &Config) {
    let several = top.table.contains_key("services");
    for service in &c.services {
        let prefix: Vec<&str> = if several {
            vec!["services", service.name.as_str()]
        } else {
            Vec::new()
        };
        let h = &service.health;
        if h.timeout > h.interval {
            let (key, span) = written(top, &prefix, &["health", "timeout"]);
            let message = format!(
                "({}) is above the probe interval ({}): probes of one node overlap; make the timeout shorter than the interval",
                duration::show(h.timeout),
                duration::show(h.interval)
            );
            walk.warn(&key, &span, message);
        }
        if service.timeouts.connect < Duration::from_millis(1) {
            let (key, span) = written(top, &prefix, &["timeouts", "connect"]);
            let message = format!(
                "({}) is under 1ms: connects to anything but loopback take longer; milliseconds are written \"ms\"",
                duration::show(service.timeouts.connect)
            );
            walk.warn(&key, &span, message);
        }
        let nodes = service.nodes.len();
        let (key, span) = written(top, &prefix, &["retries"]);
        // Only a value someone wrote: the default with a single node is no mistake. Discovered
        // nodes are not known yet.
        if span.is_some() && service.retries as usize >= nodes && service.discover.is_empty() {
            let message = format!(
                "is {}, but with {nodes} node(s) a client can be retried at most {} time(s): each node is tried once per client",
                service.retries,
                nodes.saturating_sub(1)
            );
            walk.warn(&key, &span, message);
        }
    }
}

/// An admin address that is also a service's listen address (the same port on the same or a
/// wildcard address) could never be bound: an error naming the service.
fn admin_clash(
    walk: &mut Walk<'_>,
    top: &Section<'_>,
    admin: &AdminConfig,
    services: &[ServiceConfig],
) {
    let Some(admin) = admin.listen else {
        return;
    };
    for service in services {
        let (a, l) = (admin.ip(), service.listen.ip());
        let overlap = a == l || a.is_unspecified() || l.is_unspecified();
        if admin.port() != 0 && admin.port() == service.listen.port() && overlap {
            let message = format!(
                "({admin}) is also the listen address of service `{}` ({}): both cannot bind it; give the admin endpoint a port of its own, e.g. 127.0.0.1:9090",
                service.name, service.listen
            );
            walk.error("admin.listen", &span_of(top, &["admin", "listen"]), message);
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
        let listen = service::address(walk, &s, "listen");
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
