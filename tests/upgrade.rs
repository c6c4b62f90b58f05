//! Binary upgrades (SIGUSR2, `tierlb --upgrade`) against the real binary: the listening
//! sockets go to the new process, which takes over; the old one drains. No client is
//! refused, reset or cut short, queued clients included; a new process that cannot start
//! leaves the old one serving. Also systemd's socket activation (`LISTEN_FDS`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{exited, pid_in, KillNamed};
use common::{
    connect_named, start_hashing_backend, toml_nodes, wait_until, Backend, ConfigFile, Stamped,
    Tierlb, WAIT,
};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How long an upgrade (start, handover, readiness) may take on a busy machine.
const UPGRADE: Duration = Duration::from_secs(45);

/// Sends `signal` to `pid`.
fn kill(pid: u32, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Starts tierlb on `config` with `pid_file`; the guard kills whichever process serves last.
fn start(config: &ConfigFile, pid_file: &Path) -> (Tierlb, KillNamed) {
    let path = pid_file.to_str().expect("utf-8");
    let tierlb = Tierlb::start(&["-c", config.path(), "--pid-file", path]);
    (tierlb, KillNamed(pid_file.to_owned()))
}

/// Upgrades the process in `pid_file` with SIGUSR2; returns the new process ID once it
/// serves, after the old one has exited.
fn upgrade(pid_file: &Path) -> u32 {
    let old = wait_until(WAIT, || pid_in(pid_file)).expect("a PID file");
    kill(old, Signal::SIGUSR2);
    let new = wait_until(UPGRADE, || pid_in(pid_file).filter(|&p| p != old))
        .unwrap_or_else(|| panic!("no new process replaced {old}"));
    assert!(
        wait_until(UPGRADE, || exited(old).then_some(())).is_some(),
        "the old process {old} did not exit after its drain"
    );
    assert!(!exited(new), "the new process {new} serves");
    new
}

/// Failures of a client load, by kind.
#[derive(Default)]
struct Failures {
    refused: AtomicUsize,
    reset: AtomicUsize,
    other: AtomicUsize,
    done: AtomicUsize,
}

/// One short client: greeting, one echoed line, end.
async fn one_client(addr: SocketAddr) -> std::io::Result<()> {
    let (stream, _) = connect_named(addr).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    reader.get_mut().write_all(b"ping\n").await?;
    let mut line = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if line != "ping\n" {
        return Err(std::io::Error::other(format!("echo {line:?}")));
    }
    Ok(())
}

/// About `rate` new connections a second to `addr`, until `stop`.
async fn load(addr: SocketAddr, rate: u64, stop: Arc<AtomicBool>, failures: Arc<Failures>) {
    const WORKERS: u64 = 10;
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (stop, failures) = (Arc::clone(&stop), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * WORKERS / rate));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                match one_client(addr).await {
                    Ok(()) => &failures.done,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        &failures.refused
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => &failures.reset,
                    Err(e) => {
                        eprintln!("client failed: {e}");
                        &failures.other
                    }
                }
                .fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("load worker");
    }
}

/// A long transfer through `addr` to a hashing node: 2 MiB each way, the client's half
/// written in 64 KiB pieces 40 ms apart. Returns the hashes of what the client sent and got.
async fn transfer(addr: SocketAddr, seed: u64) -> ([u8; 32], (u64, [u8; 32])) {
    const SIZE: usize = 2 << 20;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let sending = async move {
        let data = Stamped::new(seed);
        let mut all = Vec::with_capacity(SIZE);
        data.send(&mut all, SIZE).await.expect("in memory");
        for piece in all.chunks(64 * 1024) {
            w.write_all(piece).await.expect("send");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        w.shutdown().await.expect("shutdown");
        data.sha256(SIZE)
    };
    let (sent, got) = tokio::join!(sending, common::hash_to_eof(&mut r));
    (sent, got.expect("read the node's half"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_under_load_lose_no_client_and_cut_no_transfer() {
    let nodes = [Backend::start("n1").await, Backend::start("n2").await];
    let (bulk, mut reports) = start_hashing_backend(2 << 20, 7).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("tierlb.pid");
    let config = ConfigFile::new(&format!(
        "[services.web]\nlisten = \"127.0.0.1:0\"\nnodes = {}\n\
         [services.bulk]\nlisten = \"127.0.0.1:0\"\nnodes = [\"{bulk}\"]\n",
        toml_nodes(&[nodes[0].addr, nodes[1].addr])
    ));
    let (first, _last) = start(&config, &pid_file);
    let (web, bulk_at) = (first.service_addr("web"), first.service_addr("bulk"));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Failures::default());
    let load = tokio::spawn(load(web, 1000, Arc::clone(&stop), Arc::clone(&failures)));
    let mut pids = vec![wait_until(WAIT, || pid_in(&pid_file)).expect("PID file")];
    let mut transfers = Vec::new();
    for round in 0..3u64 {
        for i in 0..20 {
            transfers.push(tokio::spawn(transfer(bulk_at, round * 100 + i)));
        }
        // The transfers are under way (their first pieces through) before the upgrade.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let file = pid_file.clone();
        let new = tokio::task::spawn_blocking(move || upgrade(&file))
            .await
            .expect("upgrade");
        assert!(!pids.contains(&new), "round {round}: a new process ID");
        pids.push(new);
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    let node_sent = Stamped::new(7).sha256(2 << 20);
    let mut client_sent = Vec::new();
    for transfer in transfers {
        let (sent, got) = transfer.await.expect("transfer");
        assert_eq!(
            got,
            (2 << 20, node_sent),
            "the node's half arrived whole and intact"
        );
        client_sent.push(sent);
    }
    let mut node_got = Vec::new();
    for _ in 0..client_sent.len() {
        let report = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a node report");
        let report = report.expect("report");
        assert_eq!(
            report.received.0,
            2 << 20,
            "the client's half arrived whole"
        );
        node_got.push(report.received.1);
    }
    client_sent.sort_unstable();
    node_got.sort_unstable();
    assert_eq!(client_sent, node_got, "every client's half arrived intact");
    let (done, refused, reset, other) = (
        failures.done.load(Ordering::Relaxed),
        failures.refused.load(Ordering::Relaxed),
        failures.reset.load(Ordering::Relaxed),
        failures.other.load(Ordering::Relaxed),
    );
    eprintln!("clients: {done} served, {refused} refused, {reset} reset, {other} other; processes {pids:?}");
    assert_eq!(
        (refused, reset, other),
        (0, 0, 0),
        "no client failed across three upgrades"
    );
    assert!(done > 1000, "the load ran: {done} clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_queued_at_the_limit_during_an_upgrade_are_all_served() {
    let node = Backend::start("n1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("tierlb.pid");
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{}\"]\nmax_connections = 2\n",
        node.addr
    ));
    let (first, _last) = start(&config, &pid_file);
    // Two clients hold the old process's two slots; ten more wait in the accept queue.
    let held = common::hold(first.addr, 2).await;
    let mut queued = Vec::new();
    for _ in 0..10 {
        queued.push(tokio::spawn(one_client(first.addr)));
    }
    assert!(
        queued.iter().all(|c| !c.is_finished()),
        "the queued clients wait for a slot"
    );
    let file = pid_file.clone();
    let upgrading = tokio::task::spawn_blocking(move || {
        let old = wait_until(WAIT, || pid_in(&file)).expect("PID file");
        kill(old, Signal::SIGUSR2);
        wait_until(UPGRADE, || pid_in(&file).filter(|&p| p != old)).expect("a new process")
    });
    let new = upgrading.await.expect("upgrade");
    // The new process serves the queued clients; the old one's two stay until they end.
    for client in queued {
        client
            .await
            .expect("client")
            .expect("a queued client is served, not reset");
    }
    drop(held);
    assert!(
        wait_until(UPGRADE, || exited(first.pid()).then_some(())).is_some(),
        "the old process exits once its clients are done"
    );
    assert!(!exited(new));
}

#[tokio::test]
async fn a_new_binary_that_cannot_start_leaves_the_old_one_serving() {
    let node = Backend::start("n1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("tierlb.pid");
    let good = format!("listen = \"127.0.0.1:0\"\nnodes = [\"{}\"]\n", node.addr);
    let config = ConfigFile::new(&good);
    let (first, _last) = start(&config, &pid_file);
    let old = wait_until(WAIT, || pid_in(&pid_file)).expect("PID file");
    config.rewrite(&format!("{good}retries = \"many\"\n"));
    let request = std::process::Command::new(common::bin())
        .args(["--upgrade", "--pid-file", pid_file.to_str().expect("utf-8")])
        .output()
        .expect("run tierlb --upgrade");
    assert!(
        !request.status.success(),
        "the upgrade request reports the failure"
    );
    assert!(
        first.wait_log("upgrade failed", 1).is_some(),
        "the old process logs why: {:?}",
        first.lines()
    );
    assert_eq!(pid_in(&pid_file), Some(old), "the old process still serves");
    assert_eq!(connect_named(first.addr).await.expect("served").1, "n1");

    config.rewrite(&good);
    let request = std::process::Command::new(common::bin())
        .args(["--upgrade", "--pid-file", pid_file.to_str().expect("utf-8")])
        .output()
        .expect("run tierlb --upgrade");
    assert!(request.status.success(), "{request:?}");
    let new = pid_in(&pid_file).expect("PID file");
    assert_ne!(new, old);
    assert_eq!(connect_named(first.addr).await.expect("served").1, "n1");
}

#[tokio::test]
async fn a_socket_passed_by_systemd_is_served() {
    use std::os::fd::AsRawFd;
    let node = Backend::start("n1").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // The descriptor must survive exec, as systemd leaves it.
    nix::fcntl::fcntl(
        listener.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .expect("clear FD_CLOEXEC");
    let config = ConfigFile::new(&format!(
        "listen = \"{addr}\"\nnodes = [\"{}\"]\n",
        node.addr
    ));
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["-c", config.path()])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDS_FIRST_FD", listener.as_raw_fd().to_string());
    let tierlb = Tierlb::spawn(cmd);
    assert!(
        tierlb.wait_log("socket activation: took", 1).is_some(),
        "{:?}",
        tierlb.lines()
    );
    assert_eq!(tierlb.addr, addr);
    // The test's copy closed, the socket lives on in tierlb alone.
    drop(listener);
    assert_eq!(connect_named(addr).await.expect("served").1, "n1");
}
