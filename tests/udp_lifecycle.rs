//! UDP services at scale and through a process's life, against the real binary: as many
//! flows as the descriptor limit allows (RSS per flow, and nothing left once they idle out),
//! a binary upgrade and a shutdown that carry the open flows, the status page that shows
//! them and drains a node, a node removed by a reload, and a TCP and a UDP service on one
//! port with a reload that removes and adds the UDP one.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::process::{exited, pid_in, KillNamed};
use common::udp::{config, REPLY};
use common::udp::{node_of, nodes_toml, service, status, wait_for, Crowd, UdpClient, UdpNode};
use common::{http, metric, wait_until, ConfigFile, Tierlb, WAIT};
use nix::sys::signal::Signal;

/// A value of `/proc/PID/status` in kB, such as `VmRSS`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Descriptors open in `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the descriptors")
        .count()
}

/// The soft open-files limit of `pid`.
fn nofile(pid: u32) -> usize {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read the limits");
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_many_flows_as_the_descriptors_allow_stay_under_a_kib_each_and_none_leaks() {
    let nodes = UdpNode::several(3).await;
    let list = nodes_toml(&nodes.iter().collect::<Vec<_>>());
    let file = ConfigFile::new(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\nnodes = {list}\n[services.dns.health]\ninterval = \"60s\"\n[services.dns.timeouts]\nflow_idle = \"15s\"\n"
    ));
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let pid = lb.pid();
    // Each flow holds one descriptor (its socket to its node); what the process keeps for
    // itself is well under 1,500.
    let flows = nofile(pid).saturating_sub(1_500).min(50_000);
    assert!(
        flows >= 5_000,
        "the open-files limit ({}) leaves room for only {flows} flows",
        nofile(pid)
    );
    let fds_before = descriptors(pid);
    let crowd = Crowd::new(lb.addr);
    let warm = 500;
    let lb_addr = lb.addr;
    let (rss_warm, rss_full, tally) = tokio::task::spawn_blocking(move || {
        crowd.ask(0..warm);
        let rss_warm = proc_status_kib(pid, "VmRSS");
        let names = crowd.ask(warm..warm + flows);
        let rss_full = proc_status_kib(pid, "VmRSS");
        let mut tally: HashMap<String, usize> = HashMap::new();
        for name in names {
            *tally.entry(name).or_default() += 1;
        }
        (rss_warm, rss_full, tally)
    })
    .await
    .expect("the crowd's thread");
    let total = warm + flows;
    let s = status(admin).await;
    assert_eq!(service(&s, "dns")["udp"]["flows"], total, "every flow open");
    assert!(
        descriptors(pid) >= fds_before + total,
        "a descriptor per flow"
    );
    let per_flow = (rss_full.saturating_sub(rss_warm) * 1024) as f64 / flows as f64;
    println!(
        "{flows} flows (open-files limit {}): {per_flow:.0} bytes of RSS per flow; split {tally:?}",
        nofile(pid)
    );
    assert!(
        per_flow <= 1024.0,
        "{per_flow:.0} bytes per flow, over the 1 KiB bound"
    );
    for n in &nodes {
        let share = tally.get(&n.name).copied().unwrap_or_default();
        assert!(
            share.abs_diff(flows / 3) <= flows / 30,
            "least flows spreads them: {tally:?}"
        );
    }
    // They idle out: nothing is left, in the table, the nodes' counts or the descriptors.
    let limit = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = status(admin).await;
        let dns = service(&s, "dns");
        if dns["udp"]["flows"] == 0 {
            for n in &nodes {
                assert_eq!(node_of(dns, n.addr)["flows"], 0, "{dns:#}");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flows left {limit:?} after the crowd went quiet: {}",
            dns["udp"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, text) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        metric(&text, "tierlb_udp_flows{service=\"dns\"}"),
        Some(0.0)
    );
    let settled = wait_until(WAIT, || (descriptors(pid) <= fds_before + 5).then_some(()));
    assert!(
        settled.is_some(),
        "descriptors: {} before the flows, {} after they ended",
        fds_before,
        descriptors(pid)
    );
    // A flow's next datagram after its end opens a new one.
    let client = UdpClient::new().await;
    assert!(client.ask(lb_addr, "after", REPLY).await.is_some());
}

/// Starts tierlb on `config` with `pid_file`; the guard kills whichever process serves last.
fn start(config: &ConfigFile, pid_file: &Path) -> (Tierlb, KillNamed) {
    let path = pid_file.to_str().expect("utf-8");
    let tierlb = Tierlb::start(&["-c", config.path(), "--pid-file", path]);
    (tierlb, KillNamed(pid_file.to_owned()))
}

fn signal(pid: u32, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Each client asks once, in turn; each must be answered from `addr`. How many asked.
async fn ask_all(clients: &[UdpClient], addr: SocketAddr, round: usize) -> usize {
    for (i, c) in clients.iter().enumerate() {
        let (_, from) = c
            .ask(addr, &format!("{round}-{i}"), REPLY)
            .await
            .unwrap_or_else(|| panic!("client {i} unanswered in round {round}"));
        assert_eq!(from, addr, "the reply comes from the service's address");
    }
    clients.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_answers_every_datagram_of_the_open_flows() {
    let nodes = UdpNode::several(2).await;
    let file = ConfigFile::new(&format!(
        "[services.dns]\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\nnodes = {}\n[services.dns.health]\ninterval = \"60s\"\n[services.dns.timeouts]\ndrain = \"3s\"\n",
        nodes_toml(&nodes.iter().collect::<Vec<_>>())
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("tierlb.pid");
    let (lb, _guard) = start(&file, &pid_file);
    let old = wait_until(WAIT, || pid_in(&pid_file)).expect("a PID file");
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(UdpClient::new().await);
    }
    // Every client asks in turn, before, during and after the upgrade; every datagram is
    // answered from the service's address.
    let mut asked = 0;
    asked += ask_all(&clients, lb.addr, 0).await;
    signal(old, Signal::SIGUSR2);
    let mut round = 1;
    // An upgrade (start, handover, readiness, then the old one's drain) on a busy machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let new = loop {
        asked += ask_all(&clients, lb.addr, round).await;
        round += 1;
        if let Some(new) = pid_in(&pid_file).filter(|&p| p != old) {
            break new;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new process replaced {old}"
        );
    };
    // Through the old process's drain and after it exits.
    while !exited(old) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old process did not exit"
        );
        asked += ask_all(&clients, lb.addr, round).await;
        round += 1;
    }
    asked += ask_all(&clients, lb.addr, round).await;
    assert!(!exited(new), "the new process serves");
    println!("{asked} datagrams in {round} rounds through the upgrade, all answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_carries_the_open_flows_and_ends_when_they_idle_out() {
    let nodes = [UdpNode::start("n1").await];
    let text = config(
        &nodes.iter().collect::<Vec<_>>(),
        "60s",
        "flow_idle = \"2s\"\ndrain = \"60s\"",
    );
    let file = ConfigFile::new(&text);
    let mut lb = Tierlb::with_config(&file);
    let open = UdpClient::new().await;
    assert!(open.ask(lb.addr, "before", REPLY).await.is_some());
    lb.signal(Signal::SIGTERM);
    lb.wait_log("shutting down", 1).expect("the drain begins");
    // The open flow is carried on; a new client is not served.
    for k in 0..3 {
        let reply = open.ask(lb.addr, &format!("draining {k}"), REPLY).await;
        assert_eq!(reply.map(|r| r.0), Some("n1".to_owned()));
    }
    let late = UdpClient::new().await;
    assert!(late
        .ask(lb.addr, "late", Duration::from_millis(500))
        .await
        .is_none());
    // Once the open flow has idled out (2 s), the process exits, long before its drain's 60 s.
    let exit = lb.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "exited: {exit:?}");
    assert!(lb.count(&["drained"]) >= 1, "{:?}", lb.lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_udp_services_flows_and_drains_a_node() {
    const TOKEN: &str = "udp-page-token-0123456789";
    let nodes = UdpNode::several(2).await;
    let text = config(&nodes.iter().collect::<Vec<_>>(), "60s", "")
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let file = ConfigFile::new(&text);
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let mut on_n1 = None;
    let mut held = Vec::new();
    for i in 0..4 {
        let (c, name) = UdpClient::answered(lb.addr, &format!("hi {i}")).await;
        if name == "n1" {
            on_n1 = Some(held.len());
        }
        held.push(c);
    }
    let on_n1 = on_n1.expect("a flow on n1");
    let target = nodes[0].addr.to_string();
    let Some(pages) = common::page::drain_from_page(admin, &target, TOKEN) else {
        return;
    };
    let before = &pages.before;
    assert!(before.contains("(UDP) · 4 flows"), "{before}");
    assert!(before.contains(">2 flows<"), "two flows per node: {before}");
    assert!(before.contains("2 / 2 datagrams"), "{before}");
    // Drained from the page: n1's flow runs on there, new flows go to n2.
    wait_for(admin, "n1 drained", |dns| {
        node_of(dns, nodes[0].addr)["state"] == "drained"
    })
    .await;
    let again = held[on_n1].ask(lb.addr, "still", REPLY).await;
    assert_eq!(again.map(|r| r.0), Some("n1".to_owned()));
    for i in 0..4 {
        let (_client, name) = UdpClient::answered(lb.addr, &format!("new {i}")).await;
        assert_eq!(name, "n2", "no new flow on the drained node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_by_a_reload_loses_its_flows_at_their_next_datagram() {
    let nodes = UdpNode::several(2).await;
    let file = ConfigFile::new(&config(&nodes.iter().collect::<Vec<_>>(), "60s", ""));
    let lb = Tierlb::with_config(&file);
    let admin = lb.logged_addr("admin listening");
    let (first, a) = UdpClient::answered(lb.addr, "one").await;
    let (second, b) = UdpClient::answered(lb.addr, "two").await;
    assert_ne!(a, b, "one flow on each node");
    let (on_n1, on_n2) = if a == "n1" {
        (first, second)
    } else {
        (second, first)
    };
    file.rewrite(&config(&[&nodes[1]], "60s", ""));
    lb.signal(Signal::SIGHUP);
    lb.wait_log("configuration reloaded", 1).expect("reloaded");
    // n1's flow moves at its next datagram; n2's stays.
    let moved = on_n1.ask(lb.addr, "again", REPLY).await.map(|r| r.0);
    assert_eq!(moved.as_deref(), Some("n2"));
    let stayed = on_n2.ask(lb.addr, "again", REPLY).await.map(|r| r.0);
    assert_eq!(stayed.as_deref(), Some("n2"));
    let s = wait_for(admin, "both flows on n2", |dns| {
        dns["udp"]["flows"] == 2 && node_of(dns, nodes[1].addr)["flows"] == 2
    })
    .await;
    assert_eq!(
        service(&s, "dns")["nodes"].as_array().map(Vec::len),
        Some(1)
    );
    lb.wait_log_all(&["tierlb::access", "flow", "end=\"node removed\""], 1, WAIT)
        .expect("the moved flow's access-log line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_and_a_udp_service_share_a_port_and_a_reload_adds_and_removes_a_udp_service() {
    let backend = common::Backend::start("t1").await;
    let udp = UdpNode::start("u1").await;
    // A free port number for both: bound for TCP and UDP here, then let go.
    let port = {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        t.local_addr().expect("addr").port()
    };
    let both = |with_udp: bool| {
        let mut text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[timeouts]\ndrain = \"1s\"\n\n[services.web]\nlisten = \"127.0.0.1:{port}\"\nnodes = [\"{}\"]\n",
            backend.addr
        );
        if with_udp {
            text.push_str(&format!(
                "\n[services.dns]\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"udp\"\nnodes = [\"{}\"]\n",
                udp.addr
            ));
        }
        text
    };
    let file = ConfigFile::new(&both(true));
    let lb = Tierlb::with_config(&file);
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    let (_, name) = common::connect_named(at).await.expect("TCP on the port");
    assert_eq!(name, "t1");
    let client = UdpClient::new().await;
    assert_eq!(
        client.ask(at, "x", REPLY).await.map(|r| r.0).as_deref(),
        Some("u1")
    );

    // Reload without the UDP service: its socket closes once its flow ends (or the 1 s
    // drain runs out), TCP goes on.
    file.rewrite(&both(false));
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    lb.wait_log("configuration reloaded", 1).expect("reloaded");
    lb.wait_log_all(&["UDP socket closed", "service=dns"], 1, WAIT)
        .expect("the UDP service stops");
    let (_, name) = common::connect_named(at).await.expect("TCP still served");
    assert_eq!(name, "t1");
    let fresh = UdpClient::new().await;
    assert!(
        fresh
            .ask(at, "y", Duration::from_millis(500))
            .await
            .is_none(),
        "no UDP service"
    );

    // And back.
    file.rewrite(&both(true));
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    lb.wait_log("configuration reloaded", 2)
        .expect("reloaded again");
    let again = UdpClient::new().await;
    assert_eq!(
        again.ask(at, "z", REPLY).await.map(|r| r.0).as_deref(),
        Some("u1")
    );
}
