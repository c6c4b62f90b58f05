//! Real network faults between cluster instances, made with a network namespace, a veth pair
//! and nftables (created and removed by each test): a node only one instance cannot reach
//! stays in use by the others, and a full partition costs no client anything and heals into
//! one view, the later drain decisions winning on both sides.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::cluster::{alive, clients_until_down, node, Instance, Link, Spec};
use common::{connect_named, hold, names, Backend, WAIT};

/// Returns once the wall clock is in a later millisecond than when called.
async fn next_millisecond() {
    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    let start = ms();
    for _ in 0..1000 {
        if ms() > start {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    panic!("the wall clock did not move on within the wait");
}

/// Three greeting nodes on the host end of `link`, reachable from both sides.
async fn nodes(link: &Link) -> Vec<Backend> {
    let mut out = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let at = SocketAddr::new(IpAddr::V4(link.host_ip), 0);
        out.push(Backend::start_at(at, name).await);
    }
    out
}

/// B on the host end, A inside the namespace (seeded with B), both balancing `addrs`, once
/// each has the other as a member.
async fn pair(link: &Link, addrs: &[SocketAddr]) -> (Instance, Instance) {
    let (host, inside) = (link.host_ip.to_string(), link.ns_ip.to_string());
    let b = Instance::start(&Spec {
        ip: &host,
        ..Spec::new("b", addrs, &[])
    });
    let a = Instance::start_in(
        &Spec {
            ip: &inside,
            ..Spec::new("a", addrs, &[b.gossip])
        },
        &link.ns,
    );
    a.wait_members(&["a", "b"]).await;
    b.wait_members(&["a", "b"]).await;
    (a, b)
}

fn tally(names: &[String]) -> [usize; 3] {
    ["n1", "n2", "n3"].map(|n| names.iter().filter(|x| *x == n).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_only_one_instance_cannot_reach_stays_in_use_by_the_others() {
    let Some(link) = Link::new("partial", 1) else {
        return;
    };
    let backends = nodes(&link).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n2 = addrs[1];
    let (a, b) = pair(&link, &addrs).await;

    // A's namespace drops n2's answers: A's connects to n2 time out, B's succeed.
    link.drop_answers_of(n2);
    clients_until_down(&a, n2, "n2").await;
    b.lb.wait_log_all(&["node suspect", &format!("node={n2}")], 1, WAIT)
        .expect("B is told and probes n2");
    let status = b
        .wait_status("n2 probed and kept up", WAIT, |s| {
            let n = node(s, n2);
            n["state"] == "up" && n["peers"][0]["up"] == false
        })
        .await;
    let n = node(&status, n2);
    assert_eq!(
        n["peers"][0]["name"], "a",
        "A's verdict beside B's own: {n:#}"
    );
    assert_eq!(tally(&names(&hold(b.lb.addr, 30).await)), [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_costs_no_client_and_heals_into_the_later_decisions() {
    let Some(link) = Link::new("split", 2) else {
        return;
    };
    let backends = nodes(&link).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (n1, n3) = (addrs[0], addrs[2]);
    let host = link.host_ip.to_string();
    let (a, b) = pair(&link, &addrs).await;

    let port = b.gossip.port();
    link.nft(&format!(
        "table inet tierlb_test {{\n\
           chain input {{ type filter hook input priority 0; ip saddr {host} udp sport {port} drop; }}\n\
           chain output {{ type filter hook output priority 0; ip daddr {host} udp dport {port} drop; }}\n\
         }}"
    ));
    a.wait_members(&["a"]).await;
    b.wait_members(&["b"]).await;
    for i in [&a, &b] {
        for _ in 0..20 {
            connect_named(i.lb.addr)
                .await
                .unwrap_or_else(|e| panic!("{}: a client failed in the partition: {e}", i.name));
        }
    }
    // Decisions on both sides, in this order: B enables n1, A drains n1 (later: n1 drained);
    // A drains n3, B enables n3 (later: n3 enabled).
    // Apart, the two sides order their decisions by wall-clock millisecond: each decision
    // waits for the clock to pass the one before (two within one millisecond have no order).
    assert_eq!(b.post(&format!("/nodes/{n1}/enable")).await, 200);
    next_millisecond().await;
    assert_eq!(a.post(&format!("/nodes/{n1}/drain")).await, 200);
    next_millisecond().await;
    assert_eq!(a.post(&format!("/nodes/{n3}/drain")).await, 200);
    next_millisecond().await;
    assert_eq!(b.post(&format!("/nodes/{n3}/enable")).await, 200);
    let (sa, sb) = (a.status().await, b.status().await);
    assert!(node(&sa, n1)["drained"] == true && node(&sb, n1)["drained"] == false);
    assert!(node(&sa, n3)["drained"] == true && node(&sb, n3)["drained"] == false);
    for (s, name) in [(&sa, "a"), (&sb, "b")] {
        assert_eq!(alive(s), [name], "each side on its own");
        assert_eq!(
            node(s, n1)["peers"],
            serde_json::json!([]),
            "no verdict from a dead peer"
        );
    }

    link.nft("delete table inet tierlb_test");
    for i in [&a, &b] {
        i.wait_members(&["a", "b"]).await;
        let status = i
            .wait_status("the later decisions in force", WAIT, |s| {
                node(s, n1)["drained"] == true && node(s, n3)["drained"] == false
            })
            .await;
        assert_eq!(node(&status, n1)["decision"]["by"], "a");
        assert_eq!(node(&status, n3)["decision"]["by"], "b");
    }
}
