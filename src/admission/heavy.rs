//! The heavy sources an instance publishes to its cluster peers, and their gossip value: one
//! value per service, `ADDRESS=ACTIVE/RECENT` entries separated by spaces, at most
//! [`HEAVY_MAX`] of them (about 50 bytes each at the longest, so at most about 5 KB per
//! service, and nothing for a service whose sources all stay under a tenth of its limits).

use std::net::IpAddr;

use super::Load;
use crate::config::AdmissionConfig;

/// Most sources published per service.
pub const HEAVY_MAX: usize = 100;

/// The sources over a tenth of a limit of `rules` (their open connections of
/// `max_per_source`, their attempts of `rate_per_source`), the heaviest (by the larger share
/// of a limit) first, at most [`HEAVY_MAX`].
pub fn select(
    loads: impl Iterator<Item = (IpAddr, Load)>,
    rules: &AdmissionConfig,
) -> Vec<(IpAddr, Load)> {
    let share = |load: &Load| {
        let of = |n: u32, limit: Option<u32>| limit.map_or(0.0, |l| f64::from(n) / f64::from(l));
        of(load.active, rules.max_per_source)
            .max(of(load.recent, rules.rate_per_source.map(|r| r.count)))
    };
    let mut heavy: Vec<(f64, IpAddr, Load)> = loads
        .map(|(ip, load)| (share(&load), ip, load))
        .filter(|(s, _, _)| *s > 0.1)
        .collect();
    heavy.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    heavy.truncate(HEAVY_MAX);
    heavy.into_iter().map(|(_, ip, load)| (ip, load)).collect()
}

/// The gossip value of heavy sources.
pub fn show_heavy(heavy: &[(IpAddr, Load)]) -> String {
    let entries: Vec<String> = heavy
        .iter()
        .map(|(ip, l)| format!("{ip}={}/{}", l.active, l.recent))
        .collect();
    entries.join(" ")
}

/// Reads a gossip value of heavy sources (at most [`HEAVY_MAX`] entries are taken).
pub fn parse_heavy(value: &str) -> Result<Vec<(IpAddr, Load)>, String> {
    value
        .split_whitespace()
        .take(HEAVY_MAX)
        .map(|entry| {
            let bad = || format!("source entry `{entry}` is not ADDRESS=ACTIVE/RECENT");
            let (ip, counts) = entry.split_once('=').ok_or_else(bad)?;
            let (active, recent) = counts.split_once('/').ok_or_else(bad)?;
            Ok((
                ip.parse().map_err(|_| bad())?,
                Load {
                    active: active.parse().map_err(|_| bad())?,
                    recent: recent.parse().map_err(|_| bad())?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rate;

    fn load(active: u32, recent: u32) -> Load {
        Load { active, recent }
    }

    #[test]
    fn only_sources_over_a_tenth_of_a_limit_are_heavy_the_heaviest_first() {
        let rules = AdmissionConfig {
            max_per_source: Some(10),
            rate_per_source: Some(parse_rate("100/s").expect("rate")),
            ..AdmissionConfig::default()
        };
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        let loads = vec![
            (ip(1), load(1, 10)), // a tenth of each: not over
            (ip(2), load(2, 0)),  // a fifth of the connections
            (ip(3), load(0, 90)), // nine tenths of the rate
            (ip(4), load(0, 0)),
        ];
        let got = select(loads.into_iter(), &rules);
        assert_eq!(got, [(ip(3), load(0, 90)), (ip(2), load(2, 0))]);
        let many = (0..=255u8).map(|i| (ip(i), load(5, 0)));
        assert_eq!(select(many, &rules).len(), HEAVY_MAX);
    }

    #[test]
    fn values_read_back_and_bad_ones_are_named() {
        let heavy = vec![
            (IpAddr::from([192, 0, 2, 1]), load(3, 17)),
            ("2001:db8::1".parse().expect("v6"), load(0, 4)),
        ];
        let value = show_heavy(&heavy);
        assert_eq!(value, "192.0.2.1=3/17 2001:db8::1=0/4");
        assert_eq!(parse_heavy(&value), Ok(heavy));
        assert_eq!(parse_heavy(""), Ok(Vec::new()));
        for bad in ["1.2.3.4", "1.2.3.4=1", "x=1/2", "1.2.3.4=-1/2"] {
            assert!(parse_heavy(bad).is_err(), "{bad} read");
        }
    }
}
