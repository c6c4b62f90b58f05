//! Process life through the real binary: graceful drain on SIGTERM, and running out of file
//! descriptors without exiting or spinning.

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

/// Descriptor limit for the tierlb under test: a handful for the runtime, the rest for
/// connections (two each).
const NOFILE: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_it_waits_idle_and_then_serves_again() {
    let node = Backend::start("node1").await;
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(common::bin())
        .args(["-l", "127.0.0.1:0", "-p", &node.addr.to_string()]);
    let mut tierlb = Tierlb::spawn(cmd);

    // Hold connections until one is not served: tierlb is out of descriptors.
    let mut held = Vec::new();
    let mut exhausted = false;
    for _ in 0..NOFILE {
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), connect_named(tierlb.addr)).await;
        match attempt {
            Ok(Ok((stream, _))) => held.push(stream),
            _ => {
                exhausted = true;
                break;
            }
        }
    }
    assert!(
        exhausted,
        "{} connections held without running out",
        held.len()
    );
    assert!(
        held.len() >= 5,
        "only {} connections before running out",
        held.len()
    );
    assert!(
        tierlb.wait_log("out of resources", 1).is_some()
            || tierlb.wait_log("cannot open a socket", 1).is_some(),
        "tierlb says it is out of descriptors"
    );

    // While starved it neither exits nor spins: well under 10 % of a core over two seconds.
    let ticks_per_second = 100;
    let before = common::cpu_ticks(tierlb.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = common::cpu_ticks(tierlb.pid()) - before;
    assert!(tierlb.is_running(), "tierlb exited");
    assert!(
        used * 10 < 2 * ticks_per_second,
        "tierlb used {used} ticks of CPU in 2 s while starved"
    );

    // Descriptors come free: new clients are served again.
    for mut stream in held.drain(..) {
        stream.shutdown().await.expect("close");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    }
    let mut served = None;
    for _ in 0..10 {
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), connect_named(tierlb.addr)).await;
        if let Ok(Ok((_, name))) = attempt {
            served = Some(name);
            break;
        }
    }
    assert_eq!(
        served.as_deref(),
        Some("node1"),
        "served again once descriptors are free"
    );
}
