//! Operating details through the real binary: DNS names for nodes (one that resolves, one
//! that does not) and JSON logs.

mod common;

use std::process::Command;

use common::{connect_named, Backend, ConfigFile, Tierlb};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_localhost_works() {
    let node = Backend::start("node1").await;
    let named = format!("localhost:{}", node.addr.port());
    let tierlb = Tierlb::start(&["-l", "127.0.0.1:0", "-p", &named]);
    for _ in 0..3 {
        let (_, name) = connect_named(tierlb.addr)
            .await
            .expect("served through a DNS name");
        assert_eq!(name, "node1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_down_with_reason_dns() {
    let node = Backend::start("node1").await;
    // tierlb runs in a private mount namespace whose resolv.conf points at 127.0.0.1, where
    // nothing answers: the lookup fails at once and no query leaves the loopback interface.
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"no-such-node.invalid:80\", \"{}\"]\n[health]\ninterval = \"300ms\"\n",
        node.addr
    ));
    let (cmd, _resolv) = common::with_resolv_conf(Command::new("unshare"), config.path());
    let tierlb = Tierlb::spawn(cmd);

    let down = tierlb
        .wait_log_all(
            &["node down", "node=no-such-node.invalid:80"],
            1,
            common::WAIT,
        )
        .expect("the unresolvable node goes down");
    assert!(down.contains("dns"), "reason names dns: {down}");
    for i in 0..10 {
        let (_, name) = connect_named(tierlb.addr)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(name, "node1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let node = Backend::start("node1").await;
    let mut tierlb = Tierlb::start(&[
        "--log-format",
        "json",
        "-l",
        "127.0.0.1:0",
        "-p",
        &node.addr.to_string(),
    ]);
    connect_named(tierlb.addr).await.expect("served");
    tierlb.signal(Signal::SIGTERM);
    let status = tierlb.wait_exit(common::WAIT).expect("exits");
    assert!(status.success());
    let lines = tierlb.lines();
    assert!(lines.len() >= 4, "{lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["fields"]["message"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("\"message\":\"listening\"")));
}
