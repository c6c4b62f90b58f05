//! A tiny HTTP node to put behind tierlb: it answers every request with its name and host name,
//! as traefik/whoami does (and takes the same `--port` and `--name` flags, so it can stand in
//! for that image), and `GET /data?bytes=N&seconds=S` with N bytes of a fixed pattern (byte i
//! is `i % 251`) paced over S seconds, for transfers that must arrive intact. One response per
//! connection (`Connection: close`). It exits on SIGTERM or SIGINT, also as a container's PID 1.
//!
//! ```sh
//! cargo run --release --example node -- --port 8080 --name node1
//! curl localhost:8080/            # Name: node1
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// The longest request head read.
const HEAD_LIMIT: usize = 8192;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (port, name) = flags(std::env::args().skip(1))?;
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let name = name.unwrap_or_else(|| host.clone());
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!("node {name} listening on {}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let answer = format!("Name: {name}\nHostname: {host}\n");
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &answer).await {
                        eprintln!("connection: {e}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!("node {name} stopping");
    Ok(())
}

/// `--port N` (default 80) and `--name NAME` (default: the host name).
fn flags(mut args: impl Iterator<Item = String>) -> anyhow::Result<(u16, Option<String>)> {
    let (mut port, mut name) = (80, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse()?,
            "--name" => name = Some(value),
            other => anyhow::bail!("unknown flag {other} (known: --port, --name)"),
        }
    }
    Ok((port, name))
}

/// Reads one request head and writes the response.
async fn serve(mut stream: TcpStream, answer: &str) -> anyhow::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > HEAD_LIMIT {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let target = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    match target.strip_prefix("/data?") {
        Some(query) => {
            let (bytes, seconds) = data_query(query);
            send_data(&mut stream, bytes, seconds).await?;
        }
        None => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(reply.as_bytes()).await?;
        }
    }
    stream.shutdown().await?;
    Ok(())
}

/// `bytes=N&seconds=S` (defaults: 1 MiB, at once).
fn data_query(query: &str) -> (u64, f64) {
    let (mut bytes, mut seconds) = (1 << 20, 0.0);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("bytes", v)) => bytes = v.parse().unwrap_or(bytes),
            Some(("seconds", v)) => seconds = v.parse().unwrap_or(seconds),
            _ => {}
        }
    }
    (bytes, seconds)
}

/// Writes `bytes` of the pattern, spread evenly over `seconds` in 20 steps.
async fn send_data(stream: &mut TcpStream, bytes: u64, seconds: f64) -> anyhow::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let steps = 20u64;
    let pause = Duration::from_secs_f64(seconds.max(0.0) / steps as f64);
    let mut sent = 0u64;
    for step in 1..=steps {
        let until = bytes * step / steps;
        let chunk: Vec<u8> = (sent..until).map(|i| (i % 251) as u8).collect();
        stream.write_all(&chunk).await?;
        sent = until;
        if step < steps {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}
