//! `/live` and `/ready` through the real binary: ready while a node of every service is up
//! and tierlb accepts; not ready with every node down or while draining; live until exit.

mod common;

use common::{connect_named, http, Backend, ConfigFile, Tierlb, WAIT};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_nodes_and_the_drain_and_live_lasts_until_exit() {
    let n1 = Backend::start("n1").await;
    let n2 = Backend::start("n2").await;
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{}\", \"{}\"]\n[health]\ninterval = \"100ms\"\nrise = 1\nfall = 1\n[timeouts]\ndrain = \"20s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        n1.addr, n2.addr
    ));
    let mut lb = Tierlb::with_config(&config);
    let admin = lb.logged_addr("admin listening");
    assert_eq!(
        http(admin, "GET", "/live", &[]).await,
        (200, "live\n".to_owned())
    );
    assert_eq!(http(admin, "GET", "/ready", &[]).await.0, 200);

    let addr1 = n1.addr;
    let stopped = [n1.stop().await, n2.stop().await];
    lb.wait_log("no node is up", 1).expect("every node down");
    let (code, body) = http(admin, "GET", "/ready", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: no node is up in default\n")
    );
    assert_eq!(
        http(admin, "GET", "/live", &[]).await.0,
        200,
        "live all the same"
    );

    drop(stopped);
    let _back = Backend::start_at(addr1, "n1").await;
    lb.wait_log("service resumed", 1).expect("a node back");
    assert_eq!(http(admin, "GET", "/ready", &[]).await.0, 200);

    // An open connection keeps the drain going; meanwhile not ready, still live.
    let (held, _) = connect_named(lb.addr).await.expect("client");
    lb.signal(Signal::SIGTERM);
    lb.wait_log("draining", 1).expect("drain starts");
    let (code, body) = http(admin, "GET", "/ready", &[]).await;
    assert_eq!((code, body.as_str()), (503, "not ready: draining\n"));
    assert_eq!(http(admin, "GET", "/live", &[]).await.0, 200);
    drop(held);
    assert!(lb.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "gone after exit"
    );
}
