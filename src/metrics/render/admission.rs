//! The admission metric families, per service: clients refused by reason, and the client
//! addresses tracked for the per-source limits.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter_name, value, ServiceScrape};
use crate::metrics::{ADMISSION_REJECTED, ADMISSION_SOURCES};

/// Encodes the admission families of every service.
pub(super) fn encode(
    services: &[ServiceScrape],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        counter_name(ADMISSION_REJECTED),
        "Clients closed at once by the service's admission rules: reason deny (deny or allow), max_per_source or rate_per_source.",
        None,
        MetricType::Counter,
    )?;
    for service in services {
        for (reason, n) in service.rejected {
            let labels = [("service", service.name.as_str()), ("reason", reason)];
            value(&mut family.encode_family(&labels)?, MetricType::Counter, n)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        ADMISSION_SOURCES,
        "Client addresses the per-source limits track now (an open connection, or one in the last two periods).",
        None,
        MetricType::Gauge,
    )?;
    for service in services {
        let labels = [("service", service.name.as_str())];
        let n = u64::try_from(service.sources).unwrap_or(u64::MAX);
        value(&mut family.encode_family(&labels)?, MetricType::Gauge, n)?;
    }
    Ok(())
}
