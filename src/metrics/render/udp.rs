//! The UDP metric families: a UDP service's live flows and its dropped datagrams by reason,
//! and the datagrams each of its nodes was sent and answered.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter_name, value, ServiceScrape};
use crate::metrics::{NODE_DATAGRAMS, UDP_DROPPED, UDP_FLOWS};

/// Encodes the UDP families of every UDP service.
pub(super) fn encode(
    services: &[ServiceScrape],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let udp: Vec<(&ServiceScrape, &Vec<(&'static str, u64)>)> = services
        .iter()
        .filter_map(|s| s.udp.as_ref().map(|d| (s, d)))
        .collect();
    if udp.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        UDP_FLOWS,
        "Live flows of a UDP service (client address and port, each bound to one node).",
        None,
        MetricType::Gauge,
    )?;
    for (service, _) in &udp {
        let labels = [("service", service.name.as_str())];
        value(
            &mut family.encode_family(&labels)?,
            MetricType::Gauge,
            service.listener[3],
        )?;
    }
    let mut family = encoder.encode_descriptor(
        counter_name(UDP_DROPPED),
        "Datagrams a UDP service dropped: max_flows, no_node, local, stopping, node_busy, node_send, client_send.",
        None,
        MetricType::Counter,
    )?;
    for (service, drops) in &udp {
        for (reason, n) in drops.iter() {
            let labels = [("service", service.name.as_str()), ("reason", reason)];
            value(&mut family.encode_family(&labels)?, MetricType::Counter, *n)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        counter_name(NODE_DATAGRAMS),
        "Datagrams of a UDP service's flows, by node: direction sent (to the node) or received (from it).",
        None,
        MetricType::Counter,
    )?;
    for (service, _) in &udp {
        for node in &service.nodes {
            let address = node.address.to_string();
            for (direction, n) in ["sent", "received"].iter().zip(&node.stats.datagrams) {
                let labels = [
                    ("service", service.name.as_str()),
                    ("node", address.as_str()),
                    ("direction", direction),
                ];
                let v = n.load(Relaxed);
                value(&mut family.encode_family(&labels)?, MetricType::Counter, v)?;
            }
        }
    }
    Ok(())
}
