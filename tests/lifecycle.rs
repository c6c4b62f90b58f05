//! Process life through the real binary: graceful drain on SIGTERM (also with its log pipe
//! closed), and running out of file descriptors without exiting or spinning.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{connect_named, hash_to_eof, pattern, sha256, Backend, Tierlb};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_clients_and_lets_the_transfer_finish() {
    let node = Backend::start("node1").await;
    let mut tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    let first = pattern(1, 4 << 20);
    let second = pattern(2, 4 << 20);

    let (client, name) = connect_named(tierlb.addr).await.expect("connect");
    assert_eq!(name, "node1");
    let (mut r, mut w) = client.into_split();
    let reader = tokio::spawn(async move { hash_to_eof(&mut r).await });
    w.write_all(&first).await.expect("first half");

    tierlb.signal(Signal::SIGTERM);
    assert!(
        tierlb.wait_log("stopped accepting", 1).is_some(),
        "tierlb logs the start of the drain"
    );
    let refused = TcpStream::connect(tierlb.addr).await;
    assert_eq!(
        refused.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "new clients are refused while draining"
    );

    // The transfer in flight goes on to its end.
    w.write_all(&second).await.expect("second half");
    w.shutdown().await.expect("half-close");
    let (len, hash) = tokio::time::timeout(common::WAIT, reader)
        .await
        .expect("echo in time")
        .expect("reader task")
        .expect("read echo");
    let mut sent = first.clone();
    sent.extend_from_slice(&second);
    assert_eq!(len, sent.len() as u64, "every byte came back");
    assert_eq!(hash, sha256(&sent), "bytes intact");

    let status = tierlb
        .wait_exit(common::WAIT)
        .expect("tierlb exits after the drain");
    assert!(status.success(), "exit status {status:?}");
    assert!(tierlb.count(&["drained"]) == 1, "{:?}", tierlb.lines());
}

/// Descriptor limit for the tierlb under test.
const NOFILE: u32 = 256;

/// Raises this test process's own soft descriptor limit to its hard limit: the test holds a
/// thousand client sockets.
fn raise_own_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise the test's own descriptor limit");
}

/// One client: the greeting, then one line echoed. Whether every byte came back.
async fn echo_client(addr: std::net::SocketAddr, i: usize) -> bool {
    let (stream, name) = match connect_named(addr).await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("client {i}: {e}");
            return false;
        }
    };
    let mut stream = stream;
    let line = format!("client {i}\n");
    if name != "node1" || stream.write_all(line.as_bytes()).await.is_err() {
        return false;
    }
    let mut got = vec![0; line.len()];
    let read = tokio::time::timeout(common::WAIT, stream.read_exact(&mut got)).await;
    matches!(read, Ok(Ok(_))) && got == line.as_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_descriptor_limit_clients_wait_in_the_backlog_and_none_is_reset() {
    raise_own_limit();
    let node = Backend::start("node1").await;
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(common::bin())
        .args(["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    let mut tierlb = Tierlb::spawn(cmd);
    let line = tierlb
        .wait_log("client limit set from the open-files limit", 1)
        .expect("the limit is logged");
    let limit: usize = line
        .split("max_connections=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {line}"));
    assert!(
        (50..128).contains(&limit),
        "the limit leaves room for everything else under {NOFILE} descriptors: {limit}"
    );

    // Hold the limit's worth of connections: tierlb is full.
    let mut held = Vec::new();
    for _ in 0..limit {
        held.push(connect_named(tierlb.addr).await.expect("held connection").0);
    }
    // 1,000 more clients arrive at once; they wait in the kernel's accept queue.
    let clients: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(echo_client(tierlb.addr, i)))
        .collect();
    assert!(
        tierlb.wait_log("connection limit reached", 1).is_some(),
        "the limit episode is logged"
    );

    // While they wait, tierlb neither exits nor spins: well under 10 % of a core over 1 s.
    let ticks_per_second = 100;
    let before = common::cpu_ticks(tierlb.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = common::cpu_ticks(tierlb.pid()) - before;
    assert!(tierlb.is_running(), "tierlb exited");
    assert!(
        used * 10 < ticks_per_second,
        "tierlb used {used} ticks of CPU in 1 s while full"
    );

    // The held connections close: every waiting client is served, none is reset.
    drop(held);
    let mut served = 0;
    for client in clients {
        if client.await.expect("client task") {
            served += 1;
        }
    }
    assert_eq!(served, 1000, "every waiting client was served in full");
    assert_eq!(
        tierlb.count(&["connection limit reached"]),
        1,
        "one line for the episode, not one per client"
    );
    assert_eq!(
        tierlb.count(&["closing client"]),
        0,
        "no client was turned away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_stops_gracefully_like_sigterm() {
    let node = Backend::start("node1").await;
    let mut tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    let (mut held, _) = connect_named(tierlb.addr).await.expect("connect");
    tierlb.signal(Signal::SIGUSR1);
    assert!(tierlb.wait_log("stopped accepting", 1).is_some());
    assert!(tierlb.count(&["shutting down", "SIGUSR1"]) == 1);
    // The open connection still works, and tierlb exits once it is done.
    held.write_all(b"still\n").await.expect("send");
    let mut echo = [0u8; 6];
    held.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"still\n");
    drop(held);
    let status = tierlb
        .wait_exit(common::WAIT)
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_by_the_drain_deadline_sees_a_reset() {
    let node = Backend::start("node1").await;
    let config = common::ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{}\"]\n[timeouts]\ndrain = \"500ms\"\n",
        node.addr
    ));
    let mut tierlb = Tierlb::with_config(&config);
    let (mut held, _) = connect_named(tierlb.addr).await.expect("connect");
    tierlb.signal(Signal::SIGTERM);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(common::WAIT, held.read(&mut buf))
        .await
        .expect("cut in time");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the cut is a reset, not a clean end of stream"
    );
    assert!(tierlb.wait_log("drain deadline reached", 1).is_some());
    assert!(tierlb.wait_exit(common::WAIT).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_log_pipe_closed_tierlb_still_serves_and_exits_on_sigterm() {
    use std::io::BufRead;
    let node = Backend::start("node1").await;
    let mut child = Command::new(common::bin())
        .args(["-l", "127.0.0.1:0", "-p", &node.addr.to_string()])
        .env("RUST_LOG", "tierlb=debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tierlb");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .take(100)
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .and_then(|l| common::addr_in(&l))
        .expect("the listening line");
    // Whoever read the log has gone: every line from now on fails to be written.
    drop(lines);
    for _ in 0..3 {
        let (_, name) = connect_named(addr).await.expect("still serving");
        assert_eq!(name, "node1");
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let exited = common::wait_until(common::WAIT, || child.try_wait().ok().flatten());
    let status = match exited {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("tierlb did not exit on SIGTERM with its log pipe closed");
        }
    };
    assert!(status.success(), "{status:?}");
}
