//! Shared probing among real tierlb processes on 127.0.0.1: each node is probed by its
//! `probe_owners` instances only (counted at the nodes), a dead node is down everywhere as
//! fast as before, an owner's death hands its nodes to another instance, and an instance
//! that alone cannot reach a node (a network namespace and nftables) probes it itself while
//! the others keep it in use.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::cluster::{clients_until_down, node, three, Instance, Link, Spec};
use common::{connect_named, hold, names as names_of, Backend, WAIT};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Probes every 200 ms: 50 per node per owner in 10 s.
const PROBE: &str = "200ms";

/// The owners a status names for node `addr`, sorted.
fn owners(status: &Value, addr: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = node(status, addr)["probing"]["owners"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether every node of `addrs` has two owners and a role settled from their verdicts.
fn settled(status: &Value, addrs: &[SocketAddr]) -> bool {
    addrs.iter().all(|a| {
        let here = &node(status, *a)["probing"]["here"];
        owners(status, *a).len() == 2 && (here == "probes" || here == "follows owners")
    })
}

async fn cluster(addrs: &[SocketAddr]) -> Vec<Instance> {
    let all = three(|name| Spec {
        probe_interval: PROBE,
        ..Spec::new(name, addrs, &[])
    })
    .await;
    for i in &all {
        i.wait_status("every node's owners heard", WAIT, |s| settled(s, addrs))
            .await;
    }
    all.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_is_probed_by_its_owners_only_and_a_dead_one_is_down_everywhere() {
    let mut backends = vec![
        Backend::start("n1").await,
        Backend::start("n2").await,
        Backend::start("n3").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let all = cluster(&addrs).await;
    // Every instance names the same owners, and one of the three follows them.
    for addr in &addrs {
        let seen: Vec<Vec<String>> = {
            let mut v = Vec::new();
            for i in &all {
                v.push(owners(&i.status().await, *addr));
            }
            v
        };
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{addr}: {seen:?}");
    }

    let before: Vec<usize> = backends
        .iter()
        .map(|b| b.accepted.load(Ordering::SeqCst))
        .collect();
    // The measurement window, not a wait for a state.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bound = 2 * 10_000 / 200 * 11 / 10;
    for (b, start) in backends.iter().zip(before) {
        let probes = b.accepted.load(Ordering::SeqCst) - start;
        eprintln!(
            "{} received {probes} probes in 10 s (bound {bound}; every instance probing: 150)",
            b.name
        );
        assert!(probes <= bound, "{}: {probes} probes in 10 s", b.name);
        assert!(
            probes >= 60,
            "{}: only {probes} probes: its owners do not probe",
            b.name
        );
    }

    // n3 dies: down on all three within fall (3) probe intervals and two gossip rounds.
    let n3 = addrs[2];
    let _stopped = backends.remove(2).stop().await;
    let killed = Instant::now();
    for i in &all {
        i.wait_status("n3 down", Duration::from_secs(5), |s| {
            node(s, n3)["state"] == "down"
        })
        .await;
    }
    eprintln!("n3 down on all three {:?} after it died", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_nodes_are_probed_by_another_instance() {
    let backends = [Backend::start("n1").await, Backend::start("n2").await];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut all = cluster(&addrs).await;
    let n1 = addrs[0];
    let status = all[0].status().await;
    let first = owners(&status, n1);
    let follower = all
        .iter()
        .position(|i| !first.contains(&i.name))
        .expect("one instance follows n1's owners");
    let victim = all
        .iter()
        .position(|i| i.name == first[0])
        .expect("an owner");
    let taker = &all[follower];
    assert_eq!(
        node(&taker.status().await, n1)["probing"]["here"],
        "follows owners"
    );

    let dead = all.remove(victim);
    let killed = Instant::now();
    dead.lb.signal(Signal::SIGKILL);
    let taker = &all[if follower > victim {
        follower - 1
    } else {
        follower
    }];
    taker
        .lb
        .wait_log_all(&["probing node", &format!("node={n1}")], 1, WAIT)
        .expect("the follower takes n1 over");
    let took = killed.elapsed();
    let status = taker
        .wait_status("n1 probed here", WAIT, |s| {
            let n = node(s, n1);
            n["probing"]["here"] == "probes"
                && n["last_check"]["reason"] == "probe passed"
                && n["last_check"]["seconds_ago"]
                    .as_u64()
                    .is_some_and(|s| s <= 1)
        })
        .await;
    let now = owners(&status, n1);
    assert!(
        now.contains(&taker.name),
        "{} owns n1 now: {now:?}",
        taker.name
    );
    assert!(
        !now.contains(&dead.name),
        "the dead owner is no owner: {now:?}"
    );
    eprintln!(
        "{} took n1 over {took:?} after {} was killed",
        taker.name, dead.name
    );
    // The failure detector's window (about 8 gossip intervals) plus one probe interval,
    // with room for a busy machine.
    assert!(
        took < Duration::from_secs(8),
        "took over only after {took:?}"
    );
}

/// The rendezvous score of instance `name` for node `key`, as tierlb computes it (first 8
/// bytes of SHA-256 over the name, a zero byte and `service/address`).
fn score(name: &str, key: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_clients_fail_on_a_node_probes_it_itself_and_the_others_keep_it() {
    let Some(link) = Link::new("owners", 3) else {
        return;
    };
    let mut backends = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let at = SocketAddr::new(IpAddr::V4(link.host_ip), 0);
        backends.push(Backend::start_at(at, name).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let n2 = addrs[1];
    // The instance in the namespace gets a name that ranks below a and b for n2: a follower.
    let key = format!("default/{n2}");
    let name = (0..100)
        .map(|i| format!("c{i}"))
        .find(|c| score(c, &key) < score("a", &key).min(score("b", &key)))
        .expect("one of 100 names ranks last");
    let (host, inside) = (link.host_ip.to_string(), link.ns_ip.to_string());
    let spec = |name: &'static str| Spec {
        ip: &host,
        probe_interval: PROBE,
        ..Spec::new(name, &addrs, &[])
    };
    let a = Instance::start(&spec("a"));
    let seed = [a.gossip];
    let b = Instance::start(&Spec {
        peers: &seed,
        ..spec("b")
    });
    let c = Instance::start_in(
        &Spec {
            ip: &inside,
            name: &name,
            probe_interval: PROBE,
            ..Spec::new("c", &addrs, &seed)
        },
        &link.ns,
    );
    let names = ["a", "b", name.as_str()];
    for i in [&a, &b, &c] {
        i.wait_members(&names).await;
        i.wait_status("n2's owners heard", WAIT, |s| settled(s, &addrs))
            .await;
    }
    // Settled means C probes or follows each node; it follows n2 once an owner's verdict
    // about it has arrived.
    let status = c
        .wait_status("C following n2's owners", WAIT, |s| {
            node(s, n2)["probing"]["here"] == "follows owners"
        })
        .await;
    assert_eq!(owners(&status, n2), ["a", "b"]);
    assert_eq!(node(&status, n2)["probing"]["here"], "follows owners");

    // C's namespace drops n2's answers: C's connects to n2 time out, A's and B's succeed.
    link.drop_answers_of(n2);
    clients_until_down(&c, n2, "n2").await;
    c.lb.wait_log_all(&["probing it here", &format!("node={n2}")], 1, WAIT)
        .expect("C checks n2 itself");
    // C's own probe decides for it: n2 stays down there though its owners have it up.
    c.wait_status("n2 down, probed by C itself", WAIT, |s| {
        let n = node(s, n2);
        n["state"] == "down"
            && n["probing"]["here"] == "probes (own clients failed)"
            && n["last_check"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("probe:"))
    })
    .await;
    for _ in 0..30 {
        let (_, name) = connect_named(c.lb.addr).await.expect("C serves");
        assert_ne!(name, "n2");
    }
    // A and B keep n2 in use.
    for i in [&a, &b] {
        let status = i.status().await;
        assert_eq!(node(&status, n2)["state"], "up", "{} keeps n2", i.name);
        assert_eq!(tally(&names_of(&hold(i.lb.addr, 30).await)), [10, 10, 10]);
    }
    drop(backends);
}

fn tally(names: &[String]) -> [usize; 3] {
    ["n1", "n2", "n3"].map(|n| names.iter().filter(|x| *x == n).count())
}
