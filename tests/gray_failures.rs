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
