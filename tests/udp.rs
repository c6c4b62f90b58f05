//! UDP services through the real binary, with UDP echo nodes that tag replies with their
//! name: flows split by least flows, every datagram of a flow to one node and every reply
//! from the service's address; source affinity; idle flows ended; `max_flows` and the
//! admission rules; two cluster instances sharing a UDP service. Health is in
//! `udp_health.rs`, scale and a process's life in `udp_lifecycle.rs`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::udp::{config, node_of, service, status, wait_for, UdpClient, UdpNode, REPLY};
use common::{http, ConfigFile, Tierlb, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_split_by_least_flows_and_each_stays_on_its_node() {
    let nodes = UdpNode::several(3).await;
    let file = ConfigFile::new(&config(&nodes.iter().collect::<Vec<_>>(), "60s", ""));
    let lb = Tierlb::with_config(&file);
    let mut clients = Vec::new();
    let mut tally: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let client = UdpClient::new().await;
        let (name, from) = client
            .ask(lb.addr, &format!("hello {i}"), REPLY)
            .await
            .expect("a reply");
        assert_eq!(from, lb.addr, "the reply comes from the service's address");
        *tally.entry(name.clone()).or_default() += 1;
        clients.push((client, name));
    }
    assert_eq!(
        tally.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{tally:?}"
    );
    for (client, first) in &clients {
        for k in 0..5 {
            let (name, from) = client
                .ask(lb.addr, &format!("again {k}"), REPLY)
                .await
                .expect("a reply");
            assert_eq!(&name, first, "every datagram of a flow goes to its node");
            assert_eq!(from, lb.addr);
        }
    }
    let admin = lb.logged_addr("admin listening");
    let s = status(admin).await;
    let dns = service(&s, "dns");
    assert_eq!(dns["protocol"], "udp");
    assert_eq!(dns["udp"]["flows"], 30);
    for n in &nodes {
        let node = node_of(dns, n.addr);
        assert_eq!(node["flows"], 10);
        assert_eq!(node["datagrams"]["to_node"], 60);
        assert_eq!(node["datagrams"]["to_client"], 60);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flow_ends_and_its_next_datagram_opens_a_new_one() {
    let node = UdpNode::start("n1").await;
    let file = ConfigFile::new(&config(&[&node], "60s", "flow_idle = \"1s\""));
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let client = UdpClient::new().await;
    client.ask(lb.addr, "one", REPLY).await.expect("a reply");
    wait_for(admin, "one flow", |s| s["udp"]["flows"] == 1).await;
    // Idle for 2 s: gone from /status, its access-log line written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(admin).await;
    let dns = service(&s, "dns");
    assert_eq!(dns["udp"]["flows"], 0, "{dns:#}");
    assert_eq!(node_of(dns, node.addr)["flows"], 0);
    lb.wait_log_all(&["tierlb::access", "flow", "end=\"idle\""], 1, WAIT)
        .expect("the flow's access-log line");
    client.ask(lb.addr, "two", REPLY).await.expect("a reply");
    let s = wait_for(admin, "a new flow", |s| s["udp"]["flows"] == 1).await;
    assert_eq!(
        service(&s, "dns")["listener"]["accepted"],
        2,
        "two flows in all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_affinity_keeps_each_client_address_on_one_node() {
    let nodes = UdpNode::several(3).await;
    let text = config(&nodes.iter().collect::<Vec<_>>(), "60s", "").replace(
        "protocol = \"udp\"\n",
        "protocol = \"udp\"\nbalance = \"source\"\n",
    );
    let file = ConfigFile::new(&text);
    let lb = Tierlb::with_config(&file);
    let mut by_address: HashMap<u8, Vec<String>> = HashMap::new();
    for last in 1..=16u8 {
        for port in 0..3 {
            let socket = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, last), 0))
                .await
                .expect("bind a client");
            let client = UdpClient { socket };
            let (name, _) = client
                .ask(lb.addr, &format!("{last}/{port}"), REPLY)
                .await
                .expect("a reply");
            by_address.entry(last).or_default().push(name);
        }
    }
    for (last, names) in &by_address {
        assert!(
            names.iter().all(|n| n == &names[0]),
            "127.0.0.{last}'s flows on one node: {names:?}"
        );
    }
    let used: std::collections::HashSet<&String> = by_address.values().map(|n| &n[0]).collect();
    assert!(
        used.len() > 1,
        "16 addresses spread over the nodes: {by_address:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_instances_share_a_udp_services_verdicts_and_flow_counts() {
    use common::cluster::{node, Instance, Spec};
    let n1 = UdpNode::start("n1").await;
    let n2 = UdpNode::start("n2").await;
    let addrs = [n1.addr, n2.addr];
    let spec = |name: &'static str, peers: &'static [SocketAddr]| Spec {
        service: "protocol = \"udp\"",
        probe_interval: "200ms",
        ..Spec::new(name, &addrs, peers)
    };
    let a = Instance::start(&spec("a", &[]));
    let seed = [a.gossip];
    let b = Instance::start(&Spec {
        peers: &seed,
        ..spec("b", &[])
    });
    a.wait_members(&["a", "b"]).await;
    b.wait_members(&["a", "b"]).await;
    // 10 flows through A: B counts them on each node.
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(UdpClient::answered(a.lb.addr, &format!("a{i}")).await.0);
    }
    b.wait_status("A's flows counted", WAIT, |s| {
        addrs.iter().all(|n| node(s, *n)["cluster_active"] == 5)
    })
    .await;
    // 10 flows through B with n1 already holding 5 more of A's: least flows cluster-wide
    // still splits them evenly, and every instance then counts 10 on each node.
    for i in 0..10 {
        held.push(UdpClient::answered(b.lb.addr, &format!("b{i}")).await.0);
    }
    a.wait_status("B's flows counted", WAIT, |s| {
        addrs.iter().all(|n| node(s, *n)["cluster_active"] == 10)
    })
    .await;
    // n2 closes: the probes find it (ICMP), and each instance shows the other's verdict.
    let gone = n2.stop().await;
    for (i, other) in [(&a, "b"), (&b, "a")] {
        i.wait_status("n2 down here and at the peer", WAIT, |s| {
            let n = node(s, gone);
            n["state"] == "down"
                && n["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == other && p["up"] == false))
        })
        .await;
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_past_max_flows_or_from_a_denied_address_are_dropped_and_counted() {
    let node = UdpNode::start("n1").await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\nmax_flows = 2\ndeny = [\"127.0.0.9\"]\nnodes = [\"{}\"]\n",
        node.addr
    );
    let file = ConfigFile::new(&text);
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let (a, b, c) = (
        UdpClient::new().await,
        UdpClient::new().await,
        UdpClient::new().await,
    );
    // A denied address opens no flow.
    let denied = UdpClient {
        socket: tokio::net::UdpSocket::bind("127.0.0.9:0")
            .await
            .expect("bind"),
    };
    assert!(denied
        .ask(lb.addr, "no", Duration::from_millis(500))
        .await
        .is_none());
    assert!(a.ask(lb.addr, "a", REPLY).await.is_some());
    assert!(b.ask(lb.addr, "b", REPLY).await.is_some());
    let third = c.ask(lb.addr, "c", Duration::from_millis(500)).await;
    assert!(third.is_none(), "a third flow is past max_flows");
    assert!(
        a.ask(lb.addr, "a2", REPLY).await.is_some(),
        "the first two run on"
    );
    let metrics = http(admin, "GET", "/metrics", &[]).await.1;
    let value = |sample: &str| common::metric(&metrics, sample);
    assert_eq!(value("tierlb_udp_flows{service=\"dns\"}"), Some(2.0));
    assert_eq!(
        value("tierlb_udp_dropped_total{service=\"dns\",reason=\"max_flows\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("tierlb_admission_rejected_total{service=\"dns\",reason=\"deny\"}"),
        Some(1.0)
    );
    let sent = format!(
        "tierlb_node_datagrams_total{{service=\"dns\",node=\"{}\",direction=\"sent\"}}",
        node.addr
    );
    assert_eq!(value(&sent), Some(3.0));
}
