//! Configuration: the raw TOML shape, its validation into [`Config`], and [`ConfigError`].
//!
//! Parsing happens in two steps. `toml` + serde read the file into raw structs that keep every
//! value's span, so type errors and unknown keys come back with their line from `toml` itself.
//! Validation then turns the raw structs into a [`Config`] with no "filled in later" options, and
//! every rejected value is reported with its dotted key and its line. Defaults live in
//! [`Config::DEFAULTS`]-style constants below and nowhere else.
//!
//! The node list accepts two forms, `"host:port"` and `{ address = "host:port", weight = 2 }`.
//! They are told apart by hand rather than with `#[serde(untagged)]`, whose error ("data did not
//! match any variant") would hide what is actually wrong.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

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
/// Default number of extra connect attempts on other nodes.
pub const DEFAULT_RETRIES: u32 = 2;

/// A validated configuration: everything tierlb needs to run, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the listener binds.
    pub listen: SocketAddr,
    /// Backend nodes, in the order given.
    pub nodes: Vec<NodeConfig>,
    /// Active probe settings.
    pub health: HealthConfig,
    /// Connect, idle and drain timeouts.
    pub timeouts: Timeouts,
    /// Extra connect attempts after the first, each on another node.
    pub retries: u32,
    /// Most client connections open at once on the listener; `None` for no limit.
    pub max_connections: Option<u32>,
    /// Worker threads of the runtime (at least 1); defaults to the available cores.
    pub threads: usize,
    /// The admin endpoint (`[admin]`, or `--admin`).
    pub admin: AdminConfig,
}

/// The admin endpoint (`[admin]`): off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to serve `/metrics`, `/status` and the status page.
    pub listen: Option<SocketAddr>,
    /// Bearer token the write endpoints require; without one they are refused.
    pub token: Option<String>,
}

/// Shortest accepted admin token: long enough that guessing it is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// One backend node as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where the node listens.
    pub address: NodeAddr,
    /// Relative share of connections (at least 1).
    pub weight: u32,
    /// Most connections open at once to this node; `None` for no limit.
    pub max_connections: Option<u32>,
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
}

/// A node address, `host:port`, where host is an IP literal (`[::1]` for IPv6) or a DNS name.
///
/// DNS names are resolved each time tierlb connects or probes, so a node that comes back with
/// a new address (a restarted container) is followed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    host: Box<str>,
    port: u16,
    ip: Option<IpAddr>,
}

impl NodeAddr {
    /// The socket address when the host is an IP literal, `None` for a DNS name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The host part, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for NodeAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: missing `]` after the IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("`{s}` has no port; write it as [{host}]:PORT"))?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| {
                format!("`{s}` has no port; write it as host:port, e.g. {s}:8080")
            })?;
            if host.contains(':') {
                return Err(format!(
                    "`{s}`: an IPv6 address needs brackets, e.g. [::1]:8080"
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("`{s}` has no host; write it as host:port"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{s}`: port `{port}` must be a number from 1 to 65535"))?;
        let ip = host.parse::<IpAddr>().ok();
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if ip.is_none() && !host.chars().all(is_name_char) {
            return Err(format!(
                "`{s}`: `{host}` is neither an IP address nor a valid host name"
            ));
        }
        if s.starts_with('[') && !matches!(ip, Some(IpAddr::V6(_))) {
            return Err(format!("`{s}`: only an IPv6 address goes in brackets"));
        }
        Ok(NodeAddr {
            host: host.into(),
            port,
            ip,
        })
    }
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
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is of the right type but not acceptable.
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
    /// Neither the file nor `-p` gave a node.
    #[error("no nodes configured: add `nodes = [\"host:port\", ...]` to the config file or pass -p host:port")]
    NoNodes,
    /// Neither the file nor `-l` gave a listen address.
    #[error(
        "no listen address: set `listen = \"0.0.0.0:8000\"` in the config file or pass -l ADDR"
    )]
    NoListen,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Validator { text, path }.config(raw, overrides)
    }

    /// A short human-readable summary, printed by `--check`.
    pub fn summary(&self) -> String {
        let mut out = format!("listen {}\n", self.listen);
        for node in &self.nodes {
            out.push_str(&format!("node {} weight {}", node.address, node.weight));
            if let Some(max) = node.max_connections {
                out.push_str(&format!(" max_connections {max}"));
            }
            out.push('\n');
        }
        let h = &self.health;
        out.push_str(&format!(
            "health interval {} timeout {} rise {} fall {}{}\n",
            humantime::format_duration(h.interval),
            humantime::format_duration(h.timeout),
            h.rise,
            h.fall,
            if h.send.is_some() || h.expect.is_some() {
                " send/expect"
            } else {
                ""
            },
        ));
        let t = &self.timeouts;
        if let Some(admin) = self.admin.listen {
            let token = if self.admin.token.is_some() {
                "set"
            } else {
                "none (write endpoints refused)"
            };
            out.push_str(&format!("admin {admin} token {token}\n"));
        }
        out.push_str(&format!(
            "timeouts connect {} idle {} drain {}\nretries {}\nmax_connections {}\nthreads {}\n",
            humantime::format_duration(t.connect),
            humantime::format_duration(t.idle),
            humantime::format_duration(t.drain),
            self.retries,
            self.max_connections
                .map_or_else(|| "unlimited".to_owned(), |m| m.to_string()),
            self.threads,
        ));
        out
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    nodes: Option<Spanned<Vec<Spanned<RawNode>>>>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    timeouts: RawTimeouts,
    retries: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    threads: Option<Spanned<i64>>,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    send: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
    drain: Option<Spanned<String>>,
}

/// A node entry in either form: `"host:port"` or a table.
struct RawNode {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeTable {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = RawNode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node: \"host:port\" or { address = \"host:port\", weight = N }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
                // The span of a short-form entry is the entry itself (see `Spanned<RawNode>`).
                Ok(RawNode {
                    address: Spanned::new(0..0, v.to_owned()),
                    weight: None,
                    max_connections: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawNode, A::Error> {
                let table = RawNodeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawNode {
                    address: table.address,
                    weight: table.weight,
                    max_connections: table.max_connections,
                })
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

/// The default of `threads`: one per core available to this process (its CPU affinity
/// included), or 1 when that cannot be known.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Turns raw values into checked ones, reporting the key and line of the first bad value.
struct Validator<'a> {
    text: &'a str,
    path: &'a str,
}

impl Validator<'_> {
    fn config(&self, raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let listen = match (overrides.listen, raw.listen) {
            (Some(addr), _) => addr,
            (None, Some(v)) => v.get_ref().parse().map_err(|_| {
                self.invalid(
                    "listen",
                    v.span(),
                    format!(
                        "`{}` is not an IP:PORT address, e.g. 0.0.0.0:8000",
                        v.get_ref()
                    ),
                )
            })?,
            (None, None) => return Err(ConfigError::NoListen),
        };
        let nodes = if overrides.nodes.is_empty() {
            self.nodes(raw.nodes)?
        } else {
            let from_flags = overrides.nodes.iter().cloned();
            from_flags
                .map(|address| NodeConfig {
                    address,
                    weight: 1,
                    max_connections: None,
                })
                .collect()
        };
        let health = self.health(raw.health)?;
        let t = raw.timeouts;
        let timeouts = Timeouts {
            connect: self.duration(
                "timeouts.connect",
                t.connect,
                DEFAULT_CONNECT_TIMEOUT,
                false,
            )?,
            idle: self.duration("timeouts.idle", t.idle, DEFAULT_IDLE_TIMEOUT, false)?,
            drain: self.duration("timeouts.drain", t.drain, DEFAULT_DRAIN_TIMEOUT, true)?,
        };
        let retries = match raw.retries {
            Some(v) => self.count("retries", v, 0)?,
            None => DEFAULT_RETRIES,
        };
        let max_connections = raw
            .max_connections
            .map(|v| self.count("max_connections", v, 1))
            .transpose()?;
        let admin = self.admin(raw.admin, overrides.admin)?;
        let threads = match raw.threads {
            Some(v) => self.count("threads", v, 1)? as usize,
            None => default_threads(),
        };
        Ok(Config {
            listen,
            nodes,
            health,
            timeouts,
            retries,
            max_connections,
            threads,
            admin,
        })
    }

    fn admin(&self, raw: RawAdmin, flag: Option<SocketAddr>) -> Result<AdminConfig, ConfigError> {
        let listen = match (flag, raw.listen) {
            (Some(addr), _) => Some(addr),
            (None, Some(v)) => Some(self.socket_addr("admin.listen", &v)?),
            (None, None) => None,
        };
        let token = match raw.token {
            Some(t) if t.get_ref().len() < MIN_TOKEN_LEN => {
                return Err(self.invalid(
                    "admin.token",
                    t.span(),
                    format!("is too short: use at least {MIN_TOKEN_LEN} random characters"),
                ))
            }
            Some(t) => Some(t.into_inner()),
            None => None,
        };
        Ok(AdminConfig { listen, token })
    }

    fn socket_addr(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.invalid(
                key,
                v.span(),
                format!(
                    "`{}` is not an IP:PORT address, e.g. 0.0.0.0:8000",
                    v.get_ref()
                ),
            )
        })
    }

    fn nodes(
        &self,
        raw: Option<Spanned<Vec<Spanned<RawNode>>>>,
    ) -> Result<Vec<NodeConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Err(ConfigError::NoNodes);
        };
        if raw.get_ref().is_empty() {
            return Err(self.invalid(
                "nodes",
                raw.span(),
                "is empty: list at least one node, e.g. [\"node1:8080\"], or pass -p host:port"
                    .to_owned(),
            ));
        }
        let mut nodes: Vec<NodeConfig> = Vec::new();
        for (i, entry) in raw.into_inner().into_iter().enumerate() {
            let entry_span = entry.span();
            let entry = entry.into_inner();
            // A short-form entry carries no span of its own: use the entry's.
            let span = if entry.address.span().is_empty() {
                entry_span
            } else {
                entry.address.span()
            };
            let key = format!("nodes[{i}]");
            let address: NodeAddr = entry
                .address
                .get_ref()
                .parse()
                .map_err(|msg| self.invalid(&key, span.clone(), msg))?;
            if nodes.iter().any(|n| n.address == address) {
                return Err(self.invalid(
                    &key,
                    span,
                    format!("`{address}` is listed twice; give each node once (use weight for a larger share)"),
                ));
            }
            let weight = match entry.weight {
                Some(w) => self.count(&format!("{key}.weight"), w, 1)?,
                None => 1,
            };
            let max_connections = entry
                .max_connections
                .map(|m| self.count(&format!("{key}.max_connections"), m, 1))
                .transpose()?;
            nodes.push(NodeConfig {
                address,
                weight,
                max_connections,
            });
        }
        Ok(nodes)
    }

    fn health(&self, raw: RawHealth) -> Result<HealthConfig, ConfigError> {
        let text = |v: Option<Spanned<String>>| v.map(|s| s.into_inner().into_bytes());
        Ok(HealthConfig {
            interval: self.duration("health.interval", raw.interval, DEFAULT_INTERVAL, false)?,
            timeout: self.duration("health.timeout", raw.timeout, DEFAULT_PROBE_TIMEOUT, false)?,
            rise: match raw.rise {
                Some(v) => self.count("health.rise", v, 1)?,
                None => DEFAULT_RISE,
            },
            fall: match raw.fall {
                Some(v) => self.count("health.fall", v, 1)?,
                None => DEFAULT_FALL,
            },
            send: text(raw.send).filter(|b| !b.is_empty()),
            expect: text(raw.expect).filter(|b| !b.is_empty()),
        })
    }

    /// A humantime duration; `zero_ok` says whether "0s" is meaningful for this key.
    fn duration(
        &self,
        key: &str,
        raw: Option<Spanned<String>>,
        default: Duration,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        let value = humantime::parse_duration(raw.get_ref()).map_err(|e| {
            self.invalid(
                key,
                raw.span(),
                format!(
                    "`{}` is not a duration ({e}); write a number with a unit, e.g. \"2s\" or \"500ms\"",
                    raw.get_ref()
                ),
            )
        })?;
        if value.is_zero() && !zero_ok {
            return Err(self.invalid(
                key,
                raw.span(),
                "must be above zero (zero would spin or never finish), e.g. \"1s\"".to_owned(),
            ));
        }
        Ok(value)
    }

    /// A whole number of at least `min`.
    fn count(&self, key: &str, raw: Spanned<i64>, min: i64) -> Result<u32, ConfigError> {
        let value = *raw.get_ref();
        if value < min || value > i64::from(u32::MAX) {
            return Err(self.invalid(
                key,
                raw.span(),
                format!(
                    "is {value}; it must be a whole number from {min} to {}",
                    u32::MAX
                ),
            ));
        }
        u32::try_from(value)
            .map_err(|_| self.invalid(key, raw.span(), format!("{value} is out of range")))
    }

    fn invalid(&self, key: &str, span: std::ops::Range<usize>, message: String) -> ConfigError {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "t.toml", &Overrides::default())
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let c = parse("listen = \"127.0.0.1:8000\"\nnodes = [\"a:1\"]\n").expect("valid");
        assert_eq!(c.health.interval, DEFAULT_INTERVAL);
        assert_eq!(c.health.rise, DEFAULT_RISE);
        assert_eq!(c.health.fall, DEFAULT_FALL);
        assert_eq!(c.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.nodes[0].weight, 1);
        assert_eq!(c.max_connections, None);
    }

    #[test]
    fn both_node_forms_mix() {
        let c = parse(
            "listen = \"127.0.0.1:0\"\nnodes = [\"a:1\", { address = \"[::1]:2\", weight = 3, max_connections = 9 }]\n",
        )
        .expect("valid");
        assert_eq!(c.nodes[1].address.to_string(), "[::1]:2");
        assert_eq!(c.nodes[1].weight, 3);
        assert_eq!(c.nodes[1].max_connections, Some(9));
    }

    #[test]
    fn errors_name_key_and_line() {
        let cases = [
            ("nodes = [\"a:1\"]\nlisten = \"x\"\n", "t.toml:2: `listen`"),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [\n  \"a\"\n]\n",
                "t.toml:3: `nodes[0]`",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [{ address = \"a:1\", weight = 0 }]\n",
                "`nodes[0].weight` is 0",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[health]\ninterval = \"0s\"\n",
                "t.toml:4: `health.interval` must be above zero",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[timeouts]\nconnect = \"fast\"\n",
                "t.toml:4: `timeouts.connect`",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = []\n",
                "t.toml:2: `nodes` is empty",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\", \"a:1\"]\n",
                "listed twice",
            ),
            (
                "listen = \"127.0.0.1:1\"\nnodes = [\"::1:80\"]\n",
                "needs brackets",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn unknown_key_in_node_table_is_named() {
        let err = parse("listen = \"127.0.0.1:1\"\nnodes = [{ address = \"a:1\", wieght = 2 }]\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("wieght") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:9".parse().expect("addr")),
            nodes: vec!["b:2".parse().expect("node")],
            admin: None,
        };
        let c = Config::parse(
            "listen = \"0.0.0.0:1\"\nnodes = [\"a:1\"]\n",
            "t",
            &overrides,
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].address.to_string(), "b:2");
    }

    #[test]
    fn node_addresses() {
        for ok in [
            "a:1",
            "node1.example.com:8080",
            "127.0.0.1:9001",
            "[::1]:9001",
            "n_1:2",
        ] {
            let addr: NodeAddr = ok.parse().expect(ok);
            assert_eq!(addr.to_string(), ok);
        }
        for bad in [
            "a", "a:0", "a:70000", ":80", "[::1]", "[a]:1", "a b:1", "::1:80",
        ] {
            assert!(bad.parse::<NodeAddr>().is_err(), "{bad} should be rejected");
        }
    }
}
