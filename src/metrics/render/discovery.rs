//! How clients find their nodes, as metric families: per `discover` entry, its lookups, the
//! failed or empty ones, and the addresses of its last good answer; per discovered node,
//! which entry found it; per listen address shared by `sni`, the clients closed unserved.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter_name, family, value, ServiceScrape};
use crate::metrics::{
    DISCOVERY_ERRORS, DISCOVERY_FOUND, DISCOVERY_LOOKUPS, NODE_DISCOVERED, SNI_UNMATCHED,
};

/// Encodes the discovery families of every service, labelled by `service` and `entry`
/// (`dns node:8080`, `srv _web._tcp.example`).
pub(super) fn encode(
    services: &[ServiceScrape],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let families = [
        (
            DISCOVERY_LOOKUPS,
            "DNS lookups made by a discover entry.",
            MetricType::Counter,
        ),
        (
            DISCOVERY_ERRORS,
            "Lookups of a discover entry that failed or came back empty; its last good set of nodes was kept.",
            MetricType::Counter,
        ),
        (
            DISCOVERY_FOUND,
            "Addresses in a discover entry's last good answer.",
            MetricType::Gauge,
        ),
    ];
    for (k, (name, help, kind)) in families.into_iter().enumerate() {
        let mut family = family(encoder, name, help, kind)?;
        for service in services {
            for (entry, stats, found) in &service.entries {
                let labels = [("service", service.name.as_str()), ("entry", &**entry)];
                let v = match k {
                    0 => stats.lookups(),
                    1 => stats.errors(),
                    _ => *found as u64,
                };
                value(&mut family.encode_family(&labels)?, kind, v)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        NODE_DISCOVERED,
        "1 for each node a discover entry found, with the entry.",
        None,
        MetricType::Gauge,
    )?;
    for service in services {
        for node in &service.nodes {
            if let Some(entry) = node.found_by() {
                let address = node.address.to_string();
                let labels = [
                    ("service", service.name.as_str()),
                    ("node", address.as_str()),
                    ("entry", &*entry),
                ];
                value(&mut family.encode_family(&labels)?, MetricType::Gauge, 1u64)?;
            }
        }
    }
    Ok(())
}

/// Encodes `tierlb_sni_unmatched_total{listener,reason}`: `no-route` (no service has the
/// name, and there is no default) and `no-hello` (nothing usable within the handshake
/// timeout).
pub(super) fn encode_unmatched(
    listeners: &[(String, u64, u64)],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        counter_name(SNI_UNMATCHED),
        "Clients of a listen address shared by sni closed unserved: no service for their server name and no default (no-route), or no ClientHello within the handshake timeout (no-hello).",
        None,
        MetricType::Counter,
    )?;
    for (listener, no_route, no_hello) in listeners {
        for (reason, v) in [("no-route", no_route), ("no-hello", no_hello)] {
            let labels = [("listener", listener.as_str()), ("reason", reason)];
            value(&mut family.encode_family(&labels)?, MetricType::Counter, *v)?;
        }
    }
    Ok(())
}
