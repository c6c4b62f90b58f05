//! The raw TOML shape and its validation into a [`Config`]: every rejected value is reported
//! with its dotted key and its line.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{
    AdminConfig, Config, ConfigError, HealthConfig, NodeAddr, NodeConfig, Overrides, Timeouts,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FALL, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RISE, MIN_TOKEN_LEN,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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

/// Most runtime threads: far more than any machine's cores, far fewer than would exhaust it.
const MAX_THREADS: u32 = 1024;

/// Largest `rise` or `fall`: the health counters are 16-bit.
const MAX_RISE_FALL: u32 = u16::MAX as u32;

/// Longest accepted duration: far beyond any useful timeout, and far enough below the clock's
/// range that deadlines computed from it never overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Turns raw values into checked ones, reporting the key and line of the first bad value.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
}

impl Validator<'_> {
    pub(super) fn config(
        &self,
        raw: RawConfig,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
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
            Some(v) => self.count("retries", v, 0, u32::MAX)?,
            None => DEFAULT_RETRIES,
        };
        let max_connections = raw
            .max_connections
            .map(|v| self.count("max_connections", v, 1, u32::MAX))
            .transpose()?;
        let admin = self.admin(raw.admin, overrides.admin)?;
        let threads = match raw.threads {
            Some(v) => self.count("threads", v, 1, MAX_THREADS)? as usize,
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
                Some(w) => self.count(&format!("{key}.weight"), w, 1, u32::MAX)?,
                None => 1,
            };
            let max_connections = entry
                .max_connections
                .map(|m| self.count(&format!("{key}.max_connections"), m, 1, u32::MAX))
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
                Some(v) => self.count("health.rise", v, 1, MAX_RISE_FALL)?,
                None => DEFAULT_RISE,
            },
            fall: match raw.fall {
                Some(v) => self.count("health.fall", v, 1, MAX_RISE_FALL)?,
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
        if value > MAX_DURATION {
            return Err(self.invalid(
                key,
                raw.span(),
                "must be at most 365 days (for \"no limit\", 365 days is as good as forever)"
                    .to_owned(),
            ));
        }
        Ok(value)
    }

    /// A whole number from `min` to `max`.
    fn count(&self, key: &str, raw: Spanned<i64>, min: i64, max: u32) -> Result<u32, ConfigError> {
        let value = *raw.get_ref();
        match u32::try_from(value) {
            Ok(n) if value >= min && n <= max => Ok(n),
            _ => Err(self.invalid(
                key,
                raw.span(),
                format!("is {value}; it must be a whole number from {min} to {max}"),
            )),
        }
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
