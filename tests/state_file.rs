//! Operator decisions that survive a restart, against the real binary: a drain taken through
//! the admin endpoint is in the state file at once and in force after `kill -9` and a new
//! start; a corrupt state file is a warning and a clean start; `drained = true` in a node's
//! table drains it from the start, and a reload that changes it applies the change.

mod common;

use std::net::SocketAddr;

use common::{connect_named, http, metric, Backend, ConfigFile, Tierlb, WAIT};
use nix::sys::signal::Signal;

const TOKEN: &str = "state-file-test-token-0123456789";

/// A config of two nodes with an admin endpoint on port 0, the state file at `state`.
fn config(nodes: &[Backend], state: &std::path::Path, node1: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nstate_file = \"{}\"\nnodes = [{node1}, \"{}\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        state.display(),
        nodes[1].addr
    )
}

/// Two nodes, and where a state file may go (the directory lives as long as its guard).
async fn setup() -> (Vec<Backend>, tempfile::TempDir, std::path::PathBuf) {
    let nodes = vec![Backend::start("n1").await, Backend::start("n2").await];
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    (nodes, dir, state)
}

/// Whether the admin endpoint at `admin` reports `node` drained (from its metrics).
async fn drained(admin: SocketAddr, node: SocketAddr) -> Option<f64> {
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    metric(
        &text,
        &format!("tierlb_node_drained{{service=\"default\",node=\"{node}\"}}"),
    )
}

/// Six new clients, and the nodes they landed on.
async fn six(addr: SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(connect_named(addr).await.expect("client").1);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_survives_kill_9_and_a_corrupt_file_starts_clean() {
    let (nodes, _dir, state) = setup().await;
    let n1 = nodes[0].addr;
    let file = ConfigFile::new(&config(&nodes, &state, &format!("\"{n1}\"")));

    let first = Tierlb::with_config(&file);
    let admin = first.logged_addr("admin listening");
    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = http(
        admin,
        "POST",
        &format!("/nodes/{n1}/drain"),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let saved = std::fs::read_to_string(&state).expect("the state file is written at once");
    assert!(
        saved.contains(&n1.to_string()) && saved.contains("\"drained\":true"),
        "{saved}"
    );
    first.signal(Signal::SIGKILL);
    drop(first);

    let second = Tierlb::with_config(&file);
    let admin = second.logged_addr("admin listening");
    assert!(
        second.wait_log("state file read", 1).is_some(),
        "{:?}",
        second.lines()
    );
    assert_eq!(
        drained(admin, n1).await,
        Some(1.0),
        "still drained after a restart"
    );
    assert!(
        six(second.addr).await.iter().all(|n| n == "n2"),
        "no new client on the drained node"
    );
    drop(second);

    std::fs::write(&state, "{ this is not what tierlb wrote").expect("corrupt the file");
    let third = Tierlb::with_config(&file);
    let admin = third.logged_addr("admin listening");
    assert!(
        third
            .wait_log("state file is not one tierlb wrote", 1)
            .is_some(),
        "a warning: {:?}",
        third.lines()
    );
    assert_eq!(drained(admin, n1).await, Some(0.0), "a clean start");
    assert!(six(third.addr).await.iter().any(|n| n == "n1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_in_the_config_holds_from_the_start_and_a_reload_changes_it() {
    let (nodes, _dir, state) = setup().await;
    let n1 = nodes[0].addr;
    let drained_n1 = format!("{{ address = \"{n1}\", drained = true }}");
    let file = ConfigFile::new(&config(&nodes, &state, &drained_n1));
    let tierlb = Tierlb::with_config(&file);
    let admin = tierlb.logged_addr("admin listening");
    assert_eq!(drained(admin, n1).await, Some(1.0));
    assert!(six(tierlb.addr).await.iter().all(|n| n == "n2"));

    file.rewrite(&config(&nodes, &state, &format!("\"{n1}\"")));
    tierlb.signal(Signal::SIGHUP);
    assert!(
        tierlb
            .wait_log_all(&["enabled", &n1.to_string()], 1, WAIT)
            .is_some(),
        "{:?}",
        tierlb.lines()
    );
    assert_eq!(drained(admin, n1).await, Some(0.0));
    assert!(six(tierlb.addr).await.iter().any(|n| n == "n1"));
}
