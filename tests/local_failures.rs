//! Failures of tierlb's own host are never blamed on a node: out of local ports
//! (EADDRNOTAVAIL), in a network namespace whose ephemeral port range has one port.

mod common;

use std::net::SocketAddr;

use common::{ConfigFile, Netns, Tierlb};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects from an explicitly bound port (outside the one-port ephemeral range) and reads
/// the greeting; `None` if the connection closes first.
async fn client(from: u16, to: SocketAddr) -> (TcpStream, Option<String>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], from)))
        .expect("bind the client port");
    let stream = socket.connect(to).await.expect("accepted");
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(common::WAIT, reader.read_line(&mut line)).await;
    let name = match read {
        Ok(Ok(n)) if n > 0 => Some(line.trim_end().to_owned()),
        _ => None,
    };
    (reader.into_inner(), name)
}

#[test]
fn no_free_local_port_marks_no_node_down() {
    let Some(ns) = Netns::new("ports") else {
        return;
    };
    // The backend lives on a thread of its own inside the namespace, for the whole test.
    let node = ns.serve(|ready| {
        Box::pin(async move {
            let backend = common::Backend::start("node1").await;
            let _ = ready.send(backend.addr);
            std::future::pending::<()>().await;
        })
    });

    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{node}\"]\n[health]\ninterval = \"1h\"\nfall = 1\n"
    ));
    let mut cmd = ns.command(common::bin());
    cmd.args(["-c", config.path()]);
    let tierlb = Tierlb::spawn(cmd);
    // From now on every connect from an ephemeral port has the same one port to use.
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=40000 40000",
    ]);

    let addr = tierlb.addr;
    let (first, second) = ns.run(move || {
        Box::pin(async move {
            // The first client takes the one port towards the node; the second cannot get one.
            let (mut held, first) = client(50001, addr).await;
            let (_, second) = client(50002, addr).await;
            held.write_all(b"still here\n")
                .await
                .expect("held connection works");
            (first, second)
        })
    });
    assert_eq!(first.as_deref(), Some("node1"));
    assert_eq!(second, None, "the second client could not be connected");
    let line = tierlb
        .wait_log("closing client", 1)
        .expect("the failure is logged");
    assert!(
        line.contains("local failure, not the node's") && line.contains("ip_local_port_range"),
        "logged as a local failure with the host tuning: {line}"
    );
    assert_eq!(tierlb.count(&["node down"]), 0, "no node was blamed");
    assert_eq!(tierlb.count(&["connect failed"]), 1, "and none retried");
}
