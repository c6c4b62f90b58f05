//! The admin endpoint through the real binary: exact counters in `/metrics` (checked by
//! promtool), `/status` agreeing with them, the HTML page in headless Chromium, node drain
//! with its token rules, and bad paths and methods.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{connect_named, http, metric, toml_nodes, Backend, ConfigFile, Tierlb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-admin-token-for-tests";

struct Setup {
    tierlb: Tierlb,
    admin: std::net::SocketAddr,
    nodes: Vec<Backend>,
    _config: ConfigFile,
}

async fn setup(names: &[&str], extra: &str) -> Setup {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(Backend::start(name).await);
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = {}\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n{extra}",
        toml_nodes(&addrs)
    ));
    let tierlb = Tierlb::start(&["-c", config.path(), "--admin", "127.0.0.1:0"]);
    let admin = tierlb.logged_addr("admin listening");
    Setup {
        tierlb,
        admin,
        nodes,
        _config: config,
    }
}

/// Sends one line through a fresh proxied connection and reads it back; returns the node name.
async fn one_exchange(addr: std::net::SocketAddr) -> String {
    let (mut stream, name) = connect_named(addr).await.expect("proxied connection");
    stream.write_all(b"ping\n").await.expect("send");
    let mut echo = [0u8; 5];
    stream.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping\n");
    stream.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("read to end");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_and_pass_promtool() {
    let s = setup(&["node1", "node2", "node3"], "").await;
    let mut served: HashMap<String, u64> = HashMap::new();
    for _ in 0..7 {
        *served.entry(one_exchange(s.tierlb.addr).await).or_default() += 1;
    }
    assert!(s.tierlb.wait_log("connection closed", 7).is_some());
    let addrs: Vec<_> = s.nodes.iter().map(|n| n.addr).collect();
    let killed = addrs[2];
    // Kill node3 by closing its listener: the probes take it down.
    let mut s = s;
    let node3 = s.nodes.pop().expect("node3");
    let _stopped = node3.stop().await;
    s.tierlb
        .wait_log_all(&["node down", &format!("node={killed}")], 1, common::WAIT)
        .expect("node3 goes down");

    let (code, text) = http(s.admin, "GET", "/metrics", &[]).await;
    assert_eq!(code, 200);
    for (name, node) in [("node1", addrs[0]), ("node2", addrs[1]), ("node3", killed)] {
        let label = format!("{{service=\"default\",node=\"{node}\"}}");
        let want = served.get(name).copied().unwrap_or(0) as f64;
        assert_eq!(
            metric(&text, &format!("tierlb_node_connections_total{label}")),
            Some(want),
            "{name}\n{text}"
        );
        // "ping\n" each way, plus the greeting from the node.
        let greeting = (name.len() + 1) as f64;
        assert_eq!(
            metric(&text, &format!("tierlb_node_sent_bytes_total{label}")),
            Some(want * 5.0)
        );
        assert_eq!(
            metric(&text, &format!("tierlb_node_received_bytes_total{label}")),
            Some(want * (5.0 + greeting))
        );
        assert_eq!(
            metric(&text, &format!("tierlb_node_active_connections{label}")),
            Some(0.0)
        );
        let up = if node == killed { 0.0 } else { 1.0 };
        assert_eq!(
            metric(&text, &format!("tierlb_node_up{label}")),
            Some(up),
            "{name} up"
        );
    }
    let listener = format!("{{service=\"default\",listener=\"{}\"}}", s.tierlb.addr);
    assert_eq!(
        metric(&text, &format!("tierlb_listener_accepted_total{listener}")),
        Some(7.0)
    );
    assert_eq!(
        metric(&text, &format!("tierlb_listener_failed_total{listener}")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("tierlb_listener_active_connections{listener}")
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "tierlb_node_health_transitions_total{{service=\"default\",node=\"{killed}\",to=\"down\"}}"
            )
        ),
        Some(1.0)
    );
    // Connect latency is a histogram: cumulative buckets, +Inf and _count equal to the
    // successful connects.
    assert!(text.contains("# TYPE tierlb_node_connect_latency_seconds histogram"));
    for node in [addrs[0], addrs[1]] {
        let prefix = format!(
            "tierlb_node_connect_latency_seconds_bucket{{service=\"default\",node=\"{node}\",le="
        );
        let buckets: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(buckets.len() > 5, "{text}");
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "cumulative: {buckets:?}"
        );
        let labels = format!("{{service=\"default\",node=\"{node}\"}}");
        let count = metric(
            &text,
            &format!("tierlb_node_connect_latency_seconds_count{labels}"),
        );
        let connects = metric(&text, &format!("tierlb_node_connections_total{labels}"));
        assert_eq!(count, connects, "_count is the successful connects");
        assert_eq!(buckets.last().copied(), connects, "+Inf holds them all");
    }

    assert_eq!(
        metric(
            &text,
            &format!(
                "tierlb_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tierlb_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "tierlb_reloads_total{result=\"error\"}"),
        Some(0.0)
    );
    assert!(text.contains("# TYPE tierlb_node_probe_failures_total counter"));
    // The process's own families, as Prometheus' client libraries name them; and nothing of a
    // cluster without one.
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v = metric(&text, family).unwrap_or_else(|| panic!("{family}\n{text}"));
        // CPU time counts in clock ticks: a quiet test process may not have used one yet.
        assert!(
            v > 0.0 || family == "process_cpu_seconds_total",
            "{family} = {v}"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = metric(&text, "process_start_time_seconds").unwrap_or_default();
    assert!(
        (now - started).abs() < 600.0,
        "started {started}, now {now}"
    );
    for cluster_only in [
        "tierlb_cluster_",
        "tierlb_node_peer_",
        "tierlb_node_suspect",
    ] {
        assert!(
            !text.contains(cluster_only),
            "{cluster_only}* without [cluster]:\n{text}"
        );
    }
    if common::tool_available("promtool") {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
        let out = check.wait_with_output().expect("promtool result");
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_agrees_with_metrics_and_the_page_shows_the_nodes() {
    let s = setup(&["node1", "node2", "node3"], "").await;
    for _ in 0..5 {
        one_exchange(s.tierlb.addr).await;
    }
    assert!(s.tierlb.wait_log("connection closed", 5).is_some());
    let down = s.nodes[1].addr;
    let mut s = s;
    let node2 = s.nodes.remove(1);
    let _stopped = node2.stop().await;
    s.tierlb
        .wait_log_all(&["node down", &format!("node={down}")], 1, common::WAIT)
        .expect("node2 goes down");

    let (code, body) = http(s.admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let (_, text) = http(s.admin, "GET", "/metrics", &[]).await;
    let nodes = status["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        let address = node["address"].as_str().expect("address");
        let label = format!("{{service=\"default\",node=\"{address}\"}}");
        assert_eq!(
            node["connections"].as_f64(),
            metric(&text, &format!("tierlb_node_connections_total{label}")),
            "{address}"
        );
        let up = if node["up"].as_bool() == Some(true) {
            1.0
        } else {
            0.0
        };
        assert_eq!(Some(up), metric(&text, &format!("tierlb_node_up{label}")));
        let check = &node["last_check"];
        assert!(
            check["reason"].is_string(),
            "last check with its reason: {node}"
        );
        if address == down.to_string() {
            assert_eq!(node["state"], "down");
            assert!(
                check["reason"].as_str().unwrap_or("").contains("refused"),
                "{node}"
            );
        } else {
            assert_eq!(node["state"], "up");
        }
    }
    assert_eq!(status["listener"]["accepted"].as_f64(), Some(5.0));

    if let Some(dom) = common::rendered_page(s.admin) {
        for node in nodes {
            let address = node["address"].as_str().expect("address");
            assert!(dom.contains(address), "page shows {address}:\n{dom}");
        }
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&down.to_string()))
            .expect("row of the down node");
        assert!(
            row.contains("class=\"down\"") && row.contains(">down<"),
            "{row}"
        );
        assert_eq!(dom.matches(">up<").count(), 2, "{dom}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_through_the_api_needs_the_token() {
    let s = setup(
        &["node1", "node2"],
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    let node1 = s.nodes[0].addr;
    // One held connection on each node.
    let mut held = [
        connect_named(s.tierlb.addr).await.expect("first"),
        connect_named(s.tierlb.addr).await.expect("second"),
    ];
    let path = format!("/nodes/{node1}/drain");
    let (code, _) = http(s.admin, "POST", &path, &[]).await;
    assert_eq!(code, 401, "no token");
    let (code, _) = http(
        s.admin,
        "POST",
        &path,
        &[("Authorization", "Bearer wrong-token-wrong-token")],
    )
    .await;
    assert_eq!(code, 403, "wrong token");
    let (_, text) = http(s.admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        metric(
            &text,
            &format!("tierlb_node_drained{{service=\"default\",node=\"{node1}\"}}")
        ),
        Some(0.0),
        "nothing changed"
    );

    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = http(s.admin, "POST", &path, &[("Authorization", &bearer)]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"drained\":true"), "{body}");
    for _ in 0..6 {
        let (_, name) = connect_named(s.tierlb.addr).await.expect("client");
        assert_eq!(name, "node2", "a drained node gets no new connection");
    }
    // The open connection on node1 still works.
    let (stream, name) = held
        .iter_mut()
        .find(|(_, n)| n == "node1")
        .expect("held on node1");
    assert_eq!(name, "node1");
    stream.write_all(b"still\n").await.expect("write");
    let mut echo = [0u8; 6];
    stream
        .read_exact(&mut echo)
        .await
        .expect("echo from the drained node");
    assert_eq!(&echo, b"still\n");

    let (code, _) = http(
        s.admin,
        "POST",
        &format!("/nodes/{node1}/enable"),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(code, 200);
    let (_, name) = connect_named(s.tierlb.addr).await.expect("client");
    assert_eq!(
        name, "node1",
        "enabled again, the least loaded node takes the next client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_methods_get_clear_errors() {
    let s = setup(&["node1"], "").await;
    let (code, body) = http(s.admin, "GET", "/nope", &[]).await;
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    let (code, _) = http(s.admin, "POST", "/metrics", &[]).await;
    assert_eq!(code, 405);
    let (code, _) = http(
        s.admin,
        "GET",
        &format!("/nodes/{}/drain", s.nodes[0].addr),
        &[],
    )
    .await;
    assert_eq!(code, 405);
    // Without a configured token, the write endpoints are refused outright.
    let (code, body) = http(
        s.admin,
        "POST",
        &format!("/nodes/{}/drain", s.nodes[0].addr),
        &[("Authorization", "Bearer anything-anything-1")],
    )
    .await;
    assert_eq!(code, 403);
    assert!(body.contains("token"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_each_nodes_figures_and_drains_with_the_token() {
    let s = setup(
        &["node1", "node2"],
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    for _ in 0..4 {
        one_exchange(s.tierlb.addr).await;
    }
    let (_, body) = http(s.admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_seconds"].is_u64());
    let node = &status["nodes"][0];
    for field in [
        "weight",
        "failures",
        "retries",
        "sent_bytes",
        "received_bytes",
        "seconds_in_state",
    ] {
        assert!(node[field].is_u64(), "{field} in {node}");
    }
    assert!(node["recent"]["connections_per_second"].is_f64(), "{node}");

    let target = s.nodes[0].addr.to_string();
    let Some(pages) = common::page::drain_from_page(s.admin, &target, TOKEN) else {
        return;
    };
    let before = &pages.before;
    for header in [
        "weight",
        "failures",
        "retries",
        "bytes in / out",
        "for",
        "conn/s",
    ] {
        assert!(
            before.contains(&format!("<th>{header}</th>")),
            "{header}: {before}"
        );
    }
    assert!(before.contains("<polyline"), "a chart per node: {before}");
    assert!(
        !before.contains("<td class=\"num\">-</td>"),
        "no dash for conn/s"
    );
    let after = &pages.after;
    let row = after
        .split("<tr")
        .find(|r| r.contains(&target))
        .expect("the drained node's row");
    assert!(
        row.contains("class=\"drained\"") && row.contains(">enable<"),
        "{row}"
    );
    assert!(
        row.contains("drained by admin client 127.0.0.1, "),
        "who drained it, and when: {row}"
    );
    let (_, body) = http(s.admin, "GET", "/status", &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let drained = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["address"] == target.as_str())
        .expect("the node");
    assert_eq!(drained["drained"], true, "the button drained it");
    assert_eq!(drained["decision"]["by"], "admin client 127.0.0.1");
    assert!(drained["decision"]["seconds_ago"]
        .as_u64()
        .is_some_and(|s| s < 60));
}
