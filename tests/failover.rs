//! Failover through the real binary: a refusing node, a node that never completes connect,
//! and every node down.

mod common;

use std::time::{Duration, Instant};

use common::{connect_named, toml_nodes, Backend, Blackhole, ConfigFile, Tierlb};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_node_costs_clients_nothing_and_goes_down_after_fall() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let node3 = Backend::start("node3").await;
    let node2_addr = node2.addr;
    // Slow probes, so that passive results alone drive the state here.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\nretries = 2\n[health]\ninterval = \"1h\"\nfall = 3\n",
        toml_nodes(&[node1.addr, node2.addr, node3.addr])
    ));
    let tierlb = Tierlb::with_config(&config);

    // One connection to each node ends their probation: from now on `fall` applies.
    let first = [
        connect_named(tierlb.addr).await.expect("client"),
        connect_named(tierlb.addr).await.expect("client"),
        connect_named(tierlb.addr).await.expect("client"),
    ];
    assert!(first.iter().any(|(_, name)| name == "node2"));
    drop(first);
    assert!(tierlb.wait_log("connection closed", 3).is_some());

    // node2's listener closes: every connect to it is refused from now on.
    let _stopped = node2.stop().await;
    for i in 0..60 {
        let (stream, name) = connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(
            name == "node1" || name == "node3",
            "client {i} served by {name}"
        );
        drop(stream);
    }
    let node2_tag = format!("node={node2_addr}");
    let down = tierlb
        .wait_log_all(&["node down", &node2_tag], 1, common::WAIT)
        .expect("the refusing node is reported down");
    assert!(down.contains("refused"), "reason names the failure: {down}");
    assert_eq!(
        tierlb.count(&["connect failed", &node2_tag]),
        3,
        "down after exactly `fall` failed attempts, then no longer tried"
    );
    assert_eq!(
        tierlb.count(&["node down"]),
        1,
        "only the refusing node went down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_never_answers_connect_is_skipped_once_down() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let hole = Blackhole::new();
    let connect_timeout = Duration::from_millis(1500);
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\nretries = 2\n[timeouts]\nconnect = \"1500ms\"\n[health]\ninterval = \"1h\"\nfall = 2\n",
        toml_nodes(&[hole.addr, node1.addr, node2.addr])
    ));
    let tierlb = Tierlb::with_config(&config);

    for i in 0..12 {
        let (_, name) = connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(
            name == "node1" || name == "node2",
            "client {i} served by {name}"
        );
    }
    let down = tierlb
        .wait_log_all(
            &["node down", &format!("node={}", hole.addr)],
            1,
            common::WAIT,
        )
        .expect("the silent node is reported down");
    assert!(
        down.contains("timed out"),
        "reason names the timeout: {down}"
    );

    // Down, it is no longer tried: no client waits for the connect timeout any more.
    for i in 0..10 {
        let started = Instant::now();
        connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(
            started.elapsed() < connect_timeout / 2,
            "client {i} waited {:?}: the down node was tried",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_down_closes_clients_promptly_and_recovers() {
    let holes = [Blackhole::new(), Blackhole::new(), Blackhole::new()];
    let addrs: Vec<_> = holes.iter().map(|h| h.addr).collect();
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\nretries = 2\n[timeouts]\nconnect = \"300ms\"\n[health]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\n",
        toml_nodes(&addrs)
    ));
    let tierlb = Tierlb::with_config(&config);
    assert!(
        tierlb.wait_log("node down", 3).is_some(),
        "probes take all three down"
    );

    // Every attempt (1 + 2 retries) times out: the client is closed after ~900 ms.
    let started = Instant::now();
    let mut client = TcpStream::connect(tierlb.addr).await.expect("accepted");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(common::WAIT, client.read(&mut buf))
        .await
        .expect("client closed in time");
    let elapsed = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "no bytes from anywhere: {read:?}"
    );
    assert!(
        elapsed < Duration::from_millis(900 + 1000),
        "closed after {elapsed:?}, want about 3 x 300 ms"
    );
    assert!(
        tierlb
            .wait_log("all 3 connect attempts failed", 1)
            .is_some(),
        "the client-visible failure is logged"
    );

    // A node comes back: tierlb serves again.
    let [back, ..] = holes;
    let back_addr = back.addr;
    drop(back);
    let node = Backend::start_at(back_addr, "back").await;
    let deadline = Instant::now() + common::WAIT;
    let served = loop {
        match connect_named(tierlb.addr).await {
            Ok((_, name)) => break name,
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e}"),
        }
    };
    assert_eq!(served, node.name);
}
