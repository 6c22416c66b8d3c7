//! `[sink]`: the sink type and its own keys, the Avro codec, and the window that decides when
//! events are committed.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{Ctx, Entry, Lookup, Section};
use super::units::{GIB, KIB, MIB};
use super::{path_format, storage, SinkConfig, SinkKind};
use crate::sink::path_format::PathFormat;
use crate::sink::{Codec, WindowSettings};

pub(super) const KEYS: &[&str] = &[
    "type",
    "max_window",
    "max_window_bytes",
    "skip_empty",
    "path",
    "path_format",
    "codec",
    "compression_level",
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
const AVRO_FILE_KEYS: &[&str] = &[
    "path",
    "path_format",
    "codec",
    "compression_level",
    "file_mode",
];
const AVRO_BLOB_KEYS: &[&str] = &["path_format", "codec", "compression_level", "block_size"];

const DEFAULT_ARCHIVE_PATH: &str = "/var/lib/hubcap/capture";
const DEFAULT_FILE_MODE: u32 = 0o600;
const DEFAULT_BLOCK_SIZE: u64 = 4 * MIB;

/// The window when `[sink]` sets none of its keys.
pub(super) const DEFAULT_WINDOW: WindowSettings = WindowSettings {
    max_age: Duration::from_secs(300),
    max_bytes: 300 * MIB,
    skip_empty: true,
};

#[derive(Clone, Copy)]
enum Type {
    Stdout,
    AvroFile,
    AvroBlob,
}

pub(super) fn parse(ctx: &mut Ctx, mut section: Section) -> Option<SinkConfig> {
    let types = [
        ("avro_file", Type::AvroFile),
        ("avro_blob", Type::AvroBlob),
        ("stdout", Type::Stdout),
    ];
    let kind = section.choice(ctx, "type", "sink type", &types, Type::AvroFile);
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
        Lookup::Present(Type::AvroFile) => {
            let path = match section.take("path") {
                Some(entry) => ctx.path(&entry),
                None => Some(PathBuf::from(DEFAULT_ARCHIVE_PATH)),
            };
            let path_format = path_format(ctx, &mut section).map(|(format, _)| format);
            let codec = codec(ctx, &mut section);
            let file_mode = match section.take("file_mode") {
                Some(entry) => file_mode(ctx, &entry),
                None => Some(DEFAULT_FILE_MODE),
            };
            let allowed = [WINDOW_KEYS, AVRO_FILE_KEYS].concat();
            section.finish(ctx, &allowed, KEYS, "sink type \"avro_file\"");
            Some(SinkKind::AvroFile {
                path: path?,
                path_format: path_format?,
                codec: codec?,
                file_mode: file_mode?,
            })
        }
        Lookup::Present(Type::AvroBlob) => {
            let storage = storage::parse(ctx, &mut section);
            let path_format = path_format(ctx, &mut section).and_then(|(format, entry)| {
                // A blob's name is fixed when its window opens, before its last event is known.
                let check =
                    if format.as_str().contains("{LastSequenceNumber}") {
                        Err("{LastSequenceNumber} is not available with sink type \"avro_blob\": a \
                         blob is named when its window opens; use {FirstSequenceNumber}"
                        .to_owned())
                    } else {
                        Ok(())
                    };
                match entry {
                    Some(entry) => ctx.checked(&entry, format, check),
                    None => Some(format),
                }
            });
            let codec = codec(ctx, &mut section);
            let block_size =
                section.size(ctx, "block_size", DEFAULT_BLOCK_SIZE, 64 * KIB..=100 * MIB);
            let allowed = [WINDOW_KEYS, AVRO_BLOB_KEYS, storage::KEYS].concat();
            section.finish(ctx, &allowed, KEYS, "sink type \"avro_blob\"");
            let (storage, container) = storage?;
            Some(SinkKind::AvroBlob {
                storage,
                container,
                path_format: path_format?,
                codec: codec?,
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

/// `codec` and its `compression_level`, which only deflate and zstd take.
fn codec(ctx: &mut Ctx, section: &mut Section) -> Option<Codec> {
    #[derive(Clone, Copy)]
    enum Name {
        Null,
        Deflate,
        Snappy,
        Zstd,
    }
    let names = [
        ("null", Name::Null),
        ("deflate", Name::Deflate),
        ("snappy", Name::Snappy),
        ("zstd", Name::Zstd),
    ];
    let name = section.choice(ctx, "codec", "codec", &names, Name::Null);
    let level = section.take("compression_level");
    let unused_level = |ctx: &mut Ctx, codec: &str| {
        if let Some(level) = &level {
            let message = format!("not used by codec \"{codec}\"");
            ctx.error(&level.key, level.line, message);
        }
    };
    match name {
        Lookup::Present(Name::Null) => {
            unused_level(ctx, "null");
            Some(Codec::Null)
        }
        Lookup::Present(Name::Snappy) => {
            unused_level(ctx, "snappy");
            Some(Codec::Snappy)
        }
        Lookup::Present(Name::Deflate) => match &level {
            // Level 1: fast, and most of the gain on JSON-like payloads.
            None => Some(Codec::Deflate { level: 1 }),
            Some(entry) => ctx
                .integer(entry, 0..=9)
                .and_then(|level| u32::try_from(level).ok())
                .map(|level| Codec::Deflate { level }),
        },
        Lookup::Present(Name::Zstd) => match &level {
            None => Some(Codec::Zstd { level: 3 }),
            Some(entry) => ctx
                .integer(entry, 1..=22)
                .and_then(|level| i32::try_from(level).ok())
                .map(|level| Codec::Zstd { level }),
        },
        Lookup::Absent | Lookup::Invalid => None,
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
