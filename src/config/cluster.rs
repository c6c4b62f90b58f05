//! `[cluster]`: the settings that make several tierlb instances one load balancer, read and
//! checked like every other section. The secret is read here (inline or from its file) and
//! kept in a [`Secret`], whose `Debug` never shows it.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::service;
use super::walk::{Section, Span, Walk};
use super::NodeAddr;

/// Default gossip interval.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest accepted secret, in bytes: 256 bits of key material if it is random.
pub const MIN_SECRET_LEN: usize = 32;
/// Shortest accepted gossip interval: shorter only burns CPU and bandwidth.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest accepted gossip interval: a member is declared dead after about 8 intervals.
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound on how far ahead of this instance's clock a peer's stamps may be.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Longest accepted clock skew bound: past it, a wrong clock would win for too long.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// Longest instance name.
const MAX_NAME_LEN: usize = 64;

/// Default number of instances that probe each node.
pub const DEFAULT_PROBE_OWNERS: u32 = 2;
/// Most probe owners per node: more only multiplies the probe load again.
const MAX_PROBE_OWNERS: u32 = 16;

const CLUSTER_KEYS: [&str; 9] = [
    "name",
    "listen",
    "advertise",
    "peers",
    "secret",
    "secret_file",
    "interval",
    "max_clock_skew",
    "probe_owners",
];

/// Several instances acting as one (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This instance's name, unique in the cluster (default: the host name).
    pub name: String,
    /// The UDP address gossip binds.
    pub listen: SocketAddr,
    /// What peers dial; `None` for the listen address (with the bound port if it is 0).
    pub advertise: Option<SocketAddr>,
    /// Seed instances, `host:port`: some or all of the others.
    pub peers: Vec<NodeAddr>,
    /// The shared secrets: every gossip packet is sealed with the first, opened with any.
    pub secret: Secret,
    /// Where the secret came from, for `--check`: `inline` or the file's path.
    pub secret_origin: String,
    /// Time between gossip rounds.
    pub interval: Duration,
    /// How far ahead of this instance's clock a peer's decision may be stamped, and (plus a
    /// few intervals) how old a gossip datagram may be, before either is rejected.
    pub max_clock_skew: Duration,
    /// How many live instances probe each node (chosen by rendezvous hashing); the others use
    /// their verdicts.
    pub probe_owners: usize,
}

/// Key material that is never printed: `Debug` shows only how many secrets there are. The
/// first seals, every one opens (several only while rotating).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<Vec<u8>>);

impl Secret {
    /// Each secret's bytes, the sealing one first, for deriving the keys.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }

    /// How many secrets there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} keys)", self.0.len())
    }
}

/// Reads `[cluster]` if the file has one; `config_path` anchors a relative `secret_file`, and
/// `advertise_override` (from `TIERLB_CLUSTER_ADVERTISE`) replaces `advertise`.
pub(super) fn read(
    walk: &mut Walk<'_>,
    top: &Section<'_>,
    config_path: &str,
    advertise_override: Option<SocketAddr>,
) -> Option<ClusterConfig> {
    let table = walk.table(top, "cluster")?;
    let header = top.table.key("cluster").and_then(|k| k.span());
    let s = Section {
        name: "cluster".to_owned(),
        table,
    };
    walk.unknown_keys(&s, &CLUSTER_KEYS, "[cluster]");
    let name = name(walk, &s, &header);
    let listen = match walk.item(&s, "listen") {
        Some(_) => service::address(walk, &s, "listen"),
        None => {
            let message = "is required: the UDP address gossip binds, e.g. \"0.0.0.0:7946\"";
            walk.error("cluster.listen", &header, message.to_owned());
            None
        }
    };
    let advertise = match advertise_override {
        Some(addr) => Some(Some(addr)),
        None => advertise(walk, &s, listen),
    };
    let peers = peers(walk, &s);
    let secret = secret(walk, &s, config_path, &header);
    let interval = interval(walk, &s);
    let max_clock_skew = max_clock_skew(walk, &s);
    let probe_owners = walk
        .count(&s, "probe_owners", 1, MAX_PROBE_OWNERS)
        .unwrap_or(DEFAULT_PROBE_OWNERS);
    Some(ClusterConfig {
        name: name?,
        listen: listen?,
        advertise: advertise?,
        peers,
        secret: secret.as_ref()?.0.clone(),
        secret_origin: secret?.1,
        interval,
        max_clock_skew,
        probe_owners: probe_owners as usize,
    })
}

/// `name`, or the host name.
fn name(walk: &mut Walk<'_>, s: &Section<'_>, header: &Span) -> Option<String> {
    let Some((text, span)) = walk.string(s, "name", "a string") else {
        return host_name().or_else(|| {
            let message = "is not set and the host name cannot be read; set `name` in [cluster]";
            walk.error("cluster.name", header, message.to_owned());
            None
        });
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if text.is_empty() || text.len() > MAX_NAME_LEN || !text.chars().all(allowed) {
        let message = format!(
            "is \"{text}\"; use 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or `.`, unique in the cluster"
        );
        walk.error("cluster.name", &span, message);
        return None;
    }
    Some(text.to_owned())
}

/// This machine's host name, if it can be read and is usable as a name.
fn host_name() -> Option<String> {
    let name = rustix::system::uname().nodename().to_str().ok()?.to_owned();
    (!name.is_empty() && name.len() <= MAX_NAME_LEN).then_some(name)
}

/// `advertise`: `Some(None)` when absent and the listen address will do.
fn advertise(
    walk: &mut Walk<'_>,
    s: &Section<'_>,
    listen: Option<SocketAddr>,
) -> Option<Option<SocketAddr>> {
    if walk.item(s, "advertise").is_some() {
        let addr = service::address(walk, s, "advertise")?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            let message = format!(
                "is {addr}; peers dial it, so it needs this instance's real IP and port, e.g. \"10.0.0.5:7946\""
            );
            walk.error("cluster.advertise", &walk.item(s, "advertise")?.1, message);
            return None;
        }
        return Some(Some(addr));
    }
    match listen {
        Some(l) if l.ip().is_unspecified() => {
            let message = format!(
                "is required when `cluster.listen` is {l}: peers need an address they can dial, e.g. \"10.0.0.5:{}\"",
                l.port()
            );
            walk.error("cluster.advertise", &walk.item(s, "listen")?.1, message);
            None
        }
        _ => Some(None),
    }
}

/// `peers`: `host:port` each.
fn peers(walk: &mut Walk<'_>, s: &Section<'_>) -> Vec<NodeAddr> {
    let mut out = Vec::new();
    for (i, (text, span)) in walk
        .strings(s, "peers")
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match text.parse::<NodeAddr>() {
            Ok(addr) => out.push(addr),
            Err(why) => walk.error(&format!("cluster.peers[{i}]"), &span, why.to_string()),
        }
    }
    out
}

/// `secret` or `secret_file`, exactly one, each secret at least [`MIN_SECRET_LEN`] bytes; with
/// where it came from. A file may hold several secrets, one per line: the first seals, every
/// one opens, which is how the secret is rotated without a split. Surrounding whitespace (a
/// line's end) is not part of a secret.
fn secret(
    walk: &mut Walk<'_>,
    s: &Section<'_>,
    config_path: &str,
    header: &Span,
) -> Option<(Secret, String)> {
    let inline = walk.string(s, "secret", "a string");
    let file = walk.string(s, "secret_file", "a path (a string)");
    let (bytes, origin, key, span) = match (inline, file) {
        (Some(_), Some((_, span))) => {
            let message = "and `secret` are both set; keep one (secret_file keeps the secret out of the config)";
            walk.error("cluster.secret_file", &span, message.to_owned());
            return None;
        }
        (Some((text, span)), None) => (
            text.as_bytes().to_vec(),
            "inline".to_owned(),
            "secret",
            span,
        ),
        (None, Some((path, span))) => {
            let full = Path::new(config_path)
                .parent()
                .unwrap_or(Path::new(""))
                .join(path);
            match std::fs::read(&full) {
                Ok(bytes) => (bytes, full.display().to_string(), "secret_file", span),
                Err(e) => {
                    let message = format!(
                        "cannot read `{path}`: {e} (a relative path is read from the config file's folder)"
                    );
                    walk.error("cluster.secret_file", &span, message);
                    return None;
                }
            }
        }
        (None, None) => {
            let message = "is required: every gossip packet is sealed with it; set `secret_file` to a file of at least 32 random bytes (e.g. `head -c 32 /dev/urandom | base64 > cluster.key`)";
            walk.error("cluster.secret", header, message.to_owned());
            return None;
        }
    };
    // A file holds one secret per line (blank lines aside); an inline secret is one.
    let keys: Vec<Vec<u8>> = if key == "secret" {
        vec![bytes.trim_ascii().to_vec()]
    } else {
        bytes
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    if keys.is_empty() {
        let message = "holds no secret; put at least 32 random bytes on its first line (e.g. `head -c 32 /dev/urandom | base64`)";
        walk.error(&format!("cluster.{key}"), &span, message.to_owned());
        return None;
    }
    for (i, k) in keys.iter().enumerate() {
        if k.len() < MIN_SECRET_LEN {
            let which = if keys.len() > 1 {
                format!(" (line {})", i + 1)
            } else {
                String::new()
            };
            let message = format!(
                "is {} bytes{which}; use at least {MIN_SECRET_LEN} random bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                k.len()
            );
            walk.error(&format!("cluster.{key}"), &span, message);
            return None;
        }
    }
    Some((Secret(keys), origin))
}

/// `max_clock_skew`: over 0, at most an hour.
fn max_clock_skew(walk: &mut Walk<'_>, s: &Section<'_>) -> Duration {
    let Some((d, span)) = walk.duration(s, "max_clock_skew", false) else {
        return DEFAULT_MAX_CLOCK_SKEW;
    };
    if d.is_zero() || d > MAX_CLOCK_SKEW {
        let message = "must be over 0s and at most 1h (how far apart the instances' clocks may be; NTP keeps them within milliseconds)";
        walk.error("cluster.max_clock_skew", &span, message.to_owned());
        return DEFAULT_MAX_CLOCK_SKEW;
    }
    d
}

/// `interval`, within bounds.
fn interval(walk: &mut Walk<'_>, s: &Section<'_>) -> Duration {
    let Some((d, span)) = walk.duration(s, "interval", false) else {
        return DEFAULT_GOSSIP_INTERVAL;
    };
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        let message = "must be from 10ms to 10s (a member is declared dead after about 8 intervals of silence)";
        walk.error("cluster.interval", &span, message.to_owned());
        return DEFAULT_GOSSIP_INTERVAL;
    }
    d
}
