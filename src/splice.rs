//! Moving bytes both ways between a client and its node, until both directions are done.
//!
//! [`splice`] returns one hand-written future that owns both sockets, two [`Direction`]
//! state machines and the idle timer: about 400 bytes per connection, instead of the
//! several KiB that nested `async fn`s and per-connection buffers would cost. A direction that
//! waits for bytes holds nothing else: bytes go through a pooled buffer or pipe
//! ([`crate::pool`]), taken when they arrive and given back once written.
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
//! closed. Bytes are never reordered or lost: each direction reads again only once the
//! previous bytes are all written.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use socket2::{SockRef, Socket};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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
/// connection is idle for `idle`, or an error ends it. Both streams are closed when the
/// returned future completes (or is dropped).
pub fn splice(client: TcpStream, node: TcpStream, idle: Duration) -> Splice {
    let now = Instant::now();
    Splice {
        client,
        node,
        up: Direction::default(),
        down: Direction::default(),
        idle,
        last_activity: now,
        timer: tokio::time::sleep_until(now + idle),
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`splice`].
    pub struct Splice {
        client: TcpStream,
        node: TcpStream,
        // client -> node
        up: Direction,
        // node -> client
        down: Direction,
        idle: Duration,
        // When a byte last moved either way.
        last_activity: Instant,
        // Fires at `last_activity + idle` at the earliest; re-armed lazily when it fires.
        #[pin]
        timer: Sleep,
    }
}

impl Future for Splice {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut this = self.project();
        let down_done = this.down.is_done();
        let up = this
            .up
            .poll(this.client, this.node, this.last_activity, down_done, cx);
        let up_done = this.up.is_done();
        let down = this
            .down
            .poll(this.node, this.client, this.last_activity, up_done, cx);
        let end = match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                net::reset_on_close(this.client);
                net::reset_on_close(this.node);
                End::Error(e)
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => End::Done,
            _ => loop {
                ready!(this.timer.as_mut().poll(cx));
                let deadline = *this.last_activity + *this.idle;
                if Instant::now() >= deadline {
                    break End::Idle;
                }
                // Bytes moved since the timer was set: wait for the rest of the idle period.
                this.timer.as_mut().reset(deadline);
            },
        };
        Poll::Ready(Outcome {
            client_to_node: this.up.moved,
            node_to_client: this.down.moved,
            end,
        })
    }
}

/// One direction of a spliced connection.
#[derive(Default)]
struct Direction {
    state: State,
    /// Bytes read from the source so far.
    moved: u64,
    /// Whether a read ever filled the copy buffer: from then on, splice(2) is used.
    bulk: bool,
}

/// Where a direction stands.
#[derive(Default)]
enum State {
    /// Waiting for the source to be readable; holds no buffer.
    #[default]
    Idle,
    /// Bytes `buf[start..end]` are still to be written.
    Writing {
        buf: Buffer,
        start: usize,
        end: usize,
    },
    /// The pipe holds bytes still to be written.
    #[cfg(target_os = "linux")]
    Draining { pipe: crate::pool::Pipe },
    /// EOF was read and passed on as a write shutdown.
    Done,
}

impl Direction {
    /// Whether EOF has been read and passed on.
    fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Moves what can be moved now from `src` to `dst`; ready once EOF has been passed on.
    ///
    /// `other_done` says the opposite direction has finished: then an EOF here ends the whole
    /// connection, and the `close` that follows sends the FIN, so no `shutdown` call is needed.
    fn poll(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        last_activity: &mut Instant,
        other_done: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Idle => {
                    ready!(src.poll_read_ready(cx))?;
                    let read = if self.bulk {
                        self.fill_pipe(src)
                    } else {
                        self.fill_buffer(src)
                    };
                    match read {
                        Ok(0) => {
                            if !other_done {
                                half_close(dst)?;
                            }
                            self.state = State::Done;
                        }
                        Ok(n) => {
                            self.moved += n as u64;
                            *last_activity = Instant::now();
                        }
                        // Readiness was cleared: the next poll_read_ready registers the waker.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                State::Writing { buf, start, end } => match write_some(dst, &buf[*start..*end]) {
                    Ok(n) => {
                        *start += n;
                        if start == end {
                            // The buffer goes back to the pool.
                            self.state = State::Idle;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(dst.poll_write_ready(cx))?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
                #[cfg(target_os = "linux")]
                State::Draining { pipe } => {
                    match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst)) {
                        Ok(_) => {
                            if pipe.pending() == 0 {
                                // The empty pipe goes back to the pool.
                                self.state = State::Idle;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready!(dst.poll_write_ready(cx))?;
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }

    /// Reads into a pooled buffer; on bytes, the direction moves to `Writing`.
    fn fill_buffer(&mut self, src: &TcpStream) -> io::Result<usize> {
        let mut buf = Buffer::take();
        let n = read_some(src, &mut buf)?;
        if n == BUFFER_SIZE {
            self.bulk = cfg!(target_os = "linux");
        }
        if n > 0 {
            self.state = State::Writing {
                buf,
                start: 0,
                end: n,
            };
        }
        Ok(n)
    }

    /// Splices into a pooled pipe; on bytes, the direction moves to `Draining`. Copies
    /// instead when no pipe can be had (out of descriptors, say).
    #[cfg(target_os = "linux")]
    fn fill_pipe(&mut self, src: &TcpStream) -> io::Result<usize> {
        let Ok(mut pipe) = crate::pool::Pipe::take() else {
            return self.fill_buffer(src);
        };
        // The pipe is empty, so WouldBlock can only mean `src` has nothing to read, and
        // try_io may rightly clear its readiness.
        let n = src.try_io(Interest::READABLE, || pipe.fill_from(src))?;
        if n > 0 {
            self.state = State::Draining { pipe };
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn fill_pipe(&mut self, src: &TcpStream) -> io::Result<usize> {
        self.fill_buffer(src)
    }
}

/// One `read` from `src` if it is readable (see [`transfer_once`]).
fn read_some(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    transfer_once(src, Interest::READABLE, buf.len(), |socket| {
        let mut socket: &Socket = socket;
        socket.read(buf)
    })
}

/// One `write` to `dst` if it is writable (see [`transfer_once`]).
fn write_some(dst: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    transfer_once(dst, Interest::WRITABLE, bytes.len(), |socket| {
        let mut socket: &Socket = socket;
        socket.write(bytes)
    })
}

/// One read or write of up to `len` bytes on `stream`, if it is ready for `interest`.
///
/// A transfer shorter than asked for tells that the socket's receive queue is empty (read) or
/// its send buffer full (write), so the next call would only say "would block". Clearing the
/// readiness right away (by answering `WouldBlock` to `try_io`) saves that system call on every
/// message, and makes the caller wait for readiness instead; tokio's own `poll_read` does the
/// same on Linux. Readiness that arrives meanwhile is kept (tokio compares event ticks), and
/// so is a pending EOF (closed states are never cleared).
fn transfer_once(
    stream: &TcpStream,
    interest: Interest,
    len: usize,
    mut op: impl FnMut(&Socket) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = 0;
    let result = stream.try_io(interest, || {
        let n = op(&SockRef::from(stream))?;
        if 0 < n && n < len {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        result => result,
    }
}

/// Passes an EOF on: shuts down the write side of `dst`.
fn half_close(dst: &TcpStream) -> io::Result<()> {
    match SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer is gone already: the other direction reports how.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}
