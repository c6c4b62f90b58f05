//! The queue through the real binary: while every node is at its `max_connections`, clients
//! wait in arrival order, are connected as slots free, are closed and counted past
//! `[timeouts] queue`, and leave the queue when they hang up.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_closed_without_a_byte, hold, http, metric, Backend, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// One of `lb`'s metric samples for the `default` service.
async fn sample(admin: SocketAddr, lb: SocketAddr, name: &str) -> f64 {
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    let labels = format!("{{service=\"default\",listener=\"{lb}\"}}");
    metric(&text, &format!("{name}{labels}")).unwrap_or(-1.0)
}

/// Waits (bounded) until `lb`'s queue holds `want` clients.
async fn queue_reaches(admin: SocketAddr, lb: SocketAddr, want: f64) {
    for _ in 0..1500 {
        if sample(admin, lb, "tierlb_queue_length").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the queue never held {want} clients");
}

/// The greeting line a queued client gets once it is connected to a node.
async fn greeting(client: &mut TcpStream) -> String {
    let mut line = String::new();
    let mut reader = BufReader::new(client);
    tokio::time::timeout(WAIT, reader.read_line(&mut line))
        .await
        .expect("connected before the wait limit")
        .expect("read the greeting");
    line.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_connect_in_arrival_order_and_time_out_when_no_slot_frees() {
    let n1 = Backend::start("n1").await;
    let n2 = Backend::start("n2").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\n\
         nodes = [\n  {{ address = \"{}\", max_connections = 5 }},\n  {{ address = \"{}\", max_connections = 5 }},\n]\n\
         [timeouts]\nqueue = \"3s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        n1.addr, n2.addr
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let mut held = hold(lb.addr, 10).await;
    assert_eq!(sample(admin, lb.addr, "tierlb_queue_length").await, 0.0);

    // Five clients queue, one after another.
    let mut queued = Vec::new();
    for k in 1..=5 {
        queued.push(TcpStream::connect(lb.addr).await.expect("accepted"));
        queue_reaches(admin, lb.addr, f64::from(k)).await;
    }
    // A sixth joins and hangs up: it leaves the queue.
    let leaver = TcpStream::connect(lb.addr).await.expect("accepted");
    queue_reaches(admin, lb.addr, 6.0).await;
    drop(leaver);
    queue_reaches(admin, lb.addr, 5.0).await;

    // Each closed held connection lets the first queued client in, in arrival order.
    for (k, client) in queued.iter_mut().take(3).enumerate() {
        drop(held.remove(0));
        let name = greeting(client).await;
        assert!(
            name == "n1" || name == "n2",
            "client {k} reached a node: {name}"
        );
        queue_reaches(admin, lb.addr, (4 - k) as f64).await;
    }

    // No slot frees for the other two: closed at the queue timeout, and counted.
    for client in &mut queued[3..] {
        assert_closed_without_a_byte(client).await;
    }
    queue_reaches(admin, lb.addr, 0.0).await;
    assert_eq!(
        sample(admin, lb.addr, "tierlb_queue_timeouts_total").await,
        2.0
    );
    assert_eq!(
        sample(admin, lb.addr, "tierlb_listener_failed_total").await,
        2.0,
        "the timed-out clients are failures; the one that left is not"
    );
    assert_eq!(
        sample(admin, lb.addr, "tierlb_queue_wait_seconds_count").await,
        6.0,
        "every client that left the queue is in the wait histogram"
    );
    lb.wait_log("queue timeout", 2)
        .expect("each timeout is logged with its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_queue_off_a_client_finding_every_node_full_is_closed_at_once() {
    let n1 = Backend::start("n1").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [{{ address = \"{}\", max_connections = 1 }}]\n\
         [timeouts]\nqueue = \"0s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        n1.addr
    ));
    let lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    let _held = hold(lb.addr, 1).await;
    let mut client = TcpStream::connect(lb.addr).await.expect("accepted");
    assert_closed_without_a_byte(&mut client).await;
    assert_eq!(
        sample(admin, lb.addr, "tierlb_listener_failed_total").await,
        1.0
    );
    assert_eq!(
        sample(admin, lb.addr, "tierlb_queue_wait_seconds_count").await,
        0.0,
        "nobody queued"
    );
}
