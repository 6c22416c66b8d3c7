//! The file formats an archive can be written in, independent of where it goes (local files or
//! block blobs): Capture Avro ([`avro`](super::avro)), Apache Parquet ([`parquet`](super::parquet))
//! and JSON Lines ([`jsonl`](super::jsonl)).
//!
//! [`FormatWriter`] is the one interface the destinations use: events in, the file's bytes out to
//! `W` (a buffered file, or a `Vec` the blob sink drains into staged blocks), and a finished
//! file at [`FormatWriter::finish`]. Each format keeps its memory bounded by its own setting
//! (an Avro block, a Parquet row group, a JSON Lines block) however large the window.

use std::io::Write;

use super::avro::{AvroError, CaptureWriter};
use super::jsonl::{BodyText, JsonlWriter};
use super::parquet::{ParquetSettings, ParquetWriteError, ParquetWriter};
use super::Codec;
use crate::eventhubs::ReceivedEvent;

/// Every extension an archive file of hubcap's can end in, longest first (so `.jsonl.gz` is
/// found before `.jsonl`).
pub const ARCHIVE_EXTENSIONS: &[&str] = &[".jsonl.zst", ".jsonl.gz", ".parquet", ".jsonl", ".avro"];

/// `name` without its archive extension, or `None` if it has none of [`ARCHIVE_EXTENSIONS`].
pub fn strip_archive_extension(name: &str) -> Option<&str> {
    ARCHIVE_EXTENSIONS
        .iter()
        .find_map(|extension| name.strip_suffix(extension))
}

/// The version of the JSON event schema (`sink::stdout`), in the blobs' metadata.
pub const JSONL_SCHEMA_VERSION: &str = "1";

/// The format of an archive's files, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFormat {
    /// Event Hubs Capture's Avro container, blocks compressed with `codec`.
    Avro { codec: Codec },
    /// One row per event, typed columns.
    Parquet(ParquetSettings),
    /// One JSON object per line; `codec` (null, gzip or zstd) compresses the whole file.
    Jsonl { codec: Codec, body: BodyText },
}

impl FileFormat {
    /// Capture's format, uncompressed: what `avro_file` and `avro_blob` wrote before formats.
    pub const CAPTURE: FileFormat = FileFormat::Avro { codec: Codec::Null };

    /// The extension of its files, with the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormat::Avro { .. } => ".avro",
            FileFormat::Parquet(_) => ".parquet",
            FileFormat::Jsonl {
                codec: Codec::Gzip { .. },
                ..
            } => ".jsonl.gz",
            FileFormat::Jsonl {
                codec: Codec::Zstd { .. },
                ..
            } => ".jsonl.zst",
            FileFormat::Jsonl { .. } => ".jsonl",
        }
    }

    /// The version of the schema its files are written in (Parquet files carry it in their
    /// footer too; Avro's is Capture's, fixed).
    pub fn schema_version(&self) -> &'static str {
        match self {
            FileFormat::Avro { .. } => "capture",
            FileFormat::Parquet(_) => super::parquet::SCHEMA_VERSION,
            FileFormat::Jsonl { .. } => JSONL_SCHEMA_VERSION,
        }
    }

    /// The format a window committed under `name` is written in: this one when the name ends
    /// with its extension, else the format that name's extension says, with that format's
    /// defaults. A window reproduced from a commit record that another format wrote (the
    /// config changed between a crash and the restart, or during a rolling update) keeps the
    /// recorded name, which the exactly-once protocol depends on, and a content that matches
    /// it.
    pub fn for_name(&self, name: &str) -> FileFormat {
        if name.ends_with(self.extension()) {
            return self.clone();
        }
        let named = [
            (
                ".jsonl.zst",
                FileFormat::Jsonl {
                    codec: Codec::Zstd { level: 3 },
                    body: BodyText::Utf8,
                },
            ),
            (
                ".jsonl.gz",
                FileFormat::Jsonl {
                    codec: Codec::Gzip { level: 6 },
                    body: BodyText::Utf8,
                },
            ),
            (
                ".jsonl",
                FileFormat::Jsonl {
                    codec: Codec::Null,
                    body: BodyText::Utf8,
                },
            ),
            (".parquet", FileFormat::Parquet(ParquetSettings::default())),
            (".avro", FileFormat::CAPTURE),
        ];
        named
            .into_iter()
            .find(|(extension, _)| name.ends_with(extension))
            .map_or_else(|| self.clone(), |(_, format)| format)
    }

    /// Its name in the config (`format = "..."`) and in blob metadata.
    pub fn name(&self) -> &'static str {
        match self {
            FileFormat::Avro { .. } => "avro",
            FileFormat::Parquet(_) => "parquet",
            FileFormat::Jsonl { .. } => "jsonl",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error(transparent)]
    Parquet(#[from] ParquetWriteError),
    #[error("cannot write JSON lines: {0}")]
    Jsonl(#[from] std::io::Error),
}

/// One file being written, in its format.
pub enum FormatWriter<W: Write + Send> {
    Avro(Box<CaptureWriter<W>>),
    Parquet(Box<ParquetWriter<W>>),
    Jsonl(Box<JsonlWriter<W>>),
}

impl<W: Write + Send> FormatWriter<W> {
    /// Starts a file in `inner` (writing its header, for the formats that have one).
    /// `partition_id` goes into every JSON line and Parquet row (Avro does not store it).
    pub fn new(inner: W, format: &FileFormat, partition_id: &str) -> Result<Self, FormatError> {
        Ok(match format {
            FileFormat::Avro { codec } => {
                FormatWriter::Avro(Box::new(CaptureWriter::new(inner, codec)?))
            }
            FileFormat::Parquet(settings) => {
                FormatWriter::Parquet(Box::new(ParquetWriter::new(inner, settings, partition_id)?))
            }
            FileFormat::Jsonl { codec, body } => FormatWriter::Jsonl(Box::new(JsonlWriter::new(
                inner,
                codec,
                *body,
                partition_id,
            )?)),
        })
    }

    /// Adds events; a full block (row group) is encoded and handed to `inner` on the way. After
    /// an error the file is incomplete: the window is dropped and read again.
    pub fn append_all(&mut self, events: &[ReceivedEvent]) -> Result<(), FormatError> {
        match self {
            FormatWriter::Avro(writer) => events
                .iter()
                .try_for_each(|event| writer.append(event))
                .map_err(FormatError::from),
            FormatWriter::Parquet(writer) => Ok(writer.append_all(events)?),
            FormatWriter::Jsonl(writer) => Ok(writer.append_all(events)?),
        }
    }

    /// Encodes what is buffered now and hands it to `inner` (ends the open Avro block or
    /// Parquet row group), so that committing only has to flush and sync.
    pub fn flush_block(&mut self) -> Result<(), FormatError> {
        match self {
            FormatWriter::Avro(writer) => Ok(writer.flush_block()?),
            FormatWriter::Parquet(writer) => Ok(writer.flush_block()?),
            FormatWriter::Jsonl(writer) => Ok(writer.flush_block()?),
        }
    }

    /// Bytes handed to `inner` so far.
    pub fn bytes_written(&self) -> u64 {
        match self {
            FormatWriter::Avro(writer) => writer.bytes_written(),
            FormatWriter::Parquet(writer) => writer.bytes_written(),
            FormatWriter::Jsonl(writer) => writer.bytes_written(),
        }
    }

    /// Bytes held in memory, not yet handed to `inner`.
    pub fn buffered_bytes(&self) -> u64 {
        match self {
            FormatWriter::Avro(writer) => writer.buffered_bytes(),
            FormatWriter::Parquet(writer) => writer.buffered_bytes(),
            FormatWriter::Jsonl(writer) => writer.buffered_bytes(),
        }
    }

    /// Ends the file (last block, footer), flushes `inner` and returns it (not synced).
    pub fn finish(self) -> Result<W, FormatError> {
        match self {
            FormatWriter::Avro(writer) => Ok(writer.finish()?),
            FormatWriter::Parquet(writer) => Ok(writer.finish()?),
            FormatWriter::Jsonl(writer) => Ok(writer.finish()?),
        }
    }

    /// Where the file's bytes go, so finished blocks can be drained from it.
    pub fn inner_mut(&mut self) -> &mut W {
        match self {
            FormatWriter::Avro(writer) => writer.inner_mut(),
            FormatWriter::Parquet(writer) => writer.inner_mut(),
            FormatWriter::Jsonl(writer) => writer.inner_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_stripped_longest_first() {
        assert_eq!(strip_archive_extension("a/b.jsonl.gz"), Some("a/b"));
        assert_eq!(strip_archive_extension("a/b.jsonl.zst"), Some("a/b"));
        assert_eq!(strip_archive_extension("a/b.jsonl"), Some("a/b"));
        assert_eq!(strip_archive_extension("a/b.parquet"), Some("a/b"));
        assert_eq!(strip_archive_extension("a/b.avro"), Some("a/b"));
        assert_eq!(strip_archive_extension("a/b.avro.tmp"), None);
        assert_eq!(strip_archive_extension("a/b.gz"), None);
    }

    #[test]
    fn a_name_of_another_format_sets_the_format_and_its_own_keeps_the_settings() {
        let configured = FileFormat::Parquet(ParquetSettings {
            body_utf8: true,
            ..ParquetSettings::default()
        });
        assert_eq!(configured.for_name("p/0/12.parquet"), configured);
        assert_eq!(configured.for_name("p/0/12.avro"), FileFormat::CAPTURE);
        assert_eq!(
            configured.for_name("p/0/12.jsonl.zst").extension(),
            ".jsonl.zst"
        );
        assert_eq!(
            configured.for_name("p/0/12.jsonl.gz").extension(),
            ".jsonl.gz"
        );
        assert_eq!(configured.for_name("p/0/12.jsonl").extension(), ".jsonl");
        // A name with no archive extension (a custom tool's) leaves the configured format.
        assert_eq!(configured.for_name("p/0/12.bin"), configured);
        let avro = FileFormat::Avro {
            codec: Codec::Zstd { level: 3 },
        };
        assert_eq!(
            avro.for_name("a.avro"),
            avro,
            "a matching name keeps the codec"
        );
    }

    #[test]
    fn every_format_names_its_files_with_a_known_extension() {
        let formats = [
            FileFormat::CAPTURE,
            FileFormat::Parquet(ParquetSettings::default()),
            FileFormat::Jsonl {
                codec: Codec::Null,
                body: BodyText::Utf8,
            },
            FileFormat::Jsonl {
                codec: Codec::Gzip { level: 6 },
                body: BodyText::Utf8,
            },
            FileFormat::Jsonl {
                codec: Codec::Zstd { level: 3 },
                body: BodyText::Base64,
            },
        ];
        for format in formats {
            let name = format!("x{}", format.extension());
            assert_eq!(strip_archive_extension(&name), Some("x"), "{name}");
        }
    }
}
