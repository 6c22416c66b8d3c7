//! The checkpoint store in a local directory: the default for single-host installs and for
//! `hubcap demo`.
//!
//! Records live at `<root>/<record name>`, the same names the blob store uses, so
//! `<root>/myns.servicebus.windows.net/hub/$default/ownership/0` is partition 0's ownership. Each
//! record is a small JSON file with the SDKs' metadata key names:
//! ownership `{"ownerid": "...", "version": N, "last_modified_unix_ms": T}`, checkpoint
//! `{"offset": "..."|null, "sequencenumber": N|null, "version": N}`, plus hubcap's commit records
//! ([`crate::checkpoint::schema`]): `hubcapcommit` on ownerships, `hubcapcommitted` on
//! checkpoints.
//!
//! Every write goes to `<name>.tmp-<pid>-<random>`, is fsynced, renamed over the record and the
//! directory fsynced, so a crash leaves the old record or the new one, never a torn one. Listings
//! skip temp files and delete those old enough to be a crashed writer's leftovers.
//!
//! Ownership claims and the pipeline's checkpoint writes are compare-and-swaps on `version`, a
//! generation counter. The read-compare-write of each holds an exclusive `flock` on the record's
//! own lock file, `<dir>/.lock-<partition>`: one per record, so a slow fsync of one partition's
//! record never holds up another's (one lock per directory stalled 32 busy partitions for tens of
//! seconds under a loaded disk). flock belongs to an open file description, and every write opens
//! the lock file afresh, so two processes, two store instances or two tasks of one store exclude
//! each other alike. (Builds from before the exactly-once protocol locked `<ownership dir>/.lock`
//! instead: stop them before starting this version on the same store.)
//!
//! Partition ids become file names, so an id that could leave its directory (`..`, `/`, NUL) or
//! collide with the store's own files (a leading `.`, `.tmp-`) is refused.

use std::fmt::Display;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::{
    Checkpoint, CheckpointStore, CommitRecord, ListedCheckpoint, NameCase, Ownership,
    OwnershipClaim, RecordKind, StoreError, StoreScope,
};

/// A record file as read: partition id, path, contents, modification time (when known).
type RecordFile = (String, PathBuf, Vec<u8>, Option<SystemTime>);

/// Marks a temp file: partition ids may not contain it, so a temp file is never a record.
const TEMP_MARKER: &str = ".tmp-";
/// A temp file this old belongs to a writer that crashed (a write takes milliseconds).
const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);
/// How long a claim waits for the lock before reporting the store unavailable: a holder only
/// keeps it for one read-compare-write, so a longer wait means a stuck process.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Prefix of a record's lock file, `.lock-<partition>` beside it (hidden: never a record).
const LOCK_FILE: &str = ".lock";

/// A [`CheckpointStore`] in a local directory. Cheap to clone; clones share nothing but paths.
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    /// Shared with the blocking tasks that do the file I/O.
    layout: Arc<Layout>,
}

/// Where the records of one scope live.
#[derive(Debug)]
struct Layout {
    /// The store's root directory; record names are resolved under it.
    root: PathBuf,
    /// The consumer group whose records this store reads and writes.
    scope: StoreScope,
    /// Casing of record names, as for the blob store.
    case: NameCase,
}

/// An ownership record as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct OwnershipRecord {
    /// The owning processor's id; `""` when released.
    ownerid: String,
    /// Generation counter: 1 on creation, one more on every successful claim.
    version: u64,
    /// When the claim was written, in milliseconds since the Unix epoch.
    last_modified_unix_ms: u64,
    /// The window being committed (see [`crate::checkpoint::schema`]); absent in records older
    /// hubcap versions wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hubcapcommit: Option<CommitRecord>,
}

/// A checkpoint record as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointRecord {
    /// The event's offset.
    offset: Option<String>,
    /// The event's sequence number.
    sequencenumber: Option<i64>,
    /// The archive file or blob holding that event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hubcapcommitted: Option<String>,
    /// Generation counter for compare-and-swap writes: one more on every write (0 in records
    /// older hubcap versions wrote).
    #[serde(default)]
    version: u64,
}

impl FileCheckpointStore {
    /// Opens (creating as needed, mode 0700) the store under `root` for one scope. Blocks on file
    /// I/O: call it at start-up, not from a busy runtime thread.
    pub fn open(
        root: impl Into<PathBuf>,
        scope: StoreScope,
        case: NameCase,
    ) -> Result<Self, StoreError> {
        for (what, value) in [
            ("namespace", &scope.fully_qualified_namespace),
            ("event hub", &scope.event_hub),
            ("consumer group", &scope.consumer_group),
        ] {
            check_component(what, value)?;
        }
        let layout = Layout {
            root: root.into(),
            scope,
            case,
        };
        create_dir_durably(&layout.dir(RecordKind::Ownership))?;
        create_dir_durably(&layout.dir(RecordKind::Checkpoint))?;
        Ok(Self {
            layout: Arc::new(layout),
        })
    }

    /// Runs `work` on the blocking pool so file I/O never stalls the runtime.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, StoreError> + Send + 'static,
    {
        let layout = Arc::clone(&self.layout);
        match tokio::task::spawn_blocking(move || work(&layout)).await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(StoreError::Unavailable {
                reason: format!("file store task did not finish: {err}"),
                retry_after: None,
            }),
        }
    }
}

impl CheckpointStore for FileCheckpointStore {
    async fn list_ownership(&self) -> Result<Vec<Ownership>, StoreError> {
        self.blocking(|layout| {
            let records = layout.read_records(RecordKind::Ownership)?;
            records
                .into_iter()
                .map(|(partition_id, path, bytes, _)| {
                    let record: OwnershipRecord = decode(&path, &bytes)?;
                    Ok(record.into_ownership(partition_id))
                })
                .collect()
        })
        .await
    }

    async fn claim_ownership(
        &self,
        claims: &[OwnershipClaim],
    ) -> Result<Vec<Ownership>, StoreError> {
        let claims = claims.to_vec();
        self.blocking(move |layout| layout.claim_all(&claims)).await
    }

    async fn list_checkpoint_records(&self) -> Result<Vec<ListedCheckpoint>, StoreError> {
        self.blocking(|layout| {
            let records = layout.read_records(RecordKind::Checkpoint)?;
            records
                .into_iter()
                .map(|(partition_id, path, bytes, modified)| {
                    let record: CheckpointRecord = decode(&path, &bytes)?;
                    let version = record.version.to_string();
                    Ok(ListedCheckpoint {
                        checkpoint: record.into_checkpoint(partition_id),
                        version,
                        last_modified: modified,
                    })
                })
                .collect()
        })
        .await
    }

    async fn swap_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        expected: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let checkpoint = checkpoint.clone();
        let expected = expected.map(str::to_owned);
        self.blocking(move |layout| layout.write_checkpoint(&checkpoint, Some(expected.as_deref())))
            .await
    }

    async fn update_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        self.blocking(move |layout| layout.write_checkpoint(&checkpoint, None).map(drop))
            .await
    }
}

impl CheckpointRecord {
    fn into_checkpoint(self, partition_id: String) -> Checkpoint {
        Checkpoint {
            partition_id,
            offset: self.offset,
            sequence_number: self.sequencenumber,
            committed_in: self.hubcapcommitted,
        }
    }
}

impl OwnershipRecord {
    fn into_ownership(self, partition_id: String) -> Ownership {
        Ownership {
            partition_id,
            owner_id: self.ownerid,
            last_modified: UNIX_EPOCH + Duration::from_millis(self.last_modified_unix_ms),
            version: self.version.to_string(),
            commit: self.hubcapcommit,
        }
    }
}

impl Layout {
    /// The directory holding every record of one kind.
    fn dir(&self, kind: RecordKind) -> PathBuf {
        let prefix = self.scope.prefix(kind, self.case);
        self.root.join(prefix.trim_end_matches('/'))
    }

    /// The file of one partition's record, refusing ids that are not a plain file name.
    fn record_path(&self, kind: RecordKind, partition_id: &str) -> Result<PathBuf, StoreError> {
        check_component("partition id", partition_id)?;
        let name = self.scope.record_name(kind, partition_id, self.case);
        // Check the cased file name: that is what shares the directory with the store's files.
        let file_name = name.rsplit('/').next().unwrap_or_default();
        if file_name.starts_with('.') || file_name.contains(TEMP_MARKER) {
            return Err(StoreError::Refused {
                reason: format!(
                    "partition id {partition_id:?} is reserved: ids may not start with '.' or \
                     contain {TEMP_MARKER:?}"
                ),
            });
        }
        Ok(self.root.join(name))
    }

    /// Reads every record file of one kind as `(partition id, path, contents, modification
    /// time)`, sorted by partition id. A missing directory holds no records.
    fn read_records(&self, kind: RecordKind) -> Result<Vec<RecordFile>, StoreError> {
        let dir = self.dir(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_failure(format_args!("listing {}", dir.display()), err)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|err| io_failure(format_args!("listing {}", dir.display()), err))?;
            let path = entry.path();
            // Names the store did not write (non-UTF-8, hidden, directories) are not records.
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.contains(TEMP_MARKER) {
                remove_if_stale(&path);
                continue;
            }
            if name.starts_with('.') || entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            match read_with_modified_time(&path) {
                Ok((bytes, modified)) => records.push((name, path, bytes, modified)),
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(io_failure(format_args!("reading {}", path.display()), err))
                }
            }
        }
        records.sort_by(|a, b| partition_order(&a.0).cmp(&partition_order(&b.0)));
        Ok(records)
    }

    /// Tries every claim in turn, each under the lock; returns the ones that won.
    fn claim_all(&self, claims: &[OwnershipClaim]) -> Result<Vec<Ownership>, StoreError> {
        let paths = claims
            .iter()
            .map(|claim| self.record_path(RecordKind::Ownership, &claim.partition_id))
            .collect::<Result<Vec<_>, _>>()?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut won = Vec::new();
        for (claim, path) in claims.iter().zip(&paths) {
            let lock = ClaimLock::open(&lock_path(path))?;
            let _held = lock.acquire()?;
            if let Some(record) = claim_one(claim, path)? {
                won.push(record.into_ownership(claim.partition_id.clone()));
            }
        }
        Ok(won)
    }
}

impl Layout {
    /// Writes a checkpoint under the checkpoint directory's lock, one generation past the
    /// record's. `condition`: `None` writes unconditionally; `Some(None)` only if no record
    /// exists; `Some(Some(v))` only if the record is at generation `v`. Returns the new
    /// generation, or `None` when the condition failed.
    fn write_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        condition: Option<Option<&str>>,
    ) -> Result<Option<String>, StoreError> {
        let path = self.record_path(RecordKind::Checkpoint, &checkpoint.partition_id)?;
        let lock = ClaimLock::open(&lock_path(&path))?;
        let _held = lock.acquire()?;
        let current = match fs::read(&path) {
            Ok(bytes) => Some(decode::<CheckpointRecord>(&path, &bytes)?.version),
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            Err(err) => return Err(io_failure(format_args!("reading {}", path.display()), err)),
        };
        let matches = match condition {
            None => true,
            Some(None) => current.is_none(),
            Some(Some(expected)) => current.is_some_and(|v| v.to_string() == expected),
        };
        if !matches {
            return Ok(None);
        }
        let version = current.unwrap_or(0).saturating_add(1);
        let record = CheckpointRecord {
            offset: checkpoint.offset.clone(),
            sequencenumber: checkpoint.sequence_number,
            hubcapcommitted: checkpoint.committed_in.clone(),
            version,
        };
        write_atomically(&path, &encode(&path, &record)?)?;
        Ok(Some(version.to_string()))
    }
}

/// A file's contents and modification time, both from one open file: a rename over the record
/// between a read and a separate stat would pair the old contents with the new record's time.
fn read_with_modified_time(path: &Path) -> io::Result<(Vec<u8>, Option<SystemTime>)> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    let modified = file
        .metadata()
        .and_then(|metadata| metadata.modified())
        .ok();
    Ok((bytes, modified))
}

/// The lock file of the record at `record`: `.lock-<file name>` in the same directory.
fn lock_path(record: &Path) -> PathBuf {
    let name = record.file_name().unwrap_or_default().to_string_lossy();
    record.with_file_name(format!("{LOCK_FILE}-{name}"))
}

/// The compare-and-swap of one claim; the caller holds the lock. `None` = the claim lost.
fn claim_one(claim: &OwnershipClaim, path: &Path) -> Result<Option<OwnershipRecord>, StoreError> {
    let current = match fs::read(path) {
        Ok(bytes) => Some(decode::<OwnershipRecord>(path, &bytes)?),
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => return Err(io_failure(format_args!("reading {}", path.display()), err)),
    };
    let version = match (&claim.version, &current) {
        (None, None) => 1,
        (Some(expected), Some(record)) if *expected == record.version.to_string() => record
            .version
            .checked_add(1)
            .ok_or_else(|| StoreError::InvalidRecord {
                name: path.display().to_string(),
                reason: "version cannot be incremented".into(),
            })?,
        _ => return Ok(None),
    };
    let record = OwnershipRecord {
        ownerid: claim.owner_id.clone(),
        version,
        last_modified_unix_ms: now_unix_ms(),
        hubcapcommit: claim.commit.clone(),
    };
    write_atomically(path, &encode(path, &record)?)?;
    Ok(Some(record))
}

/// The open lock file of a scope's ownership directory.
struct ClaimLock {
    /// Opened by this claim call alone, so its lock excludes every other opener.
    file: File,
    /// For error messages.
    path: PathBuf,
}

/// Holds the exclusive lock until dropped.
struct HeldLock<'a>(&'a ClaimLock);

impl ClaimLock {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
        };
        let file = match open() {
            Err(err) if err.kind() == ErrorKind::NotFound => {
                create_dir_durably(path.parent().unwrap_or(path))?;
                open()
            }
            result => result,
        }
        .map_err(|err| io_failure(format_args!("opening lock file {}", path.display()), err))?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Waits (bounded by [`LOCK_WAIT`]) for the exclusive lock. Polls rather than blocking in
    /// `flock` so a stuck holder yields an error instead of a hung blocking thread.
    fn acquire(&self) -> Result<HeldLock<'_>, StoreError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(HeldLock(self)),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(StoreError::Unavailable {
                        reason: format!(
                            "lock {} still held by another writer after {LOCK_WAIT:?}",
                            self.path.display()
                        ),
                        retry_after: None,
                    })
                }
                Err(errno) => {
                    return Err(io_failure(
                        format_args!("locking {}", self.path.display()),
                        errno.into(),
                    ))
                }
            }
        }
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; unlocking here lets the next claim of the same
        // call take it again. A failed unlock is released at close anyway.
        let _ = flock(&self.0.file, FlockOperation::Unlock);
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new contents.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp_name = path.file_name().unwrap_or_default().to_owned();
    temp_name.push(format!(
        "{TEMP_MARKER}{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let temp = dir.join(temp_name);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
    };
    let mut file = match create() {
        // The directory was removed under us: recreate it rather than fail forever.
        Err(err) if err.kind() == ErrorKind::NotFound => {
            create_dir_durably(dir)?;
            create()
        }
        result => result,
    }
    .map_err(|err| io_failure(format_args!("creating {}", temp.display()), err))?;

    let written = file
        .write_all(bytes)
        .map_err(|err| io_failure(format_args!("writing {}", temp.display()), err))
        .and_then(|()| {
            file.sync_all()
                .map_err(|err| io_failure(format_args!("fsyncing {}", temp.display()), err))
        })
        .and_then(|()| {
            fs::rename(&temp, path).map_err(|err| {
                io_failure(
                    format_args!("renaming {} to {}", temp.display(), path.display()),
                    err,
                )
            })
        });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    sync_dir(dir)
}

/// Creates `dir` and any missing parents (mode 0700), fsyncing each new entry's parent so the
/// directories survive a crash along with the first record written into them.
fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|path| !path.as_os_str().is_empty())
        .take_while(|path| !path.exists())
        .collect();
    for path in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(err) => {
                return Err(io_failure(
                    format_args!("creating directory {}", path.display()),
                    err,
                ))
            }
        }
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StoreError::Refused {
            reason: format!("{} is not a directory", dir.display()),
        })
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|err| io_failure(format_args!("fsyncing directory {}", dir.display()), err))
}

/// Deletes a temp file left by a crashed writer; recent ones may belong to a live writer.
fn remove_if_stale(path: &Path) {
    let age = fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
    if age.is_some_and(|age| age >= STALE_TEMP_AGE) {
        match fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed stale checkpoint temp file"),
            Err(err) => tracing::debug!(
                path = %path.display(),
                error = %err,
                "could not remove stale checkpoint temp file"
            ),
        }
    }
}

/// Refuses a name component that would not stay one directory entry under the root.
fn check_component(what: &str, value: &str) -> Result<(), StoreError> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value == "." || value == ".." {
        "is a relative directory name"
    } else if value.contains('/') {
        "contains '/'"
    } else if value.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(StoreError::Refused {
        reason: format!("{what} {value:?} {problem}: it cannot be a file name"),
    })
}

/// Numeric partition ids in numeric order, then any others by name.
fn partition_order(partition_id: &str) -> (bool, u64, &str) {
    match partition_id.parse::<u64>() {
        Ok(number) => (false, number, partition_id),
        Err(_) => (true, 0, partition_id),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::InvalidRecord {
        name: path.display().to_string(),
        reason: err.to_string(),
    })
}

fn encode<T: Serialize>(path: &Path, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = serde_json::to_vec(record).map_err(|err| StoreError::Refused {
        reason: format!("encoding {}: {err}", path.display()),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A path that cannot be a record (a directory in its place, a name too long) is a
/// configuration problem; anything else is the disk's (full, read-only, failing, permissions),
/// labelled as the archive's file sink labels it.
fn io_failure(action: impl Display, err: io::Error) -> StoreError {
    let reason = format!("{action}: {err}");
    let misplaced = matches!(
        err.kind(),
        ErrorKind::NotADirectory | ErrorKind::IsADirectory
    ) || Errno::from_io_error(&err) == Some(Errno::NAMETOOLONG);
    if misplaced {
        StoreError::Refused { reason }
    } else {
        StoreError::Disk {
            reason,
            error_type: crate::disk::error_type(&err),
        }
    }
}

#[cfg(test)]
mod tests;
