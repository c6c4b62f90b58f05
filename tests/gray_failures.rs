//! Gray failures through the real binary: a node that never answers a client that has
//! finished sending is cut after `[timeouts] fin`, not left to the idle timeout.

mod common;

use std::time::{Duration, Instant};

use common::cluster::node;
use common::{http, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_whose_node_never_answers_is_cut_after_fin() {
    // A node that reads everything and never writes or closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                std::future::pending::<()>().await;
            });
        }
    });
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{addr}\"]\n[timeouts]\nfin = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let mut client = TcpStream::connect(lb.addr).await.expect("connect");
    client.write_all(b"request\n").await.expect("write");
    client.shutdown().await.expect("half-close");
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "closed long before the 1 h idle timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before fin"
    );
    assert!(rest.is_empty(), "the node sent nothing");
    lb.wait_log_all(&["connection closed", "fin timeout"], 1, WAIT)
        .expect("the end is logged as the fin timeout");
    let (_, body) = http(admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(node(&status, addr)["active"], 0, "the node's slot is back");
}

/// `count` short clients through `lb`: how many reached `name`.
async fn short_clients(lb: std::net::SocketAddr, count: usize, name: &str) -> usize {
    let mut hits = 0;
    for _ in 0..count {
        let (_, got) = common::connect_named(lb).await.expect("client");
        hits += usize::from(got == name);
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_node_ramps_up_instead_of_taking_every_new_client() {
    for slow_start in ["5s", "0s"] {
        let n1 = common::Backend::start("n1").await;
        let n2 = common::Backend::start("n2").await;
        let n3 = common::Backend::start("n3").await;
        let config = ConfigFile::new(&format!(
            "listen = \"127.0.0.1:0\"\nnodes = [\"{}\", \"{}\", \"{}\"]\n[health]\ninterval = \"100ms\"\nrise = 1\nfall = 1\nslow_start = \"{slow_start}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            n1.addr, n2.addr, n3.addr
        ));
        let lb = Tierlb::with_config(&config);
        let admin = lb.logged_addr("admin listening");
        let n2_addr = n2.addr;
        let stopped = n2.stop().await;
        lb.wait_log_all(&["node down", &format!("node={n2_addr}")], 1, WAIT)
            .expect("n2 down");
        // 30 long-lived connections, on n1 and n3.
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(common::connect_named(lb.addr).await.expect("client"));
        }
        drop(stopped);
        let _back = common::Backend::start_at(n2_addr, "n2").await;
        lb.wait_log_all(&["node up", &format!("node={n2_addr}")], 1, WAIT)
            .expect("n2 back");
        let up_at = Instant::now();
        let first = short_clients(lb.addr, 100, "n2").await;
        let took = up_at.elapsed();
        eprintln!("slow_start {slow_start}: n2 took {first} of 100 new clients in {took:?}");
        if slow_start == "5s" {
            assert!(
                took < Duration::from_secs(1),
                "the 100 clients took {took:?}"
            );
            assert!(first <= 30, "n2 took {first} of 100 in its first second");
            // After the window (its end read from /status) it is the least loaded node again,
            // and takes every client.
            let deadline = Instant::now() + WAIT;
            loop {
                let (_, body) = http(admin, "GET", "/status", &[]).await;
                let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if node(&status, n2_addr)["slow_start"].is_null() {
                    break;
                }
                assert!(Instant::now() < deadline, "the ramp never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                up_at.elapsed() >= Duration::from_millis(4900),
                "not before the window"
            );
            assert_eq!(short_clients(lb.addr, 20, "n2").await, 20);
        } else {
            assert_eq!(
                first, 100,
                "without slow start the emptiest node takes them all"
            );
        }
        drop(held);
    }
}
