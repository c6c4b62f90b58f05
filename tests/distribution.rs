//! Weighted least connections through the real binary: even spread, refill of a drained
//! node, and weights from a file that mixes both node forms.

mod common;

use std::collections::HashMap;

use common::{connect_named, hold, Backend, ConfigFile, Tierlb};
use tokio::net::TcpStream;

fn tally(held: &[(TcpStream, String)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, name) in held {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_spread_evenly_and_refill_the_emptied_node() {
    let nodes = [
        Backend::start("node1").await,
        Backend::start("node2").await,
        Backend::start("node3").await,
    ];
    let p: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &p[0], "-p", &p[1], "-p", &p[2]]);

    let mut held = hold(tierlb.addr, 30).await;
    let counts = tally(&held);
    for name in ["node1", "node2", "node3"] {
        assert_eq!(counts.get(name), Some(&10), "{counts:?}");
    }

    // Close 6 of node1's connections and wait until tierlb has released their slots.
    let mut closed = 0;
    held.retain(|(_, name)| {
        if name == "node1" && closed < 6 {
            closed += 1;
            false
        } else {
            true
        }
    });
    assert!(
        tierlb.wait_log("connection closed", 6).is_some(),
        "tierlb did not close the 6 connections"
    );

    let next = hold(tierlb.addr, 6).await;
    let names: Vec<&str> = next.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["node1"; 6], "the emptied node takes the next six");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_from_a_file_mixing_both_node_forms() {
    let nodes = [
        Backend::start("heavy").await,
        Backend::start("light1").await,
        Backend::start("light2").await,
    ];
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\n  {{ address = \"{}\", weight = 2 }},\n  \"{}\",\n  {{ address = \"{}\" }},\n]\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    ));
    let tierlb = Tierlb::with_config(&config);

    let held = hold(tierlb.addr, 40).await;
    let counts = tally(&held);
    assert_eq!(counts.get("heavy"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("light1"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("light2"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_per_node_and_per_listener() {
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;

    let nodes = [Backend::start("small").await, Backend::start("big").await];
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nmax_connections = 4\nnodes = [\n  {{ address = \"{}\", max_connections = 1 }},\n  \"{}\",\n]\n",
        nodes[0].addr, nodes[1].addr
    ));
    let tierlb = Tierlb::with_config(&config);

    // The node limit: the small node takes one connection, the rest go to the big one.
    let held = hold(tierlb.addr, 4).await;
    let counts = tally(&held);
    assert_eq!(counts.get("small"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("big"), Some(&3), "{counts:?}");

    // The listener limit: a fifth client waits in the backlog, unserved ...
    let waiting = TcpStream::connect(tierlb.addr)
        .await
        .expect("kernel accepts");
    let mut waiting = tokio::io::BufReader::new(waiting);
    let mut greeting = String::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_line(&mut greeting)).await;
    assert!(
        early.is_err(),
        "served beyond max_connections: {greeting:?}"
    );
    // ... until a held connection closes.
    drop(held);
    tokio::time::timeout(common::WAIT, waiting.read_line(&mut greeting))
        .await
        .expect("served once a slot frees")
        .expect("greeting");
    assert!(
        greeting.starts_with("small") || greeting.starts_with("big"),
        "{greeting:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_clients_split_evenly_with_one_node_down() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let node3 = Backend::start("node3").await;
    let addrs = [node1.addr, node2.addr, node3.addr];
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"200ms\"\n",
        common::toml_nodes(&addrs)
    ));
    let tierlb = Tierlb::with_config(&config);
    let down = node2.stop().await;
    assert!(
        tierlb
            .wait_log_all(
                &["node down", &format!("node={}", down.addr)],
                1,
                common::WAIT
            )
            .is_some(),
        "node2 is reported down"
    );

    // Each client closes, and tierlb has seen the close, before the next one connects: every
    // pick is a tie between node1 and node3.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let (stream, name) = connect_named(tierlb.addr).await.expect("client served");
        *counts.entry(name).or_insert(0) += 1;
        drop(stream);
        assert!(
            tierlb.wait_log("connection closed", i + 1).is_some(),
            "tierlb saw close {i}"
        );
    }
    assert_eq!(counts.get("node1"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("node3"), Some(&15), "{counts:?}");
}
