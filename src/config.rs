//! Configuration: the validated [`Config`], how it is loaded, and [`ConfigError`].
//!
//! `toml_edit` parses the file into a document that keeps every key's and value's position;
//! the `schema` submodule then reads it key by key (through the `walk` submodule) into a
//! [`Config`] with no "filled in later" options. Every problem is reported in tierlb's own
//! words, with the file, the line and the dotted key, and all of them at once: a type error
//! (`interval = 2`), a bad value, an unknown key. Values that are legal but likely wrong give
//! warnings ([`Config::warnings`]). Defaults live in the `DEFAULT_*` constants below and
//! nowhere else; addresses are parsed in the `address` submodule, durations in `duration`.
//!
//! The node list accepts two forms, `"host:port"` and `{ address = "host:port", weight = 2 }`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod address;
mod admission;
mod cluster;
mod discover;
mod duration;
mod nodes;
mod schema;
mod service;
mod sni;
mod summary;
mod udp;
mod walk;

pub use address::{parse_listen, parse_node_flag, Cidr, NodeAddr};
pub use admission::{parse_rate, AdmissionConfig, Rate};
pub use cluster::{ClusterConfig, Secret, DEFAULT_GOSSIP_INTERVAL, MIN_SECRET_LEN};
pub use discover::{DiscoverConfig, Target, DEFAULT_MAX_NODES};
pub use duration::show as show_duration;
pub use sni::normalise as server_name;
pub use udp::Protocol;

/// Default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default probe timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of passing results that bring a down node back.
pub const DEFAULT_RISE: u32 = 2;
/// Default number of consecutive failures that take an up node down.
pub const DEFAULT_FALL: u32 = 3;
/// Default timeout of one connect attempt to a node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default idle timeout of a spliced connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time open connections get to finish on shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a node name's addresses are kept before it is looked up again.
pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(2);
/// Default time a client from `accept_proxy_from` has to send its PROXY header.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time the other side has to finish once one side has sent its FIN.
pub const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client may wait in the queue while every node is at its `max_connections`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a UDP flow lives with no datagram either way.
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(30);
/// Default number of extra connect attempts on other nodes.
pub const DEFAULT_RETRIES: u32 = 2;

/// A validated configuration: everything tierlb needs to run, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The services, in the order of the file (one, `default`, in the single-service form).
    pub services: Vec<ServiceConfig>,
    /// Worker threads of the runtime (at least 1); defaults to the available cores.
    pub threads: usize,
    /// The admin endpoint (`[admin]`, or `--admin`).
    pub admin: AdminConfig,
    /// Several instances acting as one (`[cluster]`); `None` runs alone.
    pub cluster: Option<ClusterConfig>,
    /// The DNS servers asked for node names (`resolvers`); empty: those of /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
    /// Where operator decisions are kept across restarts (`state_file`); `None`: nowhere.
    pub state_file: Option<std::path::PathBuf>,
    /// Values that are legal but likely wrong, each naming the file, line and key.
    pub warnings: Vec<String>,
}

/// One service: a listener and the nodes behind it, with its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The table key (`default` in the single-service form): letters, digits, `-`, `_`.
    pub name: String,
    /// Address the listener binds.
    pub listen: SocketAddr,
    /// The server names it answers on a listen address shared with other services (lower
    /// case, no trailing dot; `*.` for one label); empty for a service with an address of its
    /// own, or for the shared address's default service.
    pub sni: Vec<String>,
    /// Backend nodes, in the order given.
    pub nodes: Vec<NodeConfig>,
    /// Names whose every address is a node of its own (`discover`), in the order given.
    pub discover: Vec<DiscoverConfig>,
    /// How a node is picked.
    pub balance: Balance,
    /// Active probe settings.
    pub health: HealthConfig,
    /// Connect, idle and drain timeouts.
    pub timeouts: Timeouts,
    /// Extra connect attempts after the first, each on another node.
    pub retries: u32,
    /// How long a node name's addresses are kept before it is looked up again.
    pub dns_ttl: Duration,
    /// Most client connections open at once on the listener; `None` for no limit.
    pub max_connections: Option<u32>,
    /// One `tierlb::access` log line per closed connection.
    pub access_log: bool,
    /// The PROXY header nodes are sent, unless a node says otherwise.
    pub proxy_protocol: ProxyProtocol,
    /// Sources whose connections must start with a PROXY header (`accept_proxy_from`).
    pub accept_proxy_from: Vec<Cidr>,
    /// Who may connect, and how much per client address.
    pub admission: AdmissionConfig,
    /// TCP connections or UDP flows.
    pub protocol: Protocol,
    /// Most UDP flows at once (`None`: from the descriptor budget); UDP services only.
    pub max_flows: Option<u32>,
}

/// The PROXY protocol header a node is sent before a client's bytes (`proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// None (the default).
    #[default]
    Off,
    /// v1, the text line (`PROXY TCP4 src dst sport dport`).
    V1,
    /// v2, the binary header.
    V2,
}

impl ProxyProtocol {
    /// The value as written in the config: `off`, `v1` or `v2`.
    pub fn name(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

/// How a service picks its nodes (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Weighted least connections (the default).
    LeastConnections,
    /// Weighted round robin, whatever the load.
    RoundRobin,
    /// Source affinity: weighted rendezvous hashing of the client address.
    Source,
}

/// The admin endpoint (`[admin]`): off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to serve `/metrics`, `/status` and the status page.
    pub listen: Option<SocketAddr>,
    /// Bearer token the write endpoints require; without one they are refused.
    pub token: Option<String>,
    /// Host names (beside IP addresses and `localhost`) the endpoint answers to.
    pub hosts: Vec<String>,
}

/// Shortest accepted admin token, in characters: long enough that guessing it is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `token` is acceptable as the admin token; the reason if not.
pub fn check_token(token: &str) -> Result<(), &'static str> {
    if token.trim().is_empty() {
        Err("is blank: use at least 16 random characters")
    } else if token.chars().count() < MIN_TOKEN_LEN {
        Err("is too short: use at least 16 random characters")
    } else {
        Ok(())
    }
}

/// One backend node as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where the node listens.
    pub address: NodeAddr,
    /// Relative share of connections (at least 1).
    pub weight: u32,
    /// Most connections open at once to this node; `None` for no limit.
    pub max_connections: Option<u32>,
    /// Takes clients only while no primary node is up (`backup = true`).
    pub backup: bool,
    /// The PROXY header it is sent: its own `proxy_protocol`, else its service's.
    pub proxy_protocol: ProxyProtocol,
    /// Local addresses to connect from, in turn: its own `source`, else its service's (empty:
    /// the kernel's choice).
    pub source: Vec<std::net::IpAddr>,
    /// Drained from the start (`drained = true` in its table): it takes no new client until
    /// an operator enables it.
    pub drained: bool,
}

/// Active probe settings (`[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two probes of one node (jittered by up to ±10 %).
    pub interval: Duration,
    /// Time one probe may take, connect and reply included.
    pub timeout: Duration,
    /// Consecutive passing results that mark a down node up.
    pub rise: u32,
    /// Consecutive failures that mark an up node down.
    pub fall: u32,
    /// Bytes sent after connecting, if any.
    pub send: Option<Vec<u8>>,
    /// Bytes the reply must start with, if any.
    pub expect: Option<Vec<u8>>,
    /// How long a node that comes back ramps up its share of new connections (0: off).
    pub slow_start: Duration,
    /// A TCP port beside each node's address to probe instead of the node's own port (a
    /// UDP service's nodes, checked by a TCP connect there).
    pub probe_port: Option<u16>,
}

/// Timeouts (`[timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time one connect attempt to a node may take.
    pub connect: Duration,
    /// A spliced connection with no bytes either way for this long is closed.
    pub idle: Duration,
    /// On shutdown, how long open connections may still run.
    pub drain: Duration,
    /// How long a client from `accept_proxy_from` has to send its PROXY header.
    pub handshake: Duration,
    /// Once one side has sent its FIN, how long the other has to finish.
    pub fin: Duration,
    /// Client bytes unanswered by the node for this long count against it (`None`: off).
    pub response: Option<Duration>,
    /// How long a client waits for a slot while every node is full (`None`: closed at once).
    pub queue: Option<Duration>,
    /// A UDP flow with no datagram either way for this long ends.
    pub flow_idle: Duration,
}

/// Why a configuration was rejected. Every variant names what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}:{line}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line where parsing stopped.
        line: usize,
        /// What the parser expected there.
        message: String,
    },
    /// A value is missing, of the wrong type, not acceptable, or its key is unknown.
    #[error("{path}:{line}: `{key}` {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the value.
        line: usize,
        /// Dotted key, e.g. `health.interval`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Several errors in one file, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
    /// A command-line value or environment variable is wrong (the message says which).
    #[error("{0}")]
    Usage(String),
    /// Neither the file nor `-p` gave a node, and nothing is discovered.
    #[error("no nodes configured: add `nodes = [\"host:port\", ...]` or `discover = [{{ dns = \"name:port\" }}]` to the config file, or pass -p host:port")]
    NoNodes,
    /// Neither the file nor `-l` gave a listen address.
    #[error(
        "no listen address: set `listen = \"0.0.0.0:8000\"` in the config file or pass -l ADDR"
    )]
    NoListen,
}

impl ConfigError {
    /// One error as itself, several as [`ConfigError::Many`] in the order of their lines.
    pub fn many(mut errors: Vec<ConfigError>) -> ConfigError {
        errors.sort_by_key(|e| match e {
            ConfigError::Invalid { line, .. } | ConfigError::Syntax { line, .. } => *line,
            _ => 0,
        });
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Many(errors)
        }
    }
}

/// Settings given on the command line, which take precedence over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-l`: replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// `-p`: when not empty, replaces `nodes` (each with weight 1).
    pub nodes: Vec<NodeAddr>,
    /// `--admin`: replaces `admin.listen`.
    pub admin: Option<SocketAddr>,
    /// `--admin-token-file` or `TIERLB_ADMIN_TOKEN` (already checked): replaces
    /// `admin.token`.
    pub admin_token: Option<String>,
    /// `TIERLB_CLUSTER_ADVERTISE`: replaces `cluster.advertise` (a pod's own IP, say).
    pub cluster_advertise: Option<SocketAddr>,
}

impl Config {
    /// Reads and validates `path` (if any), then applies the command-line overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Some((shown, text))
            }
            None => None,
        };
        match raw {
            Some((shown, text)) => Config::parse(&text, &shown, overrides),
            None => Config::parse("", "command line", overrides),
        }
    }

    /// Parses and validates TOML `text`; `path` names the source in error messages.
    pub fn parse(text: &str, path: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        schema::read(text, path, overrides)
    }
}

#[cfg(test)]
mod tests;
