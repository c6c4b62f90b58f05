//! The PROXY protocol through the real binary: v1 and v2 headers written to nodes before
//! every client byte (probes sending LOCAL / UNKNOWN), and headers accepted from listed
//! sources only, without losing a byte, with every bad header closing only its client.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::{pattern, sha256, ConfigFile, Tierlb, WAIT};
use ppp::v2::{Builder, Command, Protocol};
use ppp::{HeaderResult, PartialResult};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What a PROXY-reading node saw of one connection.
#[derive(Debug, Clone)]
struct Seen {
    /// The header's source, or "LOCAL"/"UNKNOWN" for a probe's, or the v1 line itself.
    header: String,
    /// The payload after the header: length and sha256.
    len: usize,
    hash: [u8; 32],
}

/// A node that reads a PROXY header (any version), then hashes the rest to EOF and answers
/// one line, `LEN HEXHASH`. Every connection's view is kept.
async fn reading_node() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let (header, used) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let parsed = HeaderResult::parse(&buf);
                    if parsed.is_incomplete() {
                        continue;
                    }
                    break match parsed {
                        HeaderResult::V1(Ok(h)) => (h.header.trim_end().to_owned(), h.header.len()),
                        HeaderResult::V2(Ok(h)) => {
                            let what = match (h.command, h.addresses) {
                                (Command::Local, _) => "LOCAL".to_owned(),
                                (_, ppp::v2::Addresses::IPv4(a)) => {
                                    format!("{}:{}", a.source_address, a.source_port)
                                }
                                (_, other) => format!("{other:?}"),
                            };
                            (what, h.len())
                        }
                        _ => ("INVALID".to_owned(), 0),
                    };
                };
                let mut hasher = Sha256::new();
                hasher.update(&buf[used..]);
                let mut len = buf.len() - used;
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            hasher.update(&chunk[..n]);
                            len += n;
                        }
                    }
                }
                let hash: [u8; 32] = hasher.finalize().into();
                log.lock().expect("log").push(Seen { header, len, hash });
                let _ = stream.write_all(format!("{len}\n").as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// Sends `data` (after `prefix`) to `lb` from `from`, half-closes, and waits for the node's
/// answer; true if the node answered (the connection was not closed on us).
async fn send(lb: SocketAddr, from: IpAddr, prefix: &[u8], data: &[u8], bytewise: bool) -> bool {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let mut stream = socket.connect(lb).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    if bytewise {
        for b in prefix {
            stream.write_all(&[*b]).await.expect("write a byte");
        }
    } else {
        let _ = stream.write_all(prefix).await;
    }
    let _ = stream.write_all(data).await;
    let _ = stream.shutdown().await;
    let mut answer = String::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_string(&mut answer)).await;
    matches!(read, Ok(Ok(_))) && !answer.is_empty()
}

/// Whether a connection the node saw was a v1 probe's (the test's nodes read v1).
fn is_probe(seen: &Seen) -> bool {
    seen.header == "PROXY UNKNOWN"
}

/// The last client connection the node saw, probes aside.
fn last_client(seen: &Mutex<Vec<Seen>>) -> Seen {
    let seen = seen.lock().expect("log");
    seen.iter()
        .rev()
        .find(|s| !is_probe(s))
        .cloned()
        .expect("a client seen")
}

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    Builder::with_addresses(
        ppp::v2::Version::Two | Command::Proxy,
        Protocol::Stream,
        (source, destination),
    )
    .build()
    .expect("a v2 header")
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_the_clients_address_then_every_byte_and_probes_say_local() {
    for version in ["v1", "v2"] {
        let (node, seen) = reading_node().await;
        let config = ConfigFile::new(&format!(
            "listen = \"127.0.0.1:0\"\nproxy_protocol = \"{version}\"\nnodes = [\"{node}\"]\n[health]\ninterval = \"100ms\"\n"
        ));
        let lb = Tierlb::with_config(&config);
        for len in [1usize, 100 * 1024, 64 * 1024 * 1024] {
            let data = pattern(len as u64, len);
            assert!(
                send(lb.addr, LOCALHOST, b"", &data, false).await,
                "{version} {len}"
            );
            let got = seen
                .lock()
                .expect("log")
                .iter()
                .rev()
                .find(|s| s.len == len)
                .cloned();
            let got = got.unwrap_or_else(|| panic!("{version}: no {len}-byte client seen"));
            assert_eq!(
                got.hash,
                sha256(&data),
                "{version} {len}: every byte, in order"
            );
            assert!(got.header.contains("127.0.0.1"), "{version}: {got:?}");
        }
        let is_probe = |s: &Seen| s.header == "LOCAL" || s.header == "PROXY UNKNOWN";
        let deadline = std::time::Instant::now() + WAIT;
        while !seen.lock().expect("log").iter().any(is_probe) {
            assert!(
                std::time::Instant::now() < deadline,
                "{version}: no probe header seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let all = seen.lock().expect("log").clone();
        let clients = all
            .iter()
            .filter(|s| s.header.contains("127.0.0.1"))
            .count();
        assert_eq!(clients, 3, "{version}: probes are not clients: {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_listed_sources_only_and_bad_ones_close_only_their_client() {
    let (node, seen) = reading_node().await;
    // Listed: 127.0.0.2 only. The node reads v1.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\naccept_proxy_from = [\"127.0.0.2\"]\nnodes = [{{ address = \"{node}\", proxy_protocol = \"v1\" }}]\n[timeouts]\nhandshake = \"300ms\"\n"
    ));
    let lb = Tierlb::with_config(&config);
    let listed = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let real: SocketAddr = "203.0.113.7:4242".parse().expect("addr");
    let header = v2_header(real, "10.0.0.1:443".parse().expect("addr"));
    let data = pattern(7, 5000);
    for bytewise in [false, true] {
        assert!(send(lb.addr, listed, &header, &data, bytewise).await);
        let last = last_client(&seen);
        assert_eq!(
            last.header, "PROXY TCP4 203.0.113.7 10.0.0.1 4242 443",
            "{bytewise}"
        );
        assert_eq!(
            (last.len, last.hash),
            (data.len(), sha256(&data)),
            "nothing lost"
        );
    }

    let mut oversized = header[..12].to_vec();
    oversized.extend_from_slice(&[0x21, 0x11, 0x07, 0xd0]);
    oversized.extend_from_slice(&[0; 2000]);
    let bad: [(&[u8], &str); 4] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "not a PROXY protocol header",
        ),
        (&header[..20], "closed after 20 bytes"),
        (b"", "no PROXY header within 300ms"),
        (&oversized, "over the 1024-byte limit"),
    ];
    let clients = |seen: &Mutex<Vec<Seen>>| {
        let seen = seen.lock().expect("log");
        seen.iter().filter(|s| !is_probe(s)).count()
    };
    let before = clients(&seen);
    for (bytes, why) in bad {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(listed, 0)).expect("bind");
        let mut stream: TcpStream = socket.connect(lb.addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        if why.contains("closed after") {
            stream.shutdown().await.expect("half-close");
        }
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "{why}: closed without an answer"
        );
        lb.wait_log_all(&["closing client", why], 1, WAIT)
            .unwrap_or_else(|| panic!("no log line for {why}"));
    }
    assert_eq!(
        clients(&seen),
        before,
        "no bad client reached the node (probes aside)"
    );

    // From an unlisted source the same bytes are data: the node gets them unparsed.
    assert!(send(lb.addr, LOCALHOST, &header, &data, false).await);
    let last = last_client(&seen);
    assert!(last.header.starts_with("PROXY TCP4 127.0.0.1 "), "{last:?}");
    let raw = [header.as_slice(), &data].concat();
    assert_eq!((last.len, last.hash), (raw.len(), sha256(&raw)));
    assert!(
        send(lb.addr, listed, &header, &data, false).await,
        "still serving"
    );
}
