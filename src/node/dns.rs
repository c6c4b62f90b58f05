//! The addresses of a node named in `nodes` (a DNS name, not an IP): the last good answer of
//! the background lookups, used in turn, with the addresses that failed a connect set aside
//! until a probe of them passes. A connect reads them and never waits for DNS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

/// Why a named node has no address to connect to.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    /// The name.
    pub host: String,
    /// What the resolver said, or that it has not answered yet.
    pub reason: String,
}

/// One address of the answer.
#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    /// A connect to it failed, and no probe of it has passed since.
    failed: AtomicBool,
}

/// The last good answer for a node's name, and the turn.
#[derive(Debug, Default)]
pub struct Addresses {
    list: ArcSwapOption<Vec<Slot>>,
    next: AtomicUsize,
    /// Why the name has no answer yet (the last lookup's error).
    error: Mutex<Option<String>>,
    /// Cancelled once the first lookup has ended, answered or not.
    pub settled: CancellationToken,
}

impl Addresses {
    /// Puts a new answer in force; an address still in it keeps its failed mark. Returns
    /// whether the set of addresses changed.
    pub fn set(&self, found: &[SocketAddr]) -> bool {
        let old = self.list.load();
        let same = old
            .as_ref()
            .is_some_and(|o| o.len() == found.len() && o.iter().all(|s| found.contains(&s.addr)));
        if same {
            return false;
        }
        let failed = |addr: &SocketAddr| {
            old.as_ref()
                .and_then(|o| o.iter().find(|s| s.addr == *addr))
                .is_some_and(|s| s.failed.load(Ordering::Relaxed))
        };
        let list = found
            .iter()
            .map(|addr| Slot {
                addr: *addr,
                failed: AtomicBool::new(failed(addr)),
            })
            .collect();
        self.list.store(Some(Arc::new(list)));
        true
    }

    /// Records why the last lookup failed (shown while there is no answer yet).
    pub fn lookup_failed(&self, reason: String) {
        if let Ok(mut error) = self.error.lock() {
            *error = Some(reason);
        }
    }

    /// The addresses in force, in the answer's order, each with whether it is set aside.
    pub fn snapshot(&self) -> Vec<(SocketAddr, bool)> {
        self.list.load().as_ref().map_or_else(Vec::new, |list| {
            list.iter()
                .map(|s| (s.addr, s.failed.load(Ordering::Relaxed)))
                .collect()
        })
    }

    /// Marks `addr` as failed (`true`) or passed (`false`).
    pub fn mark(&self, addr: SocketAddr, failed: bool) {
        if let Some(list) = self.list.load().as_ref() {
            if let Some(slot) = list.iter().find(|s| s.addr == addr) {
                slot.failed.store(failed, Ordering::Relaxed);
            }
        }
    }

    /// The addresses to try for one connect, starting at the next in turn: those not set
    /// aside, or all of them when every one is. Fails when the name has no answer yet.
    pub fn order(&self, host: &str) -> Result<Order, DnsError> {
        let Some(list) = self.list.load_full().filter(|l| !l.is_empty()) else {
            let reason = self
                .error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "no answer yet".to_owned());
            return Err(DnsError {
                host: host.to_owned(),
                reason,
            });
        };
        let all = list.iter().all(|s| s.failed.load(Ordering::Relaxed));
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        Ok(Order {
            list,
            start,
            step: 0,
            all,
        })
    }
}

/// The addresses one connect tries, in order (see [`Addresses::order`]).
#[derive(Debug)]
pub struct Order {
    list: Arc<Vec<Slot>>,
    start: usize,
    step: usize,
    /// Every address was set aside: try them all.
    all: bool,
}

impl Iterator for Order {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let n = self.list.len();
        while self.step < n {
            let slot = &self.list[(self.start + self.step) % n];
            self.step += 1;
            if self.all || !slot.failed.load(Ordering::Relaxed) {
                return Some(slot.addr);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn turns_skip_failed_addresses_until_they_pass() {
        let book = Addresses::default();
        assert!(book.order("n").is_err(), "no answer yet");
        let three = addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert!(book.set(&three));
        assert!(!book.set(&three), "the same answer changes nothing");
        let firsts: Vec<SocketAddr> = (0..3)
            .filter_map(|_| book.order("n").ok()?.next())
            .collect();
        assert_eq!(firsts, three, "each connect starts at the next address");
        book.mark(three[1], true);
        for _ in 0..4 {
            let order: Vec<SocketAddr> = book.order("n").expect("answer").collect();
            assert_eq!(order.len(), 2);
            assert!(!order.contains(&three[1]), "the failed address is skipped");
        }
        assert!(book.set(&addrs(&["10.0.0.2:80", "10.0.0.4:80"])));
        let kept = book.snapshot();
        assert_eq!(kept[0], (three[1], true), "a kept address keeps its mark");
        book.mark(three[1], false);
        assert_eq!(book.order("n").expect("answer").count(), 2);
        book.mark(three[1], true);
        book.mark(kept[1].0, true);
        assert_eq!(
            book.order("n").expect("answer").count(),
            2,
            "all set aside: all are tried"
        );
    }
}
