//! Limits that hold for a cluster of real tierlb processes on 127.0.0.1 as for one: a node's
//! `max_connections` is a budget shared by every instance, counted at the node.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{node, Instance, Spec};
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
    let spec = |name: &'static str, peers: &'static [SocketAddr]| Spec {
        nodes_text: Some(&nodes),
        service: "[timeouts]\nqueue = \"60s\"",
        ..Spec::new(name, &addrs, peers)
    };
    let a = Instance::start(&spec("a", &[]));
    let seed = [a.gossip];
    let b = Instance::start(&Spec {
        peers: &seed,
        ..spec("b", &[])
    });
    let c = Instance::start(&Spec {
        peers: &seed,
        ..spec("c", &[])
    });
    let all = [&a, &b, &c];
    for i in all {
        i.wait_members(&["a", "b", "c"]).await;
    }

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
    eprintln!("{now_served} queued clients served after 20 left");
    assert!(
        (20..=30).contains(&now_served),
        "{now_served} queued clients served as 20 slots freed"
    );
    let most = n1.most.load(Ordering::SeqCst);
    assert!(most <= 40, "{most} open at once after the queue moved");
    drop((served, kept));
}
