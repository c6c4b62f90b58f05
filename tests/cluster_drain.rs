//! Operator drain across a cluster of real tierlb processes: taken on one instance, applied by
//! all, kept when the instance that took it dies, learned by a fresh instance, and undone
//! through any other.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{node, Instance, Spec};
use common::{connect_named, hold, names, Backend, WAIT};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Whether node `n` is drained in `status`.
fn drained(status: &serde_json::Value, n: SocketAddr) -> bool {
    node(status, n)["drained"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reaches_every_instance_outlives_its_author_and_is_undone_anywhere() {
    let backends = [
        Backend::start("n1").await,
        Backend::start("n2").await,
        Backend::start("n3").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n1 = addrs[0];
    let mut a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    let c = Instance::start(&Spec::new("c", &addrs, &[a.gossip]));
    for i in [&a, &b, &c] {
        i.wait_members(&["a", "b", "c"]).await;
    }
    // An open connection to n1 through B, which the drain must leave alone.
    let mut open = None;
    for _ in 0..3 {
        let (stream, name) = connect_named(b.lb.addr).await.expect("client");
        if name == "n1" {
            open = Some(stream);
        }
    }
    let mut open = BufReader::new(open.expect("one of three clients reached n1"));

    assert_eq!(a.post(&format!("/nodes/{n1}/drain")).await, 200);
    let drained_at = Instant::now();
    for i in [&b, &c] {
        i.wait_status("n1 drained", Duration::from_secs(1), |s| drained(s, n1))
            .await;
    }
    eprintln!(
        "B and C had n1 drained {:?} after the POST to A",
        drained_at.elapsed()
    );
    for i in [&b, &c] {
        let names = names(&hold(i.lb.addr, 30).await);
        assert!(!names.iter().any(|n| n == "n1"), "{}: {names:?}", i.name);
    }
    open.get_mut()
        .write_all(b"still here\n")
        .await
        .expect("write");
    let mut echo = String::new();
    open.read_line(&mut echo).await.expect("read");
    assert_eq!(
        echo, "still here\n",
        "the open connection to n1 keeps working"
    );

    a.lb.signal(Signal::SIGKILL);
    assert!(a.lb.wait_exit(WAIT).is_some());
    for i in [&b, &c] {
        let status = i
            .wait_members(&[&i.name, if i.name == "b" { "c" } else { "b" }])
            .await;
        assert!(
            drained(&status, n1),
            "{}: n1 stays drained without A",
            i.name
        );
    }

    let fresh = Instance::start(&Spec::new("a", &addrs, &[b.gossip]));
    let started = Instant::now();
    let status = fresh
        .wait_status(
            "n1 drained, learned from the others",
            Duration::from_secs(2),
            |s| drained(s, n1),
        )
        .await;
    eprintln!(
        "the fresh A had n1 drained {:?} after it started",
        started.elapsed()
    );
    assert_eq!(
        node(&status, n1)["decision"]["by"],
        "a",
        "the decision keeps its author"
    );

    assert_eq!(c.post(&format!("/nodes/{n1}/enable")).await, 200);
    for i in [&fresh, &b, &c] {
        i.wait_status("n1 enabled", WAIT, |s| !drained(s, n1)).await;
        let names = names(&hold(i.lb.addr, 6).await);
        assert!(names.iter().any(|n| n == "n1"), "{}: {names:?}", i.name);
    }

    // A runtime weight travels the same way: 0 set on B takes n1 out everywhere.
    assert_eq!(b.put(&format!("/nodes/{n1}/weight"), "0").await, 200);
    for i in [&fresh, &b, &c] {
        i.wait_status("n1 at weight 0", WAIT, |s| {
            node(s, n1)["runtime_weight"] == 0
        })
        .await;
        let names = names(&hold(i.lb.addr, 6).await);
        assert!(names.iter().all(|n| n != "n1"), "{}: {names:?}", i.name);
    }
}
