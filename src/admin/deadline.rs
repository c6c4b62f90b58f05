//! A write deadline for admin connections: a response that the client has not taken whole
//! within the limit (counted from its first byte written) ends the connection with an error,
//! so a client that asks and never reads cannot hold its slot.
//!
//! A response is over when the server flushes it completely; the next write starts the next
//! response's clock, so pipelined requests each get the limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, whose writes must each be taken within `limit` of the response's start.
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
    /// When the response being written started, if one is.
    started: Option<Instant>,
    /// Boxed, so that the wrapper stays `Unpin` as hyper wants its I/O.
    timer: Pin<Box<Sleep>>,
}

impl<S> Deadline<S> {
    /// Wraps `inner` with a write deadline of `limit` per response.
    pub fn new(inner: S, limit: Duration) -> Deadline<S> {
        Deadline {
            inner,
            limit,
            started: None,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Ready with an error once the running response has outlasted its limit; else pending,
    /// with the timer set to wake the task then.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(since) = self.started else {
            return Poll::Pending;
        };
        let at = since + self.limit;
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client did not take a response within {}",
                    humantime::format_duration(self.limit)
                ),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.expired(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                this.started = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.expired(cx).map(Err),
            failed => failed,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.expired(cx).map(Err),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_times_out() {
        let (near, _far) = tokio::io::duplex(64);
        let mut wrapped = Deadline::new(near, Duration::from_secs(10));
        let started = Instant::now();
        let result = wrapped.write_all(&[0u8; 4096]).await;
        let error = result.expect_err("the far end never reads");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn each_flushed_response_starts_a_new_clock() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut wrapped = Deadline::new(near, Duration::from_secs(10));
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut sink)
                .await
                .map(|_| sink.len())
        });
        for _ in 0..5 {
            wrapped.write_all(&[1u8; 32]).await.expect("taken");
            wrapped.flush().await.expect("flushed");
            tokio::time::advance(Duration::from_secs(8)).await;
        }
        drop(wrapped);
        assert_eq!(drain.await.expect("task").expect("read"), 160);
    }
}
