//! Clusters of real tierlb processes: each instance's config (one service on an ephemeral
//! port, admin and gossip on ephemeral ports), its addresses read from its log, and reads of
//! its `/status` and `/metrics` polled until a condition holds.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{bin, http, ConfigFile, Tierlb, WAIT};

/// The shared secret of the test clusters.
pub const SECRET: &str = "cluster-test-secret-of-more-than-32-bytes";
/// The admin token of every instance.
pub const TOKEN: &str = "cluster-test-admin-token-0123456789";

/// What makes one instance's config.
pub struct Spec<'a> {
    /// Its name in the cluster.
    pub name: &'a str,
    /// The nodes of its one service.
    pub nodes: &'a [SocketAddr],
    /// Seed peers' gossip addresses.
    pub peers: &'a [SocketAddr],
    /// The cluster secret.
    pub secret: &'a str,
    /// The probe interval (long, so that only gossip or clients tell an instance news).
    pub probe_interval: &'a str,
    /// Address of the service, admin and gossip (`127.0.0.1`, or a namespace's address).
    pub ip: &'a str,
    /// The service's `nodes` value, when not the plain list of `nodes`.
    pub nodes_text: Option<&'a str>,
    /// More lines of the service (top-level keys, before any table).
    pub service: &'a str,
    /// More lines of `[cluster]`.
    pub cluster: &'a str,
}

impl<'a> Spec<'a> {
    /// An instance on 127.0.0.1 with the test secret and probes every 60 s.
    pub fn new(name: &'a str, nodes: &'a [SocketAddr], peers: &'a [SocketAddr]) -> Spec<'a> {
        Spec {
            name,
            nodes,
            peers,
            secret: SECRET,
            probe_interval: "60s",
            ip: "127.0.0.1",
            nodes_text: None,
            service: "",
            cluster: "",
        }
    }

    /// The config text.
    pub fn config(&self) -> String {
        let list = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "listen = \"{ip}:0\"\nnodes = {nodes}\n{service}\n\n[health]\ninterval = \"{probe}\"\n\n\
             [admin]\nlisten = \"{ip}:0\"\ntoken = \"{TOKEN}\"\n\n\
             [cluster]\nname = \"{name}\"\nlisten = \"{ip}:0\"\npeers = [{peers}]\nsecret = \"{secret}\"\n{cluster}\n",
            ip = self.ip,
            nodes = self
                .nodes_text
                .map_or_else(|| format!("[{}]", list(self.nodes)), str::to_owned),
            service = self.service,
            cluster = self.cluster,
            probe = self.probe_interval,
            name = self.name,
            peers = list(self.peers),
            secret = self.secret,
        )
    }
}

/// One running instance.
pub struct Instance {
    /// Its name.
    pub name: String,
    /// The process (its service address is `lb.addr`).
    pub lb: Tierlb,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
    _config: ConfigFile,
}

impl Instance {
    /// Starts an instance on 127.0.0.1.
    pub fn start(spec: &Spec<'_>) -> Instance {
        let config = ConfigFile::new(&spec.config());
        let mut cmd = Command::new(bin());
        cmd.args(["-c", config.path()]);
        Instance::spawn(spec.name, cmd, config)
    }

    /// Starts an instance inside a network namespace.
    pub fn start_in(spec: &Spec<'_>, ns: &super::Netns) -> Instance {
        let config = ConfigFile::new(&spec.config());
        let mut cmd = ns.command(bin());
        cmd.args(["-c", config.path()]);
        Instance::spawn(spec.name, cmd, config)
    }

    /// Starts a prepared command running `config`.
    pub fn spawn(name: &str, cmd: Command, config: ConfigFile) -> Instance {
        let lb = Tierlb::spawn(cmd);
        let admin = lb.logged_addr("admin listening");
        let gossip = lb.logged_addr("cluster gossip listening");
        Instance {
            name: name.to_owned(),
            lb,
            admin,
            gossip,
            _config: config,
        }
    }

    /// `/status`, parsed.
    pub async fn status(&self) -> Value {
        let (code, body) = http(self.admin, "GET", "/status", &[]).await;
        assert_eq!(code, 200, "{}: /status answered {code}: {body}", self.name);
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", &[]).await.1
    }

    /// `POST path` with the token; the status code.
    pub async fn post(&self, path: &str) -> u16 {
        let auth = format!("Bearer {TOKEN}");
        http(self.admin, "POST", path, &[("Authorization", &auth)])
            .await
            .0
    }

    /// `PUT path` with `body` and the token; the status code.
    pub async fn put(&self, path: &str, body: &str) -> u16 {
        let auth = format!("Bearer {TOKEN}");
        super::http_with_body(self.admin, "PUT", path, &[("Authorization", &auth)], body)
            .await
            .0
    }

    /// Polls `/status` until `ok` holds, for at most `limit`; the status then, or a panic
    /// naming `what` with the last status.
    pub async fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status().await;
            if ok(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} did not happen within {limit:?}; status: {status:#}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this instance has exactly `names` alive (itself included).
    pub async fn wait_members(&self, names: &[&str]) -> Value {
        let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        want.sort();
        self.wait_status(&format!("members {want:?} alive"), WAIT, |s| {
            alive(s) == want
        })
        .await
    }
}

/// Three instances named a, b and c (b and c seeded with a), each made by `spec` from its
/// name, once each has all three as members.
pub async fn three<'a>(spec: impl Fn(&'a str) -> Spec<'a>) -> [Instance; 3] {
    let a = Instance::start(&spec("a"));
    let seed = [a.gossip];
    let b = Instance::start(&Spec {
        peers: &seed,
        ..spec("b")
    });
    let c = Instance::start(&Spec {
        peers: &seed,
        ..spec("c")
    });
    for i in [&a, &b, &c] {
        i.wait_members(&["a", "b", "c"]).await;
    }
    [a, b, c]
}

/// Sends clients through `instance` until it has logged `node` (greeting `name`) down, each
/// served by another node; at most 20.
pub async fn clients_until_down(instance: &Instance, node: SocketAddr, name: &str) {
    let mut sent = 0;
    while instance.lb.count(&["node down", &format!("node={node}")]) == 0 {
        assert!(sent < 20, "{} never marked {node} down", instance.name);
        let (_, served) = super::connect_named(instance.lb.addr)
            .await
            .unwrap_or_else(|e| panic!("{} still serves: {e}", instance.name));
        assert_ne!(served, name, "{} sent a client to {name}", instance.name);
        sent += 1;
    }
}

/// The names of the members a status has alive, sorted.
pub fn alive(status: &Value) -> Vec<String> {
    let mut names: Vec<String> = status["cluster"]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["alive"] == true)
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Node `addr` of a status (the only service's).
pub fn node(status: &Value, addr: SocketAddr) -> Value {
    status["nodes"]
        .as_array()
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["address"] == addr.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no node {addr} in {status:#}"))
}

/// The sum of `tierlb_node_connect_failures_total` over every kind, for node `addr`.
pub fn connect_failures(metrics: &str, addr: SocketAddr) -> f64 {
    let tag = format!("node=\"{addr}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("tierlb_node_connect_failures_total{") && l.contains(&tag))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A network namespace joined to the host by a veth pair, for instances that must be cut off
/// from a node or from each other: the host end has `host_ip`, the namespace end `ns_ip`, on
/// a /24 of their own. Removed when dropped (the namespace takes the pair with it).
pub struct Link {
    /// The namespace.
    pub ns: super::Netns,
    /// The host end's address.
    pub host_ip: std::net::Ipv4Addr,
    /// The namespace end's address.
    pub ns_ip: std::net::Ipv4Addr,
    host_if: String,
}

impl Link {
    /// Makes the namespace and the pair, or `None` (with the reason printed) where that
    /// cannot be done here. `subnet` tells apart the links of tests running at once.
    pub fn new(tag: &str, subnet: u8) -> Option<Link> {
        if !super::tool_available("nft") {
            return None;
        }
        let ns = super::Netns::new(tag)?;
        let id = std::process::id() % 10_000;
        let host_if = format!("tlb{id}{subnet}h");
        let ns_if = format!("tlb{id}{subnet}n");
        let second = 100 + u8::try_from(id % 100).expect("below 100");
        let host_ip = std::net::Ipv4Addr::new(10, second, subnet, 1);
        let ns_ip = std::net::Ipv4Addr::new(10, second, subnet, 2);
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?} failed");
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name,
        ]);
        let link = Link {
            ns,
            host_ip,
            ns_ip,
            host_if,
        };
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &link.host_if,
        ]);
        ip(&["link", "set", &link.host_if, "up"]);
        link.ns
            .exec(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if]);
        link.ns.exec(&["ip", "link", "set", &ns_if, "up"]);
        Some(link)
    }

    /// Drops, inside the namespace, every TCP segment from `node` (on the host end): connects
    /// to it from inside time out, from the host they succeed.
    pub fn drop_answers_of(&self, node: SocketAddr) {
        self.nft(&format!(
            "table inet tierlb_test {{\n\
               chain input {{ type filter hook input priority 0; ip saddr {} tcp sport {} drop; }}\n\
             }}",
            self.host_ip,
            node.port()
        ));
    }

    /// Loads an nftables script inside the namespace.
    pub fn nft(&self, script: &str) {
        use std::io::Write;
        let mut child = self
            .ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write the rules");
        assert!(
            child.wait().expect("nft").success(),
            "nft refused: {script}"
        );
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}
