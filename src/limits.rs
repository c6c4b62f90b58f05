//! The descriptor budget: how many clients tierlb can serve at once without running out of
//! file descriptors, and what is kept aside for everything else.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit ([`raise_nofile`]), as
//! HAProxy and nginx do. From the limit, [`Budget::for_limit`] reserves descriptors for the
//! process itself (standard streams, the runtime's epoll and wake-up descriptors, the listener,
//! reloads, DNS look-ups), one per node for its probe, the admin endpoint's connections and
//! the `splice(2)` pipes; what is left, two descriptors per client (its socket and its node's),
//! is the default connection limit. A UDP flow holds one (its socket to its node), so the
//! same budget holds twice as many flows as TCP clients. At that limit tierlb stops accepting
//! and clients wait in the kernel's accept queue, rather than being accepted and then reset
//! for want of a socket to their node.

use std::io;

/// Descriptors kept for the process itself.
const FIXED_RESERVE: u64 = 32;
/// Most admin connections served at once, at ample limits.
const MAX_ADMIN_CONNECTIONS: u64 = 32;
/// Most `splice(2)` pipes open at once, at ample limits (each holds two descriptors).
const MAX_PIPES: u64 = 256;
/// Descriptors a TCP client holds: its socket and its node's (a UDP flow holds one).
pub const CLIENT_DESCRIPTORS: u32 = 2;

/// How the descriptor limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft descriptor limit in force.
    pub nofile: u64,
    /// Most clients served at once.
    pub clients: u32,
    /// Most admin connections served at once.
    pub admin: u32,
    /// Most pipes open at once.
    pub pipes: u32,
}

impl Budget {
    /// The budget for a descriptor limit of `nofile` with `nodes` nodes to probe.
    pub fn for_limit(nofile: u64, nodes: usize) -> Budget {
        let admin = (nofile / 16).clamp(2, MAX_ADMIN_CONNECTIONS);
        let pipes = (nofile / 32).min(MAX_PIPES);
        let reserved = FIXED_RESERVE + nodes as u64 + admin + 2 * pipes;
        let clients = (nofile.saturating_sub(reserved) / u64::from(CLIENT_DESCRIPTORS)).max(1);
        Budget {
            nofile,
            clients: u32::try_from(clients).unwrap_or(u32::MAX),
            admin: u32::try_from(admin).unwrap_or(u32::MAX),
            pipes: u32::try_from(pipes).unwrap_or(u32::MAX),
        }
    }

    /// Descriptors for clients and flows: two per TCP client, one per UDP flow.
    pub fn descriptors(&self) -> usize {
        self.clients as usize * CLIENT_DESCRIPTORS as usize
    }

    /// The budget for this process's soft descriptor limit now.
    pub fn current(nodes: usize) -> Budget {
        Budget::for_limit(soft_nofile(), nodes)
    }
}

/// The soft descriptor limit in force (unlimited counts as `u64::MAX`; an unreadable limit as
/// the common default of 1024).
pub fn soft_nofile() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Raises the soft descriptor limit to the hard one; returns the limits before and after.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok((before, soft_nofile()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_limits_keep_room_for_everything_else() {
        let b = Budget::for_limit(256, 3);
        // 32 fixed + 3 probes + 16 admin + 8 pipes (16 descriptors) = 67 kept aside.
        assert_eq!((b.clients, b.admin, b.pipes), (94, 16, 8));
        let used = FIXED_RESERVE + 3 + u64::from(b.admin) + 2 * u64::from(b.pipes);
        assert!(used + 2 * u64::from(b.clients) <= 256);
        // The same budget in descriptors: 94 TCP clients, or 188 UDP flows.
        assert_eq!(b.descriptors(), 188);
    }

    #[test]
    fn large_limits_cap_the_side_budgets() {
        let b = Budget::for_limit(1 << 20, 100);
        assert_eq!((b.admin, b.pipes), (32, 256));
        assert_eq!(u64::from(b.clients), ((1 << 20) - 32 - 100 - 32 - 512) / 2);
    }

    #[test]
    fn a_tiny_limit_still_serves_one_client() {
        assert_eq!(Budget::for_limit(20, 50).clients, 1);
        assert_eq!(Budget::for_limit(u64::MAX, 1).clients, u32::MAX);
    }
}
