//! Upgrading one instance of a three-instance cluster (real processes on 127.0.0.1): the new
//! process takes the gossip socket and rejoins under the same name, so its peers never list
//! it as dead or as a new member, and a drain taken on it before the upgrade is in force
//! after it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{alive, node, Instance, Spec};
use common::process::{exited, pid_in, KillNamed};
use common::{bin, wait_until, Backend, ConfigFile, WAIT};
use nix::sys::signal::Signal;

/// Lines of `instance`'s log about member `b` containing `what`.
fn about_b(instance: &Instance, what: &str) -> usize {
    instance.lb.count(&[what, "member=\"b\""])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_member_is_never_dead_nor_new_and_keeps_its_drain() {
    let nodes = [Backend::start("n1").await, Backend::start("n2").await];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("b.pid");
    let spec = Spec::new("b", &addrs, std::slice::from_ref(&a.gossip));
    let config = ConfigFile::new(&spec.config());
    let mut cmd = Command::new(bin());
    cmd.args([
        "-c",
        config.path(),
        "--pid-file",
        pid_file.to_str().expect("utf-8"),
    ]);
    let b = Instance::spawn("b", cmd, config);
    let _last = KillNamed(pid_file.clone());
    let c = Instance::start(&Spec::new("c", &addrs, std::slice::from_ref(&a.gossip)));
    for i in [&a, &b, &c] {
        i.wait_members(&["a", "b", "c"]).await;
    }
    let n1 = addrs[0];
    assert_eq!(b.post(&format!("/nodes/{n1}/drain")).await, 200);
    for i in [&a, &c] {
        i.wait_status("b's drain", WAIT, |s| node(s, n1)["drained"] == true)
            .await;
    }
    let joined = (
        about_b(&a, "cluster member joined"),
        about_b(&c, "cluster member joined"),
    );
    // Two clients of B's old process (on n2: n1 is drained) stay open through the upgrade.
    let n2 = addrs[1];
    let held = common::hold(b.lb.addr, 2).await;
    let peers_count = |s: &serde_json::Value| node(s, n2)["cluster_active"].as_u64();
    a.wait_status("b's two clients counted", WAIT, |s| {
        peers_count(s) == Some(2)
    })
    .await;

    let old = wait_until(WAIT, || pid_in(&pid_file)).expect("B's PID file");
    b.lb.signal(Signal::SIGUSR2);
    // Through the upgrade and a failure detector's window after the old process left, A and C
    // have B alive at every look.
    let mut upgraded_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for i in [&a, &c] {
            let status = i.status().await;
            assert!(
                alive(&status).contains(&"b".to_owned()),
                "{}: b listed dead during its upgrade: {status:#}",
                i.name
            );
        }
        let new = pid_in(&pid_file).filter(|&p| p != old);
        if let (Some(_), None) = (new, upgraded_at) {
            upgraded_at = Some(Instant::now());
        }
        if upgraded_at.is_some_and(|t| t.elapsed() > Duration::from_secs(6)) {
            break;
        }
        assert!(Instant::now() < deadline, "the upgrade did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old process still holds its two clients and still publishes them: counted once,
    // neither lost nor doubled by the new process's own (none).
    let status = a.status().await;
    assert_eq!(peers_count(&status), Some(2), "{status:#}");
    drop(held);
    a.wait_status("b's clients gone", WAIT, |s| peers_count(s) == Some(0))
        .await;
    // The old process ends with its drain; for a failure detector's window after that, B
    // stays alive on A and C.
    assert!(
        wait_until(WAIT, || exited(old).then_some(())).is_some(),
        "the old process exits"
    );
    let window = Instant::now() + Duration::from_secs(6);
    while Instant::now() < window {
        for i in [&a, &c] {
            assert!(
                alive(&i.status().await).contains(&"b".to_owned()),
                "{}: b alive",
                i.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in [&a, &c] {
        assert_eq!(
            about_b(i, "cluster member dead"),
            0,
            "{}: b never dead",
            i.name
        );
    }
    assert_eq!(
        (
            about_b(&a, "cluster member joined"),
            about_b(&c, "cluster member joined")
        ),
        joined,
        "b never joined anew"
    );
    // The new B answers on the same admin address, with the drain in force.
    let status = b
        .wait_status("the new process's view", WAIT, |s| {
            alive(s) == ["a", "b", "c"] && node(s, n1)["drained"] == true
        })
        .await;
    assert_eq!(node(&status, n1)["drained"], true);
}
