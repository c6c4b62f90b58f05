//! Discovery by SRV records (priorities and weights), a named node of `nodes` whose addresses
//! are tried in turn, and two cluster instances that discover the same name.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

use common::cluster::{node, Instance, Spec};
use common::discovery::{behind_name, split, Lb, Named};
use common::dns::DnsServer;
use common::{bin, connect_named, hold, names, Backend, ConfigFile, WAIT};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_split_the_first_priority_and_the_next_is_a_backup() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let dns = DnsServer::start().await;
    for (name, backend) in [("a.test", &a), ("b.test", &b), ("c.test", &c)] {
        dns.set_addresses(name, &[backend.addr.ip()]);
    }
    dns.set_srv(
        "_web._tcp.test",
        &[
            (10, 2, a.addr.port(), "a.test"),
            (10, 1, b.addr.port(), "b.test"),
            (20, 1, c.addr.port(), "c.test"),
        ],
    );
    let lb = Lb::start(
        dns.addr,
        "discover = [{ srv = \"_web._tcp.test\" }]\n[health]\ninterval = \"200ms\"\n",
    );
    let service = lb.wait_nodes_up(&[a.addr, b.addr, c.addr], WAIT).await;
    let backup = |addr: SocketAddr| node(&service, addr)["backup"].clone();
    assert_eq!(
        [backup(a.addr), backup(b.addr), backup(c.addr)],
        [Value::Bool(false), Value::Bool(false), Value::Bool(true)]
    );
    assert_eq!(node(&service, a.addr)["weight"], 2);
    assert_eq!(node(&service, a.addr)["found_by"], "srv _web._tcp.test");

    let held = hold(lb.addr, 30).await;
    let want: BTreeMap<String, usize> = [("a".to_owned(), 20), ("b".to_owned(), 10)].into();
    assert_eq!(
        split(&names(&held)),
        want,
        "weights 2/1 over the first priority"
    );

    let _a = a.stop().await;
    let _b = b.stop().await;
    for gone in [_a.addr, _b.addr] {
        lb.tierlb
            .wait_log_all(&["node down", &format!("node={gone}")], 1, WAIT)
            .expect("the first priority goes down");
    }
    for i in 0..10 {
        let (_, name) = connect_named(lb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(name, "c", "the second priority takes over");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_node_tries_its_next_address_and_sets_a_dead_one_aside() {
    let Named {
        backends,
        port,
        addrs,
        dns,
    } = behind_name("multi.test", 35, 3).await;
    let dead = addrs[1];
    let lb = Lb::start(
        dns.addr,
        &format!("nodes = [\"multi.test:{port}\"]\n[health]\ninterval = \"300ms\"\n"),
    );
    let mut backends = backends.into_iter();
    let (n1, n2, n3) = (backends.next(), backends.next(), backends.next());
    let stopped = n2.expect("n2").stop().await;
    // Before: one client in three failed, forever. Now every client is served.
    for i in 0..30 {
        let (_, name) = connect_named(lb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(name == "n1" || name == "n3", "client {i}: {name}");
    }
    let service = lb.service().await;
    let named = &service["nodes"][0];
    assert_eq!(named["state"], "up", "{named:#}");
    let aside: Vec<&Value> = named["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter(|a| a["set_aside"] == true)
        .collect();
    assert_eq!(aside.len(), 1, "{named:#}");
    assert_eq!(aside[0]["address"], dead.to_string());
    assert_eq!(
        lb.tierlb.count(&["node down"]),
        0,
        "the node was never charged"
    );

    // The replica comes back: a probe takes its address back, and clients reach it again.
    drop(stopped);
    let back = Backend::start_at(dead, "n2").await;
    lb.wait("the address taken back", WAIT, |s| {
        s["nodes"][0]["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["set_aside"] == false))
    })
    .await;
    let mut served = Vec::new();
    for _ in 0..6 {
        served.push(connect_named(lb.addr).await.expect("client").1);
    }
    assert!(served.iter().any(|n| n == "n2"), "{served:?}");
    drop((n1, n3, back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_discovered_nodes_and_removing_the_entry_retires_them() {
    let Named {
        backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 37, 2).await;
    let listed = Backend::start("listed").await;
    let entry = format!("{{ dns = \"web.test:{port}\" }}");
    let lb = Lb::start(dns.addr, &format!("discover = [{entry}]\n"));
    lb.wait_nodes_up(&addrs, WAIT).await;
    let held = hold(lb.addr, 4).await;

    // A listed node added and the entry's settings changed: the discovered nodes stay the
    // same nodes, with their connections, and take the new setting.
    let limited = format!("{{ dns = \"web.test:{port}\", max_connections = 100 }}");
    lb.reload(&format!(
        "nodes = [\"{}\"]\ndiscover = [{limited}]\n",
        listed.addr
    ));
    let service = lb.service().await;
    for addr in &addrs {
        assert_eq!(node(&service, *addr)["active"], 2, "{service:#}");
    }
    assert_eq!(
        lb.tierlb.count(&["node found"]),
        2,
        "no discovered node was made anew"
    );
    assert_eq!(
        lb.tierlb
            .count(&["node changed", "max_connections none -> 100"]),
        2
    );

    // The entry removed: its nodes leave the pick and finish their connections.
    lb.reload(&format!("nodes = [\"{}\"]\n", listed.addr));
    lb.tierlb
        .wait_log("discover entry removed", 1)
        .expect("logged");
    for i in 0..6 {
        let (_, name) = connect_named(lb.addr).await.expect("client");
        assert_eq!(name, "listed", "client {i}");
    }
    let service = lb.service().await;
    assert_eq!(
        service["retired"].as_array().map(Vec::len),
        Some(2),
        "{service:#}"
    );
    assert_eq!(service["discover"].as_array().map(Vec::len), Some(0));
    drop((held, backends));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_discovering_one_name_share_each_address_verdict() {
    let Named {
        backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 36, 3).await;
    let discover = format!(
        "discover = [{{ dns = \"web.test:{port}\" }}]\nresolvers = [\"{}\"]",
        dns.addr
    );
    let start = |spec: Spec<'_>| {
        let config = ConfigFile::new(&spec.config().replace("nodes = []", &discover));
        let mut cmd = Command::new(bin());
        cmd.args(["-c", config.path()]);
        Instance::spawn(spec.name, cmd, config)
    };
    let a = start(Spec::new("a", &[], &[]));
    let b = start(Spec::new("b", &[], &[a.gossip]));
    a.wait_members(&["a", "b"]).await;
    let listed = |s: &Value| {
        let mut list: Vec<String> = s["services"][0]["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|n| n["address"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        list.sort();
        list
    };
    let want: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    for instance in [&a, &b] {
        instance
            .wait_status("the three addresses as nodes", WAIT, |s| listed(s) == want)
            .await;
    }

    // n2 dies; a finds out from a client's connect, b from a's verdict.
    let _stopped = backends.into_iter().nth(1).expect("n2").stop().await;
    let down = format!("node={}", addrs[1]);
    for i in 0..20 {
        connect_named(a.lb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        if a.lb.count(&["node down", &down]) > 0 {
            break;
        }
    }
    a.lb.wait_log_all(&["node down", &down], 1, WAIT)
        .expect("a marks n2 down");
    let status = b
        .wait_status("b hears a's verdict on n2", WAIT, |s| {
            let n = node(&s["services"][0], addrs[1]);
            n["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "a" && p["up"] == false))
        })
        .await;
    let seen = node(&status["services"][0], addrs[1]);
    assert_eq!(seen["found_by"], format!("dns web.test:{port}"));
    // b takes it down: on a's word (suspect, then its own probe), or on its own first probe.
    b.wait_status("b takes n2 down", WAIT, |s| {
        node(&s["services"][0], addrs[1])["state"] == "down"
    })
    .await;
}
