//! The log lines an operator reads: `node down` with how many nodes are still up, one warning
//! when none is, `node up` with how long the node was down, one line when service resumes,
//! and client failures rate-limited to a few lines and a summary per second.

mod common;

use common::{connect_named, toml_nodes, Backend, ConfigFile, Tierlb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_up_lines_say_what_is_left_and_how_long() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let (a1, a2) = (node1.addr, node2.addr);
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        toml_nodes(&[a1, a2])
    ));
    let tierlb = Tierlb::with_config(&config);
    let stopped1 = node1.stop().await;
    let line = tierlb
        .wait_log_all(&["node down", &format!("node={a1}")], 1, common::WAIT)
        .expect("node1 down");
    assert!(line.contains("node down; 1 of 2 nodes up"), "{line}");
    let _stopped2 = node2.stop().await;
    let line = tierlb
        .wait_log_all(&["node down", &format!("node={a2}")], 1, common::WAIT)
        .expect("node2 down");
    assert!(line.contains("node down; 0 of 2 nodes up"), "{line}");
    assert!(tierlb.wait_log("no node is up", 1).is_some());

    // Every client now fails at once (each node refuses): a burst of 60.
    for _ in 0..60 {
        assert!(connect_named(tierlb.addr).await.is_err(), "no node serves");
    }
    let summary = tierlb
        .wait_log("more client failures in the last second", 1)
        .expect("a summary line for the failures not logged one by one");
    assert!(summary.contains("rate-limited"), "{summary}");
    let one_by_one = tierlb.count(&["closing client"]);
    assert!(
        (5..=15).contains(&one_by_one),
        "a few per second, not one per client: {one_by_one}"
    );

    drop(stopped1);
    let back = Backend::start_at(a1, "node1").await;
    let line = tierlb
        .wait_log_all(&["node up after", &format!("node={a1}")], 1, common::WAIT)
        .expect("node1 back");
    assert!(line.contains("down; 1 of 2 nodes up"), "{line}");
    assert!(line.contains("down_for="), "{line}");
    assert!(tierlb.wait_log("service resumed", 1).is_some());
    assert_eq!(tierlb.count(&["no node is up"]), 1, "said once");
    drop(back);
}
