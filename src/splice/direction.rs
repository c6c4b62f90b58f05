//! One direction of a spliced connection: its state machine (idle, writing a buffer, draining
//! a pipe, done), the copy and `splice(2)` paths, and the errors it reports with their side.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use socket2::{SockRef, Socket};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{End, NodeEnd, Side};
use crate::buffers::{Buffer, BUFFER_SIZE};
use crate::net;

/// An error in one direction, and whether it came from that direction's source (a read) or
/// its destination (a write).
pub(super) struct Fault {
    error: io::Error,
    on_source: bool,
}

impl Fault {
    /// A failed read from the direction's source.
    fn read(error: io::Error) -> Fault {
        Fault {
            error,
            on_source: true,
        }
    }

    /// A failed write to the direction's destination.
    fn write(error: io::Error) -> Fault {
        Fault {
            error,
            on_source: false,
        }
    }

    /// The side of an error in the client -> node direction.
    pub(super) fn side_of_up(&self) -> Side {
        if self.on_source {
            Side::Client
        } else {
            Side::Node
        }
    }

    /// The side of an error in the node -> client direction.
    pub(super) fn side_of_down(&self) -> Side {
        if self.on_source {
            Side::Node
        } else {
            Side::Client
        }
    }

    /// Ends the connection on this error, seen in the direction that reads from `source`:
    /// both sides are reset, so each sees the failure rather than a clean end.
    pub(super) fn end(self, source: Side, client: &TcpStream, node: &TcpStream) -> End {
        net::reset_on_close(client);
        net::reset_on_close(node);
        let side = match (source, self.on_source) {
            (Side::Client, true) | (Side::Node, false) => Side::Client,
            _ => Side::Node,
        };
        End::Error(self.error, side)
    }
}

/// One direction of a spliced connection.
#[derive(Default)]
pub(super) struct Direction {
    state: State,
    /// Bytes read from the source so far.
    pub moved: u64,
    /// Whether a read ever filled the copy buffer: from then on, splice(2) is used.
    bulk: bool,
    /// The source's FIN came with the bytes being written: once they are, the direction is at
    /// its EOF without another read (which would only return 0).
    eof_pending: bool,
    /// Set on the client -> node direction once the node has ended without answering.
    pub unanswered: Option<NodeEnd>,
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
    Draining { pipe: crate::buffers::Pipe },
    /// EOF was read and passed on as a write shutdown.
    Done,
}

impl Direction {
    /// Whether EOF has been read (and passed on, unless it was held).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes written to the destination so far: those read, less those still in hand.
    pub fn written(&self) -> u64 {
        let in_hand = match &self.state {
            State::Writing { start, end, .. } => end - start,
            #[cfg(target_os = "linux")]
            State::Draining { pipe } => pipe.pending(),
            State::Idle | State::Done => 0,
        };
        self.moved - in_hand as u64
    }

    /// Moves what can be moved now from `src` to `dst`; ready once EOF has been passed on.
    ///
    /// `other_done` says the opposite direction has finished: then an EOF here ends the whole
    /// connection, and the `close` that follows sends the FIN, so no `shutdown` call is needed.
    /// `hold_eof` keeps an EOF from being passed on (the connection is about to be given up).
    pub fn poll(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        last_activity: &mut Instant,
        other_done: bool,
        hold_eof: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Fault>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Idle => {
                    ready!(src.poll_read_ready(cx)).map_err(Fault::read)?;
                    // Only a direction's first read looks: that is where a short connection's
                    // answer and FIN arrive together, and a long one pays it once.
                    let finished = self.moved == 0 && !self.bulk && peer_finished(src, cx);
                    let read = if self.bulk {
                        self.fill_pipe(src)
                    } else {
                        self.fill_buffer(src)
                    };
                    match read {
                        Ok(0) => self
                            .finish(dst, other_done, hold_eof)
                            .map_err(Fault::write)?,
                        Ok(n) => {
                            self.moved += n as u64;
                            *last_activity = Instant::now();
                            // The FIN was in before this read, so after every byte before it;
                            // a short read emptied the queue: nothing is left but the EOF.
                            self.eof_pending = finished && n < BUFFER_SIZE;
                        }
                        // Readiness was cleared: the next poll_read_ready registers the waker.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(Fault::read(e))),
                    }
                }
                State::Writing { buf, start, end } => match write_some(dst, &buf[*start..*end]) {
                    Ok(n) => {
                        *start += n;
                        if start == end {
                            // The buffer goes back to the pool.
                            self.state = State::Idle;
                            if self.eof_pending {
                                self.finish(dst, other_done, hold_eof)
                                    .map_err(Fault::write)?;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(dst.poll_write_ready(cx)).map_err(Fault::write)?;
                    }
                    Err(e) => return Poll::Ready(Err(Fault::write(e))),
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
                            ready!(dst.poll_write_ready(cx)).map_err(Fault::write)?;
                        }
                        Err(e) => return Poll::Ready(Err(Fault::write(e))),
                    }
                }
            }
        }
    }

    /// The source is at EOF: passes it on (unless the other direction is done, when the close
    /// sends the FIN, or the EOF is held) and the direction is done.
    fn finish(&mut self, dst: &TcpStream, other_done: bool, hold_eof: bool) -> io::Result<()> {
        if !other_done && !hold_eof {
            half_close(dst)?;
        }
        self.state = State::Done;
        Ok(())
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
        let Ok(mut pipe) = crate::buffers::Pipe::take() else {
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

/// Whether `src`, just found readable, has also received its peer's FIN (EPOLLRDHUP), read from
/// the readiness tokio holds: no system call. The readiness is set, so the probe is ready at
/// once (dropping it takes the socket's waiter lock once).
fn peer_finished(src: &TcpStream, cx: &mut Context<'_>) -> bool {
    let mut probe = std::pin::pin!(src.ready(Interest::READABLE));
    matches!(probe.as_mut().poll(cx), Poll::Ready(Ok(r)) if r.is_read_closed())
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
