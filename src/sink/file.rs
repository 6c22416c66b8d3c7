//! The `file` sink: one archive file (Avro, Parquet or JSON Lines, see [`super::format`]) per
//! partition window, committed atomically.
//!
//! A window is written to a staging file under `<root>/.hubcap-staging/` (hidden, ending in
//! `.tmp`, so nothing that globs `*.avro` ever sees it). Commit = finish the file, fsync it,
//! link it to its final name with no-clobber semantics, remove the staging name, fsync both
//! directories. Only then does the partition checkpoint. A crash before the link leaves only a
//! staging file, deleted when the partition starts again; its events are read again from the
//! checkpoint.
//!
//! Names: the path format rendered with the window's start time (UTC, when its first event
//! arrived) — the time Capture names files by. A name that already exists (two windows starting
//! in the same second) is never overwritten: a new window gets the first free `-1`, `-2`, ...
//! suffix before the extension (`.avro`, `.parquet`, ...) when it is about to commit, and that name goes into its commit record.
//! A window reproduced from a record keeps the record's name. The link that commits it is
//! no-clobber, so when two writers commit one recorded window only one link succeeds; the other
//! finds the name holding the same events (same file, or the same last sequence number) and
//! counts its window as committed. A name holding other events is [`FileSinkError::NameTaken`].
//!
//! Staging files belong to their writer: each is created and `flock`ed by the window that writes
//! it, and a partition starting up removes only staging files of its partition that nobody
//! holds a lock on (their writer is gone: crashed, or killed). A live writer on the same host,
//! or on another NFSv4 client (Linux maps `flock` to NFS byte-range locks), keeps its file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{flock, FlockOperation};

use crate::disk::error_type as disk_error_type;
use crate::eventhubs::ReceivedEvent;
use crate::sink::format::{FileFormat, FormatError, FormatWriter};
use crate::sink::path_format::{PathContext, PathFormat};

const STAGING_DIR: &str = ".hubcap-staging";
/// Buffer between the encoder and the file. Small on purpose: the encoders hand over whole
/// blocks (~256 KiB of Avro or JSON lines, Parquet pages), which `BufWriter` passes straight
/// through; it only gathers the few bytes of each block's header. A block-sized buffer here would double every partition's memory.
const WRITE_BUFFER: usize = 8 * 1024;

/// Settings shared by every partition of a `file` sink.
#[derive(Debug, Clone)]
pub struct FileSinkSettings {
    pub root: PathBuf,
    pub path_format: Arc<PathFormat>,
    pub format: FileFormat,
    pub file_mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding: {0}")]
    Encode(#[from] FormatError),
    /// The window's file could not be completed; its events must be read again.
    #[error("window lost: {reason}")]
    WindowLost {
        reason: String,
        /// What failed, as [`FileSinkError::error_type`] names it.
        error_type: &'static str,
    },
    /// The name holds a file with other events (another writer shares the directory).
    #[error("{} already holds other events", path.display())]
    NameTaken { path: PathBuf },
}

impl FileSinkError {
    /// A bounded label for metrics (`error_type`): what the filesystem said, so an operator
    /// tells a full disk from a read-only or failing one.
    pub fn error_type(&self) -> &'static str {
        match self {
            FileSinkError::Io { source, .. } => disk_error_type(source),
            FileSinkError::Encode(error) => io_source(error).map_or("file", disk_error_type),
            FileSinkError::WindowLost { error_type, .. } => error_type,
            FileSinkError::NameTaken { .. } => "name_taken",
        }
    }

    fn lost(reason: String, cause: Option<&std::io::Error>) -> Self {
        FileSinkError::WindowLost {
            reason,
            error_type: cause.map_or("file", disk_error_type),
        }
    }

    fn lost_by(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::lost(error.to_string(), io_source(error))
    }
}

/// The first `std::io::Error` in an error's chain (the encoders wrap the file's errors).
fn io_source<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = error.source();
    }
    None
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileSinkError + 'a {
    move |source| FileSinkError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// One open window's file.
pub struct FileWindow {
    staging_path: PathBuf,
    /// `None` once finishing the file failed: the window cannot be committed.
    state: Option<WindowFile>,
}

enum WindowFile {
    /// Events are still being appended.
    Writing(Box<FormatWriter<BufWriter<File>>>),
    /// The file is complete; linking it into place may still have to be retried.
    Sealed(File),
}

impl std::fmt::Debug for FileWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWindow")
            .field("staging_path", &self.staging_path)
            .finish_non_exhaustive()
    }
}

impl FileSinkSettings {
    fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    /// Removes staging files of this partition whose writer is gone (no lock held on them):
    /// their events were never committed, so they will be read again from the checkpoint. A
    /// file still locked belongs to a live writer (a previous owner still finishing) and is
    /// left alone.
    pub fn clean_staging(&self, partition_id: &str) {
        let prefix = staging_prefix(partition_id);
        let Ok(entries) = fs::read_dir(self.staging_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // Taking the lock proves no writer holds it; the file is removed while it is held,
            // so a writer cannot pick it up in between (writers never reopen staging files).
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                let _ = fs::remove_file(&path);
                tracing::debug!(path = %path.display(), "removed an abandoned staging file");
            }
        }
    }

    /// The first name for this window that no file has: the path format rendered, then `-1`,
    /// `-2`, ... before the extension. Relative to the root.
    pub fn free_name(&self, context: &PathContext<'_>) -> String {
        let base = self.path_format.render(context);
        let extension = self.format.extension();
        for attempt in 0u32.. {
            let candidate = if attempt == 0 {
                format!("{base}{extension}")
            } else {
                format!("{base}-{attempt}{extension}")
            };
            if fs::symlink_metadata(self.root.join(&candidate)).is_err() {
                return candidate;
            }
        }
        unreachable!("the loop returns or tries forever")
    }

    /// Opens a staging file for a new window of `partition_id`.
    /// `name`: the recorded name of a window being reproduced (it sets the format, see
    /// [`FileFormat::for_name`]).
    pub fn open_window(
        &self,
        partition_id: &str,
        name: Option<&str>,
    ) -> Result<FileWindow, FileSinkError> {
        let format = name.map_or_else(|| self.format.clone(), |name| self.format.for_name(name));
        let dir = self.staging_dir();
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let staging_path = dir.join(format!(
            "{}{}{}.tmp",
            staging_prefix(partition_id),
            uuid::Uuid::new_v4().simple(),
            format.extension()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file_mode)
            .open(&staging_path)
            .map_err(io("creating", &staging_path))?;
        // Held until the file is closed (committed or abandoned): marks it as a live writer's.
        flock(&file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|errno| io("locking", &staging_path)(errno.into()))?;
        let buffered = BufWriter::with_capacity(WRITE_BUFFER, file);
        let writer = FormatWriter::new(buffered, &format, partition_id)?;
        Ok(FileWindow {
            staging_path,
            state: Some(WindowFile::Writing(Box::new(writer))),
        })
    }

    /// Makes the window durable under `name` (relative to the root); returns its path, and the
    /// window back if the commit can be retried (under the same name, or, after
    /// [`FileSinkError::NameTaken`], another). `range` (first, last sequence number) tells this
    /// window's events apart from another file's. The open block is encoded here, on
    /// the runtime's thread (compressor state lives there); fsync and link go to the blocking
    /// pool. If finishing the file fails the window is gone ([`FileSinkError::WindowLost`]).
    pub async fn commit(
        self: &Arc<Self>,
        mut window: FileWindow,
        name: &str,
        range: Option<(i64, i64)>,
    ) -> (Option<FileWindow>, Result<PathBuf, FileSinkError>) {
        if let Err(error) = window.end_block() {
            self.abandon(window);
            return (None, Err(error));
        }
        let relative = name.to_owned();
        let settings = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let result = settings.commit_blocking(&mut window, &relative, range);
            (window, result)
        })
        .await;
        match joined {
            Ok((_, Ok(path))) => (None, Ok(path)),
            Ok((window, Err(error @ FileSinkError::WindowLost { .. }))) => {
                self.abandon(window);
                (None, Err(error))
            }
            Ok((window, Err(error))) => (Some(window), Err(error)),
            Err(join) => (
                None,
                Err(FileSinkError::lost(
                    format!("the commit task failed: {join}"),
                    None,
                )),
            ),
        }
    }

    fn commit_blocking(
        &self,
        window: &mut FileWindow,
        relative: &str,
        range: Option<(i64, i64)>,
    ) -> Result<PathBuf, FileSinkError> {
        if let Some(WindowFile::Writing(_)) = window.state {
            let Some(WindowFile::Writing(writer)) = window.state.take() else {
                unreachable!("matched just above");
            };
            let buffered = writer.finish().map_err(|e| FileSinkError::lost_by(&e))?;
            let file = buffered.into_inner().map_err(|e| {
                FileSinkError::lost(
                    format!("writing {}: {}", window.staging_path.display(), e.error()),
                    Some(e.error()),
                )
            })?;
            window.state = Some(WindowFile::Sealed(file));
        }
        let Some(WindowFile::Sealed(file)) = &window.state else {
            return Err(FileSinkError::lost(
                "an earlier commit attempt failed while finishing the file".into(),
                None,
            ));
        };
        // A failed fsync is never retried on the same file: Linux may have dropped the dirty
        // pages it could not write and report the next fsync as a success. The window is
        // dropped and its events written again into a new file.
        if let Err(error) = file.sync_all() {
            window.state = None;
            return Err(FileSinkError::lost(
                format!("syncing {}: {error}", window.staging_path.display()),
                Some(&error),
            ));
        }
        let final_path =
            link_without_clobbering(&window.staging_path, &self.root, relative, range)?;
        fs::remove_file(&window.staging_path).map_err(io("removing", &window.staging_path))?;
        sync_dir(final_path.parent().unwrap_or(&self.root))?;
        sync_dir(&self.staging_dir())?;
        Ok(final_path)
    }

    /// Deletes an abandoned window's staging file.
    pub fn abandon(&self, mut window: FileWindow) {
        window.state = None;
        let _ = fs::remove_file(&window.staging_path);
    }
}

impl FileWindow {
    pub fn append(&mut self, events: &[ReceivedEvent]) -> Result<(), FileSinkError> {
        match &mut self.state {
            Some(WindowFile::Writing(writer)) => Ok(writer.append_all(events)?),
            _ => Err(FileSinkError::lost(
                "appending to a window that is already sealed".into(),
                None,
            )),
        }
    }

    /// Compresses and writes the open block now, so that committing (on the blocking pool)
    /// only flushes and syncs. A failure leaves the file incomplete, so the window is lost.
    fn end_block(&mut self) -> Result<(), FileSinkError> {
        if let Some(WindowFile::Writing(writer)) = &mut self.state {
            writer
                .flush_block()
                .map_err(|e| FileSinkError::lost_by(&e))?;
        }
        Ok(())
    }

    /// Bytes written for this window so far (flushed and buffered).
    pub fn bytes(&self) -> u64 {
        match &self.state {
            Some(WindowFile::Writing(writer)) => writer.bytes_written() + writer.buffered_bytes(),
            _ => 0,
        }
    }
}

fn staging_prefix(partition_id: &str) -> String {
    format!("p{partition_id}-")
}

/// Hard-links `staging` to `<root>/<relative>`: `link` fails instead of replacing an existing
/// name, so a committed file is never overwritten. An existing name is this window's when it is
/// the staging file itself (a retried link whose first attempt landed, which an NFS client may
/// report as `EEXIST`) or a file ending at the same event (another writer committed the same
/// recorded window first); anything else is [`FileSinkError::NameTaken`].
fn link_without_clobbering(
    staging: &Path,
    root: &Path,
    relative: &str,
    range: Option<(i64, i64)>,
) -> Result<PathBuf, FileSinkError> {
    let target = root.join(relative);
    if let Some(parent) = target.parent() {
        create_dirs_synced(parent, root)?;
    }
    match fs::hard_link(staging, &target) {
        Ok(()) => Ok(target),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if same_file(staging, &target) || holds_window(&target, range) {
                Ok(target)
            } else {
                Err(FileSinkError::NameTaken { path: target })
            }
        }
        // The staging file itself is gone (removed by hand, or by a clean-up that took it
        // for a dead run's): no retry can bring it back.
        Err(e) if e.kind() == ErrorKind::NotFound && !staging.exists() => Err(FileSinkError::lost(
            format!("staging file {} disappeared: {e}", staging.display()),
            None,
        )),
        Err(e) => Err(io("linking", &target)(e)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether the archive file at `path` holds the window `range`: it ends at the same event and
/// starts no later (a copy reproduced after the oldest events expired starts later, and is the
/// same window). Reads the file; only a commit that finds its name taken gets here.
fn holds_window(path: &Path, range: Option<(i64, i64)>) -> bool {
    let Some((first, last)) = range else {
        return false;
    };
    let mut bounds: Option<(i64, i64)> = None;
    let read = crate::archive::read_file(path, |archived| {
        let n = archived.event.sequence_number;
        bounds = Some(bounds.map_or((n, n), |(a, _)| (a, n)));
        true
    });
    match (read, bounds) {
        (Ok(_), Some((existing_first, existing_last))) => {
            existing_last == last && existing_first <= first
        }
        _ => false,
    }
}

/// Creates `dir` and any missing parents below `root`, fsyncing each parent so the new
/// directory entries survive a crash.
fn create_dirs_synced(dir: &Path, root: &Path) -> Result<(), FileSinkError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = dir;
    while !current.is_dir() {
        missing.push(current.to_owned());
        match current.parent() {
            Some(parent) if parent.starts_with(root) || parent == root => current = parent,
            _ => break,
        }
    }
    for path in missing.iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", path)(e)),
        }
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), FileSinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: rustix::io::Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(code.raw_os_error())
    }

    #[test]
    fn an_encoder_error_is_labelled_by_the_io_error_inside_it() {
        let encoder = FormatError::Avro(crate::sink::avro::AvroError::Io(errno(
            rustix::io::Errno::NOSPC,
        )));
        assert_eq!(FileSinkError::lost_by(&encoder).error_type(), "no_space");
        assert_eq!(FileSinkError::Encode(encoder).error_type(), "no_space");
        let parquet = FormatError::Parquet(
            parquet::errors::ParquetError::from(errno(rustix::io::Errno::ROFS)).into(),
        );
        assert_eq!(FileSinkError::Encode(parquet).error_type(), "read_only");
    }
}
