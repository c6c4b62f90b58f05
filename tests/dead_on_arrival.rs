//! Nodes that accept connections and drop them before answering ("dead on arrival"): they are
//! marked down after `fall` failed clients, clients that had sent nothing yet are retried
//! transparently, and the node stays out while it keeps dropping (probation).

mod common;

use std::time::Duration;

use common::{connect_named, toml_nodes, Backend, ConfigFile, Dropper, Tierlb};
use rstest::rstest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The number of `needles` lines in tierlb's log about `node`.
fn lines_about(tierlb: &Tierlb, node: std::net::SocketAddr, needle: &str) -> usize {
    tierlb.count(&[needle, &format!("node={node}")])
}

#[rstest]
#[case::closes(false, "closed before responding")]
// A reset can also reach the connect itself ("connect: connection reset"): both are the node's.
#[case::resets(true, "reset")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropping_node_costs_waiting_clients_nothing(#[case] reset: bool, #[case] reason: &str) {
    let bad = Dropper::start(reset, Duration::ZERO).await;
    let good1 = Backend::start("good1").await;
    let good2 = Backend::start("good2").await;
    // Fast connect-only probes: they keep passing, and bring the node back on probation.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"100ms\"\nfall = 3\nrise = 2\n",
        toml_nodes(&[bad.addr, good1.addr, good2.addr])
    ));
    let tierlb = Tierlb::with_config(&config);

    // The clients wait for the node's greeting before sending: none had sent a byte when the
    // node dropped it, so each is retried on another node and served.
    for i in 0..200 {
        let (_, name) = connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert!(name.starts_with("good"), "client {i} served by {name}");
    }
    let down = tierlb
        .wait_log_all(
            &["node down", &format!("node={}", bad.addr)],
            1,
            common::WAIT,
        )
        .expect("the dropping node is marked down");
    assert!(down.contains(reason), "{down}");
    // Each time the probes bring it back (on probation), the next client it drops takes it
    // down again at once: at most `fall` clients, plus one per return.
    let dropped = lines_about(&tierlb, bad.addr, "node dropped the client");
    let returns = lines_about(&tierlb, bad.addr, "node up");
    assert!(
        dropped <= 3 + returns,
        "{dropped} clients dropped, {returns} returns"
    );
    assert!(
        dropped < 40,
        "the node stayed out while it kept dropping: {dropped} of 200 clients reached it"
    );
    assert_eq!(tierlb.count(&["closing client"]), 0, "no client failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_bytes_were_sent_fail_at_most_fall_times() {
    let bad = Dropper::start(false, Duration::ZERO).await;
    let good = Backend::start("good").await;
    // No probes during the test: only clients decide.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"1h\"\nfall = 3\n",
        toml_nodes(&[bad.addr, good.addr])
    ));
    let tierlb = Tierlb::with_config(&config);

    // Each client sends its request at once, then reads the greeting and the echo.
    let mut failed = 0;
    for _ in 0..200 {
        let mut stream = TcpStream::connect(tierlb.addr).await.expect("accepted");
        stream.write_all(b"ping\n").await.expect("send");
        let mut got = Vec::new();
        let read = tokio::time::timeout(common::WAIT, async {
            let mut buf = [0u8; 64];
            while !got.ends_with(b"ping\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "client hung");
        if got != b"good\nping\n" {
            failed += 1;
        }
    }
    assert!(
        failed <= 3,
        "{failed} clients failed; at most `fall` = 3 may"
    );
    assert!(
        lines_about(&tierlb, bad.addr, "node down") == 1,
        "marked down once and kept out"
    );
    assert_eq!(tierlb.count(&["client failed"]), failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_closing_an_idle_connection_later_is_not_a_failure() {
    // The node closes connections on which nothing came for 700 ms (its own idle timeout).
    let node = Dropper::start(false, Duration::from_millis(700)).await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[timeouts]\nconnect = \"300ms\"\n[health]\ninterval = \"1h\"\nfall = 1\n",
        toml_nodes(&[node.addr])
    ));
    let tierlb = Tierlb::with_config(&config);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(tierlb.addr).await.expect("accepted"));
    }
    for mut client in clients {
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(common::WAIT, client.read(&mut buf))
            .await
            .expect("closed by the node in time");
        assert!(
            matches!(read, Ok(0)),
            "the node's close is passed on: {read:?}"
        );
    }
    assert!(tierlb.wait_log("connection closed", 3).is_some());
    assert_eq!(
        tierlb.count(&["node down"]),
        0,
        "an idle close is no failure"
    );
}
