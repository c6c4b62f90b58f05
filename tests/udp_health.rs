//! Health of UDP nodes through the real binary: a closed node found by the ICMP errors of its
//! flows and its flows moved; UDP probes with and without an expected reply; a TCP check of a
//! port beside the node; a silent node taken down by `[timeouts] response`.

mod common;

use std::time::Duration;

use common::udp::{config, node_of, service, wait_for, UdpClient, UdpNode, REPLY};
use common::{ConfigFile, Tierlb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_node_is_found_by_icmp_and_its_flows_move() {
    let mut nodes = vec![
        UdpNode::start("n1").await,
        UdpNode::start("n2").await,
        UdpNode::start("n3").await,
    ];
    // Probes once a year (the first at a random time within 876 hours; within 6
    // minutes, as "1h" had it, it came during the test about once in a hundred runs): only
    // the flows' own ICMP errors can tell.
    let file = ConfigFile::new(&config(&nodes.iter().collect::<Vec<_>>(), "8760h", ""));
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

/// Two nodes probed every 200 ms under the config `text` makes of them; n2 closes its socket
/// and its probes take it down for the ICMP error, then it is back on its port and its probes
/// bring it up. The balancer, and n2 back.
async fn n2_down_by_icmp_and_back(text: impl Fn(&[&UdpNode]) -> String) -> (Tierlb, UdpNode) {
    let mut nodes = UdpNode::several(2).await;
    let file = ConfigFile::new(&text(&nodes.iter().collect::<Vec<_>>()));
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
    let back = UdpNode::start_at(n2, "n2").await;
    wait_for(admin, "n2 up", |s| node_of(s, n2)["state"] == "up").await;
    (lb, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_probes_take_a_closed_node_down_and_bring_it_back() {
    // The probes send ping and expect pong; back up, n2 takes new flows again.
    let (lb, _back) = n2_down_by_icmp_and_back(|nodes| config(nodes, "200ms", "")).await;
    let mut reached = false;
    for i in 0..6 {
        let (_client, name) = UdpClient::answered(lb.addr, &format!("back {i}")).await;
        reached |= name == "n2";
    }
    assert!(reached, "new flows reach n2 again");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_without_an_expected_reply_fails_on_icmp_at_once() {
    // No `send`, no `expect`: an empty datagram passes unless ICMP says nothing listens. A
    // timeout of 30 s, longer than the wait for n2 to go down: only the ICMP error can fail
    // the probe in time.
    n2_down_by_icmp_and_back(|nodes| {
        config(nodes, "200ms", "").replace(
            "send = \"ping\"\nexpect = \"pong\"\n",
            "timeout = \"30s\"\n",
        )
    })
    .await;
}
