//! SIGHUP reload through the real binary: nodes added and removed without cutting a held
//! connection, and an invalid file that leaves the old configuration serving.

mod common;

use common::{connect_named, toml_nodes, Backend, ConfigFile, Tierlb};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(nodes: &[std::net::SocketAddr]) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
        toml_nodes(nodes)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_nodes_without_cutting_connections() {
    let a = Backend::start("nodeA").await;
    let b = Backend::start("nodeB").await;
    let c = Backend::start("nodeC").await;
    let file = ConfigFile::new(&config(&[a.addr, b.addr]));
    let tierlb = Tierlb::with_config(&file);

    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_named(tierlb.addr).await.expect("held connection"));
    }
    let on = |name: &str| held.iter().filter(|(_, n)| n == name).count();
    assert_eq!((on("nodeA"), on("nodeB")), (5, 5));

    // Remove A, add C.
    file.rewrite(&config(&[b.addr, c.addr]));
    tierlb.signal(Signal::SIGHUP);
    tierlb
        .wait_log("configuration reloaded", 1)
        .expect("the reload is applied");
    assert!(tierlb
        .wait_log_all(
            &["node removed", &format!("node={}", a.addr)],
            1,
            common::WAIT
        )
        .is_some());

    // New clients: the new node first (it has no connection yet), never the removed one.
    let mut fresh = Vec::new();
    for _ in 0..5 {
        fresh.push(connect_named(tierlb.addr).await.expect("new client"));
    }
    assert!(
        fresh.iter().all(|(_, n)| n == "nodeC"),
        "{:?}",
        names(&fresh)
    );
    for _ in 0..6 {
        fresh.push(connect_named(tierlb.addr).await.expect("new client"));
    }
    assert!(
        fresh.iter().all(|(_, n)| n != "nodeA"),
        "{:?}",
        names(&fresh)
    );

    // Every held connection, the removed node's included, still carries bytes both ways.
    for (i, (stream, name)) in held.iter_mut().enumerate() {
        let message = format!("held {i} on {name}\n");
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut echo = vec![0u8; message.len()];
        stream
            .read_exact(&mut echo)
            .await
            .expect("echo after the reload");
        assert_eq!(echo, message.as_bytes());
        stream.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("clean end");
        assert!(rest.is_empty());
    }
}

fn names(list: &[(tokio::net::TcpStream, String)]) -> Vec<&str> {
    list.iter().map(|(_, n)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_the_old_configuration() {
    let a = Backend::start("nodeA").await;
    let file = ConfigFile::new(&config(&[a.addr]));
    let mut tierlb = Tierlb::with_config(&file);
    file.rewrite(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [{{ address = \"{}\", weight = 0 }}]\n",
        a.addr
    ));
    tierlb.signal(Signal::SIGHUP);
    let line = tierlb
        .wait_log("reload failed", 1)
        .expect("the bad file is reported");
    assert!(
        line.contains("`nodes[0].weight` is 0"),
        "same message as --check: {line}"
    );
    assert!(tierlb.is_running());
    let (_, name) = connect_named(tierlb.addr).await.expect("still serving");
    assert_eq!(name, "nodeA");
    assert_eq!(tierlb.count(&["configuration reloaded"]), 0);
}
