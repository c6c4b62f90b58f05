//! A node's runtime weight through the admin endpoint, against the real binary: weights
//! 3/1/1 split the next 50 held connections 30/10/10; weight 0 takes no new client; a bad
//! body is refused; a reload that changes the node's weight in the file resets it.

mod common;

use std::net::SocketAddr;

use common::{hold, http, http_with_body, metric, names, Backend, ConfigFile, Tierlb};
use nix::sys::signal::Signal;

const TOKEN: &str = "weight-test-admin-token-0123456789";

/// `PUT path` with `body` and the token; the status code and body.
async fn put(admin: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    http_with_body(admin, "PUT", path, &[("Authorization", &auth)], body).await
}

/// The config: three nodes, `n1` with `weight`, an admin endpoint with the token.
fn config(nodes: &[Backend], weight: u32) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nnodes = [{{ address = \"{}\", weight = {weight} }}, \"{}\", \"{}\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    )
}

/// How many of `held` each node serves, n1 to n3.
fn split(held: &[(tokio::net::TcpStream, String)]) -> [usize; 3] {
    let names = names(held);
    ["n1", "n2", "n3"].map(|n| names.iter().filter(|m| *m == n).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_weight_sets_the_split_and_a_reload_of_that_weight_resets_it() {
    let nodes = vec![
        Backend::start("n1").await,
        Backend::start("n2").await,
        Backend::start("n3").await,
    ];
    let file = ConfigFile::new(&config(&nodes, 1));
    let tierlb = Tierlb::with_config(&file);
    let admin = tierlb.logged_addr("admin listening");
    let n1 = nodes[0].addr;
    let path = format!("/nodes/{n1}/weight");

    let (code, body) = put(admin, &path, "257").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = put(admin, &path, "3").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"weight\":3") && body.contains("\"runtime_weight\":3"),
        "{body}"
    );
    let held = hold(tierlb.addr, 50).await;
    assert_eq!(
        split(&held),
        [30, 10, 10],
        "weights 3/1/1 on held connections"
    );
    drop(held);
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    let sample = format!("tierlb_node_weight{{service=\"default\",node=\"{n1}\"}}");
    assert_eq!(metric(&text, &sample), Some(3.0));

    let (code, body) = put(admin, &path, "0").await;
    assert_eq!(code, 200, "{body}");
    let held = hold(tierlb.addr, 6).await;
    assert_eq!(split(&held)[0], 0, "weight 0 takes no new client");
    drop(held);

    // A reload that leaves n1's weight alone keeps the runtime one; one that changes it resets.
    tierlb.signal(Signal::SIGHUP);
    assert!(tierlb.wait_log("reload", 1).is_some());
    let (_, status) = http(admin, "GET", "/status", &[]).await;
    assert!(status.contains("\"runtime_weight\":0"), "{status}");
    file.rewrite(&config(&nodes, 2));
    tierlb.signal(Signal::SIGHUP);
    assert!(
        tierlb.wait_log("node runtime weight reset", 1).is_some(),
        "{:?}",
        tierlb.lines()
    );
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(metric(&text, &sample), Some(2.0), "the file's weight again");
    let held = hold(tierlb.addr, 8).await;
    assert_eq!(split(&held), [4, 2, 2], "weights 2/1/1 from the file");
}
