//! Moving bytes both ways between a client and its node, until both directions are done.
//!
//! EOF on one side becomes a write shutdown (half-close) on the other, so a client that closes
//! its sending side still gets its answer. A reset or error on either side resets the other
//! (SO_LINGER 0), so the peer learns the connection broke instead of seeing a clean end.
//! A connection with no bytes either way for `idle` is closed. The whole data path is behind
//! [`splice`], so its inside can change without touching callers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net;

/// How a spliced connection ended, and what it carried.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from the client (and written to the node, unless the end was an error).
    pub client_to_node: u64,
    /// Bytes read from the node.
    pub node_to_client: u64,
    /// Why it ended.
    pub end: End,
}

/// Why a spliced connection ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished sending.
    Done,
    /// No bytes either way for the idle timeout.
    Idle,
    /// A read or write failed (a reset, usually); the other side was reset too.
    Error(io::Error),
}

/// Copies bytes both ways between `client` and `node` until both directions are done, the
/// connection is idle for `idle`, or an error ends it. Both streams are closed on return.
pub async fn splice(client: TcpStream, node: TcpStream, idle: Duration) -> Outcome {
    let activity = Activity::new();
    let mut client = Counted::new(client, &activity);
    let mut node = Counted::new(node, &activity);
    let end = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut node) => match result {
            Ok(_) => End::Done,
            Err(e) => End::Error(e),
        },
        () = activity.idle_for(idle) => End::Idle,
    };
    if matches!(end, End::Error(_)) {
        net::reset_on_close(&client.stream);
        net::reset_on_close(&node.stream);
    }
    Outcome {
        client_to_node: client.read,
        node_to_client: node.read,
        end,
    }
}

/// The time of the last byte moved either way, in milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `idle`. Wakes at most once per `idle` period
    /// while traffic flows, never per byte.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that counts the bytes read from it and marks activity.
struct Counted<'a> {
    stream: TcpStream,
    activity: &'a Activity,
    read: u64,
}

impl<'a> Counted<'a> {
    fn new(stream: TcpStream, activity: &'a Activity) -> Counted<'a> {
        Counted {
            stream,
            activity,
            read: 0,
        }
    }
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
