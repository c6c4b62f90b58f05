//! Active probes through the real binary, with no client traffic at all.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{toml_nodes, Backend, ConfigFile, Tierlb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Allowance for process scheduling and the ±10 % jitter of each interval.
const SLACK: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_take_a_closed_node_down_and_bring_it_back() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let node1_addr = node1.addr;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = {RISE}\nfall = {FALL}\n",
        toml_nodes(&[node1.addr, node2.addr])
    ));
    let tierlb = Tierlb::with_config(&config);
    // A first passing probe ends node1's probation; wait for it so `fall` applies.
    let probed = node1.accepted.clone();
    common::wait_until(common::WAIT, || {
        (probed.load(Ordering::SeqCst) > 0).then_some(())
    })
    .expect("node1 is probed");

    let closed_at = Instant::now();
    let stopped = node1.stop().await;
    let tag = format!("node={node1_addr}");
    let down = tierlb
        .wait_log_all(&["node down", &tag], 1, common::WAIT)
        .expect("probes mark the closed node down");
    let took = closed_at.elapsed();
    let bound = INTERVAL * FALL + TIMEOUT;
    assert!(
        took <= bound + SLACK,
        "down after {took:?}, bound {bound:?}"
    );
    assert!(down.contains("probe"), "reason names the probe: {down}");

    drop(stopped);
    let listening_at = Instant::now();
    let _node1 = Backend::start_at(node1_addr, "node1").await;
    tierlb
        .wait_log_all(&["node up", &tag], 1, common::WAIT)
        .expect("probes bring the node back");
    let took = listening_at.elapsed();
    let bound = INTERVAL * RISE + TIMEOUT;
    assert!(took <= bound + SLACK, "up after {took:?}, bound {bound:?}");
    assert_eq!(
        tierlb.count(&["node down"]),
        1,
        "node2 stayed up throughout"
    );
}

/// A node that answers `PING` with `reply`; also returns its count of accepted connections.
async fn start_replier(reply: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = stream.read(&mut buf).await {
                    if buf[..n].starts_with(b"PING") {
                        let _ = stream.write_all(reply).await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_expect_probe_marks_a_wrong_answer_down() {
    let (good, good_probes) = start_replier(b"+PONG\r\n").await;
    let (wrong, _) = start_replier(b"-ERR unknown\r\n").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\n",
        toml_nodes(&[good, wrong])
    ));
    let tierlb = Tierlb::with_config(&config);
    let down = tierlb
        .wait_log_all(&["node down", &format!("node={wrong}")], 1, common::WAIT)
        .expect("the wrong answer takes the node down");
    assert!(down.contains("does not start with"), "reason: {down}");
    // Five more probes of the good node pass; it never goes down.
    let seen = good_probes.load(Ordering::SeqCst);
    common::wait_until(common::WAIT, || {
        (good_probes.load(Ordering::SeqCst) >= seen + 5).then_some(())
    })
    .expect("the good node keeps being probed");
    assert_eq!(tierlb.count(&["node down", &format!("node={good}")]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_older_than_the_fall_does_not_bring_a_node_back() {
    let node1 = Backend::start("node1").await;
    let node1_addr = node1.addr;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        toml_nodes(&[node1.addr])
    ));
    let tierlb = Tierlb::with_config(&config);
    // A client answered by node1 before it falls: its connection stays open past the fall.
    let (held, name) = common::connect_named(tierlb.addr)
        .await
        .expect("proxied connection");
    assert_eq!(name, "node1");
    let _stopped = node1.stop().await;
    let tag = format!("node={node1_addr}");
    tierlb
        .wait_log_all(&["node down", &tag], 1, common::WAIT)
        .expect("probes mark the stopped node down");
    drop(held);
    tierlb
        .wait_log_all(&["connection closed", &tag], 1, common::WAIT)
        .expect("the old connection ends");
    assert_eq!(
        tierlb.count(&["node up", "reason=answered"]),
        0,
        "the old connection's answer is no news: {:?}",
        tierlb.lines()
    );
}
