//! The inbound AMQP byte stream, as both hubcap and the emulator read it: through
//! `amqp-frame-guard`, then split and decoded the way fe2o3-amqp 0.18.4 does (a 4-byte length
//! prefix counting itself, then the SASL or AMQP frame decoder on each frame).
//!
//! Besides never panicking (fe2o3's decoders panic on frames shorter than their header, which is
//! why the guard exists; this target shows nothing the guard lets through makes them panic):
//! the guard hands out a prefix of what it read, all of it when it reports no error, and the
//! same prefix and error however the bytes are cut into reads.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use amqp_frame_guard::FrameGuard;
use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::FrameDecoder;
use fe2o3_amqp::frames::sasl::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// hubcap's negotiated maximum frame size (`src/eventhubs/client.rs`).
const MAX_FRAME_SIZE: usize = 1024 * 1024;

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

/// What the guard lets through, and the error it ended with (None: end of stream).
fn through_guard(data: &[u8], cuts: &[u8], read_size: usize) -> (Vec<u8>, Option<String>) {
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

/// Splits and decodes the stream the way fe2o3's transport does; only panics matter here.
fn decode_like_fe2o3(passed: &[u8]) {
    let mut src = BytesMut::from(passed);
    let mut length_prefix = LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_SIZE - 4)
        .length_adjustment(-4)
        .new_codec();
    loop {
        // fe2o3 reads a protocol header at the start and after SASL; the guard accepts one at
        // any unit boundary, so this does too.
        if src.len() >= 8 && src.starts_with(b"AMQP") {
            let _ = src.split_to(8);
            continue;
        }
        match length_prefix.decode(&mut src) {
            Ok(Some(frame)) => {
                let _ = FrameDecoder {}.decode(&mut frame.clone());
                let _ = FrameCodec {}.decode(&mut frame.clone());
            }
            Ok(None) | Err(_) => return,
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many of the next bytes are read sizes; the rest is the stream.
    let Some((&cut_count, rest)) = input.split_first() else {
        return;
    };
    let (cuts, data) = rest.split_at(usize::from(cut_count % 8).min(rest.len()));

    let (whole, whole_error) = through_guard(data, &[], 64 * 1024);
    assert!(data.starts_with(&whole), "the guard handed out bytes it did not read");
    if whole_error.is_none() {
        assert_eq!(whole.len(), data.len(), "the guard kept bytes back without an error");
    }
    let read_size = cuts.first().map_or(1, |&c| usize::from(c % 16) + 1);
    let (cut, cut_error) = through_guard(data, cuts, read_size);
    assert_eq!(cut, whole, "how the bytes were cut changed what the guard let through");
    assert_eq!(cut_error, whole_error, "how the bytes were cut changed the guard's error");

    decode_like_fe2o3(&whole);
});
