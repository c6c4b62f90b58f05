//! Configuration and command line through the real binary: every invalid fixture fails
//! `--check` with a message naming the key or line, valid ones pass, `--check` starts nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use common::{bin, Backend, ConfigFile};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn tierlb(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run tierlb")
}

/// The lines of a fixture that start with `prefix` (`# expect: `, `# warn: `), without it.
fn marked(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_invalid_config_fails_check_with_exactly_its_messages() {
    let files = fixtures("invalid");
    assert!(files.len() >= 25, "fixtures found: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let want = marked(&text, "# expect: ");
        assert!(
            !want.is_empty(),
            "{} lacks its `# expect:` lines",
            file.display()
        );
        let path = file.to_str().expect("utf-8 path");
        let out = tierlb(&["--check", "-c", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
        // Word for word, one line per error, each "tierlb: error: PATH:LINE: ...".
        let got: Vec<String> = stderr
            .lines()
            .map(|l| {
                let l = l.strip_prefix("tierlb: error: ").unwrap_or(l);
                l.strip_prefix(path).unwrap_or(l).to_owned()
            })
            .collect();
        assert_eq!(got, want, "{}", file.display());
        assert!(
            out.stdout.is_empty(),
            "{}: nothing on stdout",
            file.display()
        );
    }
}

#[test]
fn valid_configs_and_the_shipped_example_pass_check() {
    let mut files = fixtures("valid");
    assert!(files.len() >= 2);
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"));
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tierlb/config.toml"));
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tierlb/scaled.toml"));
    for file in files {
        let out = tierlb(&["--check", "-c", file.to_str().expect("utf-8 path")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("configuration ok\n"), "{stdout}");
        assert!(
            stdout.contains("node ") || stdout.contains("discover "),
            "{stdout}"
        );
        // Warnings, word for word, and none where a fixture expects none; lines a fixture
        // says the summary shows.
        let text = std::fs::read_to_string(&file).expect("read fixture");
        for line in marked(&text, "# shows: ") {
            assert!(
                stdout.contains(&format!("{line}\n")),
                "{}: no {line:?} in {stdout}",
                file.display()
            );
        }
        let path = file.to_str().expect("utf-8 path");
        let mut want = marked(&text, "# warn: ");
        let mut got: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("warning: "))
            .map(|l| l.strip_prefix(path).unwrap_or(l).to_owned())
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_binds_nothing_and_connects_to_no_node() {
    let node = Backend::start("node1").await;
    // The listen address is taken: if --check tried to bind it, it would fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr");
    let config = ConfigFile::new(&format!(
        "listen = \"{listen}\"\nnodes = [\"{}\"]\n",
        node.addr
    ));
    let out = tierlb(&["--check", "-c", config.path()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("listen {listen}")), "{stdout}");
    assert!(
        stdout.contains(&format!("node {} weight 1", node.addr)),
        "{stdout}"
    );
    assert_eq!(
        node.accepted.load(Ordering::SeqCst),
        0,
        "no connection to the node"
    );
}

#[test]
fn flags_replace_the_file_and_bad_flags_are_usage_errors() {
    let config = ConfigFile::new(
        "listen = \"127.0.0.1:8000\"\nnodes = [\"a.example:1\", \"b.example:2\"]\n",
    );
    let out = tierlb(&[
        "--check",
        "-c",
        config.path(),
        "-l",
        "127.0.0.1:9",
        "-p",
        "127.0.0.1:7",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("listen 127.0.0.1:9\n"), "{stdout}");
    assert!(stdout.contains("node 127.0.0.1:7 weight 1\n"), "{stdout}");
    assert!(
        !stdout.contains("a.example"),
        "-p replaces the file's nodes: {stdout}"
    );

    let services = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/valid/services.toml");
    let cases: [(&[&str], &str); 10] = [
        (
            &["--check", "-c", services, "-p", "127.0.0.1:9001"],
            "tierlb: error: -l and -p apply to a single service, and this file has 2 (web, pg): set listen and nodes in each [services.NAME] instead\n",
        ),
        (
            &["--check", "-l", "127.0.0.1:1", "-p", "nohost"],
            "has no port",
        ),
        (&["--check", "-l", "localhost", "-p", "a:1"], "--listen"),
        (
            &["--check", "-l", ":1", "-p", "127.0.0.1:9001", "-p", "127.0.0.1:9001"],
            "tierlb: error: -p 127.0.0.1:9001 is given twice; give each node once\n",
        ),
        (
            &["--check", "-l", ":1", "-p", "127.0.0.1:9001,127.0.0.1:9002"],
            ": `127.0.0.1:9001,127.0.0.1:9002`: one host:port per -p; repeat -p for each node\n",
        ),
        (
            &["--check", "-l", ":1", "-p", "http://node1:8080/"],
            ": `http://node1:8080/`: no scheme (`http://`): tierlb speaks TCP; write host:port, e.g. node1:8080\n",
        ),
        (
            &["--check", "-l", ":1", "-p", "9001"],
            ": `9001` has no host; write host:port, e.g. 127.0.0.1:9001\n",
        ),
        (
            &["--check", "-l", ":1", "-p", ":9001"],
            ": `:9001` has no host; write host:port, e.g. 127.0.0.1:9001\n",
        ),
        (&["--check", "-l", "127.0.0.1:1"], "no nodes configured"),
        (
            &["--check", "-c", "/nonexistent/tierlb.toml"],
            "cannot read config file /nonexistent/tierlb.toml",
        ),
    ];
    for (args, want) in cases {
        let out = tierlb(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn listen_address_in_use_is_a_clear_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let out = tierlb(&["-l", &listen, "-p", "127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {listen}")),
        "{stderr}"
    );
}

#[test]
fn listen_shorthand_means_every_ipv4_address() {
    let out = tierlb(&["--check", "-l", ":8000", "-p", "127.0.0.1:9001"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listen 0.0.0.0:8000\n"), "{stdout}");
    let config = ConfigFile::new(
        "listen = \":8001\"\nnodes = [\"127.0.0.1:9001\"]\n[admin]\nlisten = \"*:9090\"\n",
    );
    let out = tierlb(&["--check", "-c", config.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listen 0.0.0.0:8001\n"), "{stdout}");
    assert!(stdout.contains("admin 0.0.0.0:9090 "), "{stdout}");
}

#[test]
fn admin_token_from_a_file_or_the_environment_is_checked_and_never_shown() {
    let secret = "s3cret-token-of-32-characters-xy";
    let token = ConfigFile::new(&format!("{secret}\n"));
    let base = [
        "--check",
        "-l",
        ":1",
        "-p",
        "127.0.0.1:9001",
        "--admin",
        "127.0.0.1:0",
    ];
    let mut args = base.to_vec();
    args.extend(["--admin-token-file", token.path()]);
    let out = tierlb(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("token set"), "{stdout}");
    assert!(!stdout.contains(secret), "the token is never printed");

    let short = ConfigFile::new("short\n");
    let mut args = base.to_vec();
    args.extend(["--admin-token-file", short.path()]);
    let out = tierlb(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr,
        format!(
            "tierlb: error: --admin-token-file {}: the token is too short: use at least 16 random characters\n",
            short.path()
        )
    );

    let out = Command::new(bin())
        .args(base)
        .env("TIERLB_ADMIN_TOKEN", "                        ")
        .output()
        .expect("run tierlb");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tierlb: error: TIERLB_ADMIN_TOKEN: the token is blank: use at least 16 random characters\n"
    );
    let out = Command::new(bin())
        .args(base)
        .env("TIERLB_ADMIN_TOKEN", secret)
        .output()
        .expect("run tierlb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("token set") && !stdout.contains(secret),
        "{stdout}"
    );
}

#[test]
fn the_cluster_examples_pass_check_with_their_key_beside_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cluster.key"), "k".repeat(44) + "\n").expect("key");
    for name in ["lb1.toml", "lb2.toml"] {
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/cluster")
            .join(name);
        let copy = dir.path().join(name);
        std::fs::copy(&example, &copy).expect("copy the example");
        let out = tierlb(&["--check", "-c", copy.to_str().expect("utf-8 path")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("cluster lb"), "{stdout}");
        assert!(!stdout.contains("warning"), "{name}: {stdout}");
    }
}

#[test]
fn the_systemd_unit_runs_tierlb_as_written_and_outlasts_the_drain() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("examples/systemd/tierlb.service")).expect("unit");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("admin.token"), "a".repeat(32) + "\n").expect("token");
    let config = root.join("config.example.toml");
    let config = config.to_str().expect("utf-8 path");
    let mut ran = 0;
    for line in unit.lines() {
        let Some((key, command)) = line.split_once('=') else {
            continue;
        };
        if !key.starts_with("Exec") || !command.starts_with("/usr/local/bin/tierlb") {
            continue;
        }
        // The command as systemd would run it, against the shipped example; the service
        // itself only checked, not started.
        let mut args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|a| {
                a.replace("/etc/tierlb/config.toml", config).replace(
                    "${CREDENTIALS_DIRECTORY}",
                    dir.path().to_str().expect("utf-8 path"),
                )
            })
            .collect();
        if !args.iter().any(|a| a == "--check") {
            args.push("--check".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tierlb(&args);
        assert!(
            out.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert_eq!(
        ran, 3,
        "ExecStartPre, ExecStart and the checking ExecReload"
    );
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec in seconds");
    let example = std::fs::read_to_string(root.join("config.example.toml")).expect("example");
    let drain: u64 = example
        .lines()
        .find_map(|l| {
            l.strip_prefix("drain")?
                .split('"')
                .nth(1)?
                .strip_suffix('s')
        })
        .and_then(|v| v.parse().ok())
        .expect("the example's drain in seconds");
    assert!(
        stop > drain,
        "TimeoutStopSec {stop} s must outlast the {drain} s drain"
    );
}
