//! What the discovery tests share: backends on several loopback addresses with one port (as
//! the replicas behind one name are), a tierlb asking the test's own DNS server, and its
//! `/status` read back.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dns::DnsServer;
use super::{http, Backend, ConfigFile, Tierlb};

/// `count` greeting backends `n1`, `n2` … on 127.0.`subnet`.1, .2 …, all on the same port.
/// Each test takes its own `subnet`, so no other test binds these addresses.
pub async fn replicas(subnet: u8, count: u8) -> Vec<Backend> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind((IpAddr::from([127, 0, subnet, 1]), 0))
            .expect("bind a first replica");
        let port = first.local_addr().expect("addr").port();
        drop(first);
        let mut backends = Vec::new();
        for i in 1..=count {
            let addr = SocketAddr::from(([127, 0, subnet, i], port));
            if std::net::TcpListener::bind(addr).is_err() {
                break;
            }
            backends.push(Backend::start_at(addr, &format!("n{i}")).await);
        }
        if backends.len() == usize::from(count) {
            return backends;
        }
    }
    panic!("no port free on 127.0.{subnet}.1-{count} after 50 tries");
}

/// Replicas behind one name on a DNS server of the test's own.
pub struct Named {
    /// The replicas, `n1`, `n2` …
    pub backends: Vec<Backend>,
    /// Their one port.
    pub port: u16,
    /// Their addresses.
    pub addrs: Vec<SocketAddr>,
    /// The DNS server that answers the name with every replica's address.
    pub dns: DnsServer,
}

/// `count` [`replicas`] on 127.0.`subnet`.x, all behind `name` on a new DNS server.
pub async fn behind_name(name: &str, subnet: u8, count: u8) -> Named {
    let backends = replicas(subnet, count).await;
    let dns = DnsServer::start().await;
    dns.set_addresses(name, &ips(&backends.iter().collect::<Vec<_>>()));
    Named {
        port: backends[0].addr.port(),
        addrs: backends.iter().map(|b| b.addr).collect(),
        backends,
        dns,
    }
}

/// How many of `served` each name took.
pub fn split(served: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for name in served {
        *out.entry(name.clone()).or_insert(0) += 1;
    }
    out
}

/// The IP addresses of `backends`.
pub fn ips(backends: &[&Backend]) -> Vec<IpAddr> {
    backends.iter().map(|b| b.addr.ip()).collect()
}

/// A tierlb with an admin endpoint, serving `body` (TOML without `listen` and `[admin]`).
pub struct Lb {
    /// The process.
    pub tierlb: Tierlb,
    /// Its service's address.
    pub addr: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    dns: SocketAddr,
    config: ConfigFile,
}

/// The config text of an [`Lb`] for `body`, asking the DNS server at `dns`.
fn text(dns: SocketAddr, body: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nresolvers = [\"{dns}\"]\n{body}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

impl Lb {
    /// Starts tierlb on `body`, asking the DNS server at `dns`.
    pub fn start(dns: SocketAddr, body: &str) -> Lb {
        let config = ConfigFile::new(&text(dns, body));
        let tierlb = Tierlb::with_config(&config);
        let addr = tierlb.addr;
        let admin = tierlb.logged_addr("admin listening");
        Lb {
            tierlb,
            addr,
            admin,
            dns,
            config,
        }
    }

    /// Rewrites the config with `body` and reloads it (SIGHUP); waits for the reload's line.
    pub fn reload(&self, body: &str) {
        let before = self.tierlb.count(&["configuration reloaded"]);
        self.config.rewrite(&text(self.dns, body));
        self.tierlb.signal(nix::sys::signal::Signal::SIGHUP);
        self.tierlb
            .wait_log("configuration reloaded", before + 1)
            .expect("the reload is put in force");
    }

    /// Its service's `/status` entry.
    pub async fn service(&self) -> Value {
        let (code, body) = http(self.admin, "GET", "/status", &[]).await;
        assert_eq!(code, 200, "/status answered {code}: {body}");
        let status: Value = serde_json::from_str(&body).expect("status is JSON");
        status["services"][0].clone()
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", &[]).await.1
    }

    /// Polls `/status` until `ok` holds for the service, for at most `limit`; panics naming
    /// `what` with the last status.
    pub async fn wait(&self, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let service = self.service().await;
            if ok(&service) {
                return service;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {limit:?}; service: {service:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the service's nodes are exactly `addrs`, every one up.
    pub async fn wait_nodes_up(&self, addrs: &[SocketAddr], limit: Duration) -> Value {
        let mut want: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        want.sort();
        self.wait(&format!("nodes {want:?} up"), limit, |s| {
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            let mut have: Vec<String> = nodes
                .iter()
                .filter(|n| n["state"] == "up")
                .filter_map(|n| n["address"].as_str().map(str::to_owned))
                .collect();
            have.sort();
            have == want && nodes.len() == want.len()
        })
        .await
    }
}
