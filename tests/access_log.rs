//! The access log through the real binary: one `tierlb::access` line per closed connection
//! with the exact bytes each way and the node, as text or JSON, and nothing when it is off.

mod common;

use common::{connect_named, Backend, ConfigFile, Tierlb, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Ten connections, the i-th sending `i * 100 + 1` bytes and reading back its echo.
async fn ten(lb: std::net::SocketAddr) {
    for i in 0..10usize {
        let (mut stream, name) = connect_named(lb).await.expect("client");
        assert_eq!(name, "node1");
        let data = vec![b'x'; i * 100 + 1];
        stream.write_all(&data).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("read");
        assert_eq!(back.len(), data.len());
    }
}

fn config(node: std::net::SocketAddr, access_log: bool) -> ConfigFile {
    ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"{node}\"]\naccess_log = {access_log}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_connection_with_the_exact_bytes_and_the_node() {
    let node = Backend::start("node1").await;
    let file = config(node.addr, true);
    let lb = Tierlb::with_config(&file);
    ten(lb.addr).await;
    lb.wait_log_all(&["tierlb::access"], 10, WAIT)
        .expect("ten access lines");
    let lines: Vec<String> = lb
        .lines()
        .into_iter()
        .filter(|l| l.contains("tierlb::access"))
        .collect();
    assert_eq!(lines.len(), 10, "{lines:#?}");
    // The greeting is "node1\n": 6 bytes from the node before the echo.
    for i in 0..10 {
        let sent = i * 100 + 1;
        let want = [
            format!("client_to_node={sent} "),
            format!("node_to_client={} ", sent + 6),
        ];
        let line = lines
            .iter()
            .find(|l| want.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("no line for {sent} bytes: {lines:#?}"));
        for field in [
            "service=default",
            &format!("node={}", node.addr),
            "retries=0",
            "end=done",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
        assert!(
            line.contains("connect_ms=") && line.contains("duration_ms="),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_parse_and_an_unset_log_writes_none() {
    let node = Backend::start("node1").await;
    let file = config(node.addr, true);
    let lb = Tierlb::start(&["--log-format", "json", "-c", file.path()]);
    ten(lb.addr).await;
    lb.wait_log_all(&["tierlb::access"], 10, WAIT)
        .expect("ten access lines");
    for line in lb.lines().iter().filter(|l| l.contains("tierlb::access")) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["target"], "tierlb::access");
        assert_eq!(v["fields"]["node"], node.addr.to_string());
        assert!(v["fields"]["client_to_node"].is_u64(), "{line}");
        assert!(v["fields"]["duration_ms"].is_f64(), "{line}");
    }

    let off = config(node.addr, false);
    let quiet = Tierlb::with_config(&off);
    ten(quiet.addr).await;
    // Every connection's own close line is there, and no access line beside them.
    quiet
        .wait_log_all(&["connection closed"], 10, WAIT)
        .expect("ten closes");
    assert_eq!(quiet.count(&["tierlb::access"]), 0);
}
