//! `hubcap verify`: checks an archive end to end and says whether it is exact.
//!
//! Every archive file (a directory) or blob (a container) is read with the one archive reader
//! ([`crate::archive::read`], any codec, streaming); its partition comes from its name
//! ([`PathFormat::partition_of`]). Per partition the checks are:
//!
//! - the numbers archived form one range: a **gap** between the first and the last archived
//!   sequence number is an error (before the first one nothing can be known: retention);
//! - no number is archived twice: **duplicates** are reported with their range, how many copies
//!   and the files holding them;
//! - inside a file the numbers **strictly increase**;
//! - with a config, the partition's **checkpoint is not ahead of the data**: a checkpoint past
//!   the last archived number (or one for a partition with nothing archived) means a restart
//!   would skip events that are not in the archive;
//! - every file **reads to its end** (truncated, corrupt or non-Avro files are listed, and the
//!   events read before the damage still count); an `avro_blob` blob also holds what its
//!   metadata (`firstsequencenumber`, `lastsequencenumber`, `eventcount`) says.
//!
//! Memory does not grow with the number of events: each file leaves one small record
//! ([`ranges::FileTally`], normally one run `first..=last`), and each partition's records are
//! sorted and swept once ([`ranges::sweep`]).
//!
//! Checkpoints are read before the archive: on an archive a daemon is still writing, a window
//! committed and checkpointed during the scan then shows as data beyond the checkpoint, never
//! as a checkpoint ahead of data. (The newest windows of a live archive can still be caught
//! half-listed; verify a quiet archive to be sure.) Nothing is written anywhere.

pub mod ranges;
pub mod report;
pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use report::Report;
use source::Partitions;

use crate::checkpoint::blob::BlobCheckpointStore;
use crate::checkpoint::file::FileCheckpointStore;
use crate::checkpoint::{Checkpoint, CheckpointStore, NameCase, RecordKind};
use crate::config::{CheckpointStoreConfig, Config, SinkKind};
use crate::sink::path_format::{PathFormat, PathFormatProblem};
use crate::storage::BlobContainer;

/// Why verify could not run at all (exit status 2), as opposed to finding problems.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("sink type \"stdout\" writes no archive: there is nothing to verify (use --dir for a directory of archive files)")]
    NoArchive,
    #[error("path format {format:?}: {reason}")]
    PathFormat { format: String, reason: String },
    #[error("archive {archive}: cannot be read: {reason}")]
    ArchiveUnreachable { archive: String, reason: String },
    #[error("[{section}] {reason}")]
    Setup {
        section: &'static str,
        reason: String,
    },
    #[error("checkpoint store: {reason}")]
    Checkpoints { reason: String },
}

/// Parses a `--path-format`: what the sinks accept, and it must name the partition.
pub fn parse_path_format(format: &str) -> Result<PathFormat, VerifyError> {
    PathFormat::parse(format).map_err(|error| {
        let reason = if error
            .problems()
            .contains(&PathFormatProblem::MissingPartitionId)
        {
            "has no {PartitionId}: verify takes each file's partition from its name, so the \
             format must contain {PartitionId}"
                .to_owned()
        } else {
            error.to_string()
        };
        VerifyError::PathFormat {
            format: format.to_owned(),
            reason,
        }
    })
}

/// Verifies the archive files under `root`, named by `path_format`; no checkpoints.
pub async fn verify_dir(root: &Path, path_format: &PathFormat) -> Result<Report, VerifyError> {
    let listing = scan_dir(root.to_owned(), path_format.clone(), None).await?;
    Ok(report::build(
        root.display().to_string(),
        path_format.as_str(),
        listing,
        None,
    ))
}

/// Verifies the configured sink's archive against the configured checkpoint store.
pub async fn verify_config(config: &Config) -> Result<Report, VerifyError> {
    let path_format = archive_path_format(config)?;
    let checkpoints = read_checkpoints(config).await?;
    let (archive, listing) = scan_configured(config, path_format, None).await?;
    Ok(report::build(
        archive,
        path_format.as_str(),
        listing,
        Some(checkpoints),
    ))
}

/// The configured sink's path format, which must name the partition (a file's partition comes
/// from its name).
fn archive_path_format(config: &Config) -> Result<&PathFormat, VerifyError> {
    let path_format = match &config.sink.kind {
        SinkKind::Stdout => return Err(VerifyError::NoArchive),
        SinkKind::File { path_format, .. } | SinkKind::Blob { path_format, .. } => path_format,
    };
    if !path_format.has_partition_id() {
        return Err(parse_path_format(path_format.as_str()).err().unwrap_or(
            VerifyError::PathFormat {
                format: path_format.to_string(),
                reason: "has no {PartitionId}".into(),
            },
        ));
    }
    Ok(path_format)
}

/// What the configured archive holds of `partitions` (all when `None`): per partition, the
/// runs of consecutive sequence numbers its files hold, sorted and merged. Files that cannot be
/// read to their end count with the events read before the damage. `hubcap backfill` skips
/// what is here.
pub async fn archived_runs(
    config: &Config,
    partitions: Option<&[String]>,
) -> Result<BTreeMap<String, Vec<(i64, i64)>>, VerifyError> {
    let path_format = match archive_path_format(config) {
        Err(VerifyError::NoArchive) => return Ok(BTreeMap::new()),
        found => found?,
    };
    if let SinkKind::File { path, .. } = &config.sink.kind {
        // The sink creates its directory with its first window: none yet holds nothing.
        if matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            return Ok(BTreeMap::new());
        }
    }
    let (_, listing) =
        scan_configured(config, path_format, partitions.map(<[String]>::to_vec)).await?;
    let mut runs: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for scanned in listing.scanned {
        if let Some(partition_id) = scanned.partition_id {
            runs.entry(partition_id)
                .or_default()
                .extend_from_slice(scanned.tally.runs());
        }
    }
    for list in runs.values_mut() {
        *list = ranges::merge_runs(std::mem::take(list));
    }
    Ok(runs)
}

/// The configured sink's archive, scanned: its address and listing.
async fn scan_configured(
    config: &Config,
    path_format: &PathFormat,
    partitions: Option<Vec<String>>,
) -> Result<(String, source::Listing), VerifyError> {
    match &config.sink.kind {
        SinkKind::Stdout => Err(VerifyError::NoArchive),
        SinkKind::File { path, .. } => Ok((
            path.display().to_string(),
            scan_dir(path.clone(), path_format.clone(), partitions).await?,
        )),
        SinkKind::Blob {
            storage,
            proxy,
            container,
            ..
        } => {
            let container = BlobContainer::connect(storage, container, proxy).map_err(|error| {
                VerifyError::Setup {
                    section: "sink",
                    reason: error.to_string(),
                }
            })?;
            let only = partitions
                .as_deref()
                .map_or(Partitions::All, Partitions::Only);
            let listing = source::scan_container(&container, path_format, only).await?;
            Ok((container.url().to_owned(), listing))
        }
    }
}

/// The directory walk and the file reads, on the blocking pool.
async fn scan_dir(
    root: PathBuf,
    path_format: PathFormat,
    partitions: Option<Vec<String>>,
) -> Result<source::Listing, VerifyError> {
    let archive = root.display().to_string();
    tokio::task::spawn_blocking(move || {
        let only = partitions
            .as_deref()
            .map_or(Partitions::All, Partitions::Only);
        source::scan_dir(&root, &path_format, only)
    })
    .await
    .unwrap_or_else(|join| {
        Err(VerifyError::ArchiveUnreachable {
            archive,
            reason: format!("the reading task failed: {join}"),
        })
    })
}

/// Every checkpoint of the configured consumer group, through the store's own listing. Opens
/// nothing for writing: a file store whose records directory does not exist has no
/// checkpoints, and a blob container is never created.
async fn read_checkpoints(config: &Config) -> Result<Vec<Checkpoint>, VerifyError> {
    let scope = crate::runtime::store_scope(config);
    let failed = |reason: String| VerifyError::Checkpoints { reason };
    match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => {
            if !path.is_dir() {
                return Err(failed(format!(
                    "directory {} does not exist (is [checkpoint_store] path right?)",
                    path.display()
                )));
            }
            let records = path.join(scope.prefix(RecordKind::Checkpoint, NameCase::Lower));
            if !records.is_dir() {
                return Ok(Vec::new());
            }
            let store = FileCheckpointStore::open(path.clone(), scope, NameCase::Lower)
                .map_err(|error| failed(error.to_string()))?;
            store
                .list_checkpoints()
                .await
                .map_err(|error| failed(error.to_string()))
        }
        CheckpointStoreConfig::AzureBlob {
            storage,
            proxy,
            container,
            blob_name_case,
        } => {
            let container = BlobContainer::connect(storage, container, proxy).map_err(|error| {
                VerifyError::Setup {
                    section: "checkpoint_store",
                    reason: error.to_string(),
                }
            })?;
            BlobCheckpointStore::new(container, scope, *blob_name_case)
                .list_checkpoints()
                .await
                .map_err(|error| failed(error.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_format_without_a_partition_is_refused_with_the_reason() {
        let error = parse_path_format("{EventHub}/{Second}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no {PartitionId}"), "{error}");
        assert!(
            error.contains("format must contain {PartitionId}"),
            "{error}"
        );
        let error = parse_path_format("{Partition}/{Second}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("did you mean {PartitionId}"), "{error}");
        assert!(parse_path_format(crate::config::DEFAULT_PATH_FORMAT).is_ok());
    }
}
