//! The per-source figures a cluster shares so that a service's per-source limits hold
//! fleet-wide: each instance publishes its heavy sources per service (key `s/SERVICE`, see
//! `admission::show_heavy`) and sums the live peers' into the service's admission state.

use std::collections::HashMap;
use std::net::IpAddr;

use chitchat::{ChitchatId, NodeState};

use crate::admission::{self, Load};
use crate::service::Service;

/// The key of a service's heavy sources.
pub fn key(service: &str) -> String {
    format!("s/{service}")
}

/// The fact to publish about `service`'s sources: `None` when none is heavy.
pub fn fact(service: &Service) -> Option<(String, String)> {
    let upstream = service.upstream();
    let heavy = service.admission.heavy(&upstream.settings.admission);
    (!heavy.is_empty()).then(|| (key(&service.name), admission::show_heavy(&heavy)))
}

/// Sums the live `peers`' heavy sources of `service` into its admission state; a value that
/// cannot be read is reported to `bad` and left out.
pub fn merge(
    service: &Service,
    peers: &[(&ChitchatId, &NodeState)],
    mut bad: impl FnMut(&ChitchatId, &str),
) {
    let key = key(&service.name);
    let mut sum: HashMap<IpAddr, Load> = HashMap::new();
    for (id, state) in peers {
        let Some(value) = state.get(&key) else {
            continue;
        };
        match admission::parse_heavy(value) {
            Ok(loads) => {
                for (ip, load) in loads {
                    let total = sum.entry(admission::canonical(ip)).or_default();
                    total.active = total.active.saturating_add(load.active);
                    total.recent = total.recent.saturating_add(load.recent);
                }
            }
            Err(why) => bad(id, &why),
        }
    }
    service.admission.set_peers(sum);
}
