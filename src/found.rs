//! What a service's `discover` entries have found: the last good answer of each entry, its
//! counters, and the token that stops its lookups; with the service's configuration in
//! force, from which the node list is composed. One lock per service serialises the
//! writers (a reload and each entry's lookups); connections never take it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::config::{ServiceConfig, Target};

/// One address an entry found, with what its record says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The address and port.
    pub addr: SocketAddr,
    /// An SRV record's weight (`None` for an A/AAAA record).
    pub weight: Option<u16>,
    /// An SRV record of a priority above the answer's lowest: a backup.
    pub backup: bool,
}

/// An entry's counters, for metrics and `/status`.
#[derive(Debug, Default)]
pub struct EntryStats {
    /// Lookups made.
    pub lookups: AtomicU64,
    /// Lookups that failed or came back empty (`tierlb_discovery_errors_total`).
    pub errors: AtomicU64,
    /// Why the last lookup failed, while it keeps failing.
    pub failing: Mutex<Option<String>>,
    /// Cancelled once the first lookup has ended, answered or not.
    pub settled: CancellationToken,
}

impl EntryStats {
    /// Why lookups are failing now, if they are.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// Lookups made so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Failed or empty lookups so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// One `discover` entry of the service in force.
#[derive(Debug)]
pub struct Entry {
    /// What it looks up.
    pub target: Target,
    /// How it is named in logs, metrics and `/status`: `dns node:8080`, `srv _web._tcp.x`.
    pub name: Arc<str>,
    /// The last good answer (`None` until one came).
    pub answer: Option<Vec<Record>>,
    /// Stops its lookups (when a reload removes it, or the service goes).
    pub stop: CancellationToken,
    /// Its counters.
    pub stats: Arc<EntryStats>,
}

impl Entry {
    /// A new entry for `target`, with no answer yet, stopped by `stop` or by its parent.
    pub fn new(target: &Target, parent: &CancellationToken) -> Entry {
        Entry {
            target: target.clone(),
            name: Arc::from(target.to_string()),
            answer: None,
            stop: parent.child_token(),
            stats: Arc::default(),
        }
    }
}

/// The service's configuration in force and its entries, in the order of `discover`.
#[derive(Debug)]
pub struct Roster {
    /// The service's configuration in force.
    pub config: ServiceConfig,
    /// Its `discover` entries.
    pub entries: Vec<Entry>,
}

/// A service's [`Roster`] behind its writers' lock.
#[derive(Debug)]
pub struct Found {
    roster: Mutex<Roster>,
}

impl Found {
    /// The roster of the service `config`, every entry without an answer yet; `stop` stops
    /// every entry's lookups.
    pub fn new(config: &ServiceConfig, stop: &CancellationToken) -> Found {
        let entries = config
            .discover
            .iter()
            .map(|d| Entry::new(&d.target, stop))
            .collect();
        Found {
            roster: Mutex::new(Roster {
                config: config.clone(),
                entries,
            }),
        }
    }

    /// Takes the writers' lock. A writer that panicked left the roster whole (every write
    /// is one assignment), so a poisoned lock is taken anyway.
    pub fn lock(&self) -> MutexGuard<'_, Roster> {
        self.roster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Each entry's name and counters, for metrics and `/status`.
    pub fn stats(&self) -> Vec<(Arc<str>, Arc<EntryStats>, usize)> {
        self.lock()
            .entries
            .iter()
            .map(|e| {
                let found = e.answer.as_ref().map_or(0, Vec::len);
                (Arc::clone(&e.name), Arc::clone(&e.stats), found)
            })
            .collect()
    }
}
