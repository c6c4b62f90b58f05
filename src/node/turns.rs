//! Turns among equally loaded nodes, by stride scheduling: each node has a virtual pass that
//! moves on by `STRIDE / weight` each time it is picked, and the set keeps a virtual time,
//! the pass of the last pick, to which a lagging pass is lifted. Pure; the node and its set
//! store the values in atomics (see [`super::NodeSet::picked`]).

/// The pass a weight-1 node moves on by per pick; a weight-w node moves `STRIDE / w`.
pub const STRIDE: u64 = 1 << 32;

/// After a node with `pass` and `weight` is picked in a set at virtual time `vtime`: its new
/// pass and the set's new virtual time.
pub fn advance(pass: u64, vtime: u64, weight: u32) -> (u64, u64) {
    let served = later(pass, vtime);
    let stride = (STRIDE / u64::from(weight.max(1))).max(1);
    (served.wrapping_add(stride), served)
}

/// The later of two passes. Passes wrap around; they never drift 2^63 apart, since each is
/// lifted to the virtual time before it is used.
pub fn later(a: u64, b: u64) -> u64 {
    if (a.wrapping_sub(b) as i64) >= 0 {
        a
    } else {
        b
    }
}
