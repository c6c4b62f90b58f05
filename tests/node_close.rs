//! `node_close` through the real binary: with `"reset-at-rest"`, a client that closes after
//! its answer leaves no TIME_WAIT on tierlb's port towards the node (with the default `"fin"`
//! every such port waits it out), while an answer that starts after the client's FIN, an
//! answer to bytes the client sent last, and bytes the node has not yet acknowledged all
//! arrive whole.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{connect_named, pattern, serve_each, sha256, wait_until, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A config for one node, with the access log on and `node_close` as given.
fn config(node: SocketAddr, node_close: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{node}\"]\naccess_log = true\nnode_close = \"{node_close}\"\n"
    ))
}

/// A keep-alive node: answers each 3-byte request with `answer`, and closes only after its
/// peer has (a FIN or a reset). Sends the peer port of each connection that asked something
/// (not the probes') once it is closed.
async fn keep_alive_node() -> (SocketAddr, mpsc::UnboundedReceiver<u16>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve_each(move |mut stream, peer| {
        let tx = tx.clone();
        async move {
            let mut request = [0u8; 3];
            let mut asked = false;
            while stream.read_exact(&mut request).await.is_ok() {
                asked = true;
                if stream.write_all(b"answer").await.is_err() {
                    break;
                }
            }
            drop(stream);
            if asked {
                let _ = tx.send(peer.port());
            }
        }
    })
    .await;
    (addr, rx)
}

/// Sends the client's FIN and reads what comes back until the end, within [`WAIT`].
async fn half_close_and_read(client: &mut TcpStream) -> Vec<u8> {
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("the answer in time")
        .expect("read");
    got
}

/// The TCP state (as /proc/net/tcp numbers them) of this host's IPv4 socket from each of
/// `ports` on 127.0.0.1 to `node` that still has one. (A socket changing state while the
/// table is read can be listed twice; the map keeps one entry per port.)
fn states(ports: &HashSet<u16>, node: SocketAddr) -> HashMap<u16, u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let node_port = format!("{:04X}", node.port());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let port = u16::from_str_radix(local.split(':').nth(1)?, 16).ok()?;
            let to_node = remote.ends_with(&format!(":{node_port}"))
                && remote.starts_with("0100007F")
                && local.starts_with("0100007F");
            let state = u8::from_str_radix(state, 16).ok()?;
            (to_node && ports.contains(&port)).then_some((port, state))
        })
        .collect()
}

/// TIME_WAIT in /proc/net/tcp.
const TIME_WAIT: u8 = 6;

/// Twenty clients that ask, read their whole answer and close, through `node_close`; returns
/// how many of tierlb's ports towards the node are in TIME_WAIT once everything has closed.
async fn time_waits_after_twenty(node_close: &str) -> usize {
    let (node, mut closed) = keep_alive_node().await;
    let file = config(node, node_close);
    let lb = Tierlb::with_config(&file);
    for _ in 0..20 {
        let mut client = TcpStream::connect(lb.addr).await.expect("connect");
        client.write_all(b"ask").await.expect("ask");
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"answer");
        drop(client);
    }
    let mut ports = HashSet::new();
    while ports.len() < 20 {
        let port = tokio::time::timeout(WAIT, closed.recv())
            .await
            .expect("the node sees every connection end")
            .expect("node running");
        ports.insert(port);
    }
    let reason = format!("end={}", end_reason(node_close));
    lb.wait_log_all(&["tierlb::access", &reason], 20, WAIT)
        .unwrap_or_else(|| panic!("20 access lines with {reason}: {:#?}", lb.lines()));
    // Every socket has reached its last state: TIME_WAIT, or gone.
    let settled = wait_until(WAIT, || {
        let now = states(&ports, node);
        now.values().all(|s| *s == TIME_WAIT).then_some(now)
    })
    .expect("tierlb's sockets towards the node settle");
    settled.len()
}

/// How the access log names the end of a connection a client closed after its answer.
fn end_reason(node_close: &str) -> &'static str {
    if node_close == "fin" {
        "done"
    } else {
        "done (node side reset at rest)"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_after_its_answer_leaves_no_time_wait_towards_the_node() {
    let with_fin = time_waits_after_twenty("fin").await;
    assert_eq!(
        with_fin, 20,
        "with fin, tierlb closes first towards the node"
    );
    let at_rest = time_waits_after_twenty("reset-at-rest").await;
    assert_eq!(at_rest, 0, "reset at rest leaves no TIME_WAIT on tierlb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_their_way_either_way_at_the_clients_fin_arrive_whole() {
    // An answer that starts after the client's FIN: the FIN is passed on, the answer comes.
    let answer = pattern(11, 1024 * 1024);
    let sent = std::sync::Arc::new(answer.clone());
    let slow = serve_each(move |mut stream, _| {
        let sent = std::sync::Arc::clone(&sent);
        async move {
            let mut request = Vec::new();
            if stream.read_to_end(&mut request).await.is_ok() && request == b"ask" {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = stream.write_all(&sent).await;
            }
        }
    })
    .await;
    let file = config(slow, "reset-at-rest");
    let lb = Tierlb::with_config(&file);
    let mut client = TcpStream::connect(lb.addr).await.expect("connect");
    client.write_all(b"ask").await.expect("ask");
    let got = half_close_and_read(&mut client).await;
    assert_eq!(
        (got.len(), sha256(&got)),
        (answer.len(), sha256(&answer)),
        "the whole answer after the client's FIN"
    );

    // The node spoke first (a greeting), then the client sent its bytes and its FIN: the
    // client spoke last, so the FIN goes on, and the node's answer to it (the bytes' hash)
    // comes back.
    let hasher = serve_each(|mut stream, _| async move {
        let mut got = Vec::new();
        if stream.write_all(b"hello\n").await.is_ok() && stream.read_to_end(&mut got).await.is_ok()
        {
            let _ = stream.write_all(&sha256(&got)).await;
        }
    })
    .await;
    let file = config(hasher, "reset-at-rest");
    let lb = Tierlb::with_config(&file);
    let (mut client, greeting) = connect_named(lb.addr).await.expect("greeting");
    assert_eq!(greeting, "hello");
    let data = pattern(12, 100 * 1024);
    client.write_all(&data).await.expect("write");
    let back = half_close_and_read(&mut client).await;
    assert_eq!(back, sha256(&data), "the node had every byte, and answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_at_rest_waits_until_the_node_has_taken_every_byte() {
    // A node with a tiny receive window that does not read: most of the client's bytes are
    // still in tierlb's send queue, unacknowledged, when the connection is at rest.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    socket.listen(8).expect("listen");
    socket.set_nonblocking(true).expect("non-blocking");
    let listener = TcpListener::from_std(socket.into()).expect("listener");
    let node = listener.local_addr().expect("addr");
    let (go, wait_for_go) = oneshot::channel::<()>();
    let (report, received) = oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut first = [0u8; 1];
        // The client's bytes have reached the node (tierlb read them all in one go): answer.
        if stream.peek(&mut first).await.is_err() || stream.write_all(b"y").await.is_err() {
            return;
        }
        let _ = wait_for_go.await;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        let _ = report.send(got);
    });

    let file = config(node, "reset-at-rest");
    let lb = Tierlb::with_config(&file);
    let mut client = TcpStream::connect(lb.addr).await.expect("connect");
    let data = pattern(13, 6000);
    client.write_all(&data).await.expect("write");
    let mut y = [0u8; 1];
    client.read_exact(&mut y).await.expect("the node's answer");
    client.shutdown().await.expect("close the sending side");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(0))),
        "a clean end after the answer: {end:?}"
    );
    lb.wait_log_all(&["tierlb::access", "node side reset at rest"], 1, WAIT)
        .unwrap_or_else(|| panic!("closed at rest: {:#?}", lb.lines()));

    // Only now does the node read: every byte is still delivered before the reset.
    go.send(()).expect("node waiting");
    let got = tokio::time::timeout(WAIT, received)
        .await
        .expect("the node reads to the end")
        .expect("node report");
    assert_eq!((got.len(), sha256(&got)), (data.len(), sha256(&data)));
}

#[test]
fn check_shows_reset_at_rest() {
    let file = config("127.0.0.1:9".parse().expect("addr"), "reset-at-rest");
    let out = std::process::Command::new(common::bin())
        .args(["--check", "-c", file.path()])
        .output()
        .expect("run --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("node_close reset-at-rest\n"), "{stdout}");
}
