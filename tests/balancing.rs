//! The other strategies and backup nodes through the real binary: weighted round robin,
//! source affinity (each client address keeps its node; a node that leaves moves only its
//! own clients, which return when it comes back), and backups that take over only while no
//! primary is up.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{toml_nodes, Backend, ConfigFile, Tierlb, WAIT};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `lb` from `from` (any 127.0.0.0/8 address) and reads the node's name.
async fn from(lb: SocketAddr, from: IpAddr) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client address");
    let stream = socket.connect(lb).await.expect("connect");
    let mut reader = tokio::io::BufReader::new(stream);
    let mut name = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut name))
        .await
        .expect("greeting in time")
        .expect("greeting");
    (reader.into_inner(), name.trim_end().to_owned())
}

/// The `i`-th of the test's client addresses, 127.1.x.y.
fn client(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_new_clients_by_weight_whatever_is_open() {
    let nodes = [
        Backend::start("node1").await,
        Backend::start("node2").await,
        Backend::start("node3").await,
    ];
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nbalance = \"round-robin\"\nnodes = [{{ address = \"{}\", weight = 2 }}, \"{}\", \"{}\"]\n[health]\ninterval = \"60s\"\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    ));
    let lb = Tierlb::with_config(&config);
    // Ten long-lived connections, all kept: round robin still sends 2 of every 4 to node1.
    let mut held = Vec::new();
    while held.len() < 10 {
        let (stream, name) = common::connect_named(lb.addr).await.expect("client");
        if name == "node1" {
            held.push(stream);
        }
    }
    let mut got = [0usize; 3];
    for _ in 0..40 {
        let (_, name) = common::connect_named(lb.addr).await.expect("client");
        let i = ["node1", "node2", "node3"]
            .iter()
            .position(|n| *n == name)
            .expect("a node");
        got[i] += 1;
    }
    assert_eq!(got, [20, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_affinity_keeps_clients_and_moves_only_a_leaving_nodes_clients() {
    // Nodes on addresses of their own (127.0.6.0/24, used by no other test) with one port,
    // so that the hash assignment, and with it each node's share, is the same on every run.
    let port = 18_080;
    let mut nodes = Vec::new();
    for k in 1..=5u8 {
        let at = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 6, k)), port);
        nodes.push(Backend::start_at(at, &format!("n{k}")).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nbalance = \"source\"\nnodes = {}\n[health]\ninterval = \"200ms\"\nrise = 1\n",
        toml_nodes(&addrs)
    ));
    let lb = Tierlb::with_config(&config);
    let mut first = Vec::new();
    for i in 0..200 {
        let (_, name) = from(lb.addr, client(i)).await;
        for _ in 0..2 {
            assert_eq!(
                from(lb.addr, client(i)).await.1,
                name,
                "client {i} keeps its node"
            );
        }
        first.push(name);
    }
    for k in 1..=5 {
        let share = first.iter().filter(|n| **n == format!("n{k}")).count();
        assert!(
            (28..=52).contains(&share),
            "n{k} got {share} of 200 clients: {first:?}"
        );
    }

    let stopped = nodes.remove(2).stop().await;
    let mut moved_to = std::collections::HashMap::new();
    for (i, was) in first.iter().enumerate() {
        let (_, now) = from(lb.addr, client(i)).await;
        if was == "n3" {
            assert_ne!(now, "n3");
            *moved_to.entry(now).or_insert(0) += 1;
        } else {
            assert_eq!(&now, was, "client {i} of a staying node keeps it");
        }
    }
    assert_eq!(
        moved_to.len(),
        4,
        "n3's clients spread over the other four: {moved_to:?}"
    );

    let addr = stopped.addr;
    drop(stopped);
    let _back = Backend::start_at(addr, "n3").await;
    lb.wait_log_all(&["node up", &format!("node={addr}")], 1, WAIT)
        .expect("n3 comes back");
    for (i, was) in first.iter().enumerate() {
        assert_eq!(
            &from(lb.addr, client(i)).await.1,
            was,
            "client {i} is back on its node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_clients_only_while_no_primary_is_up() {
    let mut primaries = vec![Backend::start("n1").await, Backend::start("n2").await];
    let backup = Backend::start("n3").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{}\", \"{}\", {{ address = \"{}\", backup = true }}]\n[health]\ninterval = \"200ms\"\nrise = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        primaries[0].addr, primaries[1].addr, backup.addr
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let failures = || async {
        let text = common::http(admin, "GET", "/metrics", &[]).await.1;
        text.lines()
            .filter(|l| l.starts_with("tierlb_node_connect_failures_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let mut held = Vec::new();
    for _ in 0..30 {
        let (stream, name) = common::connect_named(lb.addr).await.expect("client");
        assert_ne!(name, "n3", "the backup idles while a primary is up");
        held.push(stream);
    }
    drop(held);

    let n1 = primaries[0].addr;
    let mut stopped = Vec::new();
    for p in primaries.drain(..) {
        stopped.push(p.stop().await);
    }
    // Until both are found down, clients are retried onto the backup; none fails.
    for _ in 0..30 {
        let (_, name) = common::connect_named(lb.addr)
            .await
            .expect("no client fails");
        assert_eq!(name, "n3");
    }
    for p in [&stopped[0], &stopped[1]] {
        lb.wait_log_all(&["node down", &format!("node={}", p.addr)], 1, WAIT)
            .expect("the primary is found down");
    }
    let before = failures().await;
    for _ in 0..30 {
        let (_, name) = common::connect_named(lb.addr)
            .await
            .expect("no client fails");
        assert_eq!(name, "n3");
    }
    assert_eq!(
        failures().await,
        before,
        "after detection, straight to the backup"
    );

    drop(stopped.remove(0));
    let _n1 = Backend::start_at(n1, "n1").await;
    lb.wait_log_all(&["node up", &format!("node={n1}")], 1, WAIT)
        .expect("n1 comes back");
    for _ in 0..10 {
        let (_, name) = common::connect_named(lb.addr).await.expect("client");
        assert_eq!(
            name,
            "n1",
            "new clients go to the primary again: {:#?}",
            lb.lines()
        );
    }
}
