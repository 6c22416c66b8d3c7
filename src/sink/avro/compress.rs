//! Block compression for the Avro codecs, with the compressors' state kept per thread.
//!
//! A compressor's state is large (zstd's context at level 3 is about a mebibyte, deflate's a
//! few hundred KiB) and in use only while one block is compressed, which never spans an await.
//! So instead of one per open window, whose number grows with the partitions owned, each
//! thread keeps one per codec in use, and one output buffer.

use std::cell::RefCell;

use super::AvroError;
use crate::sink::Codec;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// One thread's compressors (created on first use, replaced when the level changes) and the
/// buffer blocks are compressed into.
#[derive(Default)]
struct State {
    deflate: Option<(u32, flate2::Compress)>,
    snappy: Option<snap::raw::Encoder>,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
    out: Vec<u8>,
}

/// The `avro.codec` metadata value.
pub(super) fn codec_name(codec: &Codec) -> &'static str {
    match codec {
        Codec::Null => "null",
        Codec::Deflate { .. } => "deflate",
        Codec::Snappy => "snappy",
        Codec::Zstd { .. } => "zstandard",
        // Not an Avro codec: `CaptureWriter::new` refuses it.
        Codec::Gzip { .. } => "gzip",
    }
}

/// Compresses `block` with `codec` and hands the result to `write` (the block itself for the
/// null codec).
pub(super) fn compressed<R>(
    codec: &Codec,
    block: &[u8],
    write: impl FnOnce(&[u8]) -> Result<R, AvroError>,
) -> Result<R, AvroError> {
    if let Codec::Null = codec {
        return write(block);
    }
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let State {
            deflate,
            snappy,
            zstd,
            out,
        } = &mut *state;
        out.clear();
        match *codec {
            Codec::Null => unreachable!("handled above"),
            Codec::Gzip { .. } => {
                return Err(AvroError::Encode("gzip is not an Avro codec".into()));
            }
            Codec::Deflate { level } => {
                let deflate = match deflate {
                    Some((current, compress)) if *current == level => compress,
                    slot => {
                        let compress =
                            flate2::Compress::new(flate2::Compression::new(level.min(9)), false);
                        &mut slot.insert((level, compress)).1
                    }
                };
                deflate_into(deflate, block, out)?;
            }
            Codec::Snappy => {
                let snappy = snappy.get_or_insert_with(snap::raw::Encoder::new);
                out.resize(snap::raw::max_compress_len(block.len()), 0);
                let len = snappy
                    .compress(block, out)
                    .map_err(|error| AvroError::Encode(format!("snappy: {error}")))?;
                out.truncate(len);
                // The Avro snappy codec appends the CRC-32 of the uncompressed block.
                out.extend_from_slice(&crc32fast::hash(block).to_be_bytes());
            }
            Codec::Zstd { level } => {
                let zstd = match zstd {
                    Some((current, compressor)) if *current == level => compressor,
                    slot => {
                        let compressor = zstd::bulk::Compressor::new(level)?;
                        &mut slot.insert((level, compressor)).1
                    }
                };
                out.reserve(zstd::zstd_safe::compress_bound(block.len()));
                zstd.compress_to_buffer(block, out)?;
            }
        }
        write(out)
    })
}

/// Raw deflate (RFC 1951, no zlib header), as the Avro spec defines the codec.
fn deflate_into(
    deflate: &mut flate2::Compress,
    block: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), AvroError> {
    deflate.reset();
    // Incompressible data grows by a few bytes per 16 KiB stored block.
    out.reserve(block.len() + block.len() / 1000 + 64);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&block[consumed..], out, flate2::FlushCompress::Finish)
            .map_err(|error| AvroError::Encode(format!("deflate: {error}")))?;
        match status {
            flate2::Status::StreamEnd => return Ok(()),
            flate2::Status::Ok | flate2::Status::BufError => out.reserve(out.capacity().max(4096)),
        }
    }
}
