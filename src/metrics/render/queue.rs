//! The queue's metric families, per service: clients queued now, how long they waited, and how
//! many gave up at the queue timeout.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter_name, histogram, value, ServiceScrape};
use crate::metrics::{QUEUE_LENGTH, QUEUE_TIMEOUTS, QUEUE_WAIT};

/// Upper bounds (seconds) of the queue-wait histogram's buckets, +Inf implied.
const WAIT_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Encodes the queue families of every service, labelled by `service` and `listener`.
pub(super) fn encode(
    services: &[ServiceScrape],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let labels: Vec<[(&str, &str); 2]> = services
        .iter()
        .map(|s| {
            [
                ("service", s.name.as_str()),
                ("listener", s.listen.as_str()),
            ]
        })
        .collect();
    let mut family = encoder.encode_descriptor(
        QUEUE_LENGTH,
        "Clients waiting for a node slot now: every node was at its max_connections.",
        None,
        MetricType::Gauge,
    )?;
    for (service, labels) in services.iter().zip(&labels) {
        value(
            &mut family.encode_family(labels)?,
            MetricType::Gauge,
            service.queue.len(),
        )?;
    }
    let mut family = encoder.encode_descriptor(
        counter_name(QUEUE_TIMEOUTS),
        "Clients closed because no node slot freed within the queue timeout.",
        None,
        MetricType::Counter,
    )?;
    for (service, labels) in services.iter().zip(&labels) {
        let v = service.queue.timeouts.load(Relaxed);
        value(&mut family.encode_family(labels)?, MetricType::Counter, v)?;
    }
    let mut family = encoder.encode_descriptor(
        QUEUE_WAIT,
        "Time clients spent in the queue (connected, timed out or gone).",
        None,
        MetricType::Histogram,
    )?;
    for (service, labels) in services.iter().zip(&labels) {
        histogram(
            &mut family.encode_family(labels)?,
            &service.queue.waits,
            &WAIT_BUCKETS,
        )?;
    }
    Ok(())
}
