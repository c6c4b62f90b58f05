//! The data path on loopback, through an in-process tierlb versus direct:
//! - `echo/*`: one 64-byte round trip on a kept-open connection;
//! - `connect/*`: a new connection, one byte echoed, then closed with a reset (so no
//!   TIME_WAIT piles up over millions of iterations).
//!
//! The echo node and tierlb run on a tokio runtime in the background; the client is plain
//! blocking std I/O on the bench thread, so only the proxy's work differs between the two.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Starts an echo node and a tierlb in front of it; returns (node, tierlb) addresses.
fn start(runtime: &tokio::runtime::Runtime) -> (SocketAddr, SocketAddr) {
    runtime.block_on(async {
        let node = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind node");
        let node_addr = node.local_addr().expect("node addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = node.accept().await {
                stream.set_nodelay(true).expect("nodelay");
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        let config = tierlb::Config::parse(
            &format!("listen = \"127.0.0.1:0\"\nnodes = [\"{node_addr}\"]\n[health]\ninterval = \"1h\"\n"),
            "bench",
            &Default::default(),
        )
        .expect("bench config");
        let listener =
            tierlb::net::bind_listener(config.services[0].listen).expect("bind tierlb");
        let proxy_addr = listener.local_addr().expect("tierlb addr");
        // No reloads: the sender is dropped at once.
        let (_, reloads) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(tierlb::server::serve(
            vec![tierlb::server::Bound::Tcp(listener)],
            config,
            CancellationToken::new(),
            reloads,
        ));
        (node_addr, proxy_addr)
    })
}

fn round_trip(stream: &mut TcpStream, message: &[u8], reply: &mut [u8]) {
    stream.write_all(message).expect("send");
    stream.read_exact(reply).expect("receive");
}

fn bench_echo(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (node, proxy) = start(&runtime);
    let message = [7u8; 64];
    let mut reply = [0u8; 64];
    let mut group = c.benchmark_group("echo");
    for (name, addr) in [("direct", node), ("tierlb", proxy)] {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        group.bench_function(name, |b| {
            b.iter(|| round_trip(&mut stream, &message, &mut reply))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("connect");
    for (name, addr) in [("direct", node), ("tierlb", proxy)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                round_trip(&mut stream, &message[..1], &mut reply[..1]);
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .expect("linger");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
