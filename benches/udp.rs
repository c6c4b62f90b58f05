//! The UDP side of the comparison (driven by `benches/udp.py`): an echo node, a closed-loop
//! load of request/response flows, and a holder of many idle flows.
//!
//!     udp echo ADDR                         echo every datagram back to its sender
//!     udp load TARGET FLOWS SIZE SECONDS    FLOWS client sockets, one SIZE-byte request in
//!                                           flight each; prints answered datagrams/s
//!     udp hold TARGET FLOWS                 FLOWS sockets, one answered datagram each, then
//!                                           prints "ready" and holds them until stdin closes
//!
//! A lost datagram (no answer within 200 ms) is sent again and counted; the figures count
//! answers only. Run through `cargo bench --bench udp --no-run` and the script; a bare
//! `cargo bench` runs it with no mode and it returns at once.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// How long a request waits for its answer before it is sent again.
const RESEND: Duration = Duration::from_millis(200);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let parse = |i: usize, what: &str| -> String {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing {what}; see the module doc"))
    };
    match args.first().map(String::as_str) {
        Some("echo") => runtime.block_on(echo(parse(1, "ADDR").parse().expect("ADDR"))),
        Some("load") => {
            let target = parse(1, "TARGET").parse().expect("TARGET");
            let flows = parse(2, "FLOWS").parse().expect("FLOWS");
            let size = parse(3, "SIZE").parse().expect("SIZE");
            let seconds: f64 = parse(4, "SECONDS").parse().expect("SECONDS");
            runtime.block_on(load(target, flows, size, Duration::from_secs_f64(seconds)));
        }
        Some("hold") => {
            let target = parse(1, "TARGET").parse().expect("TARGET");
            let flows = parse(2, "FLOWS").parse().expect("FLOWS");
            runtime.block_on(hold(target, flows));
        }
        _ => eprintln!("udp bench tool: echo, load or hold (run by benches/udp.py)"),
    }
}

async fn echo(addr: SocketAddr) {
    let socket = UdpSocket::bind(addr).await.expect("bind the echo node");
    println!("{}", socket.local_addr().expect("addr"));
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

async fn load(target: SocketAddr, flows: usize, size: usize, seconds: Duration) {
    let answered = Arc::new(AtomicU64::new(0));
    let resent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..flows {
        let (answered, resent) = (Arc::clone(&answered), Arc::clone(&resent));
        tasks.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind a client");
            socket.connect(target).await.expect("connect");
            let request = vec![7u8; size];
            let mut reply = vec![0u8; 65_535];
            while Instant::now() < end {
                if socket.send(&request).await.is_err() {
                    resent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RESEND).await;
                    continue;
                }
                match tokio::time::timeout(RESEND, socket.recv(&mut reply)).await {
                    Ok(Ok(_)) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        resent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = start.elapsed().as_secs_f64();
    println!(
        "{{\"answered_per_s\": {:.1}, \"answered\": {}, \"resent\": {}}}",
        answered.load(Ordering::Relaxed) as f64 / took,
        answered.load(Ordering::Relaxed),
        resent.load(Ordering::Relaxed)
    );
}

async fn hold(target: SocketAddr, flows: usize) {
    let mut sockets = Vec::with_capacity(flows);
    let mut reply = [0u8; 64];
    for _ in 0..flows {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind a client");
        socket.connect(target).await.expect("connect");
        let mut answered = false;
        for _ in 0..10 {
            socket.send(b"hold").await.expect("send");
            if let Ok(Ok(_)) = tokio::time::timeout(RESEND, socket.recv(&mut reply)).await {
                answered = true;
                break;
            }
        }
        assert!(answered, "a flow was never answered");
        sockets.push(socket);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    // Held until whoever started this closes its stdin.
    let stdin = std::io::stdin();
    for _ in stdin.lock().lines() {}
    drop(sockets);
}
