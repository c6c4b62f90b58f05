//! Helpers shared by the end-to-end tests: the real `tierlb` binary with its log captured,
//! backends (greeting echo, hashing, answer-after-EOF, blackhole), clients and data.
//!
//! Each test file uses a subset, so unused helpers are allowed here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub mod cluster;
pub mod discovery;
pub mod dns;
pub mod page;
pub mod process;
pub mod udp;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tierlb")
}

/// A running `tierlb` process whose log lines (stderr) are collected as they come.
pub struct Tierlb {
    child: Child,
    /// The address it bound (read from its "listening" log line).
    pub addr: SocketAddr,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Tierlb {
    /// Starts `tierlb ARGS` with `RUST_LOG=tierlb=debug` and waits until it listens.
    pub fn start(args: &[&str]) -> Tierlb {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Tierlb::spawn(cmd)
    }

    /// Starts `tierlb -c FILE` for a config text.
    pub fn with_config(config: &ConfigFile) -> Tierlb {
        Tierlb::start(&["-c", config.path()])
    }

    /// Spawns a prepared command (for wrappers such as `prlimit`) and waits until it listens.
    pub fn spawn(mut cmd: Command) -> Tierlb {
        cmd.env("RUST_LOG", "tierlb=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tierlb");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("tierlb| {line}");
                let (lines, changed) = &*sink;
                lines.lock().expect("log lock").push(line);
                changed.notify_all();
            }
        });
        let mut tierlb = Tierlb {
            child,
            addr: "0.0.0.0:0".parse().expect("placeholder"),
            log,
        };
        let line = tierlb
            .wait_log("listening", 1)
            .unwrap_or_else(|| panic!("tierlb did not log its address: {:?}", tierlb.lines()));
        tierlb.addr = addr_in(&line).unwrap_or_else(|| panic!("no address in {line}"));
        tierlb
    }

    /// The address in the first log line containing `needle` and an `addr=` field.
    pub fn logged_addr(&self, needle: &str) -> SocketAddr {
        let line = self
            .wait_log(needle, 1)
            .unwrap_or_else(|| panic!("no {needle:?} line: {:?}", self.lines()));
        addr_in(&line).unwrap_or_else(|| panic!("no addr in {line}"))
    }

    /// The address service `name` listens on (from its `listening` log line).
    pub fn service_addr(&self, name: &str) -> SocketAddr {
        let tag = format!("service={name} ");
        let line = self
            .wait_log_all(&["listening", &tag], 1, WAIT)
            .unwrap_or_else(|| panic!("service {name} never listened: {:?}", self.lines()));
        addr_in(&line).unwrap_or_else(|| panic!("no addr in {line}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().expect("log lock").clone()
    }

    /// How many log lines so far contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        let lines = self.log.0.lock().expect("log lock");
        lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits (up to [`WAIT`]) until `count` lines contain `needle`; returns the `count`-th.
    pub fn wait_log(&self, needle: &str, count: usize) -> Option<String> {
        self.wait_log_all(&[needle], count, WAIT)
    }

    /// Waits up to `limit` until `count` lines contain every one of `needles`; returns the
    /// `count`-th such line.
    pub fn wait_log_all(&self, needles: &[&str], count: usize, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let (lines, changed) = &*self.log;
        let mut guard = lines.lock().expect("log lock");
        loop {
            let matching: Vec<&String> = guard
                .iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .collect();
            if matching.len() >= count.max(1) {
                return Some(matching[count.max(1) - 1].clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = changed
                .wait_timeout(guard, deadline - now)
                .expect("log lock")
                .0;
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("send signal");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_until(limit, || self.child.try_wait().expect("try_wait"))
    }
}

impl Drop for Tierlb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The `addr` field of a log line, text (`addr=IP:PORT`) or JSON (`"addr":"IP:PORT"`).
pub fn addr_in(line: &str) -> Option<SocketAddr> {
    let text = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("addr="));
    let json = line
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    text.or(json)?.parse().ok()
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A config file in a temporary directory, removed when dropped.
pub struct ConfigFile {
    file: tempfile::NamedTempFile,
}

impl ConfigFile {
    /// Writes `text` to a new temporary `.toml` file.
    pub fn new(text: &str) -> ConfigFile {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write config");
        ConfigFile { file }
    }

    /// Replaces the file's content (for reload tests).
    pub fn rewrite(&self, text: &str) {
        std::fs::write(self.file.path(), text).expect("rewrite config");
    }

    /// The file's path as a string.
    pub fn path(&self) -> &str {
        self.file.path().to_str().expect("utf-8 temp path")
    }
}

/// A TOML array of node addresses, `["a", "b"]`.
pub fn toml_nodes(addrs: &[SocketAddr]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A backend that greets each connection with `NAME\n`, then echoes until EOF.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, sent as the greeting.
    pub name: String,
    /// Connections accepted (probes included).
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a greeting echo backend on an ephemeral port.
    pub async fn start(name: &str) -> Backend {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Backend::serve(shared_listener(any).expect("bind backend"), name)
    }

    /// Starts a greeting echo backend on a given address (to bring a node back).
    pub async fn start_at(addr: SocketAddr, name: &str) -> Backend {
        Backend::serve(shared_listener(addr).expect("rebind backend"), name)
    }

    fn serve(listener: TcpListener, name: &str) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if stream.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = stream.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        Backend {
            addr,
            name: name.to_owned(),
            accepted,
            task,
        }
    }

    /// Closes the listener (connections already open stay), so new connects are refused.
    /// The port stays reserved until the returned [`Stopped`] drops, so that no other test's
    /// listener can take it meanwhile and turn refused connects into successes.
    /// The hold is bound before the listener closes (both share the port by SO_REUSEPORT), so
    /// there is no moment at which the port is free.
    pub async fn stop(self) -> Stopped {
        let hold = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        hold.set_reuse_address(true).expect("SO_REUSEADDR");
        hold.set_reuse_port(true).expect("SO_REUSEPORT");
        hold.bind(&self.addr.into())
            .expect("hold the stopped backend's port");
        self.task.abort();
        let _ = self.task.await;
        Stopped {
            addr: self.addr,
            _hold: hold,
        }
    }
}

/// Opens `count` connections through `addr` one after another, keeping them open; returns them
/// with the name of the node that served each.
pub async fn hold(addr: SocketAddr, count: usize) -> Vec<(TcpStream, String)> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(connect_named(addr).await.expect("proxied connection"));
    }
    held
}

/// The names of the nodes that served `held`, in order.
pub fn names(held: &[(TcpStream, String)]) -> Vec<String> {
    held.iter().map(|(_, name)| name.clone()).collect()
}

/// A listener on `addr` that a [`Stopped`] hold (or a backend brought back) may share by
/// SO_REUSEPORT, so a port changes hands without ever being free for another test to take.
fn shared_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A stopped backend's address, bound but not listening: connects to it are refused.
pub struct Stopped {
    /// The address.
    pub addr: SocketAddr,
    _hold: socket2::Socket,
}

/// Asserts that tierlb closes `client` with a clean end of stream and not a byte, within
/// [`WAIT`].
pub async fn assert_closed_without_a_byte(client: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed without a byte: {read:?}");
}

/// Connects to `addr` and reads the backend's greeting line.
pub async fn connect_named(addr: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut name = String::new();
        reader.read_line(&mut name).await?;
        if name.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the greeting",
            ));
        }
        Ok((reader.into_inner(), name.trim_end().to_owned()))
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))?
}

/// A listener that never accepts and whose accept queue is full, so further SYNs are dropped
/// and connects hang until they time out. Needs no privileges.
pub struct Blackhole {
    /// Where it listens.
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<socket2::Socket>,
}

impl Blackhole {
    /// Makes a blackhole on an ephemeral port.
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        listener.bind(&any.into()).expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let mut queued = Vec::new();
        let mut full = false;
        for _ in 0..16 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            match s.connect_timeout(&addr.into(), Duration::from_millis(300)) {
                Ok(()) => queued.push(s),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "the accept queue never filled up");
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so both ends can agree on content.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of a byte slice.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Reads `stream` to EOF, returning the byte count and SHA-256.
pub async fn hash_to_eof<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
}

/// What a hashing backend saw on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashReport {
    /// Bytes received and their SHA-256.
    pub received: (u64, [u8; 32]),
    /// SHA-256 of what it sent.
    pub sent: [u8; 32],
}

/// A stream of any length made of one 1 MiB block of `pattern(seed)` repeated, each copy
/// stamped with its index in its first 8 bytes, so that lost, repeated or reordered blocks
/// change the hash. Costs 1 MiB of memory whatever the length.
pub struct Stamped {
    block: Vec<u8>,
}

impl Stamped {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Stamped {
        Stamped {
            block: pattern(seed, 1 << 20),
        }
    }

    /// Calls `f` with each chunk of the first `total` bytes, in order.
    fn chunks(&self, total: usize, mut f: impl FnMut(&[u8])) {
        let mut chunk = self.block.clone();
        let (mut done, mut index) = (0usize, 0u64);
        while done < total {
            chunk[..8].copy_from_slice(&index.to_le_bytes());
            let n = chunk.len().min(total - done);
            f(&chunk[..n]);
            done += n;
            index += 1;
        }
    }

    /// SHA-256 of the first `total` bytes.
    pub fn sha256(&self, total: usize) -> [u8; 32] {
        let mut hasher = Sha256::new();
        self.chunks(total, |c| hasher.update(c));
        hasher.finalize().into()
    }

    /// Writes the first `total` bytes to `w`, then shuts its write side; returns their SHA-256.
    pub async fn send<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        total: usize,
    ) -> std::io::Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        let mut chunk = self.block.clone();
        let (mut done, mut index) = (0usize, 0u64);
        while done < total {
            chunk[..8].copy_from_slice(&index.to_le_bytes());
            let n = chunk.len().min(total - done);
            w.write_all(&chunk[..n]).await?;
            hasher.update(&chunk[..n]);
            done += n;
            index += 1;
        }
        w.shutdown().await?;
        Ok(hasher.finalize().into())
    }
}

/// A node on 127.0.0.1 (port 0) that runs `serve` on each connection it accepts (with the
/// peer's address), each in a task of its own; returns its address.
pub async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(serve(stream, peer));
        }
    });
    addr
}

/// A backend that, on each connection, sends `size` bytes of `Stamped::new(seed)` while it
/// reads and hashes everything the client sends, concurrently; then reports both hashes.
pub async fn start_hashing_backend(
    size: usize,
    seed: u64,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<HashReport>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let data = Arc::new(Stamped::new(seed));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let (received, sent) = tokio::join!(hash_to_eof(&mut r), data.send(&mut w, size));
                if let (Ok(received), Ok(sent)) = (received, sent) {
                    // Probes connect and close at once: report only real transfers.
                    if received.0 > 0 {
                        let _ = tx.send(HashReport { received, sent });
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// CPU time (user + system) a process has used, in clock ticks, from /proc.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The command name (field 2) may hold spaces; fields after its closing ')' are plain.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// One HTTP/1.1 request over a fresh connection; returns the status code and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_with_body(addr, method, path, headers, "").await
}

/// [`http`] with a request body.
pub async fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let length = body.len();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {length}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("admin answered in time")
        .expect("admin request");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, decode_chunked(head, body))
}

/// The body of a response, with chunked transfer encoding undone if the head says so.
fn decode_chunked(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// The value of one metric sample, e.g. `metric(text, "tierlb_node_up{node=\"a\"}")`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether an external tool runs. If it does not, the check that needs it is skipped with a
/// printed reason, unless `TIERLB_REQUIRE_TOOLS` is set (CI sets it once it has installed
/// them), in which case a missing tool fails the test.
pub fn tool_available(program: &str) -> bool {
    let runs = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    present_or_skip(program, runs)
}

/// `present`, after the rule for what a check needs (a tool, a library): when it is missing,
/// the check is skipped with a printed reason, unless `TIERLB_REQUIRE_TOOLS` is set, in which
/// case the test fails.
pub fn present_or_skip(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            std::env::var_os("TIERLB_REQUIRE_TOOLS").is_none(),
            "{what} is required (TIERLB_REQUIRE_TOOLS is set) but is not here"
        );
        eprintln!("skipping the {what} check: {what} is not installed (bash .ci/run installs it)");
    }
    present
}

/// A node that accepts every connection and drops it at once: with a FIN, or with a reset
/// (`reset`), or after `after` with nothing sent (a node's own idle timeout).
pub struct Dropper {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted (probes included).
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Dropper {
    /// Starts a dropping node on an ephemeral port.
    pub async fn start(reset: bool, after: Duration) -> Dropper {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if reset {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    }
                    drop(stream);
                });
            }
        });
        Dropper {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A future run on a namespace thread's own runtime.
pub type LocalFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// `tierlb -c CONFIG` started by `launcher` (`unshare`, or `unshare` inside a network
/// namespace) in a mount namespace of its own, whose /etc/resolv.conf (bind-mounted from the
/// returned folder) names 127.0.0.1 as the one DNS server, asked once with a 1 s timeout:
/// the host's resolver configuration is left alone.
pub fn with_resolv_conf(mut launcher: Command, config: &str) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("write resolv.conf");
    launcher
        .args([
            "--mount",
            "--",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/resolv.conf && exec \"$2\" -c \"$3\"",
            "sh",
        ])
        .arg(resolv)
        .arg(bin())
        .arg(config);
    (launcher, dir)
}

/// A network namespace made for one test, removed when dropped (even when the test fails).
pub struct Netns {
    /// Its name, for `ip netns exec`.
    pub name: String,
}

impl Netns {
    /// Makes a namespace with its loopback up, or `None` (with the reason printed) where
    /// namespaces cannot be made here.
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("tierlb-{tag}-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &name]).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!(
                "skipping: cannot make a network namespace (ip netns add needs root and iproute2)"
            );
            return None;
        }
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn exec(&self, args: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .status()
            .expect("run ip netns exec");
        assert!(status.success(), "{args:?} failed in {}", self.name);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` to its end on a thread that has entered the namespace, with its own
    /// runtime, so that the sockets it opens live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> LocalFuture<T> + Send + 'static) -> T {
        self.thread(f).join().expect("namespace thread")
    }

    /// Starts `f` on a thread inside the namespace that runs until the test process ends
    /// (a server, say), and returns what it sends on `ready`.
    pub fn serve<T: Send + 'static>(
        &self,
        f: impl FnOnce(std::sync::mpsc::Sender<T>) -> LocalFuture<()> + Send + 'static,
    ) -> T {
        let (ready, started) = std::sync::mpsc::channel();
        let _thread = self.thread(move || f(ready));
        started.recv().expect("the namespace server started")
    }

    fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> LocalFuture<T> + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The status page at `admin` as headless Chromium renders it (its script run), or `None`
/// where Chromium is not installed (see [`tool_available`]).
pub fn rendered_page(admin: SocketAddr) -> Option<String> {
    if !tool_available("chromium") {
        return None;
    }
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
