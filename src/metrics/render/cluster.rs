//! The cluster's metric families: members by state and the gossip traffic.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter_name, value};
use crate::metrics::{
    CLUSTER_BYTES, CLUSTER_MEMBERS, CLUSTER_PACKETS, CLUSTER_REJECTED, CLUSTER_SEND_ERRORS,
    CLUSTER_SKEWED,
};

/// The cluster's figures, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct ClusterScrape {
    /// Members alive, this instance included.
    pub alive: u64,
    /// Members the failure detector has dead.
    pub dead: u64,
    /// Datagrams dropped before parsing.
    pub rejected: u64,
    /// Datagrams and bytes sent.
    pub sent: [u64; 2],
    /// Datagrams and bytes accepted.
    pub received: [u64; 2],
    /// Datagrams that could not be sent.
    pub send_errors: u64,
    /// Peers' decisions ignored for being stamped too far ahead.
    pub skewed: u64,
}

impl ClusterScrape {
    /// Encodes the families.
    pub fn encode_into(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            CLUSTER_MEMBERS,
            "Cluster members by state, this instance included.",
            None,
            MetricType::Gauge,
        )?;
        for (state, v) in [("alive", self.alive), ("dead", self.dead)] {
            value(
                &mut family.encode_family(&[("state", state)])?,
                MetricType::Gauge,
                v,
            )?;
        }
        let mut sample = encoder.encode_descriptor(
            counter_name(CLUSTER_REJECTED),
            "Gossip datagrams dropped before parsing: not sealed with the cluster secret for the address they came from, sent too long ago, or malformed.",
            None,
            MetricType::Counter,
        )?;
        value(&mut sample, MetricType::Counter, self.rejected)?;
        let pairs = [
            (CLUSTER_PACKETS, "Gossip datagrams, by direction.", 0),
            (
                CLUSTER_BYTES,
                "Gossip bytes (UDP payload), by direction.",
                1,
            ),
        ];
        for (name, help, i) in pairs {
            let mut family =
                encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
            for (direction, v) in [("sent", self.sent[i]), ("received", self.received[i])] {
                let labels = [("direction", direction)];
                value(&mut family.encode_family(&labels)?, MetricType::Counter, v)?;
            }
        }
        let mut sample = encoder.encode_descriptor(
            counter_name(CLUSTER_SEND_ERRORS),
            "Gossip datagrams that could not be sent (unreachable peer, firewall).",
            None,
            MetricType::Counter,
        )?;
        value(&mut sample, MetricType::Counter, self.send_errors)?;
        let mut sample = encoder.encode_descriptor(
            counter_name(CLUSTER_SKEWED),
            "Peers' drain or enable decisions ignored: stamped more than max_clock_skew ahead of this instance's clock.",
            None,
            MetricType::Counter,
        )?;
        value(&mut sample, MetricType::Counter, self.skewed)
    }
}
