//! Several real tierlb processes acting as one, on 127.0.0.1: health learned from a peer,
//! cluster-wide least connections, a dead member's counts dropping out, and fail-open when
//! every node is reported down.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{connect_failures, node, Instance, Spec};
use common::{connect_named, hold, rendered_page, Backend, WAIT};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Three greeting nodes.
async fn nodes() -> Vec<Backend> {
    vec![
        Backend::start("n1").await,
        Backend::start("n2").await,
        Backend::start("n3").await,
    ]
}

/// How many of `held` landed on node `name`.
fn on(held: &[(TcpStream, String)], name: &str) -> usize {
    held.iter().filter(|(_, n)| n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_one_instance_sees_die_is_avoided_by_all_within_a_second() {
    let mut backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n2 = addrs[1];
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    let c = Instance::start(&Spec::new("c", &addrs, &[a.gossip]));
    for i in [&a, &b, &c] {
        i.wait_members(&["a", "b", "c"]).await;
    }

    let _stopped = backends.remove(1).stop().await;
    // Clients through A until A has seen enough refused connects to mark n2 down.
    let mut sent = 0;
    while a.lb.count(&["node down", &format!("node={n2}")]) == 0 {
        assert!(sent < 100, "A never marked n2 down");
        let (_, name) = connect_named(a.lb.addr)
            .await
            .expect("A serves while n2 dies");
        assert_ne!(name, "n2");
        sent += 1;
    }
    let marked = Instant::now();
    // Each of B and C has n2 not up and shows A's verdict within a second (its own first
    // probe may find n2 dead before A's verdict arrives: both must hold).
    let a_says_down = |s: &serde_json::Value| {
        node(s, n2)["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "a"))
            .is_some_and(|p| p["up"] == false)
    };
    for i in [&b, &c] {
        i.wait_status("n2 not up, with A's verdict", Duration::from_secs(1), |s| {
            node(s, n2)["state"] != "up" && a_says_down(s)
        })
        .await;
    }
    eprintln!(
        "B and C had n2 not up {:?} after A marked it down",
        marked.elapsed()
    );

    for i in [&b, &c] {
        for _ in 0..60 {
            let (_, name) = connect_named(i.lb.addr).await.expect("client succeeds");
            assert_ne!(name, "n2", "{} sent a client to n2", i.name);
        }
        let failures = connect_failures(&i.metrics().await, n2);
        assert_eq!(
            failures, 0.0,
            "{}: no client connect was tried on n2",
            i.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_counts_every_instances_connections() {
    let backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n1 = addrs[0];
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    a.wait_members(&["a", "b"]).await;
    b.wait_members(&["a", "b"]).await;

    assert_eq!(a.post(&format!("/nodes/{n1}/drain")).await, 200);
    b.wait_status("n1 drained", WAIT, |s| node(s, n1)["drained"] == true)
        .await;
    let through_a = hold(a.lb.addr, 20).await;
    assert_eq!((on(&through_a, "n2"), on(&through_a, "n3")), (10, 10));
    assert_eq!(a.post(&format!("/nodes/{n1}/enable")).await, 200);
    b.wait_status("n1 enabled and A's counts known", WAIT, |s| {
        node(s, n1)["drained"] == false
            && node(s, addrs[1])["cluster_active"] == 10
            && node(s, addrs[2])["cluster_active"] == 10
    })
    .await;

    let through_b = hold(b.lb.addr, 20).await;
    let landed = on(&through_b, "n1");
    eprintln!("n1 got {landed} of 20 clients through B (B alone would give it about 7)");
    assert!(landed >= 12, "n1 got only {landed} of B's 20 clients");
    drop((through_a, through_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_dead_within_the_detector_window_and_its_counts_drop_out() {
    let backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    let mut c = Instance::start(&Spec::new("c", &addrs, &[a.gossip]));
    for i in [&a, &b, &c] {
        i.wait_members(&["a", "b", "c"]).await;
    }
    let through_c = hold(c.lb.addr, 9).await;
    let total = |s: &serde_json::Value| -> u64 {
        addrs
            .iter()
            .map(|n| node(s, *n)["cluster_active"].as_u64().unwrap_or(0))
            .sum()
    };
    for i in [&a, &b] {
        i.wait_status("C's 9 connections counted", WAIT, |s| total(s) == 9)
            .await;
    }

    c.lb.signal(Signal::SIGKILL);
    let killed = Instant::now();
    assert!(c.lb.wait_exit(WAIT).is_some());
    for i in [&a, &b] {
        let status = i.wait_members(&["a", "b"]).await;
        eprintln!("{} had c dead {:?} after SIGKILL", i.name, killed.elapsed());
        let dead = status["cluster"]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "c").cloned())
            .expect("c is still listed, as dead");
        assert_eq!(dead["alive"], false);
        assert_eq!(total(&status), 0, "{}: C's counts no longer weigh", i.name);
        let metrics = i.metrics().await;
        assert_eq!(
            common::metric(&metrics, "tierlb_cluster_members{state=\"dead\"}"),
            Some(1.0)
        );
    }
    drop(through_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reported_down_everywhere_is_still_tried() {
    let backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    b.wait_members(&["a", "b"]).await;

    let mut stopped = Vec::new();
    for backend in backends {
        stopped.push(backend.stop().await);
    }
    // Clients through both until each has every node down (they fail: nothing listens);
    // each client is closed by tierlb once its attempts have failed, before the next.
    for i in [&a, &b] {
        let mut tries = 0;
        while i
            .lb
            .wait_log_all(&["no node is up"], 1, Duration::from_millis(100))
            .is_none()
        {
            assert!(tries < 20, "{} never had every node down", i.name);
            if let Ok(mut client) = TcpStream::connect(i.lb.addr).await {
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest).await;
            }
            tries += 1;
        }
    }
    for i in [&a, &b] {
        i.wait_status("every node down here and by the peer", WAIT, |s| {
            addrs.iter().all(|n| {
                let n = node(s, *n);
                n["up"] == false && n["peers"][0]["up"] == false
            })
        })
        .await;
    }

    // The nodes come back; nobody has noticed yet (probes every 60 s): clients still get in.
    let addrs_again: Vec<SocketAddr> = stopped.iter().map(|s| s.addr).collect();
    drop(stopped);
    let mut back = Vec::new();
    for (addr, name) in addrs_again.iter().zip(["n1", "n2", "n3"]) {
        back.push(Backend::start_at(*addr, name).await);
    }
    for i in [&a, &b] {
        for _ in 0..3 {
            connect_named(i.lb.addr)
                .await
                .unwrap_or_else(|e| panic!("{}: fail-open refused a client: {e}", i.name));
        }
    }
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_members_and_the_peers_verdicts() {
    let mut backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n2 = addrs[1];
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    b.wait_members(&["a", "b"]).await;
    let _stopped = backends.remove(1).stop().await;
    while a.lb.count(&["node down", &format!("node={n2}")]) == 0 {
        connect_named(a.lb.addr).await.expect("A serves");
    }
    b.wait_status("A's verdict on n2", WAIT, |s| {
        node(s, n2)["peers"][0]["up"] == false
    })
    .await;
    let Some(dom) = rendered_page(b.admin) else {
        return;
    };
    assert!(
        dom.contains("b (this instance)") && dom.contains(">alive<"),
        "{dom}"
    );
    let row = dom
        .split("<tr")
        .find(|r| r.contains(&n2.to_string()) && r.contains("peers"))
        .unwrap_or_else(|| panic!("no row for n2: {dom}"));
    assert!(
        row.contains("a: down, 0 open"),
        "A's verdict in n2's row: {row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_other_nodes_is_shown_and_logged_as_drifting() {
    let backends = nodes().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs[..2], &[a.gossip]));
    let status = a.wait_members(&["a", "b"]).await;
    let member = |s: &serde_json::Value, name: &str| {
        s["cluster"]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no member {name}: {s:#}"))
    };
    let status = if member(&status, "b")["drift"] == true {
        status
    } else {
        a.wait_status("b drifting", WAIT, |s| member(s, "b")["drift"] == true)
            .await
    };
    assert_ne!(
        member(&status, "a")["fingerprint"],
        member(&status, "b")["fingerprint"]
    );
    // What b differs in: a's third node, which b does not run.
    let third = format!("only here: default/{}", addrs[2]);
    let differs = a
        .wait_status("b's difference named", WAIT, |s| {
            member(s, "b")["differs"]
                .as_str()
                .is_some_and(|d| d == third)
        })
        .await;
    assert_eq!(member(&differs, "b")["differs"], third.as_str());
    let line =
        a.lb.wait_log_all(&["configuration drift", "member=\"b\""], 1, WAIT)
            .expect("A logs the drift");
    assert!(
        line.contains(&third),
        "the log names the difference: {line}"
    );
    assert_eq!(a.lb.count(&["configuration drift"]), 1, "logged once");
    b.lb.wait_log_all(&["configuration drift", "member=\"a\""], 1, WAIT)
        .expect("B logs it too");
}
