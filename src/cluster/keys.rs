//! What an instance publishes, as gossip keys and values, and how a peer's values are read
//! back (with a clear error for a value this version cannot read).
//!
//! One key per fact, so a change sends only that fact: for node `N` of service `S`,
//! `v/S/N` = the health verdict (`up SINCE` or `down SINCE REASON`), `c/S/N` = the active
//! connection count, `d/S/N` = the latest operator decision known
//! (`drain|enable STAMP INSTANCE`); and `fp` = the fingerprint of the services and nodes.
//! Service names hold no `/`, so the node part is everything after the second `/`.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::config::ServiceConfig;
use crate::node::{Decision, Verdict};

/// The fingerprint key.
pub const FINGERPRINT: &str = "fp";

/// What a published key is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `v/`: the health verdict.
    Verdict,
    /// `c/`: the active count.
    Count,
    /// `d/`: the operator decision.
    Decision,
}

impl Fact {
    fn prefix(self) -> &'static str {
        match self {
            Fact::Verdict => "v",
            Fact::Count => "c",
            Fact::Decision => "d",
        }
    }
}

/// A node's name in the cluster, `service/node`: what its probing owners are chosen for.
pub fn node_key(service: &str, node: &str) -> String {
    format!("{service}/{node}")
}

/// The key of `fact` about `node` of `service`.
pub fn key(fact: Fact, service: &str, node: &str) -> String {
    format!("{}/{service}/{node}", fact.prefix())
}

/// The `service/node` pairs an instance publishes verdicts for, read from its keys: which
/// services and nodes it runs.
pub fn published_nodes<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let prefix = Fact::Verdict.prefix();
    let mut nodes: Vec<&str> = keys
        .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('/'))
        .collect();
    nodes.sort_unstable();
    nodes
}

/// What a drifted member differs in, from both sides' `service/node` pairs: the pairs only one
/// side has (a few of each, then how many more), or, when the pairs agree, that the
/// difference is in the nodes' settings.
pub fn differs(mine: &[&str], theirs: &[&str]) -> String {
    const SHOWN: usize = 3;
    let list = |side: &str, pairs: Vec<&&str>| {
        let mut text = format!("{side}: ");
        let names: Vec<&str> = pairs.iter().take(SHOWN).map(|p| **p).collect();
        text.push_str(&names.join(", "));
        if pairs.len() > SHOWN {
            let _ = write!(text, " and {} more", pairs.len() - SHOWN);
        }
        text
    };
    let only_here: Vec<&&str> = mine.iter().filter(|p| !theirs.contains(p)).collect();
    let only_there: Vec<&&str> = theirs.iter().filter(|p| !mine.contains(p)).collect();
    let mut parts = Vec::new();
    if !only_here.is_empty() {
        parts.push(list("only here", only_here));
    }
    if !only_there.is_empty() {
        parts.push(list("only there", only_there));
    }
    if parts.is_empty() {
        "the same services and nodes, with other settings (weights, limits or backup)".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The value of a verdict. The reason is published only for a down node: an up node's last
/// reason changes with every probe and would only churn the gossip.
pub fn verdict_value(v: &Verdict) -> String {
    if v.up {
        format!("up {}", v.since_ms)
    } else {
        format!("down {} {}", v.since_ms, v.reason)
    }
}

/// Reads a verdict value.
pub fn parse_verdict(value: &str) -> Result<Verdict, String> {
    let mut parts = value.splitn(3, ' ');
    let up = match parts.next() {
        Some("up") => true,
        Some("down") => false,
        _ => {
            return Err(format!(
                "verdict `{value}` is neither `up SINCE` nor `down SINCE REASON`"
            ))
        }
    };
    let since_ms = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("verdict `{value}` has no time in ms"))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    Ok(Verdict {
        up,
        since_ms,
        reason,
    })
}

/// Reads a count value.
pub fn parse_count(value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("count `{value}` is not a whole number"))
}

/// The value of a decision.
pub fn decision_value(d: &Decision) -> String {
    let what = if d.drained { "drain" } else { "enable" };
    match d.weight {
        Some(weight) => format!("{what} {} {} weight={weight}", d.stamp, d.by),
        None => format!("{what} {} {}", d.stamp, d.by),
    }
}

/// Reads a decision value.
pub fn parse_decision(value: &str) -> Result<Decision, String> {
    let mut parts = value.splitn(4, ' ');
    let drained = match parts.next() {
        Some("drain") => true,
        Some("enable") => false,
        _ => return Err(format!("decision `{value}` is neither drain nor enable")),
    };
    let stamp = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("decision `{value}` has no timestamp"))?;
    let by = parts
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("decision `{value}` does not name the instance that took it"))?;
    let weight = match parts.next() {
        None => None,
        Some(w) => Some(
            w.strip_prefix("weight=")
                .and_then(|w| w.parse().ok())
                .filter(|w| *w <= crate::node::MAX_WEIGHT)
                .ok_or_else(|| format!("decision `{value}` has a weight that is not 0 to 256"))?,
        ),
    };
    Ok(Decision {
        drained,
        weight,
        stamp,
        by: by.to_owned(),
    })
}

/// A short fingerprint of the services and their nodes (names, node addresses, weights and
/// limits, `discover` entries): equal on instances that balance the same nodes. Listen addresses are left out,
/// since each instance may bind its own.
pub fn fingerprint(services: &[ServiceConfig]) -> String {
    let mut canonical = String::new();
    let mut sorted: Vec<&ServiceConfig> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        // Writing into a String cannot fail.
        let _ = writeln!(canonical, "service {}", s.name);
        for n in &s.nodes {
            let _ = writeln!(
                canonical,
                "node {} {} {:?}",
                n.address, n.weight, n.max_connections
            );
        }
        // The entries, not what they found: two instances may hear a changed answer a
        // moment apart.
        for d in &s.discover {
            let _ = writeln!(
                canonical,
                "discover {} {} {} {:?} {}",
                d.target, d.max_nodes, d.weight, d.max_connections, d.backup
            );
        }
    }
    let digest = Sha256::digest(canonical.as_bytes());
    digest[..8].iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drift_is_described_by_the_nodes_only_one_side_runs() {
        let keys = [
            "fp",
            "v/web/a:1",
            "c/web/a:1",
            "v/web/b:1",
            "d/web/b:1",
            "v/api/c:1",
        ];
        let mine = published_nodes(keys.into_iter());
        assert_eq!(mine, ["api/c:1", "web/a:1", "web/b:1"]);
        let theirs = published_nodes(["v/web/a:1", "v/web/d:1"].into_iter());
        assert_eq!(
            differs(&mine, &theirs),
            "only here: api/c:1, web/b:1; only there: web/d:1"
        );
        assert!(differs(&mine, &mine).starts_with("the same services and nodes"));
        let many: Vec<String> = (0..5).map(|i| format!("web/n{i}:1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            differs(&many, &[]),
            "only here: web/n0:1, web/n1:1, web/n2:1 and 2 more"
        );
    }

    #[test]
    fn verdicts_and_decisions_read_back() {
        let down = Verdict {
            up: false,
            since_ms: 42,
            reason: "connect: connection refused".to_owned(),
        };
        assert_eq!(parse_verdict(&verdict_value(&down)), Ok(down));
        let up = Verdict {
            up: true,
            since_ms: 7,
            reason: String::new(),
        };
        assert_eq!(parse_verdict(&verdict_value(&up)), Ok(up));
        let d = Decision {
            drained: true,
            weight: None,
            stamp: 1 << 40,
            by: "lb-1".to_owned(),
        };
        assert_eq!(parse_decision(&decision_value(&d)), Ok(d.clone()));
        let weighted = Decision {
            weight: Some(3),
            ..d
        };
        assert_eq!(parse_decision(&decision_value(&weighted)), Ok(weighted));
        assert_eq!(key(Fact::Count, "web", "10.0.0.1:80"), "c/web/10.0.0.1:80");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(parse_verdict("sideways 1").is_err());
        assert!(parse_verdict("up soon").is_err());
        assert!(parse_count("-1").is_err());
        assert!(parse_decision("drain 12").is_err());
        assert!(parse_decision("pause 12 lb1").is_err());
        assert!(parse_decision("drain 12 lb1 weight=999").is_err());
        assert!(parse_decision("drain 12 lb1 heavy").is_err());
    }
}
