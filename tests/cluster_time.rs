//! Cluster time and sealed senders through real processes: an instance whose clock is an hour
//! ahead (libfaketime) cannot make its drain win over a later enable (its peers never take
//! its state: each side finds the other's gossip an hour old), is logged as skewed on both
//! sides and, restarted with a correct clock, is alive again on its peers at once; a captured datagram
//! replayed from another address gets no answer, and one replayed from its sender's address
//! after the age bound is dropped; two live instances given one name both show, each logging
//! the error.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{alive, node, Instance, Spec};
use common::{bin, metric, Backend, ConfigFile, WAIT};
use serde_json::Value;

/// libfaketime's library for threaded programs (Debian's package `faketime`), if installed.
fn libfaketime() -> Option<&'static str> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    common::present_or_skip("libfaketime", found.is_some());
    found
}

/// Starts `spec` with `[cluster]` lines added; with `clock`, its wall clock is moved by that
/// much (libfaketime preloaded into tierlb itself, so that the process is tierlb's).
fn start(spec: &Spec<'_>, extra: &str, clock: Option<(&str, &str)>) -> Instance {
    let config = ConfigFile::new(&format!("{}{extra}", spec.config()));
    let mut cmd = Command::new(bin());
    if let Some((library, offset)) = clock {
        // Only the wall clock moves: timers and timeouts run on the monotonic clock.
        cmd.env("LD_PRELOAD", library)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.args(["-c", config.path()]);
    Instance::spawn(spec.name, cmd, config)
}

fn drained(status: &Value, addr: SocketAddr) -> bool {
    node(status, addr)["drained"] == true
}

/// The member `name` of a status.
fn member(status: &Value, name: &str) -> Value {
    status["cluster"]["members"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["name"] == name && m["self"] != true)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no member {name} in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_an_hour_ahead_cannot_win_and_a_restart_with_a_good_clock_is_alive_at_once() {
    let Some(library) = libfaketime() else {
        return;
    };
    let backend = Backend::start("n1").await;
    let addrs = [backend.addr];
    let b = start(&Spec::new("b", &addrs, &[]), "", None);
    let c = start(&Spec::new("c", &addrs, &[b.gossip]), "", None);
    let a = start(
        &Spec::new("a", &addrs, &[b.gossip]),
        "",
        Some((library, "+1h")),
    );
    for peer in [&b, &c] {
        peer.wait_status("a alive", WAIT, |s| alive(s).contains(&"a".to_owned()))
            .await;
    }
    let offset = member(&b.status().await, "a")["clock_offset_ms"]
        .as_i64()
        .expect("a's clock offset");
    assert!(
        (3_590_000..3_610_000).contains(&offset),
        "a is an hour ahead: {offset} ms"
    );

    // B, which a's datagrams reach (its seed), logs a as skewed; C knows a through B only.
    b.lb.wait_log_all(&["clock is ahead of", "member=a"], 1, WAIT)
        .expect("B logs a as skewed");

    // The skewed instance drains the node; two seconds later B enables it.
    let path = format!("/nodes/{}", backend.addr);
    assert_eq!(a.post(&format!("{path}/drain")).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.post(&format!("{path}/enable")).await, 200);
    // For ten gossip rounds and more, the enable stands on both, and no stamp ran ahead.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for peer in [&b, &c] {
            let s = peer.status().await;
            assert!(
                !drained(&s, backend.addr),
                "{}: drained again: {s:#}",
                peer.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.lb.wait_log_all(&["gossip packet rejected", "sent too long ago"], 1, WAIT)
        .expect("the skewed instance logs the peers' datagrams as too old");

    // Restarted with a correct clock under the same name: alive on both peers within 3 s.
    drop(a);
    let restarted_at = Instant::now();
    let _a = start(&Spec::new("a", &addrs, &[b.gossip]), "", None);
    for peer in [&b, &c] {
        peer.wait_status("a alive again", Duration::from_secs(3), |s| {
            alive(s).contains(&"a".to_owned())
        })
        .await;
    }
    eprintln!(
        "restarted a alive on both peers {:?} after its start",
        restarted_at.elapsed()
    );
}

/// Waits until `socket` receives a datagram from `from` within `limit`; returns it.
fn receive(socket: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// Whether `socket` receives anything from `who` within `limit` (others' datagrams skipped).
fn answered_by(socket: &UdpSocket, who: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match receive(socket, left.max(Duration::from_millis(1))) {
            Some((_, from)) if from == who => return true,
            Some(_) => {}
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_datagrams_are_answered_to_no_one_and_late_ones_are_dropped() {
    let backend = Backend::start("n1").await;
    let addrs = [backend.addr];
    // A's only seed is a socket of the test's: it receives A's sealed datagrams.
    let tap = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let seeds = [tap.local_addr().expect("addr")];
    let skew = "\nmax_clock_skew = \"1s\"\n";
    let a = start(&Spec::new("a", &addrs, &seeds), skew, None);
    let (captured, sender) = receive(&tap, WAIT).expect("a datagram from A");
    assert_eq!(sender, a.gossip);
    let b = start(&Spec::new("b", &addrs, &[]), skew, None);
    let rejected = |m: &str| metric(m, "tierlb_cluster_packets_rejected_total").unwrap_or(0.0);

    // From a stranger's address: B does not open it, so answers nothing, and counts it.
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    stranger.send_to(&captured, b.gossip).expect("replay");
    assert!(
        !answered_by(&stranger, b.gossip, Duration::from_secs(1)),
        "B answered a replay from another address"
    );
    assert!(rejected(&b.metrics().await) >= 1.0);

    // From A's own address, once A is gone: fresh, it is answered (it is authentic: C, which
    // then gossips with that address too); after the bound (1 s of skew + 4 intervals of
    // 200 ms) it is dropped and counted (B, which has heard of no one and so sends nothing).
    let c = start(&Spec::new("c", &addrs, &[]), skew, None);
    drop(a);
    let spoof = UdpSocket::bind(sender).expect("A's address, free once A is gone");
    spoof.send_to(&captured, c.gossip).expect("replay");
    let fresh = receive(&spoof, Duration::from_secs(2));
    assert!(
        fresh.is_some_and(|(_, from)| from == c.gossip),
        "an authentic, fresh datagram is answered"
    );
    let before = rejected(&b.metrics().await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    spoof.send_to(&captured, b.gossip).expect("replay");
    assert!(
        !answered_by(&spoof, b.gossip, Duration::from_secs(1)),
        "B answered a datagram older than the bound"
    );
    let after = rejected(&b.metrics().await);
    assert!(
        after > before,
        "the late replay was counted: {before} -> {after}"
    );
    b.lb.wait_log_all(&["gossip packet rejected", "sent too long ago"], 1, WAIT)
        .expect("the late replay is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_instances_with_one_name_both_show_and_both_log_the_error() {
    let backend = Backend::start("n1").await;
    let addrs = [backend.addr];
    let first = start(&Spec::new("same", &addrs, &[]), "", None);
    let second = start(&Spec::new("same", &addrs, &[first.gossip]), "", None);
    for instance in [&first, &second] {
        let s = instance
            .wait_status("both instances named same shown", WAIT, |s| {
                alive(s) == ["same", "same"]
            })
            .await;
        let members = s["cluster"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(members.iter().all(|m| m["duplicate"] == true), "{s:#}");
        instance
            .lb
            .wait_log_all(&["share one name", "member=same"], 1, WAIT)
            .unwrap_or_else(|| {
                panic!(
                    "{} logs the error: {:#?}",
                    instance.name,
                    instance.lb.lines()
                )
            });
    }
}
