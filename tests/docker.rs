//! The container set-up run for real: tests/docker/run.sh builds Dockerfile.prebuilt with
//! this test run's own `tierlb` (and the `node` example as the nodes), then runs the example
//! compose files: tierlb in front of node1-node3, and two tierlb containers as one cluster.
//! Without a Docker engine (or BuildKit, or docker-compose) the script prints why and the test
//! passes as skipped.

use std::path::Path;
use std::process::Command;

#[test]
fn the_image_serves_node1_to_node3_and_runs_as_a_two_instance_cluster() {
    let tierlb = Path::new(env!("CARGO_BIN_EXE_tierlb"));
    let node = tierlb
        .parent()
        .map(|dir| dir.join("examples").join("node"))
        .expect("the binary's folder");
    assert!(
        node.exists(),
        "{node:?} missing: a whole `cargo test` builds the examples (with --test, add --examples)"
    );
    let status = Command::new("bash")
        .arg("tests/docker/run.sh")
        .env("TIERLB_BINARY", tierlb)
        .env("TIERLB_NODE_BINARY", &node)
        .status()
        .expect("run tests/docker/run.sh");
    assert!(status.success(), "tests/docker/run.sh failed: {status}");
}
