//! Reading a TLS ClientHello without terminating TLS: as many segments as it takes, at most
//! [`MAX_HELLO`] bytes, the handshake message reassembled from however many records carry
//! it, then parsed by `tls-parser` for its server name.
//!
//! The hello is first only peeked at (`MSG_PEEK`, into one buffer per thread): a hello that
//! came whole, the common case, stays in the socket, and the splice passes it on with the
//! rest, so nothing of it is held while the node is connected. A hello still cut short when
//! first seen is then read: those bytes are kept, to be sent on to the node untouched.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::task::Poll;
use std::time::Duration;

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};
use tokio::io::{AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;

/// The most bytes read while looking for the server name.
pub const MAX_HELLO: usize = 16 * 1024;

/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The record type of handshake messages.
const HANDSHAKE: u8 = 22;
/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// What the bytes read so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A ClientHello may still come: read more.
    More,
    /// A whole ClientHello, with its server name (lower case, no trailing dot), if any.
    Hello(Option<String>),
    /// Not a TLS ClientHello (another protocol, or a malformed hello).
    NotTls,
}

/// Examines the first bytes of a connection.
pub fn examine(buf: &[u8]) -> Seen {
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return partial(&buf[at.min(buf.len())..]);
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Seen::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_HELLO {
            return Seen::NotTls;
        }
        let Some(payload) = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return Seen::More;
        };
        at += RECORD_HEADER + len;
        // One record is the common case: parsed in place; more are joined.
        let message: &[u8] = if handshake.is_empty() && whole(payload) {
            payload
        } else {
            handshake.extend_from_slice(payload);
            if !whole(&handshake) {
                if handshake.len() >= 4 && handshake[0] != CLIENT_HELLO {
                    return Seen::NotTls;
                }
                continue;
            }
            &handshake
        };
        return name(message);
    }
}

/// Whether `bytes` start with one whole handshake message.
fn whole(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && {
        let len =
            (usize::from(bytes[1]) << 16) | (usize::from(bytes[2]) << 8) | usize::from(bytes[3]);
        bytes.len() >= 4 + len
    }
}

/// What a record header cut short says: more may come if what is there fits a hello.
fn partial(rest: &[u8]) -> Seen {
    match rest {
        [] => Seen::More,
        [first, ..] if *first != HANDSHAKE => Seen::NotTls,
        [_, major, ..] if *major != 3 => Seen::NotTls,
        _ => Seen::More,
    }
}

/// The server name of a whole handshake message, which must be a ClientHello.
fn name(message: &[u8]) -> Seen {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Seen::NotTls;
    };
    let Some(ext) = hello.ext else {
        return Seen::Hello(None);
    };
    let Ok((_, extensions)) = parse_tls_extensions(ext) else {
        return Seen::NotTls;
    };
    let host = extensions.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => names.iter().find(|(kind, _)| kind.0 == 0).map(|(_, n)| *n),
        _ => None,
    });
    match host.map(std::str::from_utf8) {
        None => Seen::Hello(None),
        Some(Ok(host)) => Seen::Hello(Some(host.trim_end_matches('.').to_ascii_lowercase())),
        Some(Err(_)) => Seen::NotTls,
    }
}

/// Why no hello was read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The client sent nothing, or not a whole hello, within the handshake timeout.
    #[error("no TLS ClientHello within {}", crate::config::show_duration(*.0))]
    Timeout(Duration),
    /// The client closed first, or the read failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads `client`'s hello within `limit`, and says what it is. The bytes returned are those
/// taken from the socket, to be sent on to the node first: none when the hello (or what came
/// instead) was whole when first seen, and stays in the socket.
pub async fn read(client: &mut TcpStream, limit: Duration) -> Result<(Vec<u8>, Seen), HelloError> {
    let reading = async {
        match peek(client).await? {
            Seen::More => take(client).await,
            seen => Ok((Vec::new(), seen)),
        }
    };
    match tokio::time::timeout(limit, reading).await {
        Ok(result) => result,
        Err(_) => Err(HelloError::Timeout(limit)),
    }
}

thread_local! {
    /// The buffer each thread peeks into; what is seen is examined before the poll returns.
    static PEEKED: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_HELLO].into_boxed_slice());
}

/// Waits for `client`'s first bytes and examines them without taking them from the socket.
async fn peek(client: &TcpStream) -> Result<Seen, HelloError> {
    poll_fn(|cx| {
        PEEKED.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut seen = ReadBuf::new(&mut buf[..]);
            match client.poll_peek(cx, &mut seen) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(HelloError::Io(e))),
                Poll::Ready(Ok(0)) => Poll::Ready(Err(eof())),
                Poll::Ready(Ok(n)) => Poll::Ready(Ok(match examine(seen.filled()) {
                    Seen::More if n >= MAX_HELLO => Seen::NotTls,
                    seen => seen,
                })),
            }
        })
    })
    .await
}

/// Reads from `client` until [`examine`] decides (or [`MAX_HELLO`] bytes came, which counts
/// as not TLS). Returns the bytes read and what they are.
async fn take(client: &mut TcpStream) -> Result<(Vec<u8>, Seen), HelloError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HELLO - buf.len()));
        }
        if client.read_buf(&mut buf).await? == 0 {
            return Err(eof());
        }
        match examine(&buf) {
            Seen::More if buf.len() >= MAX_HELLO => return Ok((buf, Seen::NotTls)),
            Seen::More => {}
            seen => return Ok((buf, seen)),
        }
    }
}

/// The client closed before its hello was whole.
fn eof() -> HelloError {
    HelloError::Io(io::ErrorKind::UnexpectedEof.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello handshake message naming `name`.
    fn message(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[1u8; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut m = vec![CLIENT_HELLO];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&body);
        m
    }

    /// `message` in records of at most `size` bytes each.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn the_name_is_read_from_one_record_or_several() {
        let m = message("App.Example.COM.");
        let want = Seen::Hello(Some("app.example.com".to_owned()));
        for size in [m.len(), 40, 7, 1] {
            let bytes = records(&m, size);
            assert_eq!(examine(&bytes), want, "records of {size} bytes");
            for cut in 0..bytes.len() {
                assert_eq!(
                    examine(&bytes[..cut]),
                    Seen::More,
                    "{size}-byte records cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn other_protocols_and_malformed_hellos_are_not_tls() {
        assert_eq!(examine(b"GET / HTTP/1.1\r\n"), Seen::NotTls);
        assert_eq!(examine(b"\x16\x02"), Seen::NotTls, "not version 3");
        assert_eq!(
            examine(&[HANDSHAKE, 3, 1, 0, 0]),
            Seen::NotTls,
            "empty record"
        );
        let mut server_hello = message("a.b");
        server_hello[0] = 2;
        assert_eq!(examine(&records(&server_hello, 1000)), Seen::NotTls);
        assert_eq!(
            examine(&records(&server_hello, 3)),
            Seen::NotTls,
            "seen early"
        );
        let mut broken = message("a.b");
        broken[38] = 200;
        assert_eq!(
            examine(&records(&broken, 1000)),
            Seen::NotTls,
            "session id past the end"
        );
    }

    proptest::proptest! {
        /// A hello cut into records of any size is read whole, and any cut of it asks for
        /// more: never a wrong answer from a hello still arriving.
        #[test]
        fn fragmented_and_truncated_hellos(size in 1usize..200, cut in 0usize..400, name in "[a-z]{1,20}\\.[a-z]{2,8}") {
            let bytes = records(&message(&name), size);
            proptest::prop_assert_eq!(examine(&bytes), Seen::Hello(Some(name)));
            let cut = cut.min(bytes.len() - 1);
            proptest::prop_assert_eq!(examine(&bytes[..cut]), Seen::More);
        }

        /// Bytes flipped anywhere in a hello, or any bytes at all, never panic.
        #[test]
        fn corrupted_hellos_and_noise_never_panic(
            size in 1usize..200,
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            let mut bytes = records(&message("fuzz.example"), size);
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let _ = examine(&bytes);
            let _ = examine(&noise);
            let mut framed = vec![HANDSHAKE, 3, 1];
            framed.extend_from_slice(&(noise.len() as u16).to_be_bytes());
            framed.extend_from_slice(&noise);
            let _ = examine(&framed);
        }
    }

    #[test]
    fn a_record_longer_than_the_limit_is_not_tls() {
        let mut huge = vec![HANDSHAKE, 3, 1, 0x40, 0x01];
        huge.resize(MAX_HELLO + 10, 0);
        assert_eq!(examine(&huge), Seen::NotTls);
    }
}
