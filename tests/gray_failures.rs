//! Gray failures through the real binary: a node that never answers a client that has
//! finished sending is cut after `[timeouts] fin`, not left to the idle timeout.

mod common;

use std::sync::Arc;
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

/// `count` short clients through `lb`: how many reached `name`.
async fn short_clients(lb: std::net::SocketAddr, count: usize, name: &str) -> usize {
    let mut hits = 0;
    for _ in 0..count {
        let (_, got) = common::connect_named(lb).await.expect("client");
        hits += usize::from(got == name);
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_node_ramps_up_instead_of_taking_every_new_client() {
    for slow_start in ["5s", "0s"] {
        let n1 = common::Backend::start("n1").await;
        let n2 = common::Backend::start("n2").await;
        let n3 = common::Backend::start("n3").await;
        let config = ConfigFile::new(&format!(
            "listen = \"127.0.0.1:0\"\nnodes = [\"{}\", \"{}\", \"{}\"]\n[health]\ninterval = \"100ms\"\nrise = 1\nfall = 1\nslow_start = \"{slow_start}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            n1.addr, n2.addr, n3.addr
        ));
        let lb = Tierlb::with_config(&config);
        let admin = lb.logged_addr("admin listening");
        let n2_addr = n2.addr;
        let stopped = n2.stop().await;
        lb.wait_log_all(&["node down", &format!("node={n2_addr}")], 1, WAIT)
            .expect("n2 down");
        // 30 long-lived connections, on n1 and n3.
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(common::connect_named(lb.addr).await.expect("client"));
        }
        drop(stopped);
        let _back = common::Backend::start_at(n2_addr, "n2").await;
        lb.wait_log_all(&["node up", &format!("node={n2_addr}")], 1, WAIT)
            .expect("n2 back");
        let up_at = Instant::now();
        let first = short_clients(lb.addr, 100, "n2").await;
        let took = up_at.elapsed();
        eprintln!("slow_start {slow_start}: n2 took {first} of 100 new clients in {took:?}");
        if slow_start == "5s" {
            assert!(
                took < Duration::from_secs(1),
                "the 100 clients took {took:?}"
            );
            assert!(first <= 30, "n2 took {first} of 100 in its first second");
            // After the window (its end read from /status) it is the least loaded node again,
            // and takes every client.
            let deadline = Instant::now() + WAIT;
            loop {
                let (_, body) = http(admin, "GET", "/status", &[]).await;
                let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if node(&status, n2_addr)["slow_start"].is_null() {
                    break;
                }
                assert!(Instant::now() < deadline, "the ramp never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                up_at.elapsed() >= Duration::from_millis(4900),
                "not before the window"
            );
            assert_eq!(short_clients(lb.addr, 20, "n2").await, 20);
        } else {
            assert_eq!(
                first, 100,
                "without slow start the emptiest node takes them all"
            );
        }
        drop(held);
    }
}

/// A node process, thawed and killed when dropped (even when the test fails).
struct NodeProcess(std::process::Child);

impl NodeProcess {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An echo node in a process of its own (so it can be frozen with SIGSTOP), greeting with
/// "node1"; returns the process and its address.
fn echo_process() -> (NodeProcess, std::net::SocketAddr) {
    let script = r#"
import socket, sys, threading
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(512)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        c.sendall(b"node1\n")
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the echo node");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("port");
    let port: u16 = line.trim().parse().expect("a port");
    (
        NodeProcess(child),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
}

/// Thirty clients at once, each sending a line and waiting up to 3 s for the greeting and the
/// echo, all kept open until the last is done (so that they spread over the nodes): the names
/// of the nodes that answered, "silent" for a client that got nothing.
async fn burst(lb: std::net::SocketAddr) -> Vec<String> {
    let done = Arc::new(tokio::sync::Barrier::new(30));
    let clients: Vec<_> = (0..30)
        .map(|_| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let attempt = async {
                    let mut stream = TcpStream::connect(lb).await.ok()?;
                    stream.write_all(b"ping\n").await.ok()?;
                    let mut got = Vec::new();
                    let mut buf = [0u8; 64];
                    while !got.ends_with(b"ping\n") {
                        let n = stream.read(&mut buf).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let text = String::from_utf8_lossy(&got).into_owned();
                    Some((text.lines().next().map(str::to_owned)?, stream))
                };
                let got = tokio::time::timeout(Duration::from_secs(3), attempt)
                    .await
                    .ok()
                    .flatten();
                done.wait().await;
                got.map_or_else(|| "silent".to_owned(), |(name, _stream)| name)
            })
        })
        .collect();
    let mut names = Vec::new();
    for c in clients {
        names.push(c.await.expect("client task"));
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_found_by_response_and_missed_without_it() {
    if !common::tool_available("python3") {
        return;
    }
    for response in ["1s", "0s"] {
        let (frozen, n1) = echo_process();
        let n2 = common::Backend::start("n2").await;
        let n3 = common::Backend::start("n3").await;
        let config = ConfigFile::new(&format!(
            "listen = \"127.0.0.1:0\"\nnodes = [\"{n1}\", \"{}\", \"{}\"]\n[health]\ninterval = \"1s\"\nfall = 3\nrise = 3\n[timeouts]\nresponse = \"{response}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            n2.addr, n3.addr
        ));
        let lb = Tierlb::with_config(&config);
        let admin = lb.logged_addr("admin listening");
        assert!(
            burst(lb.addr).await.iter().any(|n| n == "node1"),
            "node1 serves at first"
        );
        let pid = nix::unistd::Pid::from_raw(i32::try_from(frozen.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("freeze");
        let frozen_at = Instant::now();
        let n1_tag = format!("node={n1}");
        let down = ["node down", n1_tag.as_str()];
        // Bursts go on in the background while the log is watched for node1 going down.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (stop, lb) = (Arc::clone(&stop), lb.addr);
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    burst(lb).await;
                }
            })
        };
        let line = lb.wait_log_all(&down, 1, Duration::from_secs(4));
        let found = frozen_at.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if response == "0s" {
            assert!(
                line.is_none(),
                "without response a frozen node looks up: {line:?}"
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = load.await;
            continue;
        }
        let line = line.expect("node1 marked down within 4 s of the freeze");
        eprintln!("response 1s: node1 down {found:?} after SIGSTOP");
        assert!(
            found < Duration::from_secs(2),
            "down {found:?} after the freeze: more than response + 1 s"
        );
        assert!(line.contains("no response within 1s"), "{line}");
        // Probes still connect (the kernel answers for the frozen process), yet clients that
        // start now stay off node1 (for less than rise x interval: then it would come back,
        // on probation, and its next silent client would take it down again at once).
        let after = Instant::now();
        while after.elapsed() < Duration::from_millis(800) {
            let names = burst(lb.addr).await;
            assert!(names.iter().all(|n| n == "n2" || n == "n3"), "{names:?}");
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("thaw");
        let _ = load.await;
        // Thawed, it comes back after `rise` probes, on probation (connect-only probes prove
        // nothing about silence); the late answers of the clients it held, connected before
        // it fell, do not count.
        let back = lb
            .wait_log_all(&["node up", &format!("node={n1}")], 1, WAIT)
            .expect("node1 back");
        assert!(back.contains("reason=probe passed"), "{back}");
        assert!(back.contains("on probation"), "{back}");
        let (_, body) = http(admin, "GET", "/status", &[]).await;
        let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(node(&status, n1)["up"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_within_response_is_never_marked_down() {
    // Answers each line 2 s after it arrives.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{addr}\"]\n[timeouts]\nresponse = \"5s\"\n"
    ));
    let lb = Tierlb::with_config(&config);
    let lb_addr = lb.addr;
    let clients: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(lb_addr).await.expect("connect");
                let line = format!("request {i}\n");
                stream.write_all(line.as_bytes()).await.expect("write");
                let mut got = vec![0u8; line.len()];
                stream
                    .read_exact(&mut got)
                    .await
                    .expect("the answer, 2 s later");
                assert_eq!(got, line.as_bytes());
            })
        })
        .collect();
    for c in clients {
        c.await.expect("every client answered");
    }
    assert_eq!(
        lb.count(&["node down"]),
        0,
        "a node slower than 2 s but within 5 s is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_node_keeps_reading_is_never_silence() {
    // A node that reads a 6 MB upload at 2 MB/s and answers with its hash only at the end:
    // three seconds in which it says nothing, while it keeps taking bytes.
    const SIZE: usize = 6_000_000;
    const RATE: f64 = 2_000_000.0;
    let node = common::serve_each(|mut stream, _| async move {
        let started = Instant::now();
        let mut got = Vec::with_capacity(SIZE);
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < SIZE {
            match stream.read(&mut buf).await {
                Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
            let due = started + Duration::from_secs_f64(got.len() as f64 / RATE);
            tokio::time::sleep_until(due.into()).await;
        }
        let _ = stream.write_all(&common::sha256(&got)).await;
    })
    .await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{node}\"]\n[health]\nfall = 1\n[timeouts]\nresponse = \"500ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let mut client = TcpStream::connect(lb.addr).await.expect("connect");
    let upload = common::pattern(31, SIZE);
    client.write_all(&upload).await.expect("upload");
    let mut hash = [0u8; 32];
    tokio::time::timeout(WAIT, client.read_exact(&mut hash))
        .await
        .expect("the answer in time")
        .expect("the answer");
    assert_eq!(hash, common::sha256(&upload), "the node read every byte");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    let unanswered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("tierlb_node_connect_failures_total{") && l.contains("unanswered")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(unanswered, 0.0, "no failure counted: {metrics}");
    assert_eq!(lb.count(&["node down"]), 0, "{:#?}", lb.lines());
}
