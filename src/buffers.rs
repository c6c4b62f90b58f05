//! Pooled data-path resources: copy buffers and, on Linux, the pipes `splice(2)` moves bytes
//! through. An idle connection holds neither: a direction takes one when bytes are ready and
//! gives it back as soon as they are all written, so memory follows traffic, not connections.
//!
//! Pools are per thread (no lock, no contention) and bounded; a resource taken on one thread
//! and given back on another simply moves pools. A pipe still holding bytes is never pooled:
//! it is closed, so its bytes can never leak into another connection.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of one copy buffer. Small messages (requests, responses, handshakes) fit in one read;
/// a read that fills it says the transfer is large, and the direction moves to `splice(2)`.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Most idle buffers kept per thread (1 MiB).
const MAX_POOLED_BUFFERS: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer of [`BUFFER_SIZE`] bytes, given back to the pool when dropped.
pub struct Buffer {
    bytes: Option<Box<[u8]>>,
}

impl Buffer {
    /// Takes a buffer from this thread's pool, or allocates one.
    pub fn take() -> Buffer {
        let pooled = BUFFERS.with(|pool| pool.borrow_mut().pop());
        Buffer {
            bytes: Some(pooled.unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())),
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or_default()
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(bytes) = self.bytes.take() {
            BUFFERS.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < MAX_POOLED_BUFFERS {
                    pool.push(bytes);
                }
            });
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::{set_pipe_limit, Pipe};

/// Without a pipe pool (not Linux) there is no pipe to limit.
#[cfg(not(target_os = "linux"))]
pub fn set_pipe_limit(_pipes: usize) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustix::pipe::{self, PipeFlags, SpliceFlags};

    /// Capacity asked for each pipe. The default 64 KiB pipe moves at most 16 pages per
    /// `splice(2)` call; 256 KiB quarters the calls per byte on bulk transfers and stays well
    /// under the per-user pipe allowance (`fs.pipe-user-pages-soft`) at pool scale.
    const PIPE_SIZE: usize = 256 * 1024;
    /// Most idle pipes kept per thread (each costs two descriptors, no memory while empty).
    const MAX_POOLED_PIPES: usize = 32;

    /// Pipes open now, pooled or in use, across all threads.
    static OPEN: AtomicUsize = AtomicUsize::new(0);
    /// Most pipes open at once (see [`set_pipe_limit`]).
    static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// Caps the pipes open at once, so they never take the descriptors clients need (see
    /// [`crate::limits`]); past the cap, directions copy instead of splicing.
    pub fn set_pipe_limit(pipes: usize) {
        LIMIT.store(pipes, Ordering::Relaxed);
    }

    /// Counts one more open pipe, unless the cap is reached.
    fn reserve() -> io::Result<()> {
        let limit = LIMIT.load(Ordering::Relaxed);
        OPEN.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .map(drop)
        .map_err(|_| io::Error::other("the pipe budget is spent"))
    }

    /// Counts one pipe closed.
    fn release() {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }

    thread_local! {
        static PIPES: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
    }

    /// A pipe for `splice(2)`, with the count of bytes it holds. Dropped empty, it goes back
    /// to the pool; dropped with bytes in it (an error mid-transfer), it is closed.
    pub struct Pipe {
        fds: Option<(OwnedFd, OwnedFd)>,
        /// Bytes spliced in and not yet spliced out.
        pending: usize,
    }

    impl Pipe {
        /// Takes an empty pipe from this thread's pool, or creates one.
        pub fn take() -> io::Result<Pipe> {
            let fds = match PIPES.with(|pool| pool.borrow_mut().pop()) {
                Some(fds) => fds,
                None => {
                    reserve()?;
                    let (read, write) = pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
                        .inspect_err(|_| release())?;
                    // A smaller pipe still works: ignore a refusal (e.g. over the user limit).
                    let _ = pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
                    (read, write)
                }
            };
            Ok(Pipe {
                fds: Some(fds),
                pending: 0,
            })
        }

        /// Bytes in the pipe.
        pub fn pending(&self) -> usize {
            self.pending
        }

        /// Moves up to the pipe's capacity from `src` into the pipe. Call only when empty, so
        /// that `WouldBlock` can only mean `src` has nothing to read.
        pub fn fill_from(&mut self, src: impl AsFd) -> io::Result<usize> {
            let (_, write) = self.fds()?;
            let n = pipe::splice(src, None, write, None, PIPE_SIZE, Self::flags())?;
            self.pending += n;
            Ok(n)
        }

        /// Moves bytes from the pipe to `dst`; `WouldBlock` means `dst` cannot take more now.
        pub fn drain_to(&mut self, dst: impl AsFd) -> io::Result<usize> {
            let (read, _) = self.fds()?;
            let n = pipe::splice(read, None, dst, None, self.pending, Self::flags())?;
            self.pending -= n;
            Ok(n)
        }

        fn fds(&self) -> io::Result<&(OwnedFd, OwnedFd)> {
            self.fds
                .as_ref()
                .ok_or_else(|| io::Error::other("pipe already closed"))
        }

        /// MOVE asks the kernel to move pages rather than copy them; NONBLOCK keeps the pipe
        /// side from ever blocking the thread (the sockets are non-blocking already).
        fn flags() -> SpliceFlags {
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            let Some(fds) = self.fds.take() else {
                return;
            };
            let pooled = self.pending == 0
                && PIPES.with(|pool| {
                    let mut pool = pool.borrow_mut();
                    let room = pool.len() < MAX_POOLED_PIPES;
                    if room {
                        pool.push(fds);
                    }
                    room
                });
            if !pooled {
                release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused() {
        let first = Buffer::take();
        let addr = first.as_ptr();
        assert_eq!(first.len(), BUFFER_SIZE);
        drop(first);
        let second = Buffer::take();
        assert_eq!(second.as_ptr(), addr, "the pooled buffer comes back");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pipes_move_bytes_and_only_empty_ones_are_pooled() {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;

        let (mut a, b) = UnixStream::pair().expect("socket pair");
        let (c, mut d) = UnixStream::pair().expect("socket pair");
        a.write_all(b"hello pipe").expect("write");
        let mut pipe = Pipe::take().expect("pipe");
        assert_eq!(pipe.fill_from(&b).expect("fill"), 10);
        assert_eq!(pipe.pending(), 10);
        assert_eq!(pipe.drain_to(&c).expect("drain"), 10);
        assert_eq!(pipe.pending(), 0);
        let mut got = [0u8; 10];
        d.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello pipe");
        drop(pipe);

        // A pipe dropped with bytes in it is closed, not pooled: the next pipe carries only
        // the next bytes.
        a.write_all(b"stale").expect("write");
        let mut dirty = Pipe::take().expect("pipe");
        assert_eq!(dirty.fill_from(&b).expect("fill"), 5);
        drop(dirty);
        a.write_all(b"fresh").expect("write");
        let mut clean = Pipe::take().expect("pipe");
        assert_eq!(clean.fill_from(&b).expect("fill"), 5);
        assert_eq!(clean.drain_to(&c).expect("drain"), 5);
        d.read_exact(&mut got[..5]).expect("read");
        assert_eq!(&got[..5], b"fresh");
    }
}
