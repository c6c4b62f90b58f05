//! Addresses: listen addresses (`IP:PORT`, or `:PORT` for every IPv4 address, as HAProxy's
//! `bind :8000` and nginx's `listen 8000`), and node addresses, `host:port`, where host is an
//! IPv4 literal, an IPv6 literal in brackets or a DNS name. Parsing checks the form only;
//! names are resolved when connecting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, or `:PORT` / `*:PORT` for all IPv4 addresses
/// (`0.0.0.0`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let port = text.strip_prefix(':').or_else(|| text.strip_prefix("*:"));
    let parsed = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)),
        None => text.parse().ok(),
    };
    parsed.ok_or_else(|| {
        format!("`{text}` is not an IP:PORT address, e.g. 0.0.0.0:8000, or :8000 for all addresses")
    })
}

/// A node given with `-p`: one `host:port`, with messages for what people try instead.
pub fn parse_node_flag(text: &str) -> Result<NodeAddr, String> {
    if text.contains(',') {
        return Err(format!(
            "`{text}`: one host:port per -p; repeat -p for each node"
        ));
    }
    text.parse()
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
        if let Some((scheme, rest)) = s.split_once("://") {
            let example = rest.trim_end_matches('/');
            return Err(format!(
                "`{s}`: no scheme (`{scheme}://`): tierlb speaks TCP; write host:port, e.g. {example}"
            ));
        }
        if s.contains(',') {
            return Err(format!(
                "`{s}`: one host:port per entry; give each node its own string"
            ));
        }
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "`{s}` has no host; write host:port, e.g. 127.0.0.1:{s}"
            ));
        }
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
            return Err(format!(
                "`{s}` has no host; write host:port, e.g. 127.0.0.1{s}"
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
