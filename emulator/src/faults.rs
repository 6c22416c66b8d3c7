//! Fault injection: what tests use to make the emulator misbehave like a real service.
//!
//! - drop every open connection abruptly (the socket fails under the peer, no AMQP close);
//! - refuse new connections for a while;
//! - detach consumer links with a chosen error (`com.microsoft:server-busy`, ...).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// An AMQP error condition and description to detach a link with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFault {
    /// Error condition symbol, e.g. `amqp:link:stolen`.
    pub condition: String,
    /// Human-readable description, as the service words it.
    pub description: String,
}

impl LinkFault {
    pub fn new(condition: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            condition: condition.into(),
            description: description.into(),
        }
    }
}

/// Connection-level faults shared by the listener and every connection.
#[derive(Debug, Default)]
pub struct ConnectionFaults {
    /// Cancelled to drop every connection opened under it; replaced by a fresh token each time.
    generation: Mutex<CancellationToken>,
    /// New connections are closed at once until this instant.
    refuse_until: Mutex<Option<Instant>>,
    /// Connections currently open (for the admin answer).
    open: AtomicUsize,
}

impl ConnectionFaults {
    /// The token a new connection watches: when it fires, the connection's socket fails.
    pub fn current(&self) -> CancellationToken {
        lock(&self.generation).clone()
    }

    /// Fails every open connection; returns how many were open.
    pub fn drop_all(&self) -> usize {
        let old = std::mem::take(&mut *lock(&self.generation));
        // Counted before the cancel: a connection that sees it ends (and stops counting) at
        // once, on another thread.
        let open = self.open.load(Ordering::SeqCst);
        old.cancel();
        open
    }

    pub fn refuse_for(&self, duration: Duration) {
        *lock(&self.refuse_until) = Some(Instant::now() + duration);
    }

    pub fn refusing(&self) -> bool {
        lock(&self.refuse_until).is_some_and(|until| Instant::now() < until)
    }

    /// Counts a connection as open until the guard drops.
    pub fn track(&self) -> OpenConnection<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }
}

pub struct OpenConnection<'a>(&'a ConnectionFaults);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A socket that fails every read and write once its token is cancelled, waking any pending
/// read, so the AMQP engine above it sees a broken connection exactly as after a network fault.
pub struct KillableStream<S> {
    inner: S,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancellationToken,
}

impl<S> KillableStream<S> {
    pub fn new(inner: S, token: CancellationToken) -> Self {
        Self {
            inner,
            killed: Box::pin(token.clone().cancelled_owned()),
            token,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.token.is_cancelled() || self.killed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection dropped by fault injection",
            ));
        }
        Ok(())
    }
}

impl<S> fmt::Debug for KillableStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillableStream")
            .field("killed", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for KillableStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KillableStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
