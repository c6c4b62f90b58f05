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

#[test]
fn every_invalid_config_fails_check_naming_what_is_wrong() {
    let files = fixtures("invalid");
    assert!(files.len() >= 15, "fixtures found: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its `# expect:` line", file.display()));
        let out = tierlb(&["--check", "-c", file.to_str().expect("utf-8 path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
        assert!(
            stderr.contains(want),
            "{}: error should contain {want:?}, got:\n{stderr}",
            file.display()
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
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
        assert!(stdout.contains("node "), "{stdout}");
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

    let cases: [(&[&str], &str); 4] = [
        (
            &["--check", "-l", "127.0.0.1:1", "-p", "nohost"],
            "has no port",
        ),
        (&["--check", "-l", "localhost", "-p", "a:1"], "--listen"),
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
