//! New connections as fast as they go, closed by the client: each worker connects, sends one
//! HTTP/1.1 keep-alive request, reads the whole response, and closes first, so the side that
//! proxies it must close first towards its node (the case that fills TIME_WAIT there). Run
//! by `benches/sustained.py`; prints one line of counts per interval and a JSON summary.
//!
//!     cargo bench --bench churn -- ADDR SECONDS WORKERS

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: churn\r\n\r\n";
/// The backends answer `ok\n` with a Content-Length: the response ends with it.
const END: &[u8] = b"\r\n\r\nok\n";

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    connect_failed: AtomicU64,
    no_answer: AtomicU64,
}

async fn one(addr: SocketAddr, counts: &Counts) {
    let mut stream =
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                counts.connect_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
    let exchange = async {
        stream.write_all(REQUEST).await?;
        let mut got = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !got.ends_with(END) {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(Ok(())) => counts.ok.fetch_add(1, Ordering::Relaxed),
        _ => counts.no_answer.fetch_add(1, Ordering::Relaxed),
    };
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(addr), Some(seconds), Some(workers)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: churn ADDR SECONDS WORKERS");
        return std::process::ExitCode::from(2);
    };
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for _ in 0..workers {
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            while Instant::now() < deadline {
                one(addr, &counts).await;
            }
        });
    }
    let mut last = 0;
    let mut rates = Vec::new();
    for second in 1..=seconds {
        tokio::time::sleep_until((deadline - Duration::from_secs(seconds - second)).into()).await;
        let ok = counts.ok.load(Ordering::Relaxed);
        rates.push(ok - last);
        last = ok;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let first: u64 = rates.iter().take(10).sum::<u64>() / 10.min(rates.len()).max(1) as u64;
    let tail: u64 = rates.iter().rev().take(10).sum::<u64>() / 10.min(rates.len()).max(1) as u64;
    println!(
        "{{\"ok\": {}, \"connect_failed\": {}, \"no_answer\": {}, \"first10_rate\": {first}, \"last10_rate\": {tail}, \"per_second\": {rates:?}}}",
        counts.ok.load(Ordering::Relaxed),
        counts.connect_failed.load(Ordering::Relaxed),
        counts.no_answer.load(Ordering::Relaxed),
    );
    std::process::ExitCode::SUCCESS
}
