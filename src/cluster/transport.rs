//! The gossip transport: chitchat's messages over UDP, each datagram compressed and sealed
//! with XChaCha20-Poly1305 under a key derived from the cluster secret.
//!
//! A datagram is `[version 1][nonce 24][ciphertext + tag 16]`; the nonce is random (192 bits,
//! so random nonces never collide in practice), the version byte is authenticated too. A
//! datagram that is short, of another version, fails to open, inflates past the UDP limit or
//! does not parse is dropped before chitchat sees it, and counted: nothing an outsider sends
//! reaches the parser. A replayed datagram carries state chitchat already has (every value is
//! versioned), so it changes nothing. Send errors (a partition's unreachable peer, a firewall
//! rule) are counted, and logged once per peer when they start and once when they end:
//! gossip simply retries next round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};

use crate::throttle::Throttle;

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// The format version byte.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to the compressed message.
const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// zstd level: fast, and still shrinks key-value text several times.
const LEVEL: i32 = 1;

/// Gossip traffic counters, for metrics and the traffic figure.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Datagrams dropped before parsing: unauthenticated, malformed or of another version.
    pub rejected: AtomicU64,
    /// Datagrams sent, and their bytes on the wire (UDP payload).
    pub sent: AtomicU64,
    /// Bytes sent.
    pub sent_bytes: AtomicU64,
    /// Datagrams accepted, and their bytes.
    pub received: AtomicU64,
    /// Bytes received in accepted datagrams.
    pub received_bytes: AtomicU64,
    /// Sends that failed (unreachable peer, firewall).
    pub send_errors: AtomicU64,
    rejected_log: Throttle,
}

impl Traffic {
    /// Rejected datagrams not logged one by one since the last call, for a summary line.
    pub fn take_unlogged_rejects(&self) -> u64 {
        self.rejected_log.take_suppressed()
    }
}

/// A sealing transport around one UDP socket bound before chitchat starts (so the bound port
/// is known for the advertised address).
pub struct Sealed {
    socket: Mutex<Option<std::net::UdpSocket>>,
    ciphers: Vec<XChaCha20Poly1305>,
    traffic: std::sync::Arc<Traffic>,
}

impl Sealed {
    /// A transport over `socket` with the 32-byte `keys`: the first seals, any opens.
    pub fn new(
        socket: std::net::UdpSocket,
        keys: &[[u8; 32]],
        traffic: std::sync::Arc<Traffic>,
    ) -> Sealed {
        Sealed {
            socket: Mutex::new(Some(socket)),
            ciphers: keys
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
            traffic,
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
            traffic: std::sync::Arc::clone(&self.traffic),
            buf: vec![0; MAX_DATAGRAM],
            failing: HashMap::new(),
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    /// The sealing cipher first.
    ciphers: Vec<XChaCha20Poly1305>,
    traffic: std::sync::Arc<Traffic>,
    buf: Vec<u8>,
    /// Peers whose sends fail, with how many failed: logged once when it starts and once
    /// when it ends, not every round.
    failing: HashMap<SocketAddr, u64>,
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let sealed = match self.ciphers.first() {
            Some(cipher) => seal(cipher, &message.serialize_to_vec()),
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
            match open(&self.ciphers, &self.buf[..n]) {
                Ok(message) => {
                    self.traffic.received.fetch_add(1, Ordering::Relaxed);
                    self.traffic
                        .received_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    return Ok((from, message));
                }
                Err(why) => {
                    self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                    if self.traffic.rejected_log.allow() {
                        tracing::warn!(from = %from, bytes = n, "gossip packet rejected: {why}");
                    }
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
            tracing::warn!(to = %to, "gossip packets to {to} cannot be sent: {why} (logged again when they can)");
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

/// Compresses and seals one serialized message.
pub fn seal(cipher: &XChaCha20Poly1305, message: &[u8]) -> Result<Vec<u8>, String> {
    let compressed =
        zstd::bulk::compress(message, LEVEL).map_err(|e| format!("cannot compress: {e}"))?;
    if compressed.len() + OVERHEAD > MAX_DATAGRAM {
        return Err(format!(
            "the message is {} bytes compressed, over the UDP limit; publish less state",
            compressed.len()
        ));
    }
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut body = compressed;
    cipher
        .encrypt_in_place(&nonce, &[VERSION], &mut body)
        .map_err(|_| "cannot seal".to_owned())?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens one datagram into a message with the first of `ciphers` that opens it, or says why
/// it is dropped.
pub fn open(ciphers: &[XChaCha20Poly1305], datagram: &[u8]) -> Result<ChitchatMessage, String> {
    if datagram.len() < OVERHEAD {
        return Err(format!(
            "{} bytes is too short to be sealed",
            datagram.len()
        ));
    }
    if datagram[0] != VERSION {
        return Err(format!("unknown format version {}", datagram[0]));
    }
    let nonce = XNonce::from_slice(&datagram[1..1 + NONCE_LEN]);
    let sealed = &datagram[1 + NONCE_LEN..];
    let body = ciphers
        .iter()
        .find_map(|cipher| {
            let mut body = sealed.to_vec();
            cipher
                .decrypt_in_place(nonce, &[VERSION], &mut body)
                .ok()
                .map(|()| body)
        })
        .ok_or_else(|| {
            "it does not open with the cluster secret (another cluster, or forged)".to_owned()
        })?;
    let message = zstd::bulk::decompress(&body, MAX_DATAGRAM)
        .map_err(|e| format!("sealed but not a valid compressed message: {e}"))?;
    ChitchatMessage::deserialize(&mut message.as_slice())
        .map_err(|e| format!("sealed but not a gossip message this version reads: {e}"))
}

/// The 32-byte gossip key derived from the cluster secret (HKDF-SHA256), so the secret itself
/// is never the key and a future use of it gets a key of its own.
pub fn derive_key(secret: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"tierlb cluster"), secret);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
    if hk.expand(b"gossip xchacha20poly1305 v1", &mut key).is_err() {
        key = [0u8; 32];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> ChitchatMessage {
        ChitchatMessage::BadCluster
    }

    fn cipher(secret: &[u8]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&derive_key(secret)).into())
    }

    #[test]
    fn round_trip_with_the_same_secret() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let sealed = seal(&c, &envelope().serialize_to_vec()).expect("seal");
        assert_eq!(open(&[c], &sealed).expect("open"), envelope());
    }

    #[test]
    fn another_secret_or_a_flipped_bit_is_rejected() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let other = cipher(b"another secret, also 32 bytes long!");
        let mut sealed = seal(&c, &envelope().serialize_to_vec()).expect("seal");
        assert!(open(std::slice::from_ref(&other), &sealed).is_err());
        assert!(open(&[other, c.clone()], &sealed).is_ok(), "any key opens");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let c = [c];
        assert!(open(&c, &sealed).is_err());
        assert!(open(&c, b"junk").is_err());
        assert!(open(&c, &[0u8; 100]).is_err());
    }

    #[test]
    fn nonces_differ_between_two_seals() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let m = envelope().serialize_to_vec();
        let (a, b) = (seal(&c, &m).expect("a"), seal(&c, &m).expect("b"));
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
    }
}
