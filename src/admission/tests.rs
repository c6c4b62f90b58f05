//! The admission rules on one instance, and with peers' figures added.

use std::collections::HashMap;
use std::net::IpAddr;

use super::*;
use crate::config::{parse_rate, AdmissionConfig};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn deny_wins_and_allow_limits_everyone_else() {
    let a = Admission::default();
    let rules = AdmissionConfig {
        allow: vec!["127.0.0.0/8".parse().expect("range")],
        deny: vec!["127.0.0.2".parse().expect("range")],
        ..AdmissionConfig::default()
    };
    assert_eq!(a.admit(&rules, ip(2)), Err(Refusal::Denied));
    assert_eq!(
        a.admit(&rules, ip(3)),
        Ok(false),
        "allowed, nothing to count"
    );
    assert_eq!(
        a.admit(&rules, IpAddr::from([10, 0, 0, 1])),
        Err(Refusal::Denied)
    );
    let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("v6");
    assert_eq!(
        a.admit(&rules, mapped),
        Err(Refusal::Denied),
        "a mapped address is its IPv4 one"
    );
    assert_eq!(a.rejected(Refusal::Denied), 3);
    assert_eq!(a.admit(&AdmissionConfig::default(), ip(2)), Ok(false));
}

#[test]
fn max_per_source_counts_open_connections_with_the_peers() {
    let a = Admission::default();
    let rules = AdmissionConfig {
        max_per_source: Some(3),
        ..AdmissionConfig::default()
    };
    for _ in 0..3 {
        assert_eq!(a.admit(&rules, ip(1)), Ok(true));
    }
    assert_eq!(a.admit(&rules, ip(1)), Err(Refusal::TooMany));
    assert_eq!(
        a.admit(&rules, ip(9)),
        Ok(true),
        "another source is not affected"
    );
    a.left(ip(1));
    assert_eq!(a.admit(&rules, ip(1)), Ok(true), "a slot freed");
    // Peers have 2 of ip(9)'s: one more here makes 3.
    a.set_peers(HashMap::from([(
        ip(9),
        Load {
            active: 2,
            recent: 0,
        },
    )]));
    assert_eq!(a.admit(&rules, ip(9)), Err(Refusal::TooMany));
    assert_eq!(
        a.heavy(&rules),
        [
            (
                ip(1),
                Load {
                    active: 3,
                    recent: 0
                }
            ),
            (
                ip(9),
                Load {
                    active: 1,
                    recent: 0
                }
            )
        ],
        "no rate rule: no attempts counted"
    );
}

#[test]
fn rate_per_source_admits_the_rate_and_shares_it_by_where_the_attempts_come() {
    let a = Admission::default();
    let rules = AdmissionConfig {
        rate_per_source: Some(parse_rate("5/m").expect("rate")),
        ..AdmissionConfig::default()
    };
    let admitted = (0..20).filter(|_| a.admit(&rules, ip(1)).is_ok()).count();
    assert_eq!(admitted, 5);
    assert_eq!(a.rejected(Refusal::TooFast), 15);
    // The peers saw 60 attempts from ip(2) in the last minute: 20 here are a quarter of all,
    // so about a quarter of the rate (1.25) passes here.
    a.set_peers(HashMap::from([(
        ip(2),
        Load {
            active: 0,
            recent: 60,
        },
    )]));
    let admitted = (0..20).filter(|_| a.admit(&rules, ip(2)).is_ok()).count();
    assert!((1..=2).contains(&admitted), "{admitted} of 20 admitted");
}

#[test]
fn a_source_is_logged_once_a_minute() {
    let a = Admission::default();
    assert!(a.log_now(ip(1)));
    assert!(!a.log_now(ip(1)));
    assert!(a.log_now(ip(2)));
}
