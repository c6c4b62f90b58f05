//! A node's runtime weight: set by an operator (`PUT …/weight`, 0 to 256), carried in the
//! node's operator decision with its drain state (so a cluster replicates both, the later
//! decision winning), and reset when a reload changes the node's weight in the file. Weight
//! 0 takes no new client, as a drain does.

use std::sync::atomic::Ordering;

use super::{Decision, Node};

/// No runtime weight: the file's applies.
pub(super) const NONE: u32 = u32::MAX;
/// The largest runtime weight.
pub const MAX_WEIGHT: u32 = 256;

impl Node {
    /// The weight an operator set at run time, if any.
    pub fn runtime_weight(&self) -> Option<u32> {
        match self.runtime_weight.load(Ordering::Relaxed) {
            NONE => None,
            weight => Some(weight),
        }
    }

    /// The weight the configuration gives.
    pub fn configured_weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Puts an operator decision in force: its drain state and its runtime weight.
    pub fn apply(&self, decision: &Decision, by: &str) {
        self.set_drained(decision.drained, by);
        let weight = decision.weight.map_or(NONE, |w| w.min(MAX_WEIGHT));
        let before = self.runtime_weight.swap(weight, Ordering::Relaxed);
        if before != weight {
            let weight = self.weight();
            let runtime = decision
                .weight
                .map_or_else(|| "none".to_owned(), |w| w.to_string());
            tracing::info!(service = %self.service, node = %self.address, weight, runtime, by, "node weight set by the operator");
        }
    }

    /// Drops the runtime weight (a reload changed the node's weight in the file).
    pub(super) fn reset_runtime_weight(&self) {
        if self.runtime_weight.swap(NONE, Ordering::Relaxed) != NONE {
            tracing::info!(service = %self.service, node = %self.address, weight = self.weight(), "node runtime weight reset: the configuration changed its weight");
        }
    }
}
