//! UDP nodes and clients for the UDP service tests: an echo node that tags each reply with
//! its name (and answers the probe `ping` with `pong`), and a client socket that sends a
//! datagram and reads the reply with its sender.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

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
