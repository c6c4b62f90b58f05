//! A service's admission rules, read from its table (or, with `[services]`, from the top level
//! as every service's default): `allow` and `deny` source ranges, `max_per_source` concurrent
//! connections and `rate_per_source` new connections per client address.

use std::fmt;
use std::time::Duration;

use super::walk::{Section, Walk};
use super::Cidr;

/// Most connections one source may be allowed at once, or per period.
const MAX_LIMIT: u32 = 1_000_000;

/// Who may connect to a service, and how much (`allow`, `deny`, `max_per_source`,
/// `rate_per_source`). The default admits everyone without limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// When not empty, only clients in these ranges are served.
    pub allow: Vec<Cidr>,
    /// Clients in these ranges are never served (checked before `allow`).
    pub deny: Vec<Cidr>,
    /// Most connections open at once from one client address.
    pub max_per_source: Option<u32>,
    /// Most new connections from one client address per period.
    pub rate_per_source: Option<Rate>,
}

impl AdmissionConfig {
    /// Whether the rules admit everyone without counting anything.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.max_per_source.is_none()
            && self.rate_per_source.is_none()
    }

    /// Whether a source must be counted (a limit applies).
    pub fn counts(&self) -> bool {
        self.max_per_source.is_some() || self.rate_per_source.is_some()
    }
}

/// A rate: `count` per `per` (`"20/s"`, `"600/m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// Per how long: one second or one minute.
    pub per: Duration,
}

impl Rate {
    /// The rate per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per.as_secs() == 60 { "m" } else { "s" };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Reads `"N/s"` or `"N/m"`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let wrong = || {
        format!("`{text}` is not a rate; write new connections per second or per minute, e.g. \"20/s\" or \"600/m\"")
    };
    let (count, unit) = text.split_once('/').ok_or_else(wrong)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(wrong()),
    };
    let count: u32 = count.trim().parse().map_err(|_| wrong())?;
    if count == 0 || count > MAX_LIMIT {
        return Err(format!(
            "`{text}`: the count must be from 1 to {MAX_LIMIT} (to refuse a source, `deny` it)"
        ));
    }
    Ok(Rate { count, per })
}

/// Reads the admission keys of `section`; each one it does not set is `base`'s.
pub(super) fn read(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    base: &AdmissionConfig,
) -> AdmissionConfig {
    AdmissionConfig {
        allow: walk
            .ranges(section, "allow")
            .unwrap_or_else(|| base.allow.clone()),
        deny: walk
            .ranges(section, "deny")
            .unwrap_or_else(|| base.deny.clone()),
        max_per_source: walk
            .count(section, "max_per_source", 1, MAX_LIMIT)
            .or(base.max_per_source),
        rate_per_source: rate(walk, section).or(base.rate_per_source),
    }
}

fn rate(walk: &mut Walk<'_>, section: &Section<'_>) -> Option<Rate> {
    let (text, span) = walk.string(section, "rate_per_source", "a rate such as \"20/s\"")?;
    match parse_rate(text) {
        Ok(rate) => Some(rate),
        Err(message) => {
            walk.error(&section.key("rate_per_source"), &span, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_back_and_bad_ones_are_named() {
        let r = parse_rate("20/s").expect("a rate");
        assert_eq!((r.count, r.per), (20, Duration::from_secs(1)));
        assert_eq!(r.to_string(), "20/s");
        let m = parse_rate("600/m").expect("a rate");
        assert!((m.per_second() - 10.0).abs() < 1e-9);
        assert_eq!(m.to_string(), "600/m");
        for bad in ["20", "20/h", "x/s", "-1/s", "0/s", "2000000/s"] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }
}
