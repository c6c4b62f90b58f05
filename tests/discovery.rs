//! Discovery through the real binary and a DNS server of the test's own: every address behind
//! a name is a node with its own health and count; the nodes follow the answer; DNS trouble
//! keeps the last good set; a connect never waits for DNS.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::discovery::{behind_name, ips, split, Lb, Named};
use common::{connect_named, hold, metric, names, WAIT};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_of_a_name_is_a_node_with_its_own_health_and_count() {
    let Named {
        backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 31, 3).await;
    let lb = Lb::start(
        dns.addr,
        &format!("discover = [{{ dns = \"web.test:{port}\" }}]\n[health]\ninterval = \"200ms\"\n"),
    );
    let service = lb.wait_nodes_up(&addrs, WAIT).await;
    for node in service["nodes"].as_array().expect("nodes") {
        assert_eq!(node["found_by"], format!("dns web.test:{port}"), "{node}");
    }
    let held = hold(lb.addr, 30).await;
    assert_eq!(
        split(&names(&held)),
        counts(&[("n1", 10), ("n2", 10), ("n3", 10)]),
        "least connections sees each replica"
    );
    let metrics = lb.metrics().await;
    let found = format!(
        "tierlb_node_discovered{{service=\"default\",node=\"{}\",entry=\"dns web.test:{port}\"}}",
        addrs[1]
    );
    assert_eq!(metric(&metrics, &found), Some(1.0), "{metrics}");
    if let Some(dom) = common::rendered_page(lb.admin) {
        let entry = format!("dns web.test:{port}: 3 found");
        assert!(dom.contains(&entry), "the page shows the entry:\n{dom}");
        let row = format!("{} \u{2014} found by dns web.test:{port}", addrs[0]);
        assert!(
            dom.contains(&row),
            "the page shows who found each node:\n{dom}"
        );
    }

    // One replica dies: only its node goes down, and no client fails.
    let mut backends = backends.into_iter();
    let (n1, n2, n3) = (backends.next(), backends.next(), backends.next());
    let _stopped = n2.expect("n2").stop().await;
    lb.tierlb
        .wait_log_all(&["node down", &format!("node={}", addrs[1])], 1, WAIT)
        .expect("the dead replica's node goes down");
    let service = lb.service().await;
    let up: Vec<&str> = service["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["address"].as_str())
        .collect();
    assert_eq!(
        up,
        [addrs[0].to_string(), addrs[2].to_string()],
        "{service:#}"
    );
    for i in 0..30 {
        let (_, name) = connect_named(lb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(name == "n1" || name == "n3", "client {i} went to {name}");
    }
    drop((n1, n3, held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_answer_and_removed_ones_finish_their_connections() {
    let Named {
        backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 32, 4).await;
    let all: Vec<&common::Backend> = backends.iter().collect();
    let ttl = 2;
    dns.set_ttl(ttl);
    dns.set_addresses("web.test", &ips(&all[..3]));
    let lb = Lb::start(
        dns.addr,
        &format!("dns_ttl = \"10s\"\ndiscover = [{{ dns = \"web.test:{port}\" }}]\n[health]\ninterval = \"200ms\"\n"),
    );
    lb.wait_nodes_up(&addrs[..3], WAIT).await;
    let mut held = hold(lb.addr, 6).await;
    assert_eq!(
        split(&names(&held)),
        counts(&[("n1", 2), ("n2", 2), ("n3", 2)])
    );

    // Three become four: the new node is found within TTL + 1 s and takes the next clients.
    let changed = Instant::now();
    dns.set_addresses("web.test", &ips(&all));
    let within = Duration::from_secs(u64::from(ttl) + 1);
    lb.tierlb
        .wait_log_all(&["node found", &format!("node={}", addrs[3])], 1, within)
        .unwrap_or_else(|| panic!("n4 not found within {within:?}"));
    println!("n4 found {:?} after the answer changed", changed.elapsed());
    lb.wait_nodes_up(&addrs, WAIT).await;
    let more = hold(lb.addr, 2).await;
    assert_eq!(
        names(&more),
        ["n4", "n4"],
        "the new node, with no client yet, takes the next two"
    );

    // Four become two (n3, n4): n1 and n2 take no new client; their open connections work on.
    let changed = Instant::now();
    dns.set_addresses("web.test", &ips(&all[2..]));
    for gone in &addrs[..2] {
        lb.tierlb
            .wait_log_all(
                &["node no longer found", &format!("node={gone}")],
                1,
                within,
            )
            .unwrap_or_else(|| panic!("{gone} not removed within {within:?}"));
    }
    println!(
        "n1 and n2 removed {:?} after the answer changed",
        changed.elapsed()
    );
    for i in 0..12 {
        let (_, name) = connect_named(lb.addr).await.expect("client");
        assert!(
            name == "n3" || name == "n4",
            "client {i} went to removed {name}"
        );
    }
    for (stream, name) in held.iter_mut().filter(|(_, n)| n == "n1" || n == "n2") {
        stream.write_all(b"still here\n").await.expect("write");
        let mut echo = [0u8; 11];
        stream
            .read_exact(&mut echo)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&echo, b"still here\n", "{name} still answers");
    }
    let service = lb.service().await;
    assert_eq!(
        service["retired"].as_array().map(Vec::len),
        Some(2),
        "{service:#}"
    );
    drop((held, more));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_outage_keeps_every_node_and_nothing_flaps_after() {
    let Named {
        backends: _backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 33, 3).await;
    let lb = Lb::start(
        dns.addr,
        &format!("dns_ttl = \"1s\"\ndiscover = [{{ dns = \"web.test:{port}\" }}]\n[health]\ninterval = \"200ms\"\n"),
    );
    lb.wait_nodes_up(&addrs, WAIT).await;
    let entry = format!("dns web.test:{port}");
    let errors = format!("tierlb_discovery_errors_total{{service=\"default\",entry=\"{entry}\"}}");
    assert_eq!(metric(&lb.metrics().await, &errors), Some(0.0));

    dns.set_silent(true);
    let outage = Instant::now();
    // The resolver gives up after its own timeouts (5 s, twice), then says so.
    lb.tierlb
        .wait_log_all(&["discover lookup failed"], 1, Duration::from_secs(28))
        .expect("the outage is logged");
    println!("outage logged after {:?}", outage.elapsed());
    while outage.elapsed() < Duration::from_secs(30) {
        let (_, name) = connect_named(lb.addr)
            .await
            .expect("served during the outage");
        assert!(name.starts_with('n'));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        lb.tierlb.count(&["discover lookup failed"]),
        1,
        "one line per episode"
    );
    assert!(
        metric(&lb.metrics().await, &errors).unwrap_or(0.0) >= 1.0,
        "the counter moved"
    );
    lb.wait_nodes_up(&addrs, Duration::ZERO).await;

    dns.set_silent(false);
    lb.tierlb
        .wait_log("discover entry answers again", 1)
        .expect("the end of the outage is logged");
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        connect_named(lb.addr)
            .await
            .expect("served after the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for flap in [
        "node found",
        "node no longer found",
        "node down",
        "nodes changed",
    ] {
        let n = lb.tierlb.count(&[flap]);
        let first = if flap == "node found" {
            3
        } else if flap == "nodes changed" {
            1
        } else {
            0
        };
        assert_eq!(n, first, "`{flap}` lines: nothing flapped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_never_waits_for_dns() {
    let Named {
        backends: _backends,
        port,
        addrs,
        dns,
    } = behind_name("web.test", 34, 2).await;
    dns.set_ttl(2);
    let lb = Lb::start(
        dns.addr,
        &format!("dns_ttl = \"30s\"\ndiscover = [{{ dns = \"web.test:{port}\" }}]\n"),
    );
    lb.wait_nodes_up(&addrs, WAIT).await;

    // 200 clients over 10 s: the lookups keep to their own schedule, one per TTL.
    let since = Instant::now();
    let slowest = clients(lb.addr, 200, Duration::from_millis(50)).await;
    let lasted = since.elapsed().as_secs();
    let queries = dns.queries("web.test", RecordType::A, since);
    println!("200 clients in {lasted} s: {queries} A queries, slowest client {slowest:?}");
    assert!(
        queries <= (lasted / 2 + 2) as usize,
        "{queries} A queries in {lasted} s"
    );

    // Every answer now takes 2 s: the clients are served as before, none waits.
    dns.set_delay(Duration::from_secs(2));
    let slowest = clients(lb.addr, 200, Duration::from_millis(50)).await;
    println!("with 2 s answers: slowest client {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a client waited {slowest:?}"
    );
    assert_eq!(lb.tierlb.count(&["node no longer found"]), 0);
}

/// Runs `count` clients one every `gap`, each served in full; returns the slowest one's time.
async fn clients(addr: SocketAddr, count: usize, gap: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        connect_named(addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(gap).await;
    }
    slowest
}
