//! UDP nodes and clients for the UDP service tests: an echo node that tags each reply with
//! its name (and answers the probe `ping` with `pong`), and a client socket that sends a
//! datagram and reads the reply with its sender.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{http, WAIT};

/// A reply comes within this on loopback, or not at all.
pub const REPLY: Duration = Duration::from_secs(2);

/// A UDP echo node: each datagram `X` is answered `NAME:X` (the probe `ping` with `pong`).
pub struct UdpNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name.
    pub name: String,
    /// Datagrams received, probes included.
    pub received: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl UdpNode {
    /// Starts a node on an ephemeral port of 127.0.0.1.
    pub async fn start(name: &str) -> UdpNode {
        UdpNode::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), name).await
    }

    /// Nodes `n1` … `nN`, each on an ephemeral port.
    pub async fn several(n: usize) -> Vec<UdpNode> {
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            nodes.push(UdpNode::start(&format!("n{i}")).await);
        }
        nodes
    }

    /// Starts a node on `addr` (to bring one back on its port).
    pub async fn start_at(addr: SocketAddr, name: &str) -> UdpNode {
        let socket = UdpSocket::bind(addr).await.expect("bind a UDP node");
        let addr = socket.local_addr().expect("node addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        let tag = format!("{name}:");
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = if &buf[..n] == b"ping" {
                    b"pong".to_vec()
                } else {
                    [tag.as_bytes(), &buf[..n]].concat()
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpNode {
            addr,
            name: name.to_owned(),
            received,
            task,
        }
    }

    /// Closes the node's socket: datagrams to its port now draw an ICMP port unreachable.
    pub async fn stop(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// A client on its own ephemeral port (one flow).
pub struct UdpClient {
    /// Its socket.
    pub socket: UdpSocket,
}

impl UdpClient {
    /// A new client socket.
    pub async fn new() -> UdpClient {
        UdpClient {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind a client"),
        }
    }

    /// A new client whose first datagram, `message`, is answered: it and the answering node's
    /// name.
    pub async fn answered(to: SocketAddr, message: &str) -> (UdpClient, String) {
        let client = UdpClient::new().await;
        let (name, from) = client
            .ask(to, message, REPLY)
            .await
            .unwrap_or_else(|| panic!("no reply to {message:?}"));
        assert_eq!(from, to, "the reply comes from the service's address");
        (client, name)
    }

    /// Sends `message` to `to` and waits up to `within` for a reply: the node name it is
    /// tagged with, and where it came from (`None` when no reply came).
    pub async fn ask(
        &self,
        to: SocketAddr,
        message: &str,
        within: Duration,
    ) -> Option<(String, SocketAddr)> {
        self.socket
            .send_to(message.as_bytes(), to)
            .await
            .expect("send");
        let mut buf = vec![0u8; 65_535];
        let (n, from) = tokio::time::timeout(within, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (name, echoed) = text.split_once(':')?;
        assert_eq!(echoed, message, "the reply echoes the datagram");
        Some((name.to_owned(), from))
    }
}

/// The TOML list of `nodes`' addresses.
pub fn nodes_toml(nodes: &[&UdpNode]) -> String {
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
    format!("[{}]", list.join(", "))
}

/// A config with one UDP service on `nodes`, probes every `probe` (send `ping`, expect
/// `pong`), `extra` lines in `[timeouts]`, and an admin endpoint.
pub fn config(nodes: &[&UdpNode], probe: &str, timeouts: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\naccess_log = true\nnodes = {}\n[services.dns.health]\ninterval = \"{probe}\"\nsend = \"ping\"\nexpect = \"pong\"\n[services.dns.timeouts]\n{timeouts}\n",
        nodes_toml(nodes)
    )
}

/// The admin endpoint's `/status`.
pub async fn status(admin: SocketAddr) -> Value {
    let (code, body) = http(admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Service `name` in `status`.
pub fn service<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status:#}"))
}

/// The node at `addr` in `service`.
pub fn node_of(service: &Value, addr: SocketAddr) -> &Value {
    service["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("no node {addr} in {service:#}"))
}

/// Polls `/status` until `ok` holds for service `dns`, at most `WAIT`.
pub async fn wait_for(admin: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(admin).await;
        if ok(service(&s, "dns")) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Many flows from one socket: flow `i` sends from its own loopback address (127.20.x.y,
/// chosen per datagram with `IP_PKTINFO`; every address of 127/8 is this host's, so the
/// replies come back to this socket), so that tens of thousands of flows need no descriptor
/// each on the test's side.
pub struct Crowd {
    socket: std::net::UdpSocket,
    target: nix::sys::socket::SockaddrIn,
}

impl Crowd {
    /// A crowd sending to `target` (IPv4).
    pub fn new(target: SocketAddr) -> Crowd {
        let SocketAddr::V4(target) = target else {
            panic!("the crowd sends to IPv4 addresses");
        };
        // Bound to every address so that it receives what is sent back to 127.20.x.y; the
        // traffic is all on loopback.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the crowd's socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Crowd {
            socket,
            target: target.into(),
        }
    }

    /// Flow `i`'s address.
    pub fn source(i: usize) -> std::net::Ipv4Addr {
        let third = i / 250;
        std::net::Ipv4Addr::new(
            127,
            20 + u8::try_from(third / 256).expect("fewer than 1.2 million flows"),
            (third % 256) as u8,
            (i % 250 + 1) as u8,
        )
    }

    fn send(&self, i: usize) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let info = nix::libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: nix::libc::in_addr {
                s_addr: u32::from(Crowd::source(i)).to_be(),
            },
            ipi_addr: nix::libc::in_addr { s_addr: 0 },
        };
        let message = format!("crowd {i}");
        // A datagram not sent is sent again by `ask`.
        let _ = sendmsg(
            self.socket.as_raw_fd(),
            &[std::io::IoSlice::new(message.as_bytes())],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&self.target),
        );
    }

    /// Sends one datagram from each flow in `flows` and waits until each is answered (sent
    /// again every 500 ms while not, at most `WAIT` in all), 200 flows at a time so that no
    /// socket's buffer overflows; the node that answered each.
    pub fn ask(&self, flows: std::ops::Range<usize>) -> Vec<String> {
        let first = flows.start;
        let mut answered: Vec<Option<String>> = vec![None; flows.len()];
        let deadline = std::time::Instant::now() + WAIT;
        let mut buf = [0u8; 256];
        for chunk in flows.collect::<Vec<_>>().chunks(200) {
            let mut sent = std::time::Instant::now();
            chunk.iter().for_each(|&i| self.send(i));
            while chunk.iter().any(|&i| answered[i - first].is_none()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "flows {chunk:?} not all answered within {WAIT:?}"
                );
                if let Ok(n) = self.socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let parsed = text.split_once(":crowd ").and_then(|(name, i)| {
                        i.parse::<usize>().ok().map(|i| (name.to_owned(), i))
                    });
                    if let Some((name, i)) = parsed {
                        if let Some(slot) = i.checked_sub(first).and_then(|k| answered.get_mut(k)) {
                            *slot = Some(name);
                        }
                    }
                }
                if sent.elapsed() >= Duration::from_millis(500) {
                    sent = std::time::Instant::now();
                    chunk
                        .iter()
                        .filter(|&&i| answered[i - first].is_none())
                        .for_each(|&i| self.send(i));
                }
            }
        }
        answered.into_iter().flatten().collect()
    }
}
