//! Limits that hold for a cluster of real tierlb processes on 127.0.0.1 as for one: a node's
//! `max_connections` is a budget shared by every instance (counted at the node), and the
//! per-source limits (`max_per_source`, `rate_per_source`) hold fleet-wide; `deny` closes a
//! listed source at once.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{node, three, Instance, Spec};
use common::{serve_each, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node that greets each connection with `n1` and holds it until the client closes,
/// counting the connections open now and the most ever open at once.
struct Counting {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Counting {
    async fn start() -> Counting {
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (o, m) = (Arc::clone(&open), Arc::clone(&most));
        let addr = serve_each(move |mut stream, _| {
            let (open, most) = (Arc::clone(&o), Arc::clone(&m));
            async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if stream.write_all(b"n1\n").await.is_ok() {
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
                open.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await;
        Counting { addr, open, most }
    }
}

/// Whether the client was connected to the node: its greeting arrived within `limit`.
async fn greeted(client: &mut TcpStream, limit: Duration) -> bool {
    let mut got = [0u8; 3];
    matches!(
        tokio::time::timeout(limit, client.read_exact(&mut got)).await,
        Ok(Ok(_)) if &got == b"n1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_max_connections_is_one_budget_for_the_whole_cluster() {
    let n1 = Counting::start().await;
    let addrs = [n1.addr];
    let nodes = format!("[{{ address = \"{}\", max_connections = 30 }}]", n1.addr);
    let all = three(|name| Spec {
        nodes_text: Some(&nodes),
        service: "[timeouts]\nqueue = \"60s\"",
        ..Spec::new(name, &addrs, &[])
    })
    .await;
    let all = [&all[0], &all[1], &all[2]];

    // 60 clients, 20 a second, in turn through A, B and C.
    let mut clients = Vec::new();
    for k in 0..60 {
        let through = all[k % 3];
        clients.push(TcpStream::connect(through.lb.addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every instance counts all 30 (or a few more) open ones cluster-wide.
    for i in all {
        i.wait_status("the node's budget spent cluster-wide", WAIT, |s| {
            node(s, n1.addr)["cluster_active"].as_u64().unwrap_or(0) >= 30
        })
        .await;
    }
    let most = n1.most.load(Ordering::SeqCst);
    eprintln!("at most {most} connections open at once on the node (max_connections 30)");
    // The stated bound: the connections the other instances open in about two gossip
    // intervals (20/s here: about 6), with room for a busy machine.
    assert!(
        most <= 30 + 10,
        "{most} open at once on a node limited to 30"
    );
    assert!(most >= 30, "the budget was used: {most}");

    // Who was served: greeted at once; the others wait in their instance's queue.
    let mut served = Vec::new();
    let mut queued = Vec::new();
    for mut client in clients {
        if greeted(&mut client, Duration::from_millis(100)).await {
            served.push(client);
        } else {
            queued.push(client);
        }
    }
    eprintln!("{} served, {} queued", served.len(), queued.len());
    assert_eq!(served.len(), n1.open.load(Ordering::SeqCst));
    assert_eq!(served.len() + queued.len(), 60);

    // 20 served clients leave: 20 queued ones are served, on whichever instance they wait.
    let before = served.len();
    served.truncate(before - 20);
    let waits: Vec<_> = queued
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let got = greeted(&mut client, Duration::from_secs(4)).await;
                (client, got)
            })
        })
        .collect();
    let mut now_served = 0;
    let mut kept = Vec::new();
    for wait in waits {
        let (client, got) = wait.await.expect("the wait ends");
        now_served += usize::from(got);
        kept.push(client);
    }
    // The budget is 30 again: the clients left open and those served now fill it, give or
    // take the overshoot.
    let room = 30usize.saturating_sub(before.saturating_sub(20));
    eprintln!("{now_served} queued clients served after 20 left ({room} slots free)");
    assert!(
        (room..=room + 10).contains(&now_served),
        "{now_served} queued clients served as {room} slots freed"
    );
    let most = n1.most.load(Ordering::SeqCst);
    assert!(most <= 40, "{most} open at once after the queue moved");
    drop((served, kept));
}

/// A client connected from `source` (an address of 127.0.0.0/8) to `to`.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source");
    socket.connect(to).await.expect("connect")
}

/// Three instances of one service on `nodes` with `service` lines.
async fn with_rule(addrs: &[SocketAddr], service: &'static str) -> [Instance; 3] {
    three(|name| Spec {
        service,
        ..Spec::new(name, addrs, &[])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_source_holds_across_the_cluster_and_spares_other_sources() {
    let n1 = Counting::start().await;
    let all = with_rule(&[n1.addr], "max_per_source = 10").await;
    // One source opens 60 connections, 20 a second, in turn through A, B and C.
    let mut held = Vec::new();
    let mut most = 0;
    for k in 0..60 {
        let mut client = connect_from([127, 0, 0, 2], all[k % 3].lb.addr).await;
        if greeted(&mut client, Duration::from_secs(2)).await {
            held.push(client);
            most = most.max(held.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("one source: {most} of 60 connections open at once (max_per_source 10)");
    // The stated bound: what the source opens through the other instances in about two
    // gossip intervals, plus a tenth of the limit per other instance (about 7 here).
    assert!(
        (10..=18).contains(&most),
        "{most} open at once from one source"
    );
    assert_eq!(n1.open.load(Ordering::SeqCst), held.len());
    // Another source is not affected: 5 through each instance, all served.
    let mut other = Vec::new();
    for i in &all {
        for _ in 0..5 {
            let mut client = connect_from([127, 0, 0, 3], i.lb.addr).await;
            assert!(
                greeted(&mut client, WAIT).await,
                "{}: the other source is served",
                i.name
            );
            other.push(client);
        }
    }
    let refused: f64 = {
        let mut sum = 0.0;
        for i in &all {
            let m = i.metrics().await;
            sum += common::metric(
                &m,
                "tierlb_admission_rejected_total{service=\"default\",reason=\"max_per_source\"}",
            )
            .unwrap_or(0.0);
        }
        sum
    };
    assert_eq!(refused as usize, 60 - held.len(), "every refusal counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_per_source_passes_its_rate_across_the_cluster() {
    let n1 = Counting::start().await;
    let all = with_rule(&[n1.addr], "rate_per_source = \"20/s\"").await;
    let targets: Vec<SocketAddr> = all.iter().map(|i| i.lb.addr).collect();
    // 200 attempts a second for 8 s, in turn through A, B and C; each attempt closes as soon
    // as it knows whether it was served.
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut attempts = tokio::task::JoinSet::new();
    for k in 0..1_600 {
        tick.tick().await;
        let to = targets[k % 3];
        attempts.spawn(async move {
            let mut client = connect_from([127, 0, 0, 2], to).await;
            let passed = greeted(&mut client, Duration::from_secs(2)).await;
            (start.elapsed(), passed)
        });
    }
    let mut passed = Vec::new();
    while let Some(done) = attempts.join_next().await {
        let (at, ok) = done.expect("attempt");
        if ok {
            passed.push(at);
        }
    }
    // The steady rate, after the instances have heard of each other's clients (the first
    // two seconds are reported, not judged).
    let steady = passed
        .iter()
        .filter(|t| (Duration::from_secs(2)..Duration::from_secs(8)).contains(t))
        .count();
    let first = passed.len() - steady;
    let rate = steady as f64 / 6.0;
    eprintln!("rate_per_source 20/s under 200 attempts/s over 3 instances: {rate:.1}/s passed from 2 s to 8 s; {first} in the first 2 s");
    assert!((16.0..=24.0).contains(&rate), "{rate}/s passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_source_is_closed_at_once_and_another_served() {
    let n1 = Counting::start().await;
    let text = |rules: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nnodes = [\"{}\"]\n{rules}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            n1.addr
        )
    };
    let config = common::ConfigFile::new(&text(""));
    let lb = common::Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    // A connection from 127.0.0.2 before the rule; a reload then denies that address.
    let mut before = connect_from([127, 0, 0, 2], lb.addr).await;
    assert!(greeted(&mut before, WAIT).await);
    config.rewrite(&text("deny = [\"127.0.0.2/32\"]"));
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    lb.wait_log("configuration reloaded", 1)
        .expect("the reload is put in force");
    for _ in 0..3 {
        let mut denied = connect_from([127, 0, 0, 2], lb.addr).await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, denied.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "denied: closed without a byte"
        );
    }
    let mut served = connect_from([127, 0, 0, 3], lb.addr).await;
    assert!(greeted(&mut served, WAIT).await, "127.0.0.3 is served");
    let metrics = common::http(admin, "GET", "/metrics", &[]).await.1;
    assert_eq!(
        common::metric(
            &metrics,
            "tierlb_admission_rejected_total{service=\"default\",reason=\"deny\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        n1.most.load(Ordering::SeqCst),
        2,
        "no denied client reached the node"
    );
    // The connection opened before the rule runs on.
    before
        .write_all(b"still here")
        .await
        .expect("the old connection is open");
    assert_eq!(n1.open.load(Ordering::SeqCst), 2);
    let line = [
        "client refused by the admission rules",
        "client=127.0.0.2",
        "reason=\"deny\"",
    ];
    lb.wait_log_all(&line, 1, WAIT)
        .expect("the refusal is logged");
    assert_eq!(lb.count(&line), 1, "one line per source per minute");
}
