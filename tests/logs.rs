//! The log lines an operator reads: `node down` with how many nodes are still up, one warning
//! when none is, `node up` with how long the node was down, one line when service resumes,
//! client failures rate-limited to a few lines and a summary per second; every line about a
//! service's clients or nodes names the service, and no line says a value twice. A reload
//! error is one line per error, and a reload logs what it changed in a node.

mod common;

use common::{connect_named, toml_nodes, Backend, ConfigFile, Tierlb};
use nix::sys::signal::Signal;

/// Asserts that `line` names the service and says none of `values` in its message as well as
/// in its fields (the message is what stands before the first `key=value` field).
fn one_mention(line: &str, service: &str, values: &[&str]) {
    assert!(line.contains(&format!("service={service}")), "{line}");
    let message = line.split(" service=").next().unwrap_or(line);
    for value in values {
        assert!(!message.contains(value), "`{value}` said twice: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_up_lines_say_what_is_left_and_how_long() {
    let node1 = Backend::start("node1").await;
    let node2 = Backend::start("node2").await;
    let (a1, a2) = (node1.addr, node2.addr);
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
        toml_nodes(&[a1, a2])
    ));
    let tierlb = Tierlb::with_config(&config);
    let stopped1 = node1.stop().await;
    let line = tierlb
        .wait_log_all(&["node down", &format!("node={a1}")], 1, common::WAIT)
        .expect("node1 down");
    assert!(line.contains("up=1 total=2"), "{line}");
    one_mention(&line, "default", &["1 of 2"]);
    let _stopped2 = node2.stop().await;
    let line = tierlb
        .wait_log_all(&["node down", &format!("node={a2}")], 1, common::WAIT)
        .expect("node2 down");
    assert!(line.contains("up=0 total=2"), "{line}");
    let none = tierlb.wait_log("no node is up", 1).expect("said");
    one_mention(&none, "default", &[]);

    // Every client now fails at once (each node refuses): a burst of 60.
    for _ in 0..60 {
        assert!(connect_named(tierlb.addr).await.is_err(), "no node serves");
    }
    let summary = tierlb
        .wait_log("more client failures in the last second", 1)
        .expect("a summary line for the failures not logged one by one");
    assert!(summary.contains("rate-limited"), "{summary}");
    one_mention(&summary, "default", &[]);
    let closing = tierlb
        .wait_log("closing client", 1)
        .expect("a failed client");
    one_mention(&closing, "default", &[]);
    let one_by_one = tierlb.count(&["closing client"]);
    assert!(
        (5..=15).contains(&one_by_one),
        "a few per second, not one per client: {one_by_one}"
    );

    drop(stopped1);
    let back = Backend::start_at(a1, "node1").await;
    let line = tierlb
        .wait_log_all(&["node up", &format!("node={a1}")], 1, common::WAIT)
        .expect("node1 back");
    assert!(line.contains("up=1 total=2"), "{line}");
    assert!(line.contains("down_for="), "{line}");
    one_mention(&line, "default", &["1 of 2", "nodes up"]);
    let resumed = tierlb.wait_log("service resumed", 1).expect("said");
    one_mention(&resumed, "default", &[]);
    assert_eq!(tierlb.count(&["no node is up"]), 1, "said once");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_logs_each_error_on_a_line_and_each_node_change() {
    let node = Backend::start("node1").await;
    let text = |weight: u32, extra: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nnodes = [{{ address = \"{}\", weight = {weight} }}]\n{extra}",
            node.addr
        )
    };
    let file = ConfigFile::new(&text(1, ""));
    let tierlb = Tierlb::with_config(&file);
    // Two errors: one log line each, each a whole log line of its own.
    file.rewrite(&text(1, "retries = \"two\"\n[timeouts]\nconect = \"1s\"\n"));
    tierlb.signal(Signal::SIGHUP);
    tierlb
        .wait_log("reload failed", 2)
        .expect("both errors reported");
    let failed: Vec<String> = tierlb
        .lines()
        .into_iter()
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed.iter().all(|l| l.contains("ERROR")), "{failed:#?}");
    assert!(failed[0].contains("`retries`") && failed[1].contains("`timeouts.conect`"));
    for line in tierlb.lines() {
        assert!(
            ["INFO", "WARN", "ERROR", "DEBUG"]
                .iter()
                .any(|level| line.contains(level)),
            "every line has its level: {line:?}"
        );
    }
    // A weight change is logged, with the service, once.
    file.rewrite(&text(3, ""));
    tierlb.signal(Signal::SIGHUP);
    let changed = tierlb
        .wait_log("node changed", 1)
        .expect("the change is logged");
    assert!(changed.contains("weight 1 -> 3"), "{changed}");
    one_mention(&changed, "default", &[]);
    tierlb
        .wait_log("configuration reloaded", 1)
        .expect("the good file is in force");
}
