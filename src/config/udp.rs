//! `protocol = "udp"`: a service that balances UDP flows instead of TCP connections, and the
//! settings that differ for it: `max_flows` instead of `max_connections`, and no PROXY
//! header, `sni` or `source` (each named in an error where a UDP service sets it).

use super::walk::{Section, Walk};
use super::{ProxyProtocol, ServiceConfig};

/// What a service carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TCP connections, spliced (the default).
    #[default]
    Tcp,
    /// UDP datagrams, in flows keyed by the client's address and port.
    Udp,
}

impl Protocol {
    /// The value as written: `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `protocol`: `"tcp"` (the default) or `"udp"`.
pub(super) fn protocol(walk: &mut Walk<'_>, section: &Section<'_>) -> Protocol {
    let Some((text, span)) = walk.string(section, "protocol", "\"tcp\" or \"udp\"") else {
        return Protocol::Tcp;
    };
    match text {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            let message = format!("is \"{other}\"; use \"tcp\" or \"udp\"");
            walk.error(&section.key("protocol"), &span, message);
            Protocol::Tcp
        }
    }
}

/// `max_flows`: most UDP flows at once (a UDP service's only).
pub(super) fn max_flows(walk: &mut Walk<'_>, section: &Section<'_>) -> Option<u32> {
    walk.count(section, "max_flows", 1, u32::MAX)
}

/// Names each setting of `found` (read from `section`) that its protocol does not have.
pub(super) fn check(walk: &mut Walk<'_>, section: &Section<'_>, found: &ServiceConfig) {
    let refuse = |walk: &mut Walk<'_>, key: &str, why: &str| {
        let span = walk
            .item(section, key)
            .and_then(|(_, s)| s)
            .or_else(|| walk.item(section, "protocol").and_then(|(_, s)| s));
        walk.error(&section.key(key), &span, why.to_owned());
    };
    if found.protocol == Protocol::Tcp {
        if section.table.contains_key("max_flows") {
            let why = "is for protocol = \"udp\" services; a TCP service has max_connections";
            refuse(walk, "max_flows", why);
        }
        return;
    }
    let udp = "is not for a protocol = \"udp\" service";
    if !found.sni.is_empty() {
        refuse(walk, "sni", &format!("{udp}: a datagram has no TLS server name; give the UDP service an address of its own"));
    }
    if !found.accept_proxy_from.is_empty() {
        refuse(
            walk,
            "accept_proxy_from",
            &format!("{udp}: datagrams carry no PROXY header"),
        );
    }
    let proxy = found
        .nodes
        .iter()
        .map(|n| n.proxy_protocol)
        .chain(found.discover.iter().map(|d| d.proxy_protocol))
        .any(|p| p != ProxyProtocol::Off);
    if proxy || found.proxy_protocol != ProxyProtocol::Off {
        let key = if section.table.contains_key("proxy_protocol") {
            "proxy_protocol"
        } else {
            "nodes"
        };
        refuse(
            walk,
            key,
            &format!(
                "{udp}: tierlb sends UDP nodes no PROXY header (set proxy_protocol = \"off\")"
            ),
        );
    }
    if found.nodes.iter().any(|n| !n.source.is_empty())
        || found.discover.iter().any(|d| !d.source.is_empty())
    {
        let key = if section.table.contains_key("source") {
            "source"
        } else {
            "nodes"
        };
        refuse(
            walk,
            key,
            &format!("{udp}: a flow's socket takes the address the route gives it"),
        );
    }
    if section.table.contains_key("max_connections") {
        refuse(
            walk,
            "max_connections",
            &format!("{udp}: a UDP service limits its flows with max_flows"),
        );
    }
}
