//! The gossip transport: chitchat's messages over UDP, each datagram sealed to its sender and
//! send time ([`super::seal`]).
//!
//! A datagram that is short, of another version, does not open for the address it came from,
//! was sent too long ago, inflates past the UDP limit or does not parse is dropped before
//! chitchat sees it, and counted: nothing an outsider sends reaches the parser, and nothing is
//! answered to an address that did not seal it. Rejections are logged once per source and
//! minute, with how many came since. Each authentic datagram tells how far the sender's clock
//! is from this one's (send time against arrival), kept per sender for `/status`. Send errors
//! (a partition's unreachable peer, a firewall rule) are counted, and logged once per peer
//! when they start and once when they end: gossip simply retries next round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use async_trait::async_trait;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::XChaCha20Poly1305;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Serializable};

use super::seal::{self, Refusal, MAX_DATAGRAM};
use crate::node::epoch_ms;

/// A source's rejections are logged at most once per this long.
const REJECTION_LOG_EVERY: Duration = Duration::from_secs(60);
/// Sources whose rejections are tracked one by one; past it, the oldest are forgotten.
const TRACKED_SOURCES: usize = 1024;

/// Gossip traffic counters, for metrics, and the clock offsets of the senders.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Datagrams dropped before parsing: unauthenticated, stale, malformed or of another
    /// version.
    pub rejected: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Bytes sent.
    pub sent_bytes: AtomicU64,
    /// Datagrams accepted.
    pub received: AtomicU64,
    /// Bytes received in accepted datagrams.
    pub received_bytes: AtomicU64,
    /// Sends that failed (unreachable peer, firewall).
    pub send_errors: AtomicU64,
    /// Peers' decisions ignored for being stamped too far ahead of this instance's clock.
    pub skewed: AtomicU64,
    /// How far each sender's clock was ahead of this one's (negative: behind), ms, at its last
    /// authentic datagram.
    offsets: Mutex<HashMap<SocketAddr, i64>>,
}

impl Traffic {
    /// The last clock offset seen from the sender at `addr`, ms (positive: it is ahead).
    pub fn offset(&self, addr: SocketAddr) -> Option<i64> {
        self.offsets.lock().ok()?.get(&addr).copied()
    }

    fn note_offset(&self, addr: SocketAddr, sent_ms: u64, now_ms: u64) {
        let offset =
            i64::try_from(sent_ms).unwrap_or(i64::MAX) - i64::try_from(now_ms).unwrap_or(i64::MAX);
        if let Ok(mut offsets) = self.offsets.lock() {
            // Only authentic senders get here: the map stays as small as the cluster.
            offsets.insert(addr, offset);
        }
    }
}

/// A sealing transport around one UDP socket bound before chitchat starts (so the bound port
/// is known for the advertised address).
pub struct Sealed {
    socket: Mutex<Option<std::net::UdpSocket>>,
    ciphers: Vec<XChaCha20Poly1305>,
    traffic: Arc<Traffic>,
    /// The address datagrams are sealed as coming from: what peers see them come from.
    advertise: SocketAddr,
    /// Oldest datagram accepted.
    max_age: Duration,
}

impl Sealed {
    /// A transport over `socket` with the 32-byte `keys` (the first seals, any opens), sealing
    /// as `advertise` and accepting datagrams up to `max_age` old.
    pub fn new(
        socket: std::net::UdpSocket,
        keys: &[[u8; 32]],
        traffic: Arc<Traffic>,
        advertise: SocketAddr,
        max_age: Duration,
    ) -> Sealed {
        Sealed {
            socket: Mutex::new(Some(socket)),
            ciphers: keys
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
            traffic,
            advertise,
            max_age,
        }
    }
}

#[async_trait]
impl Transport for Sealed {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .with_context(|| format!("the gossip socket for {listen_addr} was already opened"))?;
        socket.set_nonblocking(true)?;
        Ok(Box::new(SealedSocket {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            ciphers: self.ciphers.clone(),
            traffic: Arc::clone(&self.traffic),
            advertise: self.advertise,
            max_age_ms: u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX),
            buf: vec![0; MAX_DATAGRAM],
            failing: HashMap::new(),
            rejections: HashMap::new(),
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    /// The sealing cipher first.
    ciphers: Vec<XChaCha20Poly1305>,
    traffic: Arc<Traffic>,
    advertise: SocketAddr,
    max_age_ms: u64,
    buf: Vec<u8>,
    /// Peers whose sends fail, with how many failed: logged once when it starts and once
    /// when it ends, not every round.
    failing: HashMap<SocketAddr, u64>,
    /// Per source: when its rejections were last logged, and how many came since.
    rejections: HashMap<SocketAddr, (Instant, u64)>,
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let now = epoch_ms(SystemTime::now());
        let sealed = match self.ciphers.first() {
            Some(cipher) => seal::seal(cipher, &message.serialize_to_vec(), self.advertise, now),
            None => Err("no key to seal with".to_owned()),
        };
        let datagram = match sealed {
            Ok(d) => d,
            Err(why) => {
                self.send_failed(to, &why);
                return Ok(());
            }
        };
        match self.socket.send_to(&datagram, to).await {
            Ok(n) => {
                self.traffic.sent.fetch_add(1, Ordering::Relaxed);
                self.traffic
                    .sent_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                if self.failing.remove(&to).is_some() {
                    tracing::info!(to = %to, "gossip packets can be sent again");
                }
            }
            Err(e) => self.send_failed(to, &e.to_string()),
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (n, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                // An ICMP error for an earlier send (a peer that is gone): not this socket's.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e).context("the gossip socket failed"),
            };
            let now = epoch_ms(SystemTime::now());
            match seal::open(&self.ciphers, &self.buf[..n], from, now, self.max_age_ms) {
                Ok(opened) => {
                    self.traffic.note_offset(from, opened.sent_ms, now);
                    self.traffic.received.fetch_add(1, Ordering::Relaxed);
                    self.traffic
                        .received_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    return Ok((from, opened.message));
                }
                Err(refusal) => {
                    if let Refusal::Stale { sent_ms } = refusal {
                        self.traffic.note_offset(from, sent_ms, now);
                    }
                    self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                    self.rejected(from, n, &refusal, now);
                }
            }
        }
    }
}

impl SealedSocket {
    fn send_failed(&mut self, to: SocketAddr, why: &str) {
        self.traffic.send_errors.fetch_add(1, Ordering::Relaxed);
        let failed = self.failing.entry(to).or_insert(0);
        *failed += 1;
        if *failed == 1 {
            tracing::warn!(to = %to, "gossip packets cannot be sent: {why} (logged again when they can)");
        }
    }

    /// Logs a rejection from `from`, unless one from there was logged in the last minute (it
    /// is counted then, and the count goes with the next line).
    fn rejected(&mut self, from: SocketAddr, bytes: usize, refusal: &Refusal, now_ms: u64) {
        let at = Instant::now();
        if self.rejections.len() >= TRACKED_SOURCES && !self.rejections.contains_key(&from) {
            self.rejections
                .retain(|_, (logged, _)| at.duration_since(*logged) < REJECTION_LOG_EVERY);
            if self.rejections.len() >= TRACKED_SOURCES {
                return;
            }
        }
        let (logged, since) = self.rejections.entry(from).or_insert((at, 0));
        if *since > 0 && at.duration_since(*logged) < REJECTION_LOG_EVERY {
            *since += 1;
            return;
        }
        let earlier = std::mem::take(since).saturating_sub(1);
        *logged = at;
        *since = 1;
        match refusal {
            Refusal::Stale { sent_ms } => {
                let behind = Duration::from_millis(now_ms.saturating_sub(*sent_ms));
                tracing::warn!(
                    from = %from,
                    bytes,
                    age = %humantime::format_duration(behind),
                    more_in_the_last_minute = earlier,
                    "gossip packet rejected: {refusal}"
                );
            }
            _ => tracing::warn!(
                from = %from,
                bytes,
                more_in_the_last_minute = earlier,
                "gossip packet rejected: {refusal}"
            ),
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted, OutOfMemory};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | OutOfMemory
    )
}
