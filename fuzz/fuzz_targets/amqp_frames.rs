//! The inbound AMQP byte stream, as both hubcap and the emulator read it: through
//! `amqp-frame-guard`, then split and decoded the way fe2o3-amqp 0.18.4 does (a 4-byte length
//! prefix counting itself, then the SASL or AMQP frame decoder on each frame).
//!
//! Besides never panicking (fe2o3's decoders panic on frames shorter than their header, which is
//! why the guard exists; this target shows nothing the guard lets through makes them panic):
//! the guard hands out a prefix of what it read, all of it when it reports no error, and the
//! same prefix and error however the bytes are cut into reads.
#![no_main]

use amqp_frame_guard::testing::through_guard;
use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::FrameDecoder;
use fe2o3_amqp::frames::sasl::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// hubcap's negotiated maximum frame size (`src/eventhubs/client.rs`).
const MAX_FRAME_SIZE: usize = 1024 * 1024;

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
    assert!(
        data.starts_with(&whole),
        "the guard handed out bytes it did not read"
    );
    if whole_error.is_none() {
        assert_eq!(
            whole.len(),
            data.len(),
            "the guard kept bytes back without an error"
        );
    }
    let read_size = cuts.first().map_or(1, |&c| usize::from(c % 16) + 1);
    let (cut, cut_error) = through_guard(data, cuts, read_size);
    assert_eq!(
        cut, whole,
        "how the bytes were cut changed what the guard let through"
    );
    assert_eq!(
        cut_error, whole_error,
        "how the bytes were cut changed the guard's error"
    );

    decode_like_fe2o3(&whole);
});
