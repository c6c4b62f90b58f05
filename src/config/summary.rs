//! The summary `--check` prints: what tierlb would run with, secrets left out, durations as
//! written.

use std::fmt::Write;

use super::duration::show;
use super::{Config, ServiceConfig};

impl Config {
    /// A short human-readable summary, printed by `--check`; the admin token is only said to
    /// be set. With several services, each block starts with `service NAME`. Warnings come
    /// last, one per line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let several = self.services.len() > 1;
        for service in &self.services {
            if several {
                let _ = writeln!(out, "service {}", service.name);
            }
            service.summarise(&mut out);
        }
        if let Some(admin) = self.admin.listen {
            let token = if self.admin.token.is_some() {
                "set"
            } else {
                "none (write endpoints refused)"
            };
            let _ = writeln!(out, "admin {admin} token {token}");
            if !self.admin.hosts.is_empty() {
                let _ = writeln!(out, "admin hosts {}", self.admin.hosts.join(", "));
            }
        }
        if let Some(c) = &self.cluster {
            let advertise = c
                .advertise
                .map_or_else(|| "the listen address".to_owned(), |a| a.to_string());
            let peers: Vec<String> = c.peers.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "cluster {} listen {} advertise {advertise} interval {} max_clock_skew {} probe_owners {}",
                c.name,
                c.listen,
                show(c.interval),
                show(c.max_clock_skew),
                c.probe_owners
            );
            let peers = if peers.is_empty() {
                "none".to_owned()
            } else {
                peers.join(", ")
            };
            let _ = writeln!(out, "cluster peers {peers}");
            let keys = match c.secret.count() {
                1 => "1 key".to_owned(),
                n => format!("{n} keys: the first seals, all open"),
            };
            let _ = writeln!(out, "cluster secret {} ({keys})", c.secret_origin);
        }
        if !self.resolvers.is_empty() {
            let list: Vec<String> = self.resolvers.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "resolvers {}", list.join(", "));
        }
        if let Some(path) = &self.state_file {
            let _ = writeln!(out, "state file {}", path.display());
        }
        let _ = writeln!(out, "threads {}", self.threads);
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}

impl ServiceConfig {
    /// The service's lines of the summary.
    fn summarise(&self, out: &mut String) {
        let _ = writeln!(out, "listen {}", self.listen);
        if self.protocol == super::Protocol::Udp {
            let max = self
                .max_flows
                .map_or_else(|| "from the open-files limit".to_owned(), |m| m.to_string());
            let _ = writeln!(
                out,
                "protocol udp max_flows {max} flow_idle {}",
                show(self.timeouts.flow_idle)
            );
        }
        if !self.sni.is_empty() {
            let _ = writeln!(out, "sni {}", self.sni.join(", "));
        }
        let balance = match self.balance {
            super::Balance::LeastConnections => "least-connections",
            super::Balance::RoundRobin => "round-robin",
            super::Balance::Source => "source",
        };
        let _ = writeln!(out, "balance {balance}");
        if !self.accept_proxy_from.is_empty() {
            let ranges: Vec<String> = self
                .accept_proxy_from
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = writeln!(
                out,
                "accept_proxy_from {} handshake {}",
                ranges.join(", "),
                show(self.timeouts.handshake)
            );
        }
        let a = &self.admission;
        if !a.is_open() {
            let ranges = |list: &[super::Cidr]| {
                let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
                if shown.is_empty() {
                    "-".to_owned()
                } else {
                    shown.join(",")
                }
            };
            let _ = writeln!(
                out,
                "admission allow {} deny {} max_per_source {} rate_per_source {}",
                ranges(&a.allow),
                ranges(&a.deny),
                a.max_per_source
                    .map_or_else(|| "-".to_owned(), |m| m.to_string()),
                a.rate_per_source
                    .map_or_else(|| "-".to_owned(), |r| r.to_string()),
            );
        }
        for node in &self.nodes {
            let _ = write!(out, "node {} weight {}", node.address, node.weight);
            if let Some(max) = node.max_connections {
                let _ = write!(out, " max_connections {max}");
            }
            if node.backup {
                out.push_str(" backup");
            }
            if node.drained {
                out.push_str(" drained");
            }
            if node.proxy_protocol != super::ProxyProtocol::Off {
                let _ = write!(out, " proxy_protocol {}", node.proxy_protocol.name());
            }
            if !node.source.is_empty() {
                let list: Vec<String> = node.source.iter().map(ToString::to_string).collect();
                let _ = write!(out, " source {}", list.join(","));
            }
            out.push('\n');
        }
        for entry in &self.discover {
            let _ = write!(
                out,
                "discover {} max_nodes {}",
                entry.target, entry.max_nodes
            );
            if matches!(entry.target, super::Target::Dns(_)) {
                let _ = write!(out, " weight {}", entry.weight);
            }
            if let Some(max) = entry.max_connections {
                let _ = write!(out, " max_connections {max}");
            }
            if entry.backup {
                out.push_str(" backup");
            }
            if entry.proxy_protocol != super::ProxyProtocol::Off {
                let _ = write!(out, " proxy_protocol {}", entry.proxy_protocol.name());
            }
            out.push('\n');
        }
        let h = &self.health;
        let probe = if h.send.is_some() || h.expect.is_some() {
            " send/expect"
        } else {
            ""
        };
        let _ = write!(
            out,
            "health interval {} timeout {} rise {} fall {}{probe}",
            show(h.interval),
            show(h.timeout),
            h.rise,
            h.fall,
        );
        if !h.slow_start.is_zero() {
            let _ = write!(out, " slow_start {}", show(h.slow_start));
        }
        if let Some(port) = h.probe_port {
            let _ = write!(out, " probe_port {port}");
        }
        out.push('\n');
        let t = &self.timeouts;
        if self.protocol == super::Protocol::Udp {
            let _ = write!(out, "timeouts drain {}", show(t.drain));
            if let Some(response) = t.response {
                let _ = write!(out, " response {}", show(response));
            }
            let _ = writeln!(out, "\ndns_ttl {}", show(self.dns_ttl));
            return;
        }
        let _ = write!(
            out,
            "timeouts connect {} idle {} drain {} fin {}",
            show(t.connect),
            show(t.idle),
            show(t.drain),
            show(t.fin)
        );
        if let Some(response) = t.response {
            let _ = write!(out, " response {}", show(response));
        }
        match t.queue {
            Some(queue) => {
                let _ = write!(out, " queue {}", show(queue));
            }
            None => out.push_str(" queue off"),
        }
        out.push('\n');
        if self.access_log {
            out.push_str("access_log on\n");
        }
        let limit = self
            .max_connections
            .map_or_else(|| "from the open-files limit".to_owned(), |m| m.to_string());
        let _ = writeln!(out, "retries {}\nmax_connections {limit}", self.retries);
        let _ = writeln!(out, "dns_ttl {}", show(self.dns_ttl));
    }
}
