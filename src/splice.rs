//! Moving bytes both ways between a client and its node, until both directions are done.
//!
//! Each direction is a small loop: wait until the source is readable, move what is there,
//! wait again. Waiting holds no buffer: bytes go through a pooled buffer or pipe
//! ([`crate::pool`]) taken when they arrive and given back once written, so an idle
//! connection costs its sockets and this task only.
//!
//! How bytes move is decided per direction, from what it carries:
//! - **copy** (`read` + `write` through a 16 KiB buffer) to start with. For small messages
//!   it is the cheapest: two system calls and two short copies.
//! - **splice** (`splice(2)` socket → pipe → socket, Linux) once a read fills the whole buffer,
//!   i.e. the direction carries a bulk transfer. Pages then move by reference, never through
//!   user space, and each call moves up to a pipe's capacity (256 KiB) instead of 16 KiB.
//!   The switch is one-way for the connection's life: a stream that was bulk once tends to
//!   stay bulk, and splice costs little more than copy for a short read.
//!
//! EOF on one side becomes a write shutdown (half-close) on the other, so a client that closes
//! its sending side still gets its answer. An error on either side (a reset, usually) resets
//! the other side too (SO_LINGER 0). A connection with no bytes either way for `idle` is
//! closed. Bytes are never reordered: each direction has one loop, and a pipe or buffer is
//! always emptied before the next read.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net;
use crate::pool::{Buffer, BUFFER_SIZE};

/// How a spliced connection ended, and what it carried.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from the client.
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
    let (mut client_to_node, mut node_to_client) = (0, 0);
    let end = {
        let up = pump(&client, &node, &activity, &mut client_to_node);
        let down = pump(&node, &client, &activity, &mut node_to_client);
        tokio::select! {
            result = async { tokio::try_join!(up, down) } => match result {
                Ok(_) => End::Done,
                Err(e) => End::Error(e),
            },
            () = activity.idle_for(idle) => End::Idle,
        }
    };
    if matches!(end, End::Error(_)) {
        net::reset_on_close(&client);
        net::reset_on_close(&node);
    }
    Outcome {
        client_to_node,
        node_to_client,
        end,
    }
}

/// What one burst of a direction ended with.
enum Burst {
    /// The source has nothing more for now.
    Drained,
    /// The source sent EOF.
    Eof,
    /// A read filled the whole copy buffer: the direction carries a bulk transfer.
    Bulk,
}

/// One direction: `src` to `dst` until EOF, then half-close `dst`.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<()> {
    let mut zero_copy = false;
    loop {
        src.readable().await?;
        let burst = if zero_copy {
            splice_burst(src, dst, activity, moved).await?
        } else {
            copy_burst(src, dst, activity, moved).await?
        };
        match burst {
            Burst::Drained => {}
            Burst::Eof => break,
            Burst::Bulk => zero_copy = cfg!(target_os = "linux"),
        }
    }
    match SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer is gone already: the other direction reports how.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}

/// Reads what `src` has through a pooled buffer and writes it all to `dst`. The buffer goes
/// back to the pool when `src` has nothing more.
async fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<Burst> {
    let mut buf = Buffer::take();
    loop {
        let (n, drained) = match read_some(src, &mut buf) {
            Ok((0, _)) => return Ok(Burst::Eof),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
            Err(e) => return Err(e),
        };
        activity.touch();
        *moved += n as u64;
        write_all(dst, &buf[..n]).await?;
        if n == BUFFER_SIZE {
            return Ok(Burst::Bulk);
        }
        if drained {
            return Ok(Burst::Drained);
        }
    }
}

/// One `read` from `src`, if it is readable; returns the byte count and whether the socket was
/// drained by it.
///
/// A read that returns less than asked for has emptied the socket's receive queue, so the
/// next read would only say "would block". Clearing the readiness right away (by answering
/// `WouldBlock` to `try_io`) saves that system call on every message; tokio's own `poll_read`
/// does the same on Linux. Readiness that arrives meanwhile is kept (tokio compares event
/// ticks), and so is a pending EOF (closed states are never cleared).
fn read_some(src: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut short = 0;
    let result = src.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(src)).read(buf)?;
        if 0 < n && n < buf.len() {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok((short, true)),
        Err(e) => Err(e),
        Ok(n) => Ok((n, false)),
    }
}

/// Writes all of `bytes` to `dst`, waiting for room as needed. A short write means the send
/// buffer is full: readiness is cleared at once (as in [`read_some`]) and the next attempt
/// waits for room instead of failing with "would block" first.
async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut short = 0;
        let result = dst.try_io(Interest::WRITABLE, || {
            let n = (&*SockRef::from(dst)).write(bytes)?;
            if n < bytes.len() {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match result {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bytes = &bytes[short..];
                dst.writable().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves what `src` has to `dst` through a pooled pipe, never through user space. The pipe is
/// always emptied into `dst` before the next fill, and goes back to the pool when `src` has
/// nothing more. Falls back to copying if no pipe can be had (e.g. out of descriptors).
#[cfg(target_os = "linux")]
async fn splice_burst(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<Burst> {
    use crate::pool::Pipe;

    let Ok(mut pipe) = Pipe::take() else {
        return copy_burst(src, dst, activity, moved).await;
    };
    loop {
        // The pipe is empty here, so WouldBlock can only mean `src` has nothing to read, and
        // try_io may rightly clear its readiness.
        let n = match src.try_io(Interest::READABLE, || pipe.fill_from(src)) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
            Err(e) => return Err(e),
        };
        activity.touch();
        *moved += n as u64;
        while pipe.pending() > 0 {
            match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Without `splice(2)`, a bulk direction keeps copying.
#[cfg(not(target_os = "linux"))]
async fn splice_burst(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<Burst> {
    copy_burst(src, dst, activity, moved).await
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
