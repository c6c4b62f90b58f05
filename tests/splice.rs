//! The data path through the real binary: half-close, integrity under parallel load, idle
//! timeout, and clients that send garbage and reset.

mod common;

use std::time::Duration;

use common::{
    connect_named, hash_to_eof, pattern, start_hashing_backend, toml_nodes, Backend, ConfigFile,
    Stamped, Tierlb,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node that reads a whole request until EOF, then sends it back and closes.
async fn start_answer_after_eof() -> std::net::SocketAddr {
    common::serve_each(|mut stream, _| async move {
        let mut request = Vec::new();
        if stream.read_to_end(&mut request).await.is_ok() && !request.is_empty() {
            let _ = stream.write_all(&request).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_still_gets_the_answer() {
    let node = start_answer_after_eof().await;
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.to_string()]);
    let request = pattern(7, 1 << 20);

    let mut client = TcpStream::connect(tierlb.addr).await.expect("connect");
    client.write_all(&request).await.expect("send request");
    client.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, client.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read answer");
    assert_eq!(answer.len(), request.len());
    assert!(answer == request, "answer differs from the request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_transfers_arrive_intact_both_ways() {
    const SIZE: usize = 8 << 20;
    const CONNECTIONS: u64 = 8;
    let (node, mut reports) = start_hashing_backend(SIZE, 99).await;
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.to_string()]);

    let mut clients = Vec::new();
    for seed in 0..CONNECTIONS {
        let addr = tierlb.addr;
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut r, mut w) = stream.into_split();
            let upload = Stamped::new(1000 + seed);
            let (received, sent) = tokio::join!(hash_to_eof(&mut r), upload.send(&mut w, SIZE));
            (sent.expect("send"), received.expect("receive"))
        }));
    }
    let node_sends = Stamped::new(99).sha256(SIZE);
    let mut sent_hashes = Vec::new();
    for client in clients {
        let (sent, received) = tokio::time::timeout(common::WAIT * 4, client)
            .await
            .expect("transfer in time")
            .expect("client task");
        assert_eq!(received, (SIZE as u64, node_sends), "node->client intact");
        sent_hashes.push(sent);
    }
    let mut got = Vec::new();
    for _ in 0..CONNECTIONS {
        let report = tokio::time::timeout(common::WAIT, reports.recv())
            .await
            .expect("node report in time")
            .expect("report");
        assert_eq!(report.received.0, SIZE as u64, "node got every byte");
        got.push(report.received.1);
    }
    sent_hashes.sort();
    got.sort();
    assert_eq!(got, sent_hashes, "client->node intact on every connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_gibibyte_each_way_arrives_intact() {
    const SIZE: usize = (1 << 30) + 12_345;
    let (node, mut reports) = start_hashing_backend(SIZE, 5).await;
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.to_string()]);
    let stream = TcpStream::connect(tierlb.addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let upload = Stamped::new(77);
    let (received, sent) = tokio::time::timeout(common::WAIT * 8, async {
        tokio::join!(hash_to_eof(&mut r), upload.send(&mut w, SIZE))
    })
    .await
    .expect("transfer in time");
    let received = received.expect("receive");
    let sent = sent.expect("send");
    assert_eq!(
        received,
        (SIZE as u64, Stamped::new(5).sha256(SIZE)),
        "node->client intact"
    );
    let report = tokio::time::timeout(common::WAIT, reports.recv())
        .await
        .expect("report in time")
        .expect("report");
    assert_eq!(report.received, (SIZE as u64, sent), "client->node intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_and_large_writes_mixed_arrive_in_order() {
    let node = Backend::start("node1").await;
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    let (client, _) = connect_named(tierlb.addr).await.expect("connect");
    let (mut r, mut w) = client.into_split();
    // Sizes around the copy buffer (16 KiB) and the pipe (256 KiB), tiny ones in between, so
    // a direction switches from copy to splice mid-stream and keeps going.
    let sizes = [
        1,
        2,
        3,
        100,
        16_383,
        16_384,
        16_385,
        1,
        5,
        1 << 20,
        7,
        262_144,
        262_145,
        9,
        64,
        3 << 20,
        1,
        1,
        1,
        50_000,
        2,
        1_000_000,
        4,
    ];
    let total: usize = sizes.iter().sum();
    let data = pattern(3, total);
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        for size in sizes {
            w.write_all(&data[at..at + size]).await.expect("write");
            at += size;
            if size < 100 {
                // Let tiny writes go out as tiny segments rather than be coalesced.
                tokio::task::yield_now().await;
            }
        }
        w.shutdown().await.expect("half-close");
    });
    let mut echoed = Vec::with_capacity(total);
    tokio::time::timeout(common::WAIT, r.read_to_end(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    writer.await.expect("writer");
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected, "echo differs from what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let node = Backend::start("node1").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[timeouts]\nidle = \"300ms\"\n",
        toml_nodes(&[node.addr])
    ));
    let tierlb = Tierlb::with_config(&config);
    let (mut client, _) = connect_named(tierlb.addr).await.expect("connect");
    // Traffic keeps it open past the idle time ...
    for _ in 0..4 {
        client.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.expect("echo");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // ... then silence closes it.
    let mut rest = Vec::new();
    tokio::time::timeout(common::WAIT, client.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("clean close");
    assert!(tierlb.wait_log("idle timeout", 1).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_resets_do_not_hurt() {
    let node = Backend::start("node1").await;
    let mut tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    for batch in 0..10u64 {
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let addr = tierlb.addr;
            tasks.push(tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return;
                };
                let garbage = pattern(batch * 100 + i, 1 + (i as usize * 397) % 4096);
                // Errors are expected here: tierlb or the node may already have reset it.
                let _ = stream.write_all(&garbage).await;
                // SO_LINGER 0: close with a reset instead of a FIN.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    }
    assert!(tierlb.is_running(), "tierlb is still up");
    let (mut client, name) = connect_named(tierlb.addr)
        .await
        .expect("next client served");
    assert_eq!(name, "node1");
    client.write_all(b"still here").await.expect("write");
    let mut echo = [0u8; 10];
    client.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"still here");
}
