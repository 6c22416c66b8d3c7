//! JSON Lines archive files: one JSON object per event per line, the `stdout` sink's schema
//! ([`super::stdout`] documents it, once for both), optionally compressed as one whole-file gzip
//! or zstd stream (`.jsonl.gz`, `.jsonl.zst`), so `zcat`/`zstdcat` and every JSON reader take it.
//!
//! The body is text when it is valid UTF-8 and `body = "utf8"` (the default), else base64 with
//! `"body_encoding":"base64"`; `body = "binary"` writes every body as base64. Lines are gathered
//! into a block of about [`BLOCK_SIZE`] and handed to the compressor (or the file) a block at a
//! time, so memory stays bounded however large the window.

use std::io::Write;

use flate2::write::GzEncoder;

use super::stdout;
use super::Codec;
use crate::eventhubs::ReceivedEvent;

/// Lines are handed on once this many bytes are gathered.
pub const BLOCK_SIZE: usize = 256 << 10;

/// log2 of the zstd window of a `.jsonl.zst` stream.
const ZSTD_WINDOW_LOG: u32 = 17;

/// How a body is written in JSON (`[sink] body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyText {
    /// Text when it is valid UTF-8, else base64 (marked `"body_encoding":"base64"`).
    #[default]
    Utf8,
    /// Always base64 (marked).
    Base64,
}

/// Writes one JSON Lines file into `inner`.
pub struct JsonlWriter<W: Write> {
    out: Output<W>,
    /// Lines not yet handed to `out`.
    block: Vec<u8>,
    body: BodyText,
    partition_id: String,
}

enum Output<W: Write> {
    Plain(Counted<W>),
    Gzip(GzEncoder<Counted<W>>),
    Zstd(zstd::stream::write::Encoder<'static, Counted<W>>),
}

/// Counts the bytes that reach the file (after compression).
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> JsonlWriter<W> {
    /// Starts a file; `codec` is null, gzip or zstd (the config allows no other).
    pub fn new(
        inner: W,
        codec: &Codec,
        body: BodyText,
        partition_id: &str,
    ) -> std::io::Result<Self> {
        let counted = Counted { inner, bytes: 0 };
        let out = match *codec {
            Codec::Null => Output::Plain(counted),
            Codec::Gzip { level } => {
                Output::Gzip(GzEncoder::new(counted, flate2::Compression::new(level)))
            }
            Codec::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(counted, level)?;
                // One stream per open file: a 128 KiB window instead of the level's 2 MiB
                // bounds each file's compressor to about 1 MiB (events are small and repeat
                // within that much).
                encoder.window_log(ZSTD_WINDOW_LOG)?;
                Output::Zstd(encoder)
            }
            Codec::Deflate { .. } | Codec::Snappy => {
                return Err(std::io::Error::other(format!(
                    "JSON Lines files are compressed with gzip or zstd, not {codec:?}"
                )))
            }
        };
        Ok(JsonlWriter {
            out,
            block: Vec::new(),
            body,
            partition_id: partition_id.to_owned(),
        })
    }

    pub fn append_all(&mut self, events: &[ReceivedEvent]) -> std::io::Result<()> {
        for event in events {
            stdout::write_line_with(&self.partition_id, event, self.body, &mut self.block);
            if self.block.len() >= BLOCK_SIZE {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    /// Hands the gathered lines to the compressor or the file.
    pub fn flush_block(&mut self) -> std::io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        match &mut self.out {
            Output::Plain(out) => out.write_all(&self.block)?,
            Output::Gzip(out) => out.write_all(&self.block)?,
            Output::Zstd(out) => out.write_all(&self.block)?,
        }
        self.block.clear();
        Ok(())
    }

    /// Bytes that reached `inner` (compressed).
    pub fn bytes_written(&self) -> u64 {
        match &self.out {
            Output::Plain(out) => out.bytes,
            Output::Gzip(out) => out.get_ref().bytes,
            Output::Zstd(out) => out.get_ref().bytes,
        }
    }

    /// Bytes of lines gathered and not yet handed on.
    pub fn buffered_bytes(&self) -> u64 {
        self.block.len() as u64
    }

    /// Ends the compressed stream, flushes `inner` and returns it.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush_block()?;
        let mut counted = match self.out {
            Output::Plain(out) => out,
            Output::Gzip(out) => out.finish()?,
            Output::Zstd(out) => out.finish()?,
        };
        counted.flush()?;
        Ok(counted.inner)
    }

    pub fn inner_mut(&mut self) -> &mut W {
        match &mut self.out {
            Output::Plain(out) => &mut out.inner,
            Output::Gzip(out) => &mut out.get_mut().inner,
            Output::Zstd(out) => &mut out.get_mut().inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read};

    use super::*;
    use crate::eventhubs::{EventBody, PropertyValue};

    fn events(count: i64) -> Vec<ReceivedEvent> {
        (0..count)
            .map(|n| ReceivedEvent {
                sequence_number: n,
                offset: (n * 100).to_string(),
                enqueued_time_ms: 1_700_000_000_000 + n,
                partition_key: None,
                properties: vec![("n".into(), PropertyValue::Long(n))],
                system_properties: vec![],
                body: EventBody::Data(vec![format!("event {n}").into_bytes()]),
            })
            .collect()
    }

    fn written(codec: Codec, body: BodyText, events: &[ReceivedEvent]) -> Vec<u8> {
        let mut writer = JsonlWriter::new(Vec::new(), &codec, body, "4").unwrap();
        writer.append_all(events).unwrap();
        writer.finish().unwrap()
    }

    fn lines(text: &[u8]) -> Vec<serde_json::Value> {
        text.lines()
            .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn plain_gzip_and_zstd_files_hold_the_same_lines() {
        let events = events(3000);
        let plain = written(Codec::Null, BodyText::Utf8, &events);
        let gzip = written(Codec::Gzip { level: 6 }, BodyText::Utf8, &events);
        let zstd = written(Codec::Zstd { level: 3 }, BodyText::Utf8, &events);
        let mut gunzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut gunzipped)
            .unwrap();
        let unzstd = zstd::stream::decode_all(&zstd[..]).unwrap();
        assert_eq!(gunzipped, plain);
        assert_eq!(unzstd, plain);
        assert!(gzip.len() < plain.len() / 2 && zstd.len() < plain.len() / 2);
        let lines = lines(&plain);
        assert_eq!(lines.len(), 3000);
        assert_eq!(lines[7]["sequence_number"], 7);
        assert_eq!(lines[7]["partition_id"], "4");
        assert_eq!(lines[7]["body"], "event 7");
    }

    #[test]
    fn binary_mode_writes_every_body_as_base64() {
        let lines = lines(&written(Codec::Null, BodyText::Base64, &events(1)));
        assert_eq!(lines[0]["body"], "ZXZlbnQgMA==");
        assert_eq!(lines[0]["body_encoding"], "base64");
    }

    #[test]
    fn bytes_are_counted_after_compression_and_drained_blocks_make_the_file() {
        let events = events(20_000);
        let mut writer =
            JsonlWriter::new(Vec::new(), &Codec::Zstd { level: 3 }, BodyText::Utf8, "0").unwrap();
        let mut drained = Vec::new();
        for chunk in events.chunks(500) {
            writer.append_all(chunk).unwrap();
            assert!(writer.buffered_bytes() < BLOCK_SIZE as u64);
            drained.append(writer.inner_mut());
        }
        let written = writer.bytes_written();
        drained.extend(writer.finish().unwrap());
        assert!(written > 0 && written <= drained.len() as u64);
        let text = zstd::stream::decode_all(&drained[..]).unwrap();
        assert_eq!(lines(&text).len(), 20_000);
    }

    #[test]
    fn an_empty_window_is_an_empty_file_or_an_empty_stream() {
        assert!(written(Codec::Null, BodyText::Utf8, &[]).is_empty());
        let zstd = written(Codec::Zstd { level: 3 }, BodyText::Utf8, &[]);
        assert!(zstd::stream::decode_all(&zstd[..]).unwrap().is_empty());
    }

    #[test]
    fn other_codecs_are_refused() {
        assert!(JsonlWriter::new(Vec::new(), &Codec::Snappy, BodyText::Utf8, "0").is_err());
    }
}
