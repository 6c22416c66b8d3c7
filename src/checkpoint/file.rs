//! The checkpoint store in a local directory: the default for single-host installs and for
//! `hubcap demo`.
//!
//! Records live at `<root>/<record name>`, the same names the blob store uses, so
//! `<root>/myns.servicebus.windows.net/hub/$default/ownership/0` is partition 0's ownership. Each
//! record is a small JSON file with the SDKs' metadata key names:
//! ownership `{"ownerid": "...", "version": N, "last_modified_unix_ms": T}`, checkpoint
//! `{"offset": "..."|null, "sequencenumber": N|null}`.
//!
//! Every write goes to `<name>.tmp-<pid>-<random>`, is fsynced, renamed over the record and the
//! directory fsynced, so a crash leaves the old record or the new one, never a torn one. Listings
//! skip temp files and delete those old enough to be a crashed writer's leftovers.
//!
//! Ownership claims are compare-and-swaps on `version`, a generation counter. The
//! read-compare-write of each claim holds an exclusive `flock` on `<ownership dir>/.lock`; flock
//! belongs to an open file description, and every claim opens the lock file afresh, so two
//! processes, two store instances or two tasks of one store exclude each other alike.
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
    Checkpoint, CheckpointStore, NameCase, Ownership, OwnershipClaim, RecordKind, StoreError,
    StoreScope,
};

/// Marks a temp file: partition ids may not contain it, so a temp file is never a record.
const TEMP_MARKER: &str = ".tmp-";
/// A temp file this old belongs to a writer that crashed (a write takes milliseconds).
const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);
/// How long a claim waits for the lock before reporting the store unavailable: a holder only
/// keeps it for one read-compare-write, so a longer wait means a stuck process.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Name of the claim lock file in the ownership directory.
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
}

/// A checkpoint record as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointRecord {
    /// The event's offset.
    offset: Option<String>,
    /// The event's sequence number.
    sequencenumber: Option<i64>,
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
                .map(|(partition_id, path, bytes)| {
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

    async fn list_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.blocking(|layout| {
            let records = layout.read_records(RecordKind::Checkpoint)?;
            records
                .into_iter()
                .map(|(partition_id, path, bytes)| {
                    let record: CheckpointRecord = decode(&path, &bytes)?;
                    Ok(Checkpoint {
                        partition_id,
                        offset: record.offset,
                        sequence_number: record.sequencenumber,
                    })
                })
                .collect()
        })
        .await
    }

    async fn update_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        self.blocking(move |layout| {
            let path = layout.record_path(RecordKind::Checkpoint, &checkpoint.partition_id)?;
            let record = CheckpointRecord {
                offset: checkpoint.offset,
                sequencenumber: checkpoint.sequence_number,
            };
            write_atomically(&path, &encode(&path, &record)?)
        })
        .await
    }
}

impl OwnershipRecord {
    fn into_ownership(self, partition_id: String) -> Ownership {
        Ownership {
            partition_id,
            owner_id: self.ownerid,
            last_modified: UNIX_EPOCH + Duration::from_millis(self.last_modified_unix_ms),
            version: self.version.to_string(),
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

    /// Reads every record file of one kind as `(partition id, path, contents)`, sorted by
    /// partition id. A missing directory holds no records.
    fn read_records(
        &self,
        kind: RecordKind,
    ) -> Result<Vec<(String, PathBuf, Vec<u8>)>, StoreError> {
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
            match fs::read(&path) {
                Ok(bytes) => records.push((name, path, bytes)),
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
        let lock = ClaimLock::open(&self.dir(RecordKind::Ownership).join(LOCK_FILE))?;
        let mut won = Vec::new();
        for (claim, path) in claims.iter().zip(&paths) {
            let _held = lock.acquire()?;
            if let Some(record) = claim_one(claim, path)? {
                won.push(record.into_ownership(claim.partition_id.clone()));
            }
        }
        Ok(won)
    }
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

/// Permission and configuration problems will not go away by retrying; anything else (a full
/// disk, an I/O error) might.
fn io_failure(action: impl Display, err: io::Error) -> StoreError {
    let reason = format!("{action}: {err}");
    let refused = matches!(
        err.kind(),
        ErrorKind::PermissionDenied
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
    ) || Errno::from_io_error(&err) == Some(Errno::NAMETOOLONG);
    if refused {
        StoreError::Refused { reason }
    } else {
        StoreError::Unavailable { reason }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use tokio::sync::Barrier;

    use super::*;

    /// Switches the test binary into a claim contender when set (see
    /// [`contender_process_entry`]); holds the store root.
    const CONTENDER_ENV: &str = "HUBCAP_FILE_STORE_CONTENDER_ROOT";
    const CONTENDER_ROUNDS: usize = 150;

    fn scope() -> StoreScope {
        StoreScope {
            fully_qualified_namespace: "MyNs.servicebus.windows.net".into(),
            event_hub: "Telemetry".into(),
            consumer_group: "$Default".into(),
        }
    }

    fn open(root: &Path) -> FileCheckpointStore {
        FileCheckpointStore::open(root, scope(), NameCase::Lower).unwrap()
    }

    fn claim(partition_id: &str, owner_id: &str, version: Option<&str>) -> OwnershipClaim {
        OwnershipClaim {
            partition_id: partition_id.into(),
            owner_id: owner_id.into(),
            version: version.map(str::to_owned),
        }
    }

    fn ownership_dir(root: &Path) -> PathBuf {
        root.join("myns.servicebus.windows.net/telemetry/$default/ownership")
    }

    fn checkpoint_dir(root: &Path) -> PathBuf {
        root.join("myns.servicebus.windows.net/telemetry/$default/checkpoint")
    }

    #[tokio::test]
    async fn a_claim_creates_renews_and_is_stolen_with_increasing_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());

        let created = store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(
            (created[0].owner_id.as_str(), created[0].version.as_str()),
            ("a", "1")
        );

        let renewed = store
            .claim_ownership(&[claim("0", "a", Some("1"))])
            .await
            .unwrap();
        assert_eq!(renewed[0].version, "2");
        assert!(renewed[0].last_modified >= created[0].last_modified);

        let stolen = store
            .claim_ownership(&[claim("0", "b", Some("2"))])
            .await
            .unwrap();
        assert_eq!(
            (stolen[0].owner_id.as_str(), stolen[0].version.as_str()),
            ("b", "3")
        );

        assert_eq!(store.list_ownership().await.unwrap(), stolen);
        let now = SystemTime::now();
        let age = now.duration_since(stolen[0].last_modified).unwrap();
        assert!(
            age < Duration::from_secs(60),
            "last_modified is now, not {age:?} ago"
        );
    }

    #[tokio::test]
    async fn a_stale_version_or_a_create_over_an_existing_record_loses() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        store
            .claim_ownership(&[claim("0", "a", Some("1"))])
            .await
            .unwrap();

        let stale = store
            .claim_ownership(&[claim("0", "b", Some("1"))])
            .await
            .unwrap();
        assert!(stale.is_empty());
        let create = store
            .claim_ownership(&[claim("0", "b", None)])
            .await
            .unwrap();
        assert!(create.is_empty());
        let missing = store
            .claim_ownership(&[claim("1", "b", Some("1"))])
            .await
            .unwrap();
        assert!(
            missing.is_empty(),
            "a version cannot match a record that does not exist"
        );
        let garbage = store
            .claim_ownership(&[claim("0", "b", Some("x"))])
            .await
            .unwrap();
        assert!(garbage.is_empty());

        let listed = store.list_ownership().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].owner_id.as_str(), listed[0].version.as_str()),
            ("a", "2")
        );
    }

    #[tokio::test]
    async fn a_batch_returns_only_the_claims_that_won() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("1", "other", None)])
            .await
            .unwrap();

        let claims = [
            claim("0", "me", None),
            claim("1", "me", None),
            claim("2", "me", None),
        ];
        let won = store.claim_ownership(&claims).await.unwrap();
        let ids: Vec<_> = won.iter().map(|o| o.partition_id.as_str()).collect();
        assert_eq!(ids, ["0", "2"]);
        assert!(store.claim_ownership(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn releasing_writes_an_empty_owner_that_can_be_claimed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("3", "a", None)])
            .await
            .unwrap();
        let released = store
            .claim_ownership(&[claim("3", "", Some("1"))])
            .await
            .unwrap();
        assert_eq!(released[0].owner_id, "");

        let listed = store.list_ownership().await.unwrap();
        assert_eq!(
            (listed[0].owner_id.as_str(), listed[0].version.as_str()),
            ("", "2")
        );
        let reclaimed = store
            .claim_ownership(&[claim("3", "b", Some("2"))])
            .await
            .unwrap();
        assert_eq!(reclaimed[0].owner_id, "b");
    }

    #[tokio::test]
    async fn records_are_json_files_with_the_sdk_key_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        let checkpoint = Checkpoint {
            partition_id: "0".into(),
            offset: Some("4096".into()),
            sequence_number: Some(17),
        };
        store.update_checkpoint(&checkpoint).await.unwrap();

        let ownership = fs::read(ownership_dir(dir.path()).join("0")).unwrap();
        let ownership: serde_json::Value = serde_json::from_slice(&ownership).unwrap();
        assert_eq!(ownership["ownerid"], "a");
        assert_eq!(ownership["version"], 1);
        assert!(ownership["last_modified_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);

        let stored = fs::read(checkpoint_dir(dir.path()).join("0")).unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"offset": "4096", "sequencenumber": 17})
        );
    }

    #[tokio::test]
    async fn checkpoints_round_trip_with_missing_fields_and_last_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.list_checkpoints().await.unwrap().is_empty());
        let checkpoints = [
            Checkpoint {
                partition_id: "0".into(),
                offset: None,
                sequence_number: Some(5),
            },
            Checkpoint {
                partition_id: "2".into(),
                offset: Some("100".into()),
                sequence_number: None,
            },
            Checkpoint {
                partition_id: "10".into(),
                offset: None,
                sequence_number: None,
            },
        ];
        for checkpoint in &checkpoints {
            store.update_checkpoint(checkpoint).await.unwrap();
        }
        assert_eq!(store.list_checkpoints().await.unwrap(), checkpoints);

        let moved = Checkpoint {
            partition_id: "2".into(),
            offset: Some("200".into()),
            sequence_number: Some(9),
        };
        store.update_checkpoint(&moved).await.unwrap();
        let listed = store.list_checkpoints().await.unwrap();
        assert_eq!(listed[1], moved);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_reported_by_file_name_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        let corrupt = ownership_dir(dir.path()).join("0");
        fs::write(&corrupt, b"{\"ownerid\": \"a\", \"vers").unwrap();
        fs::write(checkpoint_dir(dir.path()).join("1"), b"[]").unwrap();

        for result in [
            store.list_ownership().await.map(drop),
            store
                .claim_ownership(&[claim("0", "b", Some("1"))])
                .await
                .map(drop),
            store.list_checkpoints().await.map(drop),
        ] {
            match result {
                Err(StoreError::InvalidRecord { name, .. }) => {
                    assert!(name.ends_with("/ownership/0") || name.ends_with("/checkpoint/1"))
                }
                other => panic!("expected InvalidRecord, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn temp_files_are_ignored_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        let fresh = ownership_dir(dir.path()).join("0.tmp-1-00000000000000aa");
        let stale = ownership_dir(dir.path()).join("1.tmp-1-00000000000000bb");
        fs::write(&fresh, b"{\"ownerid\": \"torn").unwrap();
        fs::write(&stale, b"").unwrap();
        let long_ago = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();

        let listed = store.list_ownership().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].partition_id, "0");
        assert!(
            fresh.exists(),
            "a recent temp file may belong to a live writer"
        );
        assert!(!stale.exists(), "a stale temp file is cleaned up");

        // The lock file is not a record either.
        assert!(ownership_dir(dir.path()).join(LOCK_FILE).exists());
    }

    #[tokio::test]
    async fn partition_ids_that_could_escape_or_collide_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for partition_id in [
            "",
            ".",
            "..",
            "../0",
            "a/b",
            "/etc",
            "a\0b",
            ".lock",
            "0.TMP-1-2",
        ] {
            let claimed = store
                .claim_ownership(&[claim("0", "a", None), claim(partition_id, "a", None)])
                .await;
            assert!(
                matches!(claimed, Err(StoreError::Refused { .. })),
                "claim of {partition_id:?}: {claimed:?}"
            );
            let checkpoint = Checkpoint {
                partition_id: partition_id.into(),
                offset: None,
                sequence_number: Some(1),
            };
            let updated = store.update_checkpoint(&checkpoint).await;
            assert!(
                matches!(updated, Err(StoreError::Refused { .. })),
                "checkpoint of {partition_id:?}: {updated:?}"
            );
        }
        // A refused batch writes nothing, not even its valid claims.
        assert!(store.list_ownership().await.unwrap().is_empty());

        for (namespace, hub, group) in [("..", "h", "g"), ("ns", "a/b", "g"), ("ns", "h", "")] {
            let scope = StoreScope {
                fully_qualified_namespace: namespace.into(),
                event_hub: hub.into(),
                consumer_group: group.into(),
            };
            let opened = FileCheckpointStore::open(dir.path(), scope, NameCase::Lower);
            assert!(
                matches!(opened, Err(StoreError::Refused { .. })),
                "{opened:?}"
            );
        }
    }

    #[tokio::test]
    async fn names_with_a_port_and_a_dollar_sign_work_in_either_case() {
        let dir = tempfile::tempdir().unwrap();
        let scope = StoreScope {
            fully_qualified_namespace: "LocalHost:5672".into(),
            event_hub: "Hub".into(),
            consumer_group: "$Default".into(),
        };
        for (case, expected) in [
            (NameCase::Lower, "localhost:5672/hub/$default"),
            (NameCase::Verbatim, "LocalHost:5672/Hub/$Default"),
        ] {
            let store = FileCheckpointStore::open(dir.path(), scope.clone(), case).unwrap();
            store
                .claim_ownership(&[claim("0", "a", None)])
                .await
                .unwrap();
            let checkpoint = Checkpoint {
                partition_id: "0".into(),
                offset: Some("1".into()),
                sequence_number: Some(1),
            };
            store.update_checkpoint(&checkpoint).await.unwrap();
            let base = dir.path().join(expected);
            assert!(base.join("ownership/0").is_file(), "{}", base.display());
            assert!(base.join("checkpoint/0").is_file(), "{}", base.display());
            assert_eq!(store.list_checkpoints().await.unwrap(), [checkpoint]);
        }
    }

    #[tokio::test]
    async fn open_creates_private_directories_and_a_missing_one_lists_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state/checkpoints");
        let store = open(&root);
        for path in [root.clone(), ownership_dir(&root), checkpoint_dir(&root)] {
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        }

        fs::remove_dir_all(&root).unwrap();
        assert!(store.list_ownership().await.unwrap().is_empty());
        assert!(store.list_checkpoints().await.unwrap().is_empty());
        // Writes recreate what was removed.
        let checkpoint = Checkpoint {
            partition_id: "0".into(),
            offset: None,
            sequence_number: Some(3),
        };
        store.update_checkpoint(&checkpoint).await.unwrap();
        assert_eq!(
            store
                .claim_ownership(&[claim("0", "a", None)])
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.list_checkpoints().await.unwrap(), [checkpoint]);
    }

    #[test]
    fn a_root_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("not-a-dir");
        fs::write(&root, b"").unwrap();
        let opened = FileCheckpointStore::open(&root, scope(), NameCase::Lower);
        match opened {
            Err(StoreError::Refused { reason }) => {
                assert!(reason.contains("not-a-dir"), "{reason}")
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[test]
    fn io_errors_map_to_retry_or_refuse() {
        let unavailable = [
            ErrorKind::StorageFull,
            ErrorKind::NotFound,
            ErrorKind::Interrupted,
        ];
        for kind in unavailable {
            let err = io_failure("writing /x/0", io::Error::from(kind));
            assert!(matches!(err, StoreError::Unavailable { .. }), "{kind:?}");
        }
        let eio = io_failure(
            "fsyncing /x/0",
            io::Error::from_raw_os_error(Errno::IO.raw_os_error()),
        );
        assert!(matches!(eio, StoreError::Unavailable { .. }));
        for errno in [Errno::ACCESS, Errno::ROFS, Errno::PERM, Errno::NAMETOOLONG] {
            let err = io_failure(
                "writing /x/0",
                io::Error::from_raw_os_error(errno.raw_os_error()),
            );
            assert!(matches!(err, StoreError::Refused { .. }), "{errno:?}");
        }
        let message = io_failure("writing /x/0", io::Error::from(ErrorKind::StorageFull));
        assert!(message
            .to_string()
            .starts_with("checkpoint store unavailable: writing /x/0: "));
    }

    /// Every contender reads the version, waits for all others to have read it, then claims
    /// with it: exactly one claim per round can win.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_directory_racing_from_many_tasks_have_one_winner_per_round() {
        const TASKS: usize = 16;
        const ROUNDS: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let stores = [open(dir.path()), open(dir.path())];
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let store = stores[task % 2].clone();
            let barrier = Arc::clone(&barrier);
            tasks.spawn(async move {
                let mut won = Vec::new();
                for _ in 0..ROUNDS {
                    barrier.wait().await;
                    let version = store
                        .list_ownership()
                        .await
                        .unwrap()
                        .pop()
                        .map(|o| o.version);
                    barrier.wait().await;
                    let claim = claim("0", &format!("task-{task}"), version.as_deref());
                    won.push(!store.claim_ownership(&[claim]).await.unwrap().is_empty());
                }
                won
            });
        }
        let results = tasks.join_all().await;
        for round in 0..ROUNDS {
            let winners = results.iter().filter(|won| won[round]).count();
            assert_eq!(winners, 1, "round {round}");
        }
        let last = stores[0].list_ownership().await.unwrap();
        assert_eq!(last[0].version, ROUNDS.to_string());
    }

    /// Each process claims partition 0 again and again with the version it just read and prints
    /// the version each winning claim replaced. With a working lock no version is replaced twice.
    #[test]
    fn two_processes_racing_to_steal_one_partition_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let test_name = "checkpoint::file::tests::contender_process_entry";
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
                    .env(CONTENDER_ENV, dir.path())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut replaced = Vec::new();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "contender failed: {output:?}");
            let stdout = String::from_utf8(output.stdout).unwrap();
            let wins: Vec<_> = stdout
                .lines()
                // libtest prints the test's name on the line the first win lands on.
                .filter_map(|line| line.split_once("won from ").map(|(_, version)| version))
                .map(str::to_owned)
                .collect();
            assert!(!wins.is_empty(), "contender never won: {stdout}");
            replaced.extend(wins);
        }

        let store = open(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let last = runtime.block_on(store.list_ownership()).unwrap();
        let final_version: usize = last[0].version.parse().unwrap();
        let distinct: BTreeSet<_> = replaced.iter().cloned().collect();
        assert_eq!(
            distinct.len(),
            replaced.len(),
            "a version was replaced twice"
        );
        assert_eq!(
            replaced.len(),
            final_version,
            "every win is one version step"
        );
        assert!(distinct.contains("none"), "someone created the record");
    }

    /// The body of a contender process; a no-op in a normal test run.
    #[test]
    fn contender_process_entry() {
        let Some(root) = std::env::var_os(CONTENDER_ENV) else {
            return;
        };
        let store = open(Path::new(&root));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let owner = format!("process-{}", std::process::id());
        runtime.block_on(async {
            for _ in 0..CONTENDER_ROUNDS {
                let version = store
                    .list_ownership()
                    .await
                    .unwrap()
                    .pop()
                    .map(|o| o.version);
                let claim = claim("0", &owner, version.as_deref());
                if !store.claim_ownership(&[claim]).await.unwrap().is_empty() {
                    println!("won from {}", version.as_deref().unwrap_or("none"));
                }
            }
        });
    }
}
