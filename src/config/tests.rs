//! Unit tests of loading: flags over the file, the two forms, defaults.
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "t.toml", &Overrides::default())
}

#[test]
fn minimal_file_gets_every_default() {
    let c = parse("listen = \"127.0.0.1:8000\"\nnodes = [\"a:1\"]\n")
        .expect("valid")
        .services
        .remove(0);
    assert_eq!(c.health.interval, DEFAULT_INTERVAL);
    assert_eq!(c.health.rise, DEFAULT_RISE);
    assert_eq!(c.health.fall, DEFAULT_FALL);
    assert_eq!(c.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.retries, DEFAULT_RETRIES);
    assert_eq!(c.dns_ttl, DEFAULT_DNS_TTL);
    assert_eq!(c.nodes[0].weight, 1);
    assert_eq!(c.max_connections, None);
}

#[test]
fn dns_ttl_is_its_own_setting() {
    let c = parse("listen = \"127.0.0.1:8000\"\nnodes = [\"a:1\"]\ndns_ttl = \"0s\"\n[health]\ninterval = \"9s\"\n")
        .expect("valid")
        .services
        .remove(0);
    assert_eq!(
        c.dns_ttl,
        Duration::ZERO,
        "zero: look the name up every time"
    );
    assert_eq!(
        c.health.interval,
        Duration::from_secs(9),
        "and not the probe interval"
    );
}

#[test]
fn both_node_forms_mix() {
    let c = parse(
        "listen = \"127.0.0.1:0\"\nnodes = [\"a:1\", { address = \"[::1]:2\", weight = 3, max_connections = 9 }]\n",
    )
    .expect("valid").services.remove(0);
    assert_eq!(c.nodes[1].address.to_string(), "[::1]:2");
    assert_eq!(c.nodes[1].weight, 3);
    assert_eq!(c.nodes[1].max_connections, Some(9));
}

#[test]
fn errors_name_key_and_line() {
    let cases = [
        ("nodes = [\"a:1\"]\nlisten = \"x\"\n", "t.toml:2: `listen`"),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\n  \"a\"\n]\n",
            "t.toml:3: `nodes[0]`",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [{ address = \"a:1\", weight = 0 }]\n",
            "`nodes[0].weight` is 0",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[health]\ninterval = \"0s\"\n",
            "t.toml:4: `health.interval` must be above zero",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[timeouts]\nconnect = \"fast\"\n",
            "t.toml:4: `timeouts.connect`",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = []\n",
            "t.toml:2: `nodes` is empty",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\", \"a:1\"]\n",
            "listed twice",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"::1:80\"]\n",
            "needs brackets",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[timeouts]\nidle = \"1000d\"\n",
            "t.toml:4: `timeouts.idle` must be at most 365 days",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\nthreads = 100000\n",
            "t.toml:3: `threads` is 100000; it must be a whole number from 1 to 1024",
        ),
        (
            "listen = \"127.0.0.1:1\"\nnodes = [\"a:1\"]\n[health]\nrise = 70000\n",
            "`health.rise` is 70000; it must be a whole number from 1 to 65535",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text).to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn unknown_key_in_node_table_is_named() {
    let err = parse("listen = \"127.0.0.1:1\"\nnodes = [{ address = \"a:1\", wieght = 2 }]\n")
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("t.toml:2: `nodes[0].wieght`"), "{err}");
}

#[test]
fn flags_override_the_file() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:9".parse().expect("addr")),
        nodes: vec!["b:2".parse().expect("node")],
        admin: None,
        admin_token: None,
        cluster_advertise: None,
    };
    let c = Config::parse(
        "listen = \"0.0.0.0:1\"\nnodes = [\"a:1\"]\n",
        "t",
        &overrides,
    )
    .expect("valid")
    .services
    .remove(0);
    assert_eq!(c.listen.port(), 9);
    assert_eq!(c.nodes.len(), 1);
    assert_eq!(c.nodes[0].address.to_string(), "b:2");
}
