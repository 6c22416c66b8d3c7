//! Where `hubcap verify` reads an archive from: a local directory (the `avro_file` sink's, or
//! any) or a blob container (the `avro_blob` sink's). Both end in the same per-object record,
//! [`Scanned`]: the object's name relative to the archive root, its partition (from the name,
//! [`PathFormat::partition_of`]) and the [`FileTally`] of its sequence numbers, read with the
//! one archive reader ([`crate::archive::read`]), streaming.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};

use super::ranges::FileTally;
use super::VerifyError;
use crate::archive::ArchiveError;
use crate::sink::path_format::PathFormat;
use crate::storage::{BlobContainer, StorageError};

/// The `file` sink's staging directory: windows not committed yet.
const STAGING_DIR: &str = ".hubcap-staging";
/// `check-config --connect`'s probe (a blob, or a hidden file in a directory).
const PROBE: &str = crate::preflight::PROBE_NAME;
/// Whether a name ends in the extension of an archive format hubcap writes.
fn is_archive(name: &str) -> bool {
    crate::sink::format::strip_archive_extension(name).is_some()
}

/// One archive object, read.
#[derive(Debug)]
pub struct Scanned {
    /// Relative to the archive root, `/`-separated.
    pub name: String,
    /// `None` when the name does not match the path format: the object is not read.
    pub partition_id: Option<String>,
    /// Its sequence numbers (those read before a failure, for an unreadable object).
    pub tally: FileTally,
    /// Why it could not be read to its end.
    pub unreadable: Option<String>,
    /// A blob whose metadata disagrees with its content: what each says.
    pub metadata_mismatch: Option<String>,
}

/// What a listing found besides archive objects.
#[derive(Debug, Default)]
pub struct Listing {
    pub scanned: Vec<Scanned>,
    /// Objects that are not archives (not `.avro`), left alone.
    pub ignored: u64,
}

/// Whether a name (relative, `/`-separated) is one of hubcap's own non-archive objects or not
/// an archive at all: staging, temp files, the preflight probe.
fn skipped(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    name.split('/').any(|segment| segment == STAGING_DIR)
        || file.ends_with(".tmp")
        || file == PROBE
        || file.starts_with(&format!(".{PROBE}"))
}

/// Which partitions' objects a scan reads (the others are listed, unread, with no partition).
#[derive(Debug, Clone, Copy, Default)]
pub enum Partitions<'a> {
    #[default]
    All,
    Only(&'a [String]),
}

impl Partitions<'_> {
    fn of(self, path_format: &PathFormat, name: &str) -> Option<String> {
        let partition_id = path_format.partition_of(name)?;
        match self {
            Partitions::All => Some(partition_id),
            Partitions::Only(ids) => ids.contains(&partition_id).then_some(partition_id),
        }
    }
}

/// Reads every archive file under `root` of `partitions`, in name order.
pub fn scan_dir(
    root: &Path,
    path_format: &PathFormat,
    partitions: Partitions<'_>,
) -> Result<Listing, VerifyError> {
    let unreachable = |reason: String| VerifyError::ArchiveUnreachable {
        archive: root.display().to_string(),
        reason,
    };
    match std::fs::metadata(root) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(unreachable("not a directory".into())),
        Err(error) => return Err(unreachable(error.to_string())),
    }
    let mut names = Vec::new();
    let mut ignored = 0;
    walk(root, root, &mut names, &mut ignored).map_err(unreachable)?;
    names.sort();
    let scanned = names
        .into_iter()
        .map(|(name, path)| {
            let partition_id = partitions.of(path_format, &name);
            let mut tally = FileTally::default();
            let mut unreadable = None;
            if partition_id.is_some() {
                let read = std::fs::File::open(&path)
                    .map_err(|source| ArchiveError::Open {
                        path: PathBuf::from(&name),
                        source,
                    })
                    .and_then(|file| read_tally(&name, file, &mut tally));
                unreadable = read.err().map(|error| message(&name, &error));
            }
            Scanned {
                name,
                partition_id,
                tally,
                unreadable,
                metadata_mismatch: None,
            }
        })
        .collect();
    Ok(Listing { scanned, ignored })
}

/// Collects `(relative name, path)` of the archive files below `dir`. Symbolic links to
/// directories are not followed (no loops); links to files are read.
fn walk(
    root: &Path,
    dir: &Path,
    found: &mut Vec<(String, PathBuf)>,
    ignored: &mut u64,
) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if skipped(&relative) {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if file_type.is_dir() {
            walk(root, &path, found, ignored)?;
        } else if is_archive(&relative) && !path.is_dir() {
            found.push((relative, path));
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

/// Reads every archive blob of `container` of `partitions`, in name order, one at a time.
pub async fn scan_container(
    container: &BlobContainer,
    path_format: &PathFormat,
    partitions: Partitions<'_>,
) -> Result<Listing, VerifyError> {
    let unreachable = |error: StorageError| VerifyError::ArchiveUnreachable {
        archive: container.url().to_owned(),
        reason: error.to_string(),
    };
    let mut items = container
        .list_with_metadata("")
        .await
        .map_err(unreachable)?;
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let mut listing = Listing::default();
    for item in items {
        if skipped(&item.name) {
            continue;
        }
        if !is_archive(&item.name) {
            listing.ignored += 1;
            continue;
        }
        let partition_id = partitions.of(path_format, &item.name);
        let mut scanned = Scanned {
            name: item.name,
            partition_id,
            tally: FileTally::default(),
            unreadable: None,
            metadata_mismatch: None,
        };
        if scanned.partition_id.is_some() {
            let (tally, read) = read_blob(container, &scanned.name).await;
            scanned.tally = tally;
            match read {
                Ok(()) => {
                    scanned.metadata_mismatch = metadata_mismatch(&item.metadata, &scanned.tally)
                }
                Err(BlobReadError::Archive(reason)) => scanned.unreadable = Some(reason),
                Err(BlobReadError::Storage(error)) if error.is_transient() => {
                    return Err(unreachable(error));
                }
                Err(BlobReadError::Storage(error)) => {
                    scanned.unreadable = Some(format!("cannot download: {error}"))
                }
            }
        }
        listing.scanned.push(scanned);
    }
    Ok(listing)
}

enum BlobReadError {
    /// The bytes are not a whole archive.
    Archive(String),
    /// The download failed.
    Storage(StorageError),
}

/// Downloads one blob and reads it as it arrives. The bytes are streamed, never held whole:
/// the download (async, a few MiB ahead at most) feeds a bounded channel that the archive
/// reader drains on the blocking pool, so memory stays a few chunks whatever the blob's size
/// (a window blob can be up to `max_window_bytes`).
async fn read_blob(
    container: &BlobContainer,
    name: &str,
) -> (FileTally, Result<(), BlobReadError>) {
    let mut download = match container.download_stream(name).await {
        Ok(download) => download,
        Err(error) => return (FileTally::default(), Err(BlobReadError::Storage(error))),
    };
    let (chunks, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let owned_name = name.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let mut tally = FileTally::default();
        let input = ChunkReader {
            receiver,
            current: Bytes::new(),
        };
        let read = read_tally(&owned_name, input, &mut tally);
        (tally, read.map_err(|error| message(&owned_name, &error)))
    });
    let mut failed = None;
    loop {
        match download.next_chunk().await {
            Ok(Some(chunk)) => {
                // A closed channel: the reader stopped early (a damaged file); no more needed.
                if chunks.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                let _ = chunks
                    .send(Err(std::io::Error::other("the download failed")))
                    .await;
                failed = Some(error);
                break;
            }
        }
    }
    drop(chunks);
    let (tally, read) = match reader.await {
        Ok(done) => done,
        Err(join) => (
            FileTally::default(),
            Err(format!("the reading task failed: {join}")),
        ),
    };
    let result = match (failed, read) {
        (Some(error), _) => Err(BlobReadError::Storage(error)),
        (None, Err(reason)) => Err(BlobReadError::Archive(reason)),
        (None, Ok(())) => Ok(()),
    };
    (tally, result)
}

/// The downloaded chunks as a [`Read`], for the archive reader on a blocking thread.
struct ChunkReader {
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Reads one archive's sequence numbers into `tally`.
fn read_tally(name: &str, input: impl Read, tally: &mut FileTally) -> Result<(), ArchiveError> {
    crate::archive::read(Path::new(name), input, |event| {
        tally.add(event.sequence_number);
        true
    })
    .map(drop)
}

/// An archive error without the name it starts with (the report names the file beside it).
fn message(name: &str, error: &ArchiveError) -> String {
    let text = error.to_string();
    match text.strip_prefix(&format!("{name}: ")) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// The `avro_blob` sink records a window's first and last sequence numbers and its event
/// count in the blob's metadata; a blob whose content says otherwise lost events (or gained
/// some). Blobs without that metadata are not checked.
fn metadata_mismatch(metadata: &HashMap<String, String>, tally: &FileTally) -> Option<String> {
    let number = |key: &str| metadata.get(key)?.parse::<i64>().ok();
    let first = number("firstsequencenumber")?;
    let last = number("lastsequencenumber")?;
    let count = metadata.get("eventcount")?.parse::<u64>().ok()?;
    let holds = (tally.first(), tally.last(), tally.events());
    // An empty window's blob says -1..=-1 and 0 events.
    if holds == (Some(first), Some(last), count) || (count == 0 && tally.events() == 0) {
        return None;
    }
    let content = match (tally.first(), tally.last()) {
        (Some(a), Some(b)) => format!("{a}..={b} ({} events)", tally.events()),
        _ => "no events".to_owned(),
    };
    Some(format!(
        "its metadata says {first}..={last} ({count} events) but it holds {content}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubcaps_own_objects_are_skipped() {
        for name in [
            ".hubcap-staging/p0-abc.avro.tmp",
            "x/.hubcap-staging/p0.avro",
            "ns/hub/0/2026/12/01/20/13/20.avro.tmp",
            "hubcap-preflight",
            ".hubcap-preflight-1234",
        ] {
            assert!(skipped(name), "{name}");
        }
        for name in ["ns/hub/0/2026/12/01/20/13/20.avro", "hubcap-preflight.avro"] {
            assert!(!skipped(name), "{name}");
        }
    }

    #[test]
    fn blob_metadata_is_compared_with_the_content() {
        let metadata = |first: &str, last: &str, count: &str| {
            HashMap::from([
                ("firstsequencenumber".to_owned(), first.to_owned()),
                ("lastsequencenumber".to_owned(), last.to_owned()),
                ("eventcount".to_owned(), count.to_owned()),
            ])
        };
        let mut tally = FileTally::default();
        for n in 10..20 {
            tally.add(n);
        }
        assert_eq!(metadata_mismatch(&metadata("10", "19", "10"), &tally), None);
        assert_eq!(
            metadata_mismatch(&metadata("10", "29", "20"), &tally).as_deref(),
            Some("its metadata says 10..=29 (20 events) but it holds 10..=19 (10 events)")
        );
        assert_eq!(metadata_mismatch(&HashMap::new(), &tally), None);
        let empty = FileTally::default();
        assert_eq!(metadata_mismatch(&metadata("-1", "-1", "0"), &empty), None);
    }
}
