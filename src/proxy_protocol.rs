//! The PROXY protocol (HAProxy's, v1 text and v2 binary), its wire format through the `ppp`
//! crate: the header written to a node before a client's first byte, the header a probe
//! sends (v2 `LOCAL`, v1 `UNKNOWN`: no client), and a client's header read from a trusted
//! source without taking a single byte that follows it.
//!
//! Reading takes exactly the header: six bytes tell the version (`PROXY ` or the start of the
//! v2 signature); a v1 line is then read a byte at a time up to its CRLF (at most 107 bytes,
//! as the spec bounds it), a v2 header by its fixed 16 bytes and then the length they give.
//! Whatever the client sent after the header stays in the socket for the node.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::ProxyProtocol as Version;

/// Longest v1 header, CRLF included (the spec's bound).
const V1_MAX: usize = 107;
/// Longest v2 header accepted (16 fixed bytes, addresses and TLVs): cloud load balancers'
/// TLVs fit with room to spare.
pub const V2_MAX: usize = 1024;
/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A client's header, read: the client and the address it connected to, as the header gives
/// them, or `None` for a `LOCAL`/`UNKNOWN` header (a health check of the sender's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The real client.
    pub source: Option<SocketAddr>,
    /// The address the real client connected to.
    pub destination: Option<SocketAddr>,
}

/// Why a client's header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The client closed before the header was complete.
    #[error("the client closed after {0} bytes, before its PROXY header was complete")]
    Truncated(usize),
    /// The bytes are not a PROXY header.
    #[error("not a PROXY protocol header: {0}")]
    Malformed(String),
    /// The header is longer than accepted.
    #[error("PROXY header of {0} bytes is over the {limit}-byte limit", limit = V2_MAX)]
    TooLong(usize),
    /// Reading failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The header for a client at `client` that connected to `local`, or `None` when off. Both
/// addresses are put in the client's family (an IPv4 client of an IPv6 listener is written
/// as TCP4); should that fail, v1 says `UNKNOWN` and v2 `LOCAL`.
pub fn header(version: Version, client: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let (client, local) = same_family(client, local);
    let same = client.is_ipv4() == local.is_ipv4();
    match version {
        Version::Off => None,
        Version::V1 if same => Some(
            ppp::v1::Addresses::from((client, local))
                .to_string()
                .into_bytes(),
        ),
        Version::V2 if same => Builder::with_addresses(
            ppp::v2::Version::Two | Command::Proxy,
            Protocol::Stream,
            (client, local),
        )
        .build()
        .ok(),
        other => probe_header(other),
    }
}

/// The header a probe sends: v2 `LOCAL`, v1 `UNKNOWN`; `None` when off.
pub fn probe_header(version: Version) -> Option<Vec<u8>> {
    match version {
        Version::Off => None,
        Version::V1 => Some(b"PROXY UNKNOWN\r\n".to_vec()),
        Version::V2 => Builder::with_addresses(
            ppp::v2::Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .ok(),
    }
}

/// Both addresses in the client's family where an IPv4-mapped IPv6 address allows it.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let plain = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    (plain(client), plain(local))
}

/// Reads one v1 or v2 header from `stream`, and nothing after it.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Received, HeaderError> {
    let mut buf = Vec::with_capacity(64);
    fill(stream, &mut buf, 6).await?;
    if buf.as_slice() == b"PROXY " {
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(HeaderError::TooLong(buf.len()));
            }
            let next = buf.len() + 1;
            fill(stream, &mut buf, next).await?;
        }
        let header = ppp::v1::Header::try_from(buf.as_slice())
            .map_err(|e| HeaderError::Malformed(format!("v1: {e}")))?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => received(
                (a.source_address.into(), a.source_port),
                (a.destination_address.into(), a.destination_port),
            ),
            ppp::v1::Addresses::Tcp6(a) => received(
                (a.source_address.into(), a.source_port),
                (a.destination_address.into(), a.destination_port),
            ),
            ppp::v1::Addresses::Unknown => unknown(),
        });
    }
    if buf.as_slice() != &V2_SIGNATURE[..6] {
        return Err(HeaderError::Malformed(format!(
            "starts with {:?}, neither \"PROXY \" nor the v2 signature",
            String::from_utf8_lossy(&buf)
        )));
    }
    fill(stream, &mut buf, 16).await?;
    if &buf[..12] != V2_SIGNATURE {
        return Err(HeaderError::Malformed("a broken v2 signature".to_owned()));
    }
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX {
        return Err(HeaderError::TooLong(total));
    }
    fill(stream, &mut buf, total).await?;
    let header = ppp::v2::Header::try_from(buf.as_slice())
        .map_err(|e| HeaderError::Malformed(format!("v2: {e}")))?;
    if header.command == Command::Local {
        return Ok(unknown());
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => received(
            (a.source_address.into(), a.source_port),
            (a.destination_address.into(), a.destination_port),
        ),
        ppp::v2::Addresses::IPv6(a) => received(
            (a.source_address.into(), a.source_port),
            (a.destination_address.into(), a.destination_port),
        ),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => unknown(),
    })
}

fn received(source: (IpAddr, u16), destination: (IpAddr, u16)) -> Received {
    Received {
        source: Some(SocketAddr::from(source)),
        destination: Some(SocketAddr::from(destination)),
    }
}

fn unknown() -> Received {
    Received {
        source: None,
        destination: None,
    }
}

/// Reads until `buf` holds `len` bytes.
async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), HeaderError> {
    let start = buf.len();
    buf.resize(len, 0);
    let mut at = start;
    while at < len {
        match stream.read(&mut buf[at..len]).await? {
            0 => return Err(HeaderError::Truncated(at)),
            n => at += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[tokio::test]
    async fn headers_read_back_and_nothing_after_them_is_taken() {
        let (client, local) = (addr("203.0.113.7:4242"), addr("10.0.0.1:443"));
        for version in [Version::V1, Version::V2] {
            let mut bytes = header(version, client, local).expect("a header");
            bytes.extend_from_slice(b"payload");
            let mut input = bytes.as_slice();
            let got = read(&mut input).await.expect("parsed");
            assert_eq!(got.source, Some(client), "{version:?}");
            assert_eq!(got.destination, Some(local));
            assert_eq!(input, b"payload", "{version:?}: the rest is left");
        }
    }

    #[tokio::test]
    async fn probe_headers_carry_no_client() {
        for version in [Version::V1, Version::V2] {
            let bytes = probe_header(version).expect("a header");
            let got = read(&mut bytes.as_slice()).await.expect("parsed");
            assert_eq!(got, unknown(), "{version:?}");
        }
        assert!(probe_header(Version::Off).is_none());
    }

    #[tokio::test]
    async fn garbage_truncated_and_oversized_headers_are_named() {
        let err = |r: Result<Received, HeaderError>| r.expect_err("refused").to_string();
        assert!(err(read(&mut &b"GET / HTTP/1.1\r\n"[..]).await).contains("not a PROXY"));
        assert!(err(read(&mut &b"PROXY TCP4 1.2"[..]).await).contains("closed after 14"));
        let long = [&b"PROXY "[..], &[b'x'; 200]].concat();
        assert!(err(read(&mut long.as_slice()).await).contains("over the"));
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0x08, 0x00]);
        assert!(err(read(&mut big.as_slice()).await).contains("2064 bytes"));
        let bad = b"PROXY TCP4 nonsense\r\n";
        assert!(err(read(&mut &bad[..]).await).contains("v1"));
    }

    #[test]
    fn an_ipv4_client_of_an_ipv6_listener_is_written_as_tcp4() {
        let h = header(
            Version::V1,
            addr("127.0.0.1:5000"),
            addr("[::ffff:127.0.0.1]:80"),
        );
        assert_eq!(
            h.as_deref(),
            Some(&b"PROXY TCP4 127.0.0.1 127.0.0.1 5000 80\r\n"[..])
        );
        let mixed = header(Version::V1, addr("127.0.0.1:5000"), addr("[::1]:80"));
        assert_eq!(mixed.as_deref(), Some(&b"PROXY UNKNOWN\r\n"[..]));
    }
}
