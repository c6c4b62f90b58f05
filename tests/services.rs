//! Several services in one process: each listener spreads over its own nodes only, a node's
//! state and counters belong to its service, drain is per service, and SIGHUP adds, removes
//! and refuses services.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::{connect_named, http, metric, toml_nodes, Backend, ConfigFile, Tierlb};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "services-test-admin-token";

/// Opens `count` connections to `addr`, keeping them; returns them and the nodes' tallies.
async fn hold(addr: SocketAddr, count: usize) -> (Vec<TcpStream>, HashMap<String, usize>) {
    let mut held = Vec::new();
    let mut tally = HashMap::new();
    for _ in 0..count {
        let (stream, name) = connect_named(addr).await.expect("served");
        *tally.entry(name).or_insert(0) += 1;
        held.push(stream);
    }
    (held, tally)
}

/// Sends a line through `stream` and reads it back.
async fn echo(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"still\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.is_ok() && &buf == b"still\n"
}

fn service_table(name: &str, nodes: &[SocketAddr]) -> String {
    format!(
        "[services.{name}]\nlisten = \"127.0.0.1:0\"\nnodes = {}\n",
        toml_nodes(nodes)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_spread_over_their_own_nodes_and_keep_their_own_state() {
    let mut web = Vec::new();
    let mut db = Vec::new();
    for i in 1..=3 {
        web.push(Backend::start(&format!("web{i}")).await);
        db.push(Backend::start(&format!("db{i}")).await);
    }
    let web_addrs: Vec<_> = web.iter().map(|b| b.addr).collect();
    let db_addrs: Vec<_> = db.iter().map(|b| b.addr).collect();
    let config = ConfigFile::new(&format!(
        "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n{}{}",
        service_table("web", &web_addrs),
        service_table("db", &db_addrs)
    ));
    let tierlb = Tierlb::start(&["-c", config.path(), "--admin", "127.0.0.1:0"]);
    let admin = tierlb.logged_addr("admin listening");
    let (web_addr, db_addr) = (tierlb.service_addr("web"), tierlb.service_addr("db"));

    let (_web_held, web_tally) = hold(web_addr, 30).await;
    let (_db_held, db_tally) = hold(db_addr, 30).await;
    for i in 1..=3 {
        assert_eq!(
            web_tally.get(&format!("web{i}")),
            Some(&10),
            "{web_tally:?}"
        );
        assert_eq!(db_tally.get(&format!("db{i}")), Some(&10), "{db_tally:?}");
    }

    // A node of web dies: db's nodes keep their health and counters.
    let killed = web.pop().expect("web3").stop().await;
    tierlb
        .wait_log_all(
            &["node down", "service=web", &format!("node={}", killed.addr)],
            1,
            common::WAIT,
        )
        .expect("web3 goes down");
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    for node in &db_addrs {
        let labels = format!("{{service=\"db\",node=\"{node}\"}}");
        assert_eq!(metric(&text, &format!("tierlb_node_up{labels}")), Some(1.0));
        assert_eq!(
            metric(&text, &format!("tierlb_node_connections_total{labels}")),
            Some(10.0)
        );
        let down = format!(
            "tierlb_node_health_transitions_total{{service=\"db\",node=\"{node}\",to=\"down\"}}"
        );
        assert_eq!(metric(&text, &down), Some(0.0));
    }
    let killed_up = format!("tierlb_node_up{{service=\"web\",node=\"{}\"}}", killed.addr);
    assert_eq!(metric(&text, &killed_up), Some(0.0));
    if common::tool_available("promtool") {
        let mut check = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        std::io::Write::write_all(check.stdin.as_mut().expect("stdin"), text.as_bytes())
            .expect("feed promtool");
        let out = check.wait_with_output().expect("promtool result");
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, body) = http(admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web", "db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_address_in_two_services_is_drained_in_one_only() {
    let shared = Backend::start("shared").await;
    let other = Backend::start("other").await;
    let config = ConfigFile::new(&format!(
        "{}{}[admin]\ntoken = \"{TOKEN}\"\n",
        service_table("a", &[shared.addr, other.addr]),
        service_table("b", &[shared.addr])
    ));
    let tierlb = Tierlb::start(&["-c", config.path(), "--admin", "127.0.0.1:0"]);
    let admin = tierlb.logged_addr("admin listening");
    let bearer = format!("Bearer {TOKEN}");
    let path = format!("/services/a/nodes/{}/drain", shared.addr);
    let (code, _) = http(admin, "POST", &path, &[("Authorization", &bearer)]).await;
    assert_eq!(code, 200);
    let (code, _) = http(
        admin,
        "POST",
        &format!("/nodes/{}/drain", shared.addr),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(
        code, 400,
        "the old path needs a service when there are several"
    );

    let (_held_a, tally_a) = hold(tierlb.service_addr("a"), 6).await;
    assert_eq!(tally_a.get("other"), Some(&6), "drained in a: {tally_a:?}");
    let (_held_b, tally_b) = hold(tierlb.service_addr("b"), 3).await;
    assert_eq!(
        tally_b.get("shared"),
        Some(&3),
        "still serving in b: {tally_b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_services_and_refuses_a_taken_address() {
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    let three = Backend::start("three").await;
    let base = format!(
        "{}{}",
        service_table("first", &[one.addr]),
        service_table("second", &[two.addr])
    );
    let config = ConfigFile::new(&base);
    let tierlb = Tierlb::with_config(&config);
    let first = tierlb.service_addr("first");
    let second = tierlb.service_addr("second");

    // Add a third service.
    config.rewrite(&format!("{base}{}", service_table("third", &[three.addr])));
    tierlb.signal(Signal::SIGHUP);
    assert!(tierlb.wait_log("configuration reloaded", 1).is_some());
    let third = tierlb.service_addr("third");
    let (_, name) = connect_named(third)
        .await
        .expect("the added service serves");
    assert_eq!(name, "three");

    // A reload whose new service's address is taken changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    config.rewrite(&format!(
        "{base}{}[services.fourth]\nlisten = \"{taken_addr}\"\nnodes = [\"{}\"]\n",
        service_table("third", &[three.addr]),
        one.addr
    ));
    tierlb.signal(Signal::SIGHUP);
    let failed = tierlb
        .wait_log("reload failed", 1)
        .expect("the bind error is logged");
    assert!(
        failed.contains(&format!("cannot listen on {taken_addr} (service fourth)")),
        "{failed}"
    );
    for addr in [first, second, third] {
        assert!(connect_named(addr).await.is_ok(), "{addr} still serves");
    }

    // Remove the second service while a connection to it is open.
    let (mut held, _) = connect_named(second).await.expect("served");
    config.rewrite(&format!(
        "{}{}",
        service_table("first", &[one.addr]),
        service_table("third", &[three.addr])
    ));
    tierlb.signal(Signal::SIGHUP);
    assert!(tierlb.wait_log("configuration reloaded", 2).is_some());
    assert!(tierlb.wait_log("service removed", 1).is_some());
    assert!(
        tierlb
            .wait_log_all(&["listener closed", "service=second"], 1, common::WAIT)
            .is_some(),
        "its listener is closed"
    );
    let refused = TcpStream::connect(second).await;
    assert_eq!(
        refused.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "the removed service's address refuses new clients"
    );
    assert!(echo(&mut held).await, "its open connection still works");
    held.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).await.expect("to EOF");
    assert!(connect_named(first).await.is_ok());
    drop(taken);
}
