//! The status page driven in headless Chromium (`tests/support/cdp_drain.py`): drain a node
//! from its button, as an operator would, and read the table before and after.

use std::net::SocketAddr;
use std::process::Command;

/// The node table's HTML before and after draining `node` from the page at `admin`.
pub struct Drained {
    /// Before the click.
    pub before: String,
    /// Once the node's row says it is drained.
    pub after: String,
}

/// Opens the page at `admin`, clicks `node`'s drain button and answers the token prompt with
/// `token`; `None` (with the reason printed) where Chromium is not installed.
pub fn drain_from_page(admin: SocketAddr, node: &str, token: &str) -> Option<Drained> {
    if !super::tool_available("chromium") {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/cdp_drain.py");
    let out = Command::new("python3")
        .args([script, &format!("http://{admin}/"), node, token])
        .output()
        .expect("run the page driver");
    assert!(
        out.status.success(),
        "page driver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: serde_json::Value = serde_json::from_slice(&out.stdout).expect("driver output");
    let table = |k: &str| pages[k].as_str().expect("a table").to_owned();
    Some(Drained {
        before: table("before"),
        after: table("after"),
    })
}
