//! Reading a stream through the guard cut into reads of chosen sizes, for the fuzz target and
//! the regression tests that replay its findings: both must cut a stream the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

use crate::FrameGuard;

/// Hands out `data` in reads of the sizes `cuts` cycles through (all at once when empty); never
/// pending, so a no-op waker drives it.
struct Cut<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
    turn: usize,
}

impl AsyncRead for Cut<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = match self.cuts {
            [] => usize::MAX,
            cuts => usize::from(cuts[self.turn % cuts.len()]).max(1),
        };
        let n = want.min(buf.remaining()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        self.turn += 1;
        Poll::Ready(Ok(()))
    }
}

/// What the guard lets through of `data` read in pieces of the sizes `cuts` cycles through
/// (at once when empty) into a buffer of `read_size`, and the error it ended with (`None`: the
/// end of the stream).
pub fn through_guard(data: &[u8], cuts: &[u8], read_size: usize) -> (Vec<u8>, Option<String>) {
    let mut guard = FrameGuard::new(Cut {
        data,
        cuts,
        turn: 0,
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut passed = Vec::new();
    let mut buffer = vec![0u8; read_size];
    loop {
        let mut read = ReadBuf::new(&mut buffer);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return (passed, None),
            Poll::Ready(Ok(())) => passed.extend_from_slice(read.filled()),
            Poll::Ready(Err(error)) => return (passed, Some(error.to_string())),
            Poll::Pending => unreachable!("the source is never pending"),
        }
    }
}
