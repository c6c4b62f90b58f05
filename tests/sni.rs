//! SNI routing through the real binary: services sharing one listen address, each client
//! sent by the server name of its ClientHello, every byte of the hello passed on untouched.
//! The nodes are greeting echo backends: each client reads its node's name, then its own
//! hello echoed back, so the routing and the bytes are both checked.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{http, metric, Backend, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A TLS 1.2/1.3-style ClientHello record with `name` as its server name (none: no SNI
/// extension), padded with `padding` bytes of a padding extension.
fn client_hello(name: Option<&str>, padding: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = name {
        let n = name.as_bytes();
        let list = 3 + n.len();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&u16::try_from(list + 2).expect("short").to_be_bytes());
        ext.extend_from_slice(&u16::try_from(list).expect("short").to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&u16::try_from(n.len()).expect("short").to_be_bytes());
        ext.extend_from_slice(n);
    }
    if padding > 0 {
        ext.extend_from_slice(&[0, 21]);
        ext.extend_from_slice(&u16::try_from(padding).expect("short").to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, padding));
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&u16::try_from(ext.len()).expect("short").to_be_bytes());
    body.extend_from_slice(&ext);
    let mut message = vec![1];
    message.extend_from_slice(&u32::try_from(body.len()).expect("short").to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&u16::try_from(message.len()).expect("short").to_be_bytes());
    record.extend_from_slice(&message);
    record
}

/// How a client writes its first bytes.
#[derive(Clone, Copy)]
enum Pace {
    /// All at once.
    Whole,
    /// One byte per segment.
    ByteByByte,
    /// In two segments this far apart.
    Split(Duration),
}

/// Sends `first` through `addr` at `pace`; returns the node's name and whether `first` came
/// back whole (`None`: the connection was closed without a node).
async fn exchange(addr: SocketAddr, first: &[u8], pace: Pace) -> Option<(String, bool)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    match pace {
        Pace::Whole => stream.write_all(first).await.ok()?,
        Pace::ByteByByte => {
            for byte in first {
                stream.write_all(&[*byte]).await.ok()?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Pace::Split(gap) => {
            let (a, b) = first.split_at(first.len() / 2);
            stream.write_all(a).await.ok()?;
            tokio::time::sleep(gap).await;
            stream.write_all(b).await.ok()?;
        }
    }
    let mut reader = BufReader::new(stream);
    let mut name = String::new();
    let read = tokio::time::timeout(WAIT, reader.read_line(&mut name)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return None;
    }
    let mut echo = vec![0u8; first.len()];
    let whole = tokio::time::timeout(WAIT, reader.read_exact(&mut echo))
        .await
        .is_ok_and(|r| r.is_ok())
        && echo == first;
    Some((name.trim_end().to_owned(), whole))
}

struct Shared {
    tierlb: Tierlb,
    admin: SocketAddr,
    config: ConfigFile,
    text: String,
    _nodes: Vec<Backend>,
}

/// tierlb with services `a` (a.example.test: nodes a1, a2), `b` (*.b.example.test: b1) and,
/// if `default`, `other` (no sni: o1), all on one address; a client has `handshake` to send
/// its hello.
async fn start(default: bool, handshake: &str) -> Shared {
    start_with(default, handshake, "").await
}

/// [`start`], with `extra` added to the top of the config.
async fn start_with(default: bool, handshake: &str, extra: &str) -> Shared {
    let nodes = vec![
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b1").await,
        Backend::start("o1").await,
    ];
    let mut text = format!(
        "{extra}[timeouts]\nhandshake = \"{handshake}\"\n\
         [services.a]\nlisten = \"127.0.0.1:0\"\nsni = [\"a.example.test\"]\nnodes = [\"{}\", \"{}\"]\n\
         [services.b]\nlisten = \"127.0.0.1:0\"\nsni = [\"*.b.example.test\"]\nnodes = [\"{}\"]\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    );
    if default {
        text.push_str(&format!(
            "[services.other]\nlisten = \"127.0.0.1:0\"\nnodes = [\"{}\"]\n",
            nodes[3].addr
        ));
    }
    text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let config = ConfigFile::new(&text);
    let tierlb = Tierlb::with_config(&config);
    let admin = tierlb.logged_addr("admin listening");
    Shared {
        tierlb,
        admin,
        config,
        text,
        _nodes: nodes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_lands_on_its_own_services_nodes() {
    let lb = start_with(true, "3s", "access_log = true\n").await;
    let addr = lb.tierlb.addr;
    let mut a = BTreeMap::new();
    for i in 0..30 {
        let (name, whole) = exchange(addr, &client_hello(Some("a.example.test"), 0), Pace::Whole)
            .await
            .unwrap_or_else(|| panic!("client {i} of a closed"));
        assert!(whole, "the hello reaches the node untouched");
        *a.entry(name).or_insert(0) += 1;
    }
    let want: BTreeMap<String, i32> = [("a1".to_owned(), 15), ("a2".to_owned(), 15)].into();
    assert_eq!(a, want, "service a's nodes, balanced");
    let cases = [
        (Some("x.b.example.test"), "b1"),
        (Some("X.B.Example.Test."), "b1"),
        (Some("A.EXAMPLE.TEST."), "a1"),
        (Some("y.x.b.example.test"), "o1"),
        (Some("b.example.test"), "o1"),
        (Some("unknown.test"), "o1"),
        (None, "o1"),
    ];
    for (sni, want) in cases {
        let (name, whole) = exchange(addr, &client_hello(sni, 0), Pace::Whole)
            .await
            .unwrap_or_else(|| panic!("{sni:?} closed"));
        assert!(whole);
        assert!(
            name == want || (want == "a1" && name == "a2"),
            "{sni:?} went to {name}"
        );
    }
    let plain = b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n";
    let (name, whole) = exchange(addr, plain, Pace::Whole)
        .await
        .expect("plain HTTP served");
    assert_eq!(
        (name.as_str(), whole),
        ("o1", true),
        "not TLS: the default service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_in_pieces_is_routed() {
    let lb = start(true, "3s").await;
    let hello = client_hello(Some("x.b.example.test"), 600);
    for pace in [Pace::ByteByByte, Pace::Split(Duration::from_millis(200))] {
        let (name, whole) = exchange(lb.tierlb.addr, &hello, pace)
            .await
            .expect("served");
        assert_eq!((name.as_str(), whole), ("b1", true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_no_route_or_no_hello_are_closed_and_counted() {
    let lb = start(false, "500ms").await;
    let addr = lb.tierlb.addr;
    assert!(
        exchange(addr, &client_hello(Some("unknown.test"), 0), Pace::Whole)
            .await
            .is_none()
    );
    assert!(exchange(addr, &client_hello(None, 0), Pace::Whole)
        .await
        .is_none());
    let mut garbage = vec![22u8, 3, 1, 0x50, 0];
    garbage.extend(std::iter::repeat_n(0xabu8, 20 * 1024));
    assert!(
        exchange(addr, &garbage, Pace::Whole).await.is_none(),
        "garbage closed"
    );
    // Silent: closed at the handshake timeout (500 ms).
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "closed without a byte");
    println!("silent client closed after {:?}", started.elapsed());
    let (_, metrics) = http(lb.admin, "GET", "/metrics", &[]).await;
    let sample = |reason: &str| {
        metric(
            &metrics,
            &format!("tierlb_sni_unmatched_total{{listener=\"{addr}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(sample("no-route"), Some(3.0), "{metrics}");
    assert_eq!(sample("no-hello"), Some(1.0), "{metrics}");
    let (_, status) = http(lb.admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let listener = &status["shared_listeners"][0];
    assert_eq!(listener["listen"], addr.to_string());
    assert_eq!(
        listener["routes"][1]["sni"][0], "*.b.example.test",
        "{listener:#}"
    );
    assert_eq!(listener["unmatched"]["no_route"], 3);
    let mut lb = lb;
    assert!(lb.tierlb.is_running(), "no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_header_comes_first_and_its_client_is_carried_on() {
    let extra = "accept_proxy_from = [\"127.0.0.1\"]\nproxy_protocol = \"v2\"\n";
    let lb = start_with(true, "3s", extra).await;
    // A v2 header for a TCP4 client 192.0.2.7:4242 to 198.51.100.1:443.
    let mut first = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    first.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1]);
    first.extend_from_slice(&4242u16.to_be_bytes());
    first.extend_from_slice(&443u16.to_be_bytes());
    let hello = client_hello(Some("x.b.example.test"), 0);
    first.extend_from_slice(&hello);
    let mut stream = TcpStream::connect(lb.tierlb.addr).await.expect("connect");
    stream.write_all(&first).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut name = String::new();
    reader.read_line(&mut name).await.expect("greeting");
    assert_eq!(
        name.trim_end(),
        "b1",
        "routed by the hello after the header"
    );
    // The node was sent its own v2 header (16 + 12 bytes), then the hello, and echoed both.
    let mut echo = vec![0u8; 28 + hello.len()];
    reader.read_exact(&mut echo).await.expect("echo");
    assert_eq!(
        &echo[16..20],
        &[192, 0, 2, 7],
        "the client's address carried on"
    );
    assert_eq!(&echo[24..26], &4242u16.to_be_bytes());
    assert_eq!(&echo[28..], &hello[..], "the hello untouched");
}

/// The inode of the socket listening on `port` (from /proc/net/tcp).
fn listening_inode(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.ends_with(&local) && *fields.get(3)? == "0A").then(|| fields[9].to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_name_and_removes_one_without_rebinding() {
    let lb = start(true, "3s").await;
    let addr = lb.tierlb.addr;
    let inode = listening_inode(addr.port()).expect("the shared listener in /proc/net/tcp");
    let hello = client_hello(Some("a.example.test"), 0);
    let mut open = TcpStream::connect(addr).await.expect("connect");
    open.write_all(&hello).await.expect("hello");
    let mut open = BufReader::new(open);
    let mut name = String::new();
    open.read_line(&mut name).await.expect("greeting");
    let mut echo = vec![0u8; hello.len()];
    open.read_exact(&mut echo).await.expect("echo");
    assert!(name.starts_with('a'), "{name}");

    // Service a goes, service d (d.example.test) comes.
    let d1 = Backend::start("d1").await;
    let start_a = lb.text.find("[services.a]").expect("a");
    let end_a = lb.text.find("[services.b]").expect("b");
    let mut text = lb.text.clone();
    text.replace_range(start_a..end_a, "");
    text.push_str(&format!(
        "[services.d]\nlisten = \"127.0.0.1:0\"\nsni = [\"d.example.test\"]\nnodes = [\"{}\"]\n",
        d1.addr
    ));
    lb.config.rewrite(&text);
    lb.tierlb.signal(nix::sys::signal::Signal::SIGHUP);
    lb.tierlb
        .wait_log("configuration reloaded", 1)
        .expect("the reload is put in force");
    assert_eq!(
        node_for(addr, "d.example.test").await.as_deref(),
        Some("d1"),
        "the new name"
    );
    assert_eq!(
        node_for(addr, "a.example.test").await.as_deref(),
        Some("o1"),
        "a's name: the default now"
    );
    assert_eq!(
        node_for(addr, "x.b.example.test").await.as_deref(),
        Some("b1")
    );
    open.get_mut()
        .write_all(b"still here\n")
        .await
        .expect("write");
    let mut more = [0u8; 11];
    open.read_exact(&mut more)
        .await
        .expect("the connection to a goes on");
    assert_eq!(&more, b"still here\n");
    assert_eq!(
        listening_inode(addr.port()),
        Some(inode),
        "the listener was never rebound"
    );
    assert_eq!(lb.tierlb.count(&["shared listener closed"]), 0);
}

/// The node a client naming `sni` reaches through `addr`.
async fn node_for(addr: SocketAddr, sni: &str) -> Option<String> {
    let (name, whole) = exchange(addr, &client_hello(Some(sni), 0), Pace::Whole).await?;
    whole.then_some(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_turn_an_address_of_its_own_into_a_shared_one() {
    let node = Backend::start("n").await;
    // A fixed port, so that the service's listen address is the same in both configs.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let taken = free.local_addr().expect("addr");
    drop(free);
    let text = format!(
        "[services.web]\nlisten = \"{taken}\"\nnodes = [\"{}\"]\n",
        node.addr
    );
    let config = ConfigFile::new(&text);
    let tierlb = Tierlb::with_config(&config);
    config.rewrite(&format!(
        "[services.web]\nlisten = \"{taken}\"\nnodes = [\"{0}\"]\n\
         [services.tls]\nlisten = \"{taken}\"\nsni = [\"t.example.test\"]\nnodes = [\"{0}\"]\n",
        node.addr
    ));
    tierlb.signal(nix::sys::signal::Signal::SIGHUP);
    let line = tierlb.wait_log("reload failed", 1).expect("refused");
    assert!(line.contains("restart to apply"), "{line}");
}
