//! A client's FIN through the real binary: it is passed on to the node, and nothing the node
//! still sends after it is lost. The scenario that once cut answers short (the tail of an
//! earlier answer and a whole later answer still to come when the client finishes sending),
//! an answer that starts only after the FIN, and an answer to bytes the client sent last all
//! arrive whole.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connect_named, pattern, serve_each, sha256, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config for one node.
fn config(node: std::net::SocketAddr) -> ConfigFile {
    ConfigFile::new(&format!("listen = \"127.0.0.1:0\"\nnodes = [\"{node}\"]\n"))
}

/// Sends the client's FIN and reads what comes back until the end, within [`WAIT`].
async fn half_close_and_read(client: &mut TcpStream) -> Vec<u8> {
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("the answer in time")
        .expect("a clean end after the whole answer, not a reset");
    got
}

/// The two answers of the pipelining scenario: the first in two pieces (2,000 and 1,000
/// bytes), the second 2,000 bytes.
fn answers() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (pattern(21, 2000), pattern(22, 1000), pattern(23, 2000))
}

/// One client of the scenario: asks, reads the first piece, asks again, reads the second
/// piece, finishes sending 30 ms later and reads to the end. Returns all it got after the
/// first piece, which must be the second piece and the second answer.
async fn pipelining_client(lb: std::net::SocketAddr) -> Vec<u8> {
    let mut client = TcpStream::connect(lb).await.expect("connect");
    client.write_all(b"q1").await.expect("request 1");
    let mut first = vec![0u8; 2000];
    client.read_exact(&mut first).await.expect("piece 1");
    client.write_all(b"q2").await.expect("request 2");
    let mut second = vec![0u8; 1000];
    client.read_exact(&mut second).await.expect("piece 2");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut got = first;
    got.extend_from_slice(&second);
    got.extend(half_close_and_read(&mut client).await);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_after_pipelined_requests_never_shortens_the_answers() {
    // The node answers request 1 in two pieces 150 ms apart; request 2 arrives between them;
    // the client's FIN comes 30 ms after piece 2; the node answers request 2 100 ms later.
    let node = serve_each(|mut stream, _| async move {
        let (piece1, piece2, answer2) = answers();
        let mut request = [0u8; 2];
        if stream.read_exact(&mut request).await.is_err()
            || stream.write_all(&piece1).await.is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if stream.write_all(&piece2).await.is_err()
            || stream.read_exact(&mut request).await.is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(&answer2).await.is_ok() {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    })
    .await;
    let file = config(node);
    let lb = Tierlb::with_config(&file);
    let (piece1, piece2, answer2) = answers();
    let whole = [piece1, piece2, answer2].concat();
    let clients: Vec<_> = (0..20)
        .map(|_| tokio::spawn(pipelining_client(lb.addr)))
        .collect();
    let mut complete = 0;
    for client in clients {
        let got = client.await.expect("client task");
        assert_eq!(got.len(), whole.len(), "bytes a client got of 5,000");
        assert_eq!(sha256(&got), sha256(&whole), "the answers, byte for byte");
        complete += 1;
    }
    assert_eq!(complete, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_their_way_either_way_at_the_clients_fin_arrive_whole() {
    // An answer that starts after the client's FIN: the FIN is passed on, the answer comes.
    let answer = pattern(11, 1024 * 1024);
    let sent = Arc::new(answer.clone());
    let slow = serve_each(move |mut stream, _| {
        let sent = Arc::clone(&sent);
        async move {
            let mut request = Vec::new();
            if stream.read_to_end(&mut request).await.is_ok() && request == b"ask" {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = stream.write_all(&sent).await;
            }
        }
    })
    .await;
    let file = config(slow);
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
    // node's answer to them (the bytes' hash) comes back.
    let hasher = serve_each(|mut stream, _| async move {
        let mut got = Vec::new();
        if stream.write_all(b"hello\n").await.is_ok() && stream.read_to_end(&mut got).await.is_ok()
        {
            let _ = stream.write_all(&sha256(&got)).await;
        }
    })
    .await;
    let file = config(hasher);
    let lb = Tierlb::with_config(&file);
    let (mut client, greeting) = connect_named(lb.addr).await.expect("greeting");
    assert_eq!(greeting, "hello");
    let data = pattern(12, 100 * 1024);
    client.write_all(&data).await.expect("write");
    let back = half_close_and_read(&mut client).await;
    assert_eq!(back, sha256(&data), "the node had every byte, and answered");
}
