//! UDP services through the real binary, with UDP echo nodes that tag replies with their
//! name: flows split by least flows, every datagram of a flow to one node and every reply
//! from the service's address; a closed node found by ICMP and its flows moved; a node
//! brought back by UDP probes or a TCP check beside it; idle flows ended; `max_flows` and
//! the admission rules; a silent node; two cluster instances sharing a UDP service.

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
async fn a_closed_node_is_found_by_icmp_and_its_flows_move() {
    let mut nodes = vec![
        UdpNode::start("n1").await,
        UdpNode::start("n2").await,
        UdpNode::start("n3").await,
    ];
    // Probes once an hour (the first within 6 minutes): only the flows' own ICMP errors
    // can tell.
    let file = ConfigFile::new(&config(&nodes.iter().collect::<Vec<_>>(), "1h", ""));
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let mut clients = Vec::new();
    for i in 0..9 {
        let (client, name) = UdpClient::answered(lb.addr, &format!("c{i}")).await;
        clients.push((client, name));
    }
    let n2 = nodes.remove(1).stop().await;
    // Each client of n2 sends until a reply comes: the first datagram after n2 closed is
    // lost (its ICMP error comes back after it left); the flow then moves to another node.
    for (client, name) in clients.iter_mut().filter(|(_, n)| n == "n2") {
        let mut answered = None;
        for k in 0..5 {
            if let Some((node, _)) = client.ask(lb.addr, &format!("retry {k}"), REPLY).await {
                answered = Some(node);
                break;
            }
        }
        let node = answered.expect("the flow moved to a node that answers");
        assert_ne!(node, "n2");
        *name = node;
    }
    let s = wait_for(admin, "n2 down", |s| node_of(s, n2)["state"] == "down").await;
    let n = node_of(service(&s, "dns"), n2);
    assert_eq!(
        n["connect_failures"]["refused"], 3,
        "one ICMP error per flow: {n:#}"
    );
    assert_eq!(n["last_check"]["reason"], "udp: port unreachable (ICMP)");
    assert!(lb.count(&["node down", &format!("node={n2}")]) >= 1);
    // New flows never go to n2 while it is down.
    for i in 0..10 {
        let (_client, name) = UdpClient::answered(lb.addr, &format!("new {i}")).await;
        assert_ne!(name, "n2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_probes_take_a_closed_node_down_and_bring_it_back() {
    let mut nodes = vec![UdpNode::start("n1").await, UdpNode::start("n2").await];
    let file = ConfigFile::new(&config(&nodes.iter().collect::<Vec<_>>(), "200ms", ""));
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    wait_for(admin, "the first probes passed", |s| {
        s["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .all(|n| n["last_check"]["reason"] == "probe passed")
        })
    })
    .await;
    let n2 = nodes.remove(1).stop().await;
    let s = wait_for(admin, "n2 down", |s| node_of(s, n2)["state"] == "down").await;
    let reason = &node_of(service(&s, "dns"), n2)["last_check"]["reason"];
    assert_eq!(reason, "probe: udp: port unreachable (ICMP)");
    // Back on its port: the probes (send ping, expect pong) bring it up, new flows reach it.
    let back = UdpNode::start_at(n2, "n2").await;
    wait_for(admin, "n2 up", |s| node_of(s, n2)["state"] == "up").await;
    let mut reached = false;
    for i in 0..6 {
        let (_client, name) = UdpClient::answered(lb.addr, &format!("back {i}")).await;
        reached |= name == "n2";
    }
    assert!(reached, "new flows reach n2 again");
    drop(back);
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
        let client = UdpClient::new().await;
        client
            .ask(a.lb.addr, &format!("a{i}"), REPLY)
            .await
            .expect("a reply");
        held.push(client);
    }
    b.wait_status("A's flows counted", WAIT, |s| {
        addrs.iter().all(|n| node(s, *n)["cluster_active"] == 5)
    })
    .await;
    // 10 flows through B with n1 already holding 5 more of A's: least flows cluster-wide
    // still splits them evenly, and every instance then counts 10 on each node.
    for i in 0..10 {
        let client = UdpClient::new().await;
        client
            .ask(b.lb.addr, &format!("b{i}"), REPLY)
            .await
            .expect("a reply");
        held.push(client);
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
async fn probe_port_checks_a_tcp_port_beside_the_udp_node() {
    let node = UdpNode::start("n1").await;
    let beside = common::Backend::start("check").await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\nnodes = [\"{}\"]\n[services.dns.health]\ninterval = \"200ms\"\nprobe_port = {}\n",
        node.addr,
        beside.addr.port()
    );
    let file = ConfigFile::new(&text);
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let probed = beside.accepted.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(admin, "a TCP probe passed", |s| {
        node_of(s, node.addr)["last_check"]["reason"] == "probe passed"
    })
    .await;
    assert!(beside.accepted.load(std::sync::atomic::Ordering::SeqCst) > probed);
    // The TCP check fails: the node is down though its UDP port still answers.
    let _stopped = beside.stop().await;
    let s = wait_for(admin, "n1 down", |s| {
        node_of(s, node.addr)["state"] == "down"
    })
    .await;
    let reason = node_of(service(&s, "dns"), node.addr)["last_check"]["reason"].clone();
    assert_eq!(reason, "probe: connection refused");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_answering_is_taken_down_by_its_silence() {
    let good = UdpNode::start("good").await;
    // Reads every datagram and answers none.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let quiet = silent.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while silent.recv_from(&mut buf).await.is_ok() {}
    });
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\nnodes = [\"{}\", \"{quiet}\"]\n[services.dns.health]\ninterval = \"1h\"\n[services.dns.timeouts]\nresponse = \"300ms\"\n",
        good.addr
    );
    let file = ConfigFile::new(&text);
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    // Clients keep asking; those on the silent node get no answer until it is down and
    // their flows move.
    for i in 0..12 {
        let client = UdpClient::new().await;
        let mut answered = false;
        for k in 0..4 {
            if client
                .ask(lb.addr, &format!("c{i}-{k}"), Duration::from_millis(600))
                .await
                .is_some()
            {
                answered = true;
                break;
            }
        }
        assert!(answered, "client {i} was answered once its flow moved");
    }
    let s = wait_for(admin, "the silent node down", |s| {
        node_of(s, quiet)["state"] == "down"
    })
    .await;
    let n = node_of(service(&s, "dns"), quiet);
    assert_eq!(
        n["last_check"]["reason"], "no response within 300ms",
        "{n:#}"
    );
    assert!(n["connect_failures"]["unanswered"]
        .as_u64()
        .is_some_and(|u| u >= 1));
    sink.abort();
}
