//! One service's shared state: the upstream snapshot its connections read, its listener's
//! counters, its queue, the rate limit of its failure lines. (Its accept loop is in `listener`, which
//! spawns `conn` tasks that read this: keeping the two apart keeps `conn` below both.)

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Refusal};
use crate::config::{AdmissionConfig, ServiceConfig};
use crate::found::Found;
use crate::metrics::{ListenerStats, UdpStats};
use crate::queue::Queue;
use crate::throttle::Throttle;
use crate::upstream::Upstream;

/// One service's shared state. Readers take the upstream with one atomic load and never lock.
#[derive(Debug)]
pub struct Service {
    /// The service's name (`default` in the single-service form).
    pub name: String,
    /// The address the listener is bound to (the configured one may say port 0).
    pub bound: SocketAddr,
    upstream: ArcSwap<Upstream>,
    /// Listener counters.
    pub listener: ListenerStats,
    /// Client-visible failures, for rate-limited logging.
    pub client_failures: Throttle,
    /// Grows by one per client: seeds the random draws of the pick in large node sets.
    pub next_pick: AtomicUsize,
    /// Clients waiting for a slot while every node is full.
    pub queue: Arc<Queue>,
    /// Cancelled when the service stops accepting: at shutdown, or when a reload removes it.
    pub stop: CancellationToken,
    /// What its `discover` entries found, and its configuration in force.
    pub found: Found,
    /// Its clients per source, for its admission rules.
    pub admission: Admission,
    /// Its dropped datagrams, for a UDP service.
    pub udp: UdpStats,
}

impl Service {
    /// The service `config` served on `bound`, every node new (up, on probation); `stop` ends
    /// its accept loop.
    pub fn new(config: &ServiceConfig, bound: SocketAddr, stop: CancellationToken) -> Service {
        Service {
            name: config.name.clone(),
            bound,
            upstream: ArcSwap::from_pointee(Upstream::new(config)),
            listener: ListenerStats::default(),
            client_failures: Throttle::default(),
            next_pick: AtomicUsize::new(0),
            queue: Arc::default(),
            found: Found::new(config, &stop),
            admission: Admission::default(),
            udp: UdpStats::default(),
            stop,
        }
    }

    /// Its upstream: settings, nodes and strategy, as one snapshot.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream.load_full()
    }

    /// Puts a reloaded upstream in force, whole.
    pub fn set_upstream(&self, upstream: Upstream) {
        self.upstream.store(Arc::new(upstream));
    }
}

/// What a service listens on: a TCP listener (its own, or one shared by `sni`), or the UDP
/// socket of a `protocol = "udp"` service.
#[derive(Debug)]
pub enum Bound {
    /// A TCP service's listener.
    Tcp(tokio::net::TcpListener),
    /// A UDP service's socket.
    Udp(tokio::net::UdpSocket),
}

impl std::os::fd::AsFd for Bound {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Bound::Tcp(l) => l.as_fd(),
            Bound::Udp(s) => s.as_fd(),
        }
    }
}

impl Bound {
    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(s) => s.local_addr(),
        }
    }
}

/// Counts one client in its service's open connections ([`ListenerStats::active`]) until
/// dropped, on every exit path, and, once admitted, in its source's count. It holds the
/// service, so a connection's future can hand the service on and still be counted.
pub struct Active(Arc<Service>, Option<IpAddr>);

impl Active {
    /// Counts one more open client connection of `service`.
    pub fn new(service: &Arc<Service>) -> Active {
        service.listener.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(service), None)
    }

    /// Puts the client from `ip` to the service's admission `rules`: counted in its source
    /// until this guard drops, or refused (counted and, once a minute per source, logged).
    pub fn admit(&mut self, ip: IpAddr, rules: &AdmissionConfig) -> Result<(), Refusal> {
        let service = &self.0;
        match service.admission.admit(rules, ip) {
            Ok(counted) => {
                self.1 = counted.then_some(ip);
                Ok(())
            }
            Err(why) => {
                service.admission.log_refusal(&service.name, ip, why);
                Err(why)
            }
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.listener.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.1 {
            self.0.admission.left(ip);
        }
    }
}
