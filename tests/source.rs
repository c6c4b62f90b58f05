//! `source` through the real binary: connections to the nodes are made from the configured
//! local addresses in turn (a node's own list overriding its service's), which `--check`
//! shows.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::{hold, ConfigFile, Tierlb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A node that greets with `name` and records the source address of each connection that
/// sends a byte (probes connect only, so they are left out).
async fn recording_node(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<IpAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                if stream
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.is_ok_and(|n| n > 0) {
                    record.lock().expect("lock").push(peer.ip());
                    let _ = stream.write_all(b"ok\n").await;
                }
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_connections_come_from_the_source_addresses_in_turn() {
    let (a, seen_a) = recording_node("a").await;
    let (b, seen_b) = recording_node("b").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nsource = [\"127.0.0.2\", \"127.0.0.3\"]\n\
         nodes = [\"{a}\", {{ address = \"{b}\", source = [\"127.0.0.4\"] }}]\n\
         [health]\ninterval = \"1h\"\n"
    ));
    let check = std::process::Command::new(common::bin())
        .args(["--check", "-c", config.path()])
        .output()
        .expect("run --check");
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains(&format!("node {a} weight 1 source 127.0.0.2,127.0.0.3")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("node {b} weight 1 source 127.0.0.4")),
        "{shown}"
    );

    let lb = Tierlb::with_config(&config);
    let mut held = hold(lb.addr, 6).await;
    for (stream, _) in &mut held {
        stream.write_all(b"x").await.expect("send a byte");
        let mut ok = [0u8; 3];
        stream.read_exact(&mut ok).await.expect("the node's answer");
    }
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let a_from = seen_a.lock().expect("lock").clone();
    let b_from = seen_b.lock().expect("lock").clone();
    assert_eq!(
        a_from.len(),
        3,
        "least connections: 3 each: {a_from:?} {b_from:?}"
    );
    assert_eq!(b_from, vec![ip("127.0.0.4"); 3], "node b's own source");
    let (two, three) = (ip("127.0.0.2"), ip("127.0.0.3"));
    assert!(
        a_from.iter().all(|s| *s == two || *s == three),
        "{a_from:?}"
    );
    assert!(
        a_from.contains(&two) && a_from.contains(&three),
        "the service's addresses in turn: {a_from:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_address_this_host_lacks_is_a_local_failure_not_the_nodes() {
    let (a, seen) = recording_node("a").await;
    // 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails before any packet.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nsource = [\"192.0.2.1\"]\nnodes = [\"{a}\"]\n\
         [health]\ninterval = \"1h\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let mut client = tokio::net::TcpStream::connect(lb.addr)
        .await
        .expect("accepted");
    common::assert_closed_without_a_byte(&mut client).await;
    lb.wait_log("not this host's", 1)
        .expect("the log names the source address as the cause");
    let (_, body) = common::http(admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        status["nodes"][0]["up"], true,
        "not blamed on the node: {status}"
    );
    assert!(seen.lock().expect("lock").is_empty());
}
