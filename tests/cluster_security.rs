//! The cluster's gossip is sealed: an instance with another secret and random datagrams never
//! become members, the instance keeps serving, the rejects are counted, and the secret is in
//! no log line, `/status`, `/metrics` or `--check` output.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{alive, Instance, Spec, SECRET};
use common::{bin, connect_named, metric, Backend, ConfigFile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_secret_and_random_datagrams_never_become_members() {
    let backend = Backend::start("n1").await;
    let addrs = [backend.addr];
    let a = Instance::start(&Spec::new("a", &addrs, &[]));
    let b = Instance::start(&Spec::new("b", &addrs, &[a.gossip]));
    let other = "another-secret-also-longer-than-32-bytes";
    let d = Instance::start(&Spec {
        secret: other,
        ..Spec::new("d", &addrs, &[a.gossip])
    });
    a.wait_members(&["a", "b"]).await;

    // 1000 random datagrams, in batches that A's socket buffer holds, each batch counted
    // before the next is sent.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rejected = |m: &str| metric(m, "tierlb_cluster_packets_rejected_total").unwrap_or(0.0);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for batch in 0..20usize {
        let before = rejected(&a.metrics().await);
        for i in 0..50usize {
            let len = 1 + ((batch * 50 + i) * 37) % 1400;
            let datagram: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            sender.send_to(&datagram, a.gossip).expect("send");
        }
        let mut counted = 0.0;
        for _ in 0..250 {
            counted = rejected(&a.metrics().await) - before;
            if counted >= 50.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            counted >= 50.0,
            "batch {batch}: A counted {counted} of 50 rejects"
        );
    }
    // Every datagram sent to A is counted: the 1000 and all of D's (D's only seed is A).
    let sent = |m: &str| metric(m, "tierlb_cluster_packets_total{direction=\"sent\"}");
    let mut seen = (0.0, 0.0);
    for _ in 0..500 {
        let knocks = sent(&d.metrics().await).unwrap_or(0.0);
        seen = (knocks, rejected(&a.metrics().await));
        if knocks >= 10.0 && seen.1 >= 1000.0 + knocks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.0 >= 10.0 && seen.1 >= 1000.0 + seen.0,
        "D sent {}, A rejected {} (1000 random datagrams were sent)",
        seen.0,
        seen.1
    );

    assert_eq!(alive(&a.status().await), ["a", "b"], "A: D never joins");
    assert_eq!(alive(&b.status().await), ["a", "b"], "B: D never joins");
    assert_eq!(alive(&d.status().await), ["d"], "D never learns of A or B");
    for _ in 0..5 {
        connect_named(a.lb.addr).await.expect("A keeps serving");
    }

    for i in [&a, &b, &d] {
        let status = i.status().await.to_string();
        let metrics = i.metrics().await;
        let logs = i.lb.lines().join("\n");
        for secret in [SECRET, other] {
            assert!(!status.contains(secret), "{}: secret in /status", i.name);
            assert!(!metrics.contains(secret), "{}: secret in /metrics", i.name);
            assert!(!logs.contains(secret), "{}: secret in the log", i.name);
        }
    }
}

#[test]
fn check_shows_the_cluster_but_never_the_secret() {
    let key = ConfigFile::new(&format!("{SECRET}\n"));
    let nodes: [SocketAddr; 1] = ["127.0.0.1:9".parse().expect("addr")];
    let inline = Spec::new("lb1", &nodes, &nodes).config();
    let from_file = inline.replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret_file = \"{}\"", key.path()),
    );
    for text in [inline, from_file] {
        let config = ConfigFile::new(&text);
        let out = std::process::Command::new(bin())
            .args(["--check", "-c", config.path()])
            .output()
            .expect("run --check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("cluster lb1 listen 127.0.0.1:0"),
            "{stdout}"
        );
        assert!(stdout.contains("cluster secret "), "{stdout}");
        assert!(
            !stdout.contains(SECRET),
            "the secret is never printed: {stdout}"
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_the_middle_of_a_secret_rotation_stay_one_cluster() {
    let backend = Backend::start("n1").await;
    let addrs = [backend.addr];
    let (old, new) = (SECRET, "the-new-secret-that-replaces-the-old-one");
    // A is at step 1 (old seals, both open), B at step 2 (new seals, both open).
    let start = |name: &str, lines: String, peers: &[SocketAddr]| {
        let key = ConfigFile::new(&lines);
        let text = Spec::new(name, &addrs, peers).config().replace(
            &format!("secret = \"{SECRET}\""),
            &format!("secret_file = \"{}\"", key.path()),
        );
        let config = ConfigFile::new(&text);
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["-c", config.path()]);
        (Instance::spawn(name, cmd, config), key)
    };
    let (a, _a_key) = start("a", format!("{old}\n{new}\n"), &[]);
    let (b, _b_key) = start("b", format!("{new}\n{old}\n"), &[a.gossip]);
    a.wait_members(&["a", "b"]).await;
    b.wait_members(&["a", "b"]).await;
    for i in [&a, &b] {
        let rejected = metric(&i.metrics().await, "tierlb_cluster_packets_rejected_total");
        assert_eq!(rejected, Some(0.0), "{}: every packet opened", i.name);
    }
}

#[test]
fn the_advertised_address_can_come_from_the_environment() {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nnodes = [\"127.0.0.1:9\"]\n[cluster]\nname = \"pod-1\"\n\
         listen = \"0.0.0.0:7946\"\nsecret = \"{SECRET}\"\n"
    );
    let config = ConfigFile::new(&text);
    let check = |value: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["--check", "-c", config.path()]);
        match value {
            Some(v) => cmd.env("TIERLB_CLUSTER_ADVERTISE", v),
            None => cmd.env_remove("TIERLB_CLUSTER_ADVERTISE"),
        };
        cmd.output().expect("run --check")
    };
    let without = check(None);
    assert_eq!(
        without.status.code(),
        Some(2),
        "0.0.0.0 needs an advertised address"
    );
    let with = check(Some("10.1.2.3:7946"));
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(stdout.contains("advertise 10.1.2.3:7946"), "{stdout}");
    let bad = check(Some("0.0.0.0:7946"));
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("TIERLB_CLUSTER_ADVERTISE is `0.0.0.0:7946`"),
        "{stderr}"
    );
}
