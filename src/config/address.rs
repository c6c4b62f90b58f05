//! Addresses: listen addresses (`IP:PORT`, or `:PORT` for every IPv4 address, as HAProxy's
//! `bind :8000` and nginx's `listen 8000`), and node addresses, `host:port`, where host is an
//! IPv4 literal, an IPv6 literal in brackets or a DNS name. Parsing checks the form only;
//! names are looked up by the background lookups of `discovery`.

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
/// DNS names are looked up again in the background (every `dns_ttl` at most), so a node that
/// comes back with a new address (a restarted container) is followed.
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

impl From<SocketAddr> for NodeAddr {
    /// The node at an IP address, as a discovered node is.
    fn from(addr: SocketAddr) -> NodeAddr {
        NodeAddr {
            host: addr.ip().to_string().into_boxed_str(),
            port: addr.port(),
            ip: Some(addr.ip()),
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

/// A source range (`accept_proxy_from`): an address and a prefix length, `10.0.0.0/8`,
/// `fd00::/8`, or one address (`127.0.0.1`, the same as `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub network: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask4(u32::from(a), self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask6(u128::from(a), self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask4(a: u32, prefix: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(a: u128, prefix: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.split_once('/').map_or((s, None), |(i, p)| (i, Some(p)));
        let ip: IpAddr = ip.parse().map_err(|_| {
            format!("`{s}` is not an address range; write e.g. \"10.0.0.0/8\" or \"127.0.0.1\"")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0 to {max}")),
            },
        };
        let network = match ip {
            IpAddr::V4(a) => IpAddr::V4(mask4(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask6(u128::from(a), prefix).into()),
        };
        if network != ip {
            return Err(format!(
                "`{s}` has host bits set; the range is {network}/{prefix}"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
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

    #[test]
    fn ranges() {
        let r: Cidr = "10.0.0.0/8".parse().expect("range");
        assert!(r.contains("10.1.2.3".parse().expect("ip")));
        assert!(r.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!r.contains("11.0.0.1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("one address");
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!("::/0"
            .parse::<Cidr>()
            .expect("all")
            .contains("::1".parse().expect("ip")));
        assert!("10.0.0.1/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
    }
}
