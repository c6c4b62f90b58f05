//! Who may connect to a service, and how much per client address (after a PROXY header, the
//! client it names): `deny` and `allow` ranges, `max_per_source` connections open at once and
//! `rate_per_source` new connections per period. A client over a rule is closed at once by
//! its caller, counted by reason and logged once per source per minute.
//!
//! A service with limits keeps one entry per source with an open connection or a connection
//! in the last two periods (its open count and [`Window`]s of its attempts and admissions),
//! swept once a second; the table is never larger than the open connections plus the sources
//! of the last two periods. A service without rules keeps nothing and pays one branch.
//!
//! In a cluster the limits are the cluster's: each instance publishes its *heavy* sources
//! (over a tenth of a limit; at most [`HEAVY_MAX`] per service, the heaviest first) and adds
//! the live peers' published figures to its own before it admits (see [`Admission::set_peers`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::config::AdmissionConfig;

mod heavy;
mod window;

pub use heavy::{parse_heavy, show_heavy};
use window::Window;

/// How many sources' log lines are remembered at once; past it, clients are counted, not
/// logged, until the oldest lines are a minute old.
const LOGGED_MAX: usize = 10_000;
/// A source is logged at most once per this many ms.
const LOG_EVERY_MS: u64 = 60_000;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is in `deny`, or not in a non-empty `allow`.
    Denied,
    /// It already has `max_per_source` connections open.
    TooMany,
    /// It opened `rate_per_source` connections in the last period.
    TooFast,
}

impl Refusal {
    /// Every reason, in the order of the counters.
    pub const ALL: [Refusal; 3] = [Refusal::Denied, Refusal::TooMany, Refusal::TooFast];

    /// The reason as counted and logged.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Denied => "deny",
            Refusal::TooMany => "max_per_source",
            Refusal::TooFast => "rate_per_source",
        }
    }
}

/// A source's figures: connections open now, and connection attempts in the last period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Connections open now.
    pub active: u32,
    /// Connection attempts in the last period (admitted or not).
    pub recent: u32,
}

#[derive(Debug, Default)]
struct Entry {
    active: u32,
    attempts: Window,
    admitted: Window,
}

#[derive(Debug, Default)]
struct Table {
    sources: HashMap<IpAddr, Entry>,
    /// The second of the last sweep.
    swept: u64,
    /// When each recently logged source was last logged, ms.
    logged: HashMap<IpAddr, u64>,
    /// The second `logged` was last swept in while full.
    logs_swept: u64,
}

/// One service's admission state (its rules are in the service's settings).
#[derive(Debug)]
pub struct Admission {
    table: Mutex<Table>,
    /// The live peers' heavy sources, summed.
    peers: Mutex<HashMap<IpAddr, Load>>,
    /// Whether `peers` holds anything (read without the lock).
    any_peers: AtomicBool,
    rejected: [AtomicU64; 3],
    epoch: Instant,
}

impl Default for Admission {
    fn default() -> Admission {
        Admission {
            table: Mutex::default(),
            peers: Mutex::default(),
            any_peers: AtomicBool::new(false),
            rejected: Default::default(),
            epoch: Instant::now(),
        }
    }
}

/// The period of a rule, ms (one second without a rate).
fn period_ms(rules: &AdmissionConfig) -> u64 {
    rules
        .rate_per_source
        .map_or(1_000, |r| u64::try_from(r.per.as_millis()).unwrap_or(1_000))
}

/// This instance's share of a `rate` when it saw `here` attempts from an address in the
/// last period and the live peers `elsewhere`: in proportion, the whole rate when no peer
/// saw any.
fn share(rate: f64, here: f64, elsewhere: f64) -> f64 {
    if elsewhere <= 0.0 {
        rate
    } else {
        rate * here / (here + elsewhere)
    }
}

/// A client's address as it is counted: an IPv4-mapped IPv6 address as its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Admission {
    /// Decides on a client from `ip` under `rules`. `Ok(true)`: admitted and counted, so
    /// [`Admission::left`] must be called when it closes; `Ok(false)`: admitted, nothing to
    /// count.
    pub fn admit(&self, rules: &AdmissionConfig, ip: IpAddr) -> Result<bool, Refusal> {
        if rules.is_open() {
            return Ok(false);
        }
        let ip = canonical(ip);
        let listed = |ranges: &[crate::config::Cidr]| ranges.iter().any(|r| r.contains(ip));
        if listed(&rules.deny) || (!rules.allow.is_empty() && !listed(&rules.allow)) {
            return Err(self.refused(Refusal::Denied));
        }
        if !rules.counts() {
            return Ok(false);
        }
        let now = self.now_ms();
        let period = period_ms(rules);
        let peer = self.peer_load(ip);
        let mut table = self.lock();
        table.sweep(now, period);
        let entry = table.sources.entry(ip).or_default();
        if let Some(max) = rules.max_per_source {
            if entry.active.saturating_add(peer.active) >= max {
                drop(table);
                return Err(self.refused(Refusal::TooMany));
            }
        }
        if let Some(rate) = rules.rate_per_source {
            entry.attempts.add(now, period);
            let here = entry.attempts.estimate(now, period);
            let share = share(f64::from(rate.count), here, f64::from(peer.recent));
            if entry.admitted.estimate(now, period) >= share {
                drop(table);
                return Err(self.refused(Refusal::TooFast));
            }
        }
        entry.active += 1;
        entry.admitted.add(now, period);
        Ok(true)
    }

    /// A counted client from `ip` closed.
    pub fn left(&self, ip: IpAddr) {
        if let Some(entry) = self.lock().sources.get_mut(&canonical(ip)) {
            entry.active = entry.active.saturating_sub(1);
        }
    }

    /// Logs the refusal of a client from `ip` of `service` for `why`, once per source per
    /// minute.
    pub fn log_refusal(&self, service: &str, ip: IpAddr, why: Refusal) {
        if self.log_now(ip) {
            tracing::info!(service = %service, client = %ip, reason = why.reason(), "client refused by the admission rules (logged once a minute per source)");
        }
    }

    /// Whether a refusal of `ip` is to be logged now: once per source per minute.
    fn log_now(&self, ip: IpAddr) -> bool {
        let now = self.now_ms();
        let mut table = self.lock();
        if table.logged.len() >= LOGGED_MAX && table.logs_swept != now / 1_000 {
            table.logs_swept = now / 1_000;
            table
                .logged
                .retain(|_, at| now.saturating_sub(*at) < LOG_EVERY_MS);
        }
        match table.logged.get(&ip) {
            Some(at) if now.saturating_sub(*at) < LOG_EVERY_MS => false,
            None if table.logged.len() >= LOGGED_MAX => false,
            _ => {
                table.logged.insert(ip, now);
                true
            }
        }
    }

    /// Clients refused for `why` since start.
    pub fn rejected(&self, why: Refusal) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.lock().sources.len()
    }

    /// This instance's heavy sources under `rules` (over a tenth of a limit), the heaviest
    /// first, at most [`HEAVY_MAX`]: what it publishes to its cluster peers.
    pub fn heavy(&self, rules: &AdmissionConfig) -> Vec<(IpAddr, Load)> {
        if !rules.counts() {
            return Vec::new();
        }
        let now = self.now_ms();
        let period = period_ms(rules);
        let table = self.lock();
        let loads = table.sources.iter().map(|(ip, e)| {
            let recent = e.attempts.estimate(now, period).round() as u32;
            (
                *ip,
                Load {
                    active: e.active,
                    recent,
                },
            )
        });
        heavy::select(loads, rules)
    }

    /// Puts in force the live peers' heavy sources, summed per address.
    pub fn set_peers(&self, loads: HashMap<IpAddr, Load>) {
        self.any_peers.store(!loads.is_empty(), Ordering::Relaxed);
        if let Ok(mut peers) = self.peers.lock() {
            *peers = loads;
        }
    }

    fn peer_load(&self, ip: IpAddr) -> Load {
        if !self.any_peers.load(Ordering::Relaxed) {
            return Load::default();
        }
        self.peers
            .lock()
            .ok()
            .and_then(|p| p.get(&ip).copied())
            .unwrap_or_default()
    }

    fn refused(&self, why: Refusal) -> Refusal {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
        why
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The table. Nothing panics while holding it and its state is whole between calls, so a
    /// poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Table {
    /// Once a second: forgets sources with nothing open and nothing in their window, and log
    /// marks older than a minute.
    fn sweep(&mut self, now_ms: u64, period_ms: u64) {
        let second = now_ms / 1_000;
        if second == self.swept {
            return;
        }
        self.swept = second;
        self.sources
            .retain(|_, e| e.active > 0 || !e.attempts.is_empty(now_ms, period_ms));
        self.logged
            .retain(|_, at| now_ms.saturating_sub(*at) < LOG_EVERY_MS);
    }
}

#[cfg(test)]
mod tests;
