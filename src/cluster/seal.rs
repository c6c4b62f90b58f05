//! The sealed gossip datagram: chitchat's message compressed and sealed with XChaCha20-Poly1305
//! under a key derived from the cluster secret, bound to its sender and its send time.
//!
//! A datagram is `[version 2][nonce 24][send time 8][ciphertext + tag 16]`. The authenticated
//! data is the version, the send time (ms since the epoch on the sender's clock) and the
//! sender's advertised address; the receiver rebuilds it from the address the datagram came
//! from. So a datagram replayed from any other address does not open, and one replayed later
//! than the receiver accepts (its age is authenticated) is refused: a captured datagram can
//! neither make an instance answer a stranger nor be played back later. The nonce is random
//! (192 bits: random nonces never collide in practice).

use std::net::{IpAddr, SocketAddr};

use chacha20poly1305::aead::{AeadCore, AeadInPlace, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chitchat::{ChitchatMessage, Deserializable};

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// The format version byte.
const VERSION: u8 = 2;
const NONCE_LEN: usize = 24;
const TIME_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Bytes before the ciphertext.
const HEADER: usize = 1 + NONCE_LEN + TIME_LEN;
/// Bytes a sealed datagram adds to the compressed message.
const OVERHEAD: usize = HEADER + TAG_LEN;
/// zstd level: fast, and still shrinks key-value text several times.
const LEVEL: i32 = 1;

/// An opened datagram: the message and when its sender sent it (on the sender's clock).
#[derive(Debug, PartialEq)]
pub struct Opened {
    /// The gossip message.
    pub message: ChitchatMessage,
    /// Send time, ms since the epoch.
    pub sent_ms: u64,
}

/// Why a datagram was dropped before chitchat saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a sealed datagram of this version, or sealed but not a message.
    Malformed(String),
    /// It does not open with the secret for the address it came from.
    Unopened,
    /// It opened, but was sent longer ago than accepted (its send time is authentic).
    Stale {
        /// Send time, ms since the epoch on the sender's clock.
        sent_ms: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(why) => f.write_str(why),
            Refusal::Unopened => f.write_str(
                "it does not open with the cluster secret for the address it came from (another cluster's secret, forged, or replayed from another address)",
            ),
            Refusal::Stale { .. } => f.write_str(
                "sealed, but sent too long ago (replayed, or this instance's clock and the sender's differ by more than max_clock_skew)",
            ),
        }
    }
}

/// The authenticated data: version, send time, sender address (IPv4-mapped IPv6 addresses as
/// IPv4, so that both ends spell one sender alike).
fn associated(sent_ms: u64, sender: SocketAddr) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + TIME_LEN + 1 + 16 + 2);
    aad.push(VERSION);
    aad.extend_from_slice(&sent_ms.to_be_bytes());
    match sender.ip().to_canonical() {
        IpAddr::V4(ip) => {
            aad.push(4);
            aad.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            aad.push(6);
            aad.extend_from_slice(&ip.octets());
        }
    }
    aad.extend_from_slice(&sender.port().to_be_bytes());
    aad
}

/// Compresses and seals one serialized message from `sender` at `sent_ms`.
pub fn seal(
    cipher: &XChaCha20Poly1305,
    message: &[u8],
    sender: SocketAddr,
    sent_ms: u64,
) -> Result<Vec<u8>, String> {
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
        .encrypt_in_place(&nonce, &associated(sent_ms, sender), &mut body)
        .map_err(|_| "cannot seal".to_owned())?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sent_ms.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens one datagram that came `from` an address, at `now_ms` on this instance's clock, with
/// the first of `ciphers` that opens it; refuses it if it was sent more than `max_age_ms` ago.
pub fn open(
    ciphers: &[XChaCha20Poly1305],
    datagram: &[u8],
    from: SocketAddr,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<Opened, Refusal> {
    if datagram.len() < OVERHEAD {
        return Err(Refusal::Malformed(format!(
            "{} bytes is too short to be sealed",
            datagram.len()
        )));
    }
    if datagram[0] != VERSION {
        return Err(Refusal::Malformed(format!(
            "unknown format version {} (this instance reads {VERSION}: is a peer older or newer?)",
            datagram[0]
        )));
    }
    let nonce = XNonce::from_slice(&datagram[1..1 + NONCE_LEN]);
    let mut time = [0u8; TIME_LEN];
    time.copy_from_slice(&datagram[1 + NONCE_LEN..HEADER]);
    let sent_ms = u64::from_be_bytes(time);
    let aad = associated(sent_ms, from);
    let sealed = &datagram[HEADER..];
    let body = ciphers
        .iter()
        .find_map(|cipher| {
            let mut body = sealed.to_vec();
            cipher
                .decrypt_in_place(nonce, &aad, &mut body)
                .ok()
                .map(|()| body)
        })
        .ok_or(Refusal::Unopened)?;
    if now_ms.saturating_sub(sent_ms) > max_age_ms {
        return Err(Refusal::Stale { sent_ms });
    }
    let message = zstd::bulk::decompress(&body, MAX_DATAGRAM).map_err(|e| {
        Refusal::Malformed(format!("sealed but not a valid compressed message: {e}"))
    })?;
    let message = ChitchatMessage::deserialize(&mut message.as_slice()).map_err(|e| {
        Refusal::Malformed(format!(
            "sealed but not a gossip message this version reads: {e}"
        ))
    })?;
    Ok(Opened { message, sent_ms })
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
    use chacha20poly1305::aead::KeyInit;
    use chitchat::Serializable;

    const NOW: u64 = 1_800_000_000_000;
    const AGE: u64 = 6_000;

    fn message() -> Vec<u8> {
        ChitchatMessage::BadCluster.serialize_to_vec()
    }

    fn cipher(secret: &[u8]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&derive_key(secret)).into())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn round_trip_from_the_sender_within_the_age() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let a = addr("10.0.0.5:7946");
        let sealed = seal(&c, &message(), a, NOW).expect("seal");
        let opened = open(&[c], &sealed, a, NOW + 100, AGE).expect("open");
        assert_eq!(opened.message, ChitchatMessage::BadCluster);
        assert_eq!(opened.sent_ms, NOW);
    }

    #[test]
    fn from_another_address_it_does_not_open() {
        let c = [cipher(b"0123456789abcdef0123456789abcdef")];
        let sealed = seal(&c[0], &message(), addr("10.0.0.5:7946"), NOW).expect("seal");
        for stranger in ["10.0.0.6:7946", "10.0.0.5:7947", "[::1]:7946"] {
            let got = open(&c, &sealed, addr(stranger), NOW, AGE);
            assert_eq!(got.err(), Some(Refusal::Unopened), "{stranger}");
        }
        // The same sender seen as an IPv4-mapped IPv6 address is the same sender.
        assert!(open(&c, &sealed, addr("[::ffff:10.0.0.5]:7946"), NOW, AGE).is_ok());
    }

    #[test]
    fn too_old_is_refused_with_its_send_time_and_a_forged_time_does_not_open() {
        let c = [cipher(b"0123456789abcdef0123456789abcdef")];
        let a = addr("10.0.0.5:7946");
        let mut sealed = seal(&c[0], &message(), a, NOW).expect("seal");
        assert!(open(&c, &sealed, a, NOW + AGE, AGE).is_ok());
        let late = open(&c, &sealed, a, NOW + AGE + 1, AGE);
        assert_eq!(late.err(), Some(Refusal::Stale { sent_ms: NOW }));
        // Making it look fresh breaks the seal.
        sealed[1 + NONCE_LEN + TIME_LEN - 1] ^= 0xff;
        assert_eq!(
            open(&c, &sealed, a, NOW, AGE).err(),
            Some(Refusal::Unopened)
        );
    }

    #[test]
    fn another_secret_a_flipped_bit_or_junk_is_rejected() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let other = cipher(b"another secret, also 32 bytes long!");
        let a = addr("127.0.0.1:9000");
        let mut sealed = seal(&c, &message(), a, NOW).expect("seal");
        assert!(open(std::slice::from_ref(&other), &sealed, a, NOW, AGE).is_err());
        assert!(
            open(&[other, c.clone()], &sealed, a, NOW, AGE).is_ok(),
            "any key opens"
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let c = [c];
        assert!(open(&c, &sealed, a, NOW, AGE).is_err());
        assert!(matches!(
            open(&c, b"junk", a, NOW, AGE),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            open(&c, &[1u8; 100], a, NOW, AGE),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn nonces_differ_between_two_seals() {
        let c = cipher(b"0123456789abcdef0123456789abcdef");
        let a = addr("127.0.0.1:9000");
        let (x, y) = (
            seal(&c, &message(), a, NOW).expect("x"),
            seal(&c, &message(), a, NOW).expect("y"),
        );
        assert_ne!(x[1..1 + NONCE_LEN], y[1..1 + NONCE_LEN]);
    }
}
