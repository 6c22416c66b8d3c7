//! Reading archives back: the files hubcap writes, as the events they hold.
//!
//! `hubcap cat` and `hubcap verify` are built on this: [`read`] recognises an archive's format
//! from its first bytes and streams its events, from a file or a blob download alike;
//! [`read_file`] adds the partition a file's path names, as [`ArchivedEvent`]s, which print as
//! the `stdout` sink's JSON lines (same field names, same value encoding,
//! [`crate::sink::stdout`]). One reader per format hubcap writes: Capture Avro ([`capture`]),
//! Parquet ([`parquet`]) and JSON Lines, plain or compressed ([`jsonl`]).

pub mod capture;
pub mod jsonl;
pub mod parquet;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::eventhubs::ReceivedEvent;

/// One event read from an archive file.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    /// The partition, when the file's path says it (see [`partition_from_path`]).
    pub partition_id: Option<String>,
    pub event: ReceivedEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an archive hubcap reads (expected an Avro container file, a Parquet file, or JSON Lines, plain or gzip/zstd-compressed)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{}: not a readable Avro file: {reason}", path.display())]
    Avro { path: PathBuf, reason: String },
    #[error("{}: event {index}: {reason} (the file is truncated or damaged)", path.display())]
    Damaged {
        path: PathBuf,
        /// Events read before the damage.
        index: u64,
        reason: String,
    },
    #[error("{}: not a Capture file: {reason}", path.display())]
    NotCapture { path: PathBuf, reason: String },
    #[error("{}: not a readable Parquet file of hubcap's: {reason}", path.display())]
    Parquet { path: PathBuf, reason: String },
}

/// The fields of a JSON line, in the order the `stdout` sink writes them.
pub const FIELDS: &[&str] = &[
    "partition_id",
    "sequence_number",
    "offset",
    "enqueued_time",
    "partition_key",
    "properties",
    "system_properties",
    "body",
];

/// Checks a `--fields` list against [`FIELDS`], with a suggestion for a misspelt name.
pub fn parse_fields(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            if FIELDS.contains(&name) {
                Ok(name.to_owned())
            } else {
                let hint = crate::suggest::did_you_mean(name, FIELDS)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                Err(format!(
                    "unknown field {name:?}{hint}; the fields are {}",
                    FIELDS.join(",")
                ))
            }
        })
        .collect()
}

/// Appends `archived` to `out` as one JSON line of the `stdout` sink
/// ([`crate::sink::stdout::write_line`]), keeping only `fields` (all when `None`). `body`
/// brings its `body_encoding`/`body_type` marker along, without which it cannot be decoded.
pub fn write_json_line(archived: &ArchivedEvent, fields: Option<&[String]>, out: &mut Vec<u8>) {
    let mut line = Vec::new();
    crate::sink::stdout::write_line(
        archived.partition_id.as_deref().unwrap_or_default(),
        &archived.event,
        &mut line,
    );
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&line) else {
        return;
    };
    if archived.partition_id.is_none() {
        object.insert("partition_id".into(), serde_json::Value::Null);
    }
    let wanted = |name: &str| {
        fields.is_none_or(|fields| {
            fields.iter().any(|f| f == name)
                || (name.starts_with("body_") && fields.iter().any(|f| f == "body"))
        })
    };
    out.push(b'{');
    let mut first = true;
    for name in FIELDS.iter().chain(&["body_encoding", "body_type"]) {
        let Some(value) = object.get(*name) else {
            continue;
        };
        if !wanted(name) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.extend_from_slice(b"}\n");
}

/// The formats [`read_file`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Event Hubs Capture's Avro container file, any codec.
    CaptureAvro,
    Parquet,
    /// JSON Lines, as the whole file or inside a gzip or zstd stream.
    Jsonl(jsonl::Compression),
}

/// Recognises a file's format from its first bytes (its name only for an empty file, which is
/// an empty window's JSON Lines file).
pub fn detect(path: &Path, first_bytes: &[u8]) -> Result<Format, ArchiveError> {
    let jsonl_name = path.to_string_lossy().ends_with(".jsonl");
    match first_bytes {
        [b'O', b'b', b'j', 1, ..] => Ok(Format::CaptureAvro),
        [b'P', b'A', b'R', b'1', ..] => Ok(Format::Parquet),
        [0x1f, 0x8b, ..] => Ok(Format::Jsonl(jsonl::Compression::Gzip)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Format::Jsonl(jsonl::Compression::Zstd)),
        [b'{', ..] => Ok(Format::Jsonl(jsonl::Compression::None)),
        [] if jsonl_name => Ok(Format::Jsonl(jsonl::Compression::None)),
        _ => Err(ArchiveError::UnknownFormat {
            path: path.to_owned(),
        }),
    }
}

/// Calls `each` with every event of the file at `path`, in file order, until it returns false.
/// Returns how many events were passed.
pub fn read_file(
    path: &Path,
    mut each: impl FnMut(ArchivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let open = |source| ArchiveError::Open {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(open)?;
    let partition_id = partition_from_path(path);
    let each = |event| {
        each(ArchivedEvent {
            partition_id: partition_id.clone(),
            event,
        })
    };
    // Parquet is read by seeking to its footer, not as a stream.
    let mut magic = [0u8; 4];
    let read_bytes = read_up_to(&mut file, &mut magic).map_err(open)?;
    if detect(path, &magic[..read_bytes])? == Format::Parquet {
        return parquet::read_file(path, file, each);
    }
    use std::io::Seek;
    file.rewind().map_err(open)?;
    read(path, file, each)
}

/// Calls `each` with every event of the archive `input` holds (a file, a blob being
/// downloaded: any byte stream, read once from the start, buffered here), in order, until it
/// returns false; `name` names it in errors. The format is recognised from the first bytes
/// ([`detect`]); a new format is one more arm here. Streams: memory does not grow with the
/// archive's size (the Avro reader holds one block at a time).
pub fn read(
    name: &Path,
    input: impl Read,
    each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let mut input = std::io::BufReader::new(input);
    let mut magic = [0u8; 4];
    let read = read_up_to(&mut input, &mut magic).map_err(|source| ArchiveError::Open {
        path: name.to_owned(),
        source,
    })?;
    let format = detect(name, &magic[..read])?;
    // The bytes taken to recognise the format go back in front of the rest.
    let input = std::io::Cursor::new(magic).take(read as u64).chain(input);
    match format {
        Format::CaptureAvro => capture::read(name, input, each),
        Format::Parquet => parquet::read(name, input, each),
        Format::Jsonl(compression) => jsonl::read(name, input, compression, each),
    }
}

fn read_up_to(input: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The partition id in a path laid out as Capture's default format
/// (`.../{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro`, also hubcap's
/// default): the directory above six numeric components. `None` for any other layout: the
/// records themselves do not name their partition.
pub fn partition_from_path(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = crate::sink::format::strip_archive_extension(&last)?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(stem) || parts.len() < 6 {
        return None;
    }
    let time_dirs = &parts[parts.len() - 5..];
    if !time_dirs.iter().all(|s| numeric(s)) {
        return None;
    }
    let partition = &parts[parts.len() - 6];
    (!partition.is_empty()).then(|| partition.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_id_comes_from_the_default_layout_only() {
        let default = Path::new("capture/ns/hub/3/2026/12/01/21/30/05.avro");
        assert_eq!(partition_from_path(default).as_deref(), Some("3"));
        assert_eq!(partition_from_path(Path::new("events.avro")), None);
        assert_eq!(partition_from_path(Path::new("a/b/c/d/e/f/g/h.avro")), None);
        assert_eq!(
            partition_from_path(Path::new("ns/hub/0/2026/12/01/21/30/x.avro")),
            None
        );
    }

    #[test]
    fn fields_are_checked_and_selected_in_the_sink_order() {
        assert!(parse_fields("body,sequence_numbr")
            .unwrap_err()
            .contains("did you mean \"sequence_number\""));
        let fields = parse_fields("body, sequence_number").unwrap();
        let archived = ArchivedEvent {
            partition_id: None,
            event: ReceivedEvent {
                sequence_number: 4,
                offset: "9".into(),
                enqueued_time_ms: 0,
                partition_key: None,
                properties: vec![],
                system_properties: vec![],
                body: crate::eventhubs::EventBody::Data(vec![vec![0xff]]),
            },
        };
        let mut out = Vec::new();
        write_json_line(&archived, Some(&fields), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"sequence_number\":4,\"body\":\"/w==\",\"body_encoding\":\"base64\"}\n"
        );
        let mut out = Vec::new();
        write_json_line(&archived, None, &mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(line["partition_id"].is_null());
        assert_eq!(line["offset"], "9");
    }

    #[test]
    fn formats_are_recognised_by_their_first_bytes() {
        let path = Path::new("f");
        assert_eq!(detect(path, b"Obj\x01rest").unwrap(), Format::CaptureAvro);
        assert_eq!(detect(path, b"PAR1").unwrap(), Format::Parquet);
        let jsonl = |compression| Format::Jsonl(compression);
        assert_eq!(
            detect(path, b"{\"a\"").unwrap(),
            jsonl(jsonl::Compression::None)
        );
        assert_eq!(
            detect(path, &[0x1f, 0x8b, 8, 0]).unwrap(),
            jsonl(jsonl::Compression::Gzip)
        );
        assert_eq!(
            detect(path, &[0x28, 0xb5, 0x2f, 0xfd]).unwrap(),
            jsonl(jsonl::Compression::Zstd)
        );
        let error = detect(path, b"[1,2").unwrap_err().to_string();
        assert!(error.starts_with("f: not an archive"), "{error}");
        assert!(detect(path, b"").is_err());
        assert_eq!(
            detect(Path::new("w.jsonl"), b"").unwrap(),
            jsonl(jsonl::Compression::None)
        );
    }

    #[test]
    fn any_byte_stream_reads_even_one_byte_at_a_time() {
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let end = buf.len().min(1);
                self.0.read(&mut buf[..end])
            }
        }
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/capture-archive-2016.avro"
        );
        let bytes = std::fs::read(fixture).unwrap();
        let mut offsets = Vec::new();
        let count = read(
            Path::new("blob"),
            Trickle(std::io::Cursor::new(bytes)),
            |e| {
                offsets.push(e.offset);
                true
            },
        )
        .unwrap();
        assert_eq!((count, offsets), (1, vec!["0".to_owned()]));
        let error = read(Path::new("blob"), &b"Ob"[..], |_| true).unwrap_err();
        assert!(
            matches!(error, ArchiveError::UnknownFormat { .. }),
            "{error}"
        );
    }
}
