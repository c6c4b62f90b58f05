//! The admin endpoint under abuse: slow headers, clients that ask and never read, a flood of
//! connections under a descriptor limit, the bearer scheme in any case, and `Host` names from
//! DNS rebinding.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{connect_named, Backend, Tierlb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "correct-horse-battery-staple";

/// Starts tierlb (optionally under a descriptor limit) with an admin endpoint and a token;
/// returns it with the admin address.
fn start(node: SocketAddr, nofile: Option<u32>) -> (Tierlb, SocketAddr) {
    let args = [
        "-l",
        "127.0.0.1:0",
        "-p",
        &node.to_string(),
        "--admin",
        "127.0.0.1:0",
    ];
    let mut cmd = match nofile {
        Some(n) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(common::bin());
            cmd
        }
        None => Command::new(common::bin()),
    };
    cmd.args(args).env("TIERLB_ADMIN_TOKEN", TOKEN);
    let tierlb = Tierlb::spawn(cmd);
    let admin = tierlb.logged_addr("admin listening");
    (tierlb, admin)
}

/// Reads until the peer closes (EOF or reset); whether it did within `limit`.
async fn closed_within(stream: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_are_closed_by_the_header_timeout() {
    let node = Backend::start("node1").await;
    let (tierlb, admin) = start(node.addr, None);
    let started = Instant::now();
    let slow: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(admin).await else {
                    return true;
                };
                // One byte of a header a second, for at most 20 s.
                let request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaa";
                for byte in request.iter().take(20) {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return true;
                    }
                    if closed_within(&mut stream, Duration::from_secs(1)).await {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    let mut closed = 0;
    for task in slow {
        if task.await.expect("slow client") {
            closed += 1;
        }
    }
    let took = started.elapsed();
    assert_eq!(closed, 1000, "every slow connection was closed");
    assert!(
        took < Duration::from_secs(15),
        "closed by the 5 s header timeout, not by the clients giving up: {took:?}"
    );
    let (status, body) = common::http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    let rejected = common::metric(&body, "tierlb_admin_rejected_total").expect("metric");
    assert!(rejected > 0.0, "connections past the cap were counted");
    drop(tierlb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_admin_connections_leaves_the_data_path_serving() {
    let node = Backend::start("node1").await;
    let (tierlb, admin) = start(node.addr, Some(256));
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(stream) = TcpStream::connect(admin).await {
            flood.push(stream);
        }
    }
    for i in 0..50 {
        let (_, name) = connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("data client {i} failed with the admin flood open: {e}"));
        assert_eq!(name, "node1");
    }
    assert_eq!(tierlb.count(&["closing client"]), 0);
    assert!(tierlb
        .wait_log("admin connection limit reached", 1)
        .is_some());
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_in_any_case_and_host_names_checked() {
    let node = Backend::start("node1").await;
    let (_tierlb, admin) = start(node.addr, None);
    let path = format!("/nodes/{}/drain", node.addr);
    let lower = format!("bearer {TOKEN}");
    let (status, _) = common::http(admin, "POST", &path, &[("Authorization", &lower)]).await;
    assert_eq!(status, 200, "`bearer` is the Bearer scheme");

    // A page elsewhere whose name was rebound to this address sends its own name as Host.
    let raw = |host: &'static str| async move {
        let mut stream = TcpStream::connect(admin).await.expect("connect");
        let request = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let rebound = raw("evil.example:9090").await;
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(rebound.contains("[admin] hosts"), "{rebound}");
    let local = raw("localhost").await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
}

/// An admin client with a 4 KiB receive buffer that pipelines `GET /metrics` 2,000 times and
/// never reads; its writer goes on until the connection fails. Returns the unread side.
async fn pipelining_non_reader(admin: SocketAddr) -> tokio::net::tcp::OwnedReadHalf {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(admin).await.expect("connect");
    let one = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let request = one.repeat(1999);
    let (reader, mut writer) = stream.into_split();
    // The first request is sent before this returns: the attack is in place with it.
    writer.write_all(one).await.expect("the first request");
    tokio::spawn(async move {
        if writer.write_all(&request).await.is_ok() {
            // Kept open (not half-closed): only the server may end the connection.
            std::future::pending::<()>().await;
        }
    });
    reader
}

/// `GET /live`: what came back within a second (the status line), or what went wrong.
async fn live_within_a_second(admin: SocketAddr) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    match tokio::time::timeout(Duration::from_secs(1), exchange).await {
        Ok(Ok(response)) if response.starts_with(b"HTTP/1.1 200") => Ok(()),
        Ok(Ok(response)) => Err(String::from_utf8_lossy(&response).into_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_ask_and_never_read_cannot_lock_out_the_liveness_probe() {
    let node = Backend::start("node1").await;
    let (tierlb, admin) = start(node.addr, None);
    let mut stuck = Vec::new();
    for _ in 0..40 {
        stuck.push(pipelining_non_reader(admin).await);
    }
    // The attack is in place once its 40 connections are.
    let started = tokio::time::Instant::now();
    for at in [1, 10, 30] {
        tokio::time::sleep_until(started + Duration::from_secs(at)).await;
        if let Err(got) = live_within_a_second(admin).await {
            panic!(
                "/live did not answer 200 within 1 s at {at} s: {got}\n{:#?}",
                tierlb.lines()
            );
        }
    }
    // By now every stuck connection was ended by the server: the response deadline (10 s),
    // the probe lane's one request, or the cap.
    for (i, reader) in stuck.iter_mut().enumerate() {
        assert!(
            closed_within(reader, Duration::from_secs(5)).await,
            "stuck connection {i} still open after 30 s"
        );
    }
}
