//! `[sink]`: the sink type and its own keys, the archive format and its codec, and the window
//! that decides when events are committed.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{Ctx, Entry, Lookup, Section};
use super::units::{GIB, KIB, MIB};
use super::{path_format, storage, SinkConfig, SinkKind};
use crate::sink::format::FileFormat;
use crate::sink::jsonl::BodyText;
use crate::sink::parquet::{ParquetSettings, DEFAULT_ROW_GROUP_BYTES};
use crate::sink::path_format::PathFormat;
use crate::sink::{Codec, WindowSettings};

pub(super) const KEYS: &[&str] = &[
    "type",
    "format",
    "max_window",
    "max_window_bytes",
    "skip_empty",
    "path",
    "path_format",
    "codec",
    "compression_level",
    "body",
    "row_group_bytes",
    "file_mode",
    "connection_string",
    "connection_string_file",
    "container_url",
    "container_url_file",
    "account_url",
    "credential",
    "container",
    "block_size",
];

const WINDOW_KEYS: &[&str] = &["type", "max_window", "max_window_bytes", "skip_empty"];
/// Keys of every archive format; which apply to which format is checked by [`file_format`].
const FORMAT_KEYS: &[&str] = &[
    "format",
    "codec",
    "compression_level",
    "body",
    "row_group_bytes",
];
const FILE_KEYS: &[&str] = &["path", "path_format", "file_mode"];
const BLOB_KEYS: &[&str] = &["path_format", "block_size"];

const DEFAULT_ARCHIVE_PATH: &str = "/var/lib/hubcap/capture";
const DEFAULT_FILE_MODE: u32 = 0o600;
const DEFAULT_BLOCK_SIZE: u64 = 4 * MIB;

/// The window when `[sink]` sets none of its keys.
pub(super) const DEFAULT_WINDOW: WindowSettings = WindowSettings {
    max_age: Duration::from_secs(300),
    max_bytes: 300 * MIB,
    skip_empty: true,
};

#[derive(Clone, Copy, PartialEq)]
enum Type {
    Stdout,
    File,
    Blob,
    /// `type = "avro_file"`: `file` with format Avro, the name from before formats.
    AvroFile,
    /// `type = "avro_blob"`: `blob` with format Avro.
    AvroBlob,
}

pub(super) fn parse(ctx: &mut Ctx, mut section: Section) -> Option<SinkConfig> {
    let types = [
        ("file", Type::File),
        ("blob", Type::Blob),
        ("stdout", Type::Stdout),
        ("avro_file", Type::AvroFile),
        ("avro_blob", Type::AvroBlob),
    ];
    let kind = section.choice(ctx, "type", "sink type", &types, Type::File);
    let defaults = DEFAULT_WINDOW;
    let window = WindowSettings {
        max_age: section.duration(
            ctx,
            "max_window",
            defaults.max_age,
            Duration::from_secs(1)..=Duration::from_secs(86_400),
        ),
        max_bytes: section.size(ctx, "max_window_bytes", defaults.max_bytes, KIB..=10 * GIB),
        skip_empty: section.boolean(ctx, "skip_empty", defaults.skip_empty),
    };
    let kind = match kind {
        Lookup::Present(Type::Stdout) => {
            section.finish(ctx, WINDOW_KEYS, KEYS, "sink type \"stdout\"");
            Some(SinkKind::Stdout)
        }
        Lookup::Present(kind @ (Type::File | Type::AvroFile)) => {
            let type_name = if kind == Type::File {
                "file"
            } else {
                "avro_file"
            };
            let format = file_format(ctx, &mut section, type_name);
            let path = match section.take("path") {
                Some(entry) => ctx.path(&entry),
                None => Some(PathBuf::from(DEFAULT_ARCHIVE_PATH)),
            };
            let path_format = path_format(ctx, &mut section).map(|(format, _)| format);
            let file_mode = match section.take("file_mode") {
                Some(entry) => file_mode(ctx, &entry),
                None => Some(DEFAULT_FILE_MODE),
            };
            let allowed = [WINDOW_KEYS, FORMAT_KEYS, FILE_KEYS].concat();
            section.finish(ctx, &allowed, KEYS, &format!("sink type \"{type_name}\""));
            Some(SinkKind::File {
                path: path?,
                path_format: path_format?,
                format: format?,
                file_mode: file_mode?,
            })
        }
        Lookup::Present(kind @ (Type::Blob | Type::AvroBlob)) => {
            let type_name = if kind == Type::Blob {
                "blob"
            } else {
                "avro_blob"
            };
            let format = file_format(ctx, &mut section, type_name);
            let storage = storage::parse(ctx, &mut section);
            let path_format = path_format(ctx, &mut section).and_then(|(format, entry)| {
                // A blob's name is fixed when its window opens, before its last event is known.
                let check = if format.as_str().contains("{LastSequenceNumber}") {
                    Err(format!(
                        "{{LastSequenceNumber}} is not available with sink type \"{type_name}\": \
                         a blob is named when its window opens; use {{FirstSequenceNumber}}"
                    ))
                } else {
                    Ok(())
                };
                match entry {
                    Some(entry) => ctx.checked(&entry, format, check),
                    None => Some(format),
                }
            });
            let block_size =
                section.size(ctx, "block_size", DEFAULT_BLOCK_SIZE, 64 * KIB..=100 * MIB);
            let allowed = [WINDOW_KEYS, FORMAT_KEYS, BLOB_KEYS, storage::KEYS].concat();
            section.finish(ctx, &allowed, KEYS, &format!("sink type \"{type_name}\""));
            let (storage, container, proxy) = storage?;
            Some(SinkKind::Blob {
                storage,
                proxy,
                container,
                path_format: path_format?,
                format: format?,
                block_size,
            })
        }
        Lookup::Absent | Lookup::Invalid => {
            section.finish(ctx, KEYS, &[], "");
            None
        }
    };
    Some(SinkConfig {
        kind: kind?,
        window,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum FormatName {
    Avro,
    Parquet,
    Jsonl,
}

impl FormatName {
    fn as_str(self) -> &'static str {
        match self {
            FormatName::Avro => "avro",
            FormatName::Parquet => "parquet",
            FormatName::Jsonl => "jsonl",
        }
    }
}

/// Parquet's default codec: zstd at level 1 (arrow-rs's default too). Its compressor, one per
/// open file, takes about a third of level 3's memory, for files a few percent larger.
const PARQUET_ZSTD: Codec = Codec::Zstd { level: 1 };

/// `format` and the keys that depend on it: `codec` (and its `compression_level`), `body`,
/// `row_group_bytes`. A key another format uses is named as such ("not used by format ...").
fn file_format(ctx: &mut Ctx, section: &mut Section, type_name: &str) -> Option<FileFormat> {
    let formats = [
        ("avro", FormatName::Avro),
        ("parquet", FormatName::Parquet),
        ("jsonl", FormatName::Jsonl),
    ];
    let alias = type_name.starts_with("avro_");
    let name = match section.choice(ctx, "format", "format", &formats, FormatName::Avro) {
        Lookup::Present(name) => name,
        Lookup::Absent | Lookup::Invalid => return None,
    };
    if alias && name != FormatName::Avro {
        if let Some(entry) = section.take("format") {
            let plain = type_name.trim_start_matches("avro_");
            let message = format!(
                "sink type \"{type_name}\" writes Avro; for {} use type = \"{plain}\" with \
                 format = \"{}\"",
                name.as_str(),
                name.as_str()
            );
            ctx.error(&entry.key, entry.line, message);
        }
        return None;
    }
    let unused = |ctx: &mut Ctx, section: &mut Section, key: &str| {
        if let Some(entry) = section.take(key) {
            let message = format!("not used by format \"{}\"", name.as_str());
            ctx.error(&entry.key, entry.line, message);
        }
    };
    match name {
        FormatName::Avro => {
            unused(ctx, section, "body");
            unused(ctx, section, "row_group_bytes");
            let codec = codec(
                ctx,
                section,
                name,
                &[CODEC_NULL, CODEC_DEFLATE, CODEC_SNAPPY, CODEC_ZSTD],
                Codec::Null,
            );
            Some(FileFormat::Avro { codec: codec? })
        }
        FormatName::Parquet => {
            let codec = codec(
                ctx,
                section,
                name,
                &[CODEC_NULL, CODEC_SNAPPY, CODEC_ZSTD],
                PARQUET_ZSTD,
            );
            let body = body(ctx, section, BodyText::Base64);
            let row_group_bytes = section.size(
                ctx,
                "row_group_bytes",
                DEFAULT_ROW_GROUP_BYTES as u64,
                64 * KIB..=GIB,
            );
            Some(FileFormat::Parquet(ParquetSettings {
                codec: codec?,
                row_group_bytes: usize::try_from(row_group_bytes).unwrap_or(usize::MAX),
                body_utf8: body? == BodyText::Utf8,
            }))
        }
        FormatName::Jsonl => {
            unused(ctx, section, "row_group_bytes");
            let codec = codec(
                ctx,
                section,
                name,
                &[CODEC_NULL, CODEC_GZIP, CODEC_ZSTD],
                Codec::Null,
            );
            let body = body(ctx, section, BodyText::Utf8);
            Some(FileFormat::Jsonl {
                codec: codec?,
                body: body?,
            })
        }
    }
}

/// `body = "utf8" | "binary"`: whether a body that is valid UTF-8 is also (Parquet) or instead
/// (JSON Lines) written as text.
fn body(ctx: &mut Ctx, section: &mut Section, default: BodyText) -> Option<BodyText> {
    let choices = [("utf8", BodyText::Utf8), ("binary", BodyText::Base64)];
    match section.choice(ctx, "body", "body", &choices, default) {
        Lookup::Present(body) => Some(body),
        Lookup::Absent | Lookup::Invalid => None,
    }
}

/// `path_format`, parsed, with its entry (`None` for the default).
fn path_format<'d>(
    ctx: &mut Ctx,
    section: &mut Section<'d>,
) -> Option<(PathFormat, Option<Entry<'d>>)> {
    let Some(entry) = section.take("path_format") else {
        return Some((path_format::default(), None));
    };
    let format = ctx.string(&entry)?;
    match path_format::parse(&format) {
        Ok(format) => Some((format, Some(entry))),
        Err(problems) => {
            for problem in &problems {
                ctx.error(&entry.key, entry.line, problem.as_str());
            }
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum CodecName {
    Null,
    Deflate,
    Snappy,
    Zstd,
    Gzip,
}

const CODEC_NULL: (&str, CodecName) = ("null", CodecName::Null);
const CODEC_DEFLATE: (&str, CodecName) = ("deflate", CodecName::Deflate);
const CODEC_SNAPPY: (&str, CodecName) = ("snappy", CodecName::Snappy);
const CODEC_ZSTD: (&str, CodecName) = ("zstd", CodecName::Zstd);
const CODEC_GZIP: (&str, CodecName) = ("gzip", CodecName::Gzip);

/// `codec`, one of `allowed` (the format's), and its `compression_level`, which only deflate,
/// zstd and gzip take.
fn codec(
    ctx: &mut Ctx,
    section: &mut Section,
    format: FormatName,
    allowed: &[(&str, CodecName)],
    default: Codec,
) -> Option<Codec> {
    let every = [
        CODEC_NULL,
        CODEC_DEFLATE,
        CODEC_SNAPPY,
        CODEC_ZSTD,
        CODEC_GZIP,
    ];
    let level = section.take("compression_level");
    let name = match section.take("codec") {
        None => None,
        Some(entry) => {
            let value = ctx.string(&entry)?;
            match every.iter().find(|(name, _)| *name == value) {
                Some(found) if allowed.contains(found) => Some(found.1),
                Some(_) => {
                    let names: Vec<&str> = allowed.iter().map(|(name, _)| *name).collect();
                    let message = format!(
                        "codec {value:?} is not available with format \"{}\"; expected {}",
                        format.as_str(),
                        super::reader::one_of(&names)
                    );
                    ctx.error(&entry.key, entry.line, message);
                    return None;
                }
                None => {
                    ctx.choice(&entry, "codec", allowed)?;
                    return None;
                }
            }
        }
    };
    let unused_level = |ctx: &mut Ctx, codec: &str| {
        if let Some(level) = &level {
            let message = format!("not used by codec \"{codec}\"");
            ctx.error(&level.key, level.line, message);
        }
    };
    let leveled = |ctx: &mut Ctx, range: std::ops::RangeInclusive<i64>| {
        level.as_ref().map(|entry| ctx.integer(entry, range))
    };
    match name {
        None => match default {
            // The format's default codec takes a level too.
            Codec::Zstd { level: default } => match leveled(ctx, 1..=22) {
                None => Some(Codec::Zstd { level: default }),
                Some(level) => level
                    .and_then(|l| i32::try_from(l).ok())
                    .map(|level| Codec::Zstd { level }),
            },
            _ => {
                unused_level(ctx, "null");
                Some(default)
            }
        },
        Some(CodecName::Null) => {
            unused_level(ctx, "null");
            Some(Codec::Null)
        }
        Some(CodecName::Snappy) => {
            unused_level(ctx, "snappy");
            Some(Codec::Snappy)
        }
        // Level 1: fast, and most of the gain on JSON-like payloads.
        Some(CodecName::Deflate) => match leveled(ctx, 0..=9) {
            None => Some(Codec::Deflate { level: 1 }),
            Some(level) => level
                .and_then(|l| u32::try_from(l).ok())
                .map(|level| Codec::Deflate { level }),
        },
        // The format's own zstd level (Parquet's), else 3.
        Some(CodecName::Zstd) => match leveled(ctx, 1..=22) {
            None => Some(match default {
                Codec::Zstd { .. } => default,
                _ => Codec::Zstd { level: 3 },
            }),
            Some(level) => level
                .and_then(|l| i32::try_from(l).ok())
                .map(|level| Codec::Zstd { level }),
        },
        // Level 6, as `gzip` itself.
        Some(CodecName::Gzip) => match leveled(ctx, 0..=9) {
            None => Some(Codec::Gzip { level: 6 }),
            Some(level) => level
                .and_then(|l| u32::try_from(l).ok())
                .map(|level| Codec::Gzip { level }),
        },
    }
}

/// Octal permissions written as a string, `"0640"`: a bare TOML integer would be decimal.
fn file_mode(ctx: &mut Ctx, entry: &Entry) -> Option<u32> {
    let expected = "expected an octal permission string such as \"0640\"";
    let Some(text) = entry.item.as_str() else {
        let message = match entry.item.as_integer() {
            Some(number) => {
                format!("{expected}, found {number} (quote it: TOML reads it as decimal)")
            }
            None => format!("{expected}, found a non-string value"),
        };
        ctx.error(&entry.key, entry.line, message);
        return None;
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match parse_mode(digits) {
        Some(mode) => Some(mode),
        None => {
            let message = format!("{expected}, found {text:?}");
            ctx.error(&entry.key, entry.line, message);
            None
        }
    }
}

fn parse_mode(digits: &str) -> Option<u32> {
    let octal = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = u32::from_str_radix(digits, 8).ok().filter(|_| octal)?;
    (mode <= 0o777).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_are_octal() {
        assert_eq!(parse_mode("0600"), Some(0o600));
        assert_eq!(parse_mode("640"), Some(0o640));
        assert_eq!(parse_mode("0777"), Some(0o777));
        assert_eq!(parse_mode("0800"), None);
        assert_eq!(parse_mode("1777"), None);
        assert_eq!(parse_mode("rw-r-----"), None);
        assert_eq!(parse_mode(""), None);
    }
}
