//! Sinks: where a partition's events go, one window at a time.
//!
//! A [`PartitionSink`] owns its partition's window from end to end: it opens it, appends to it,
//! decides when it rolls over ([`window`], a pure function of its state, the limits and the
//! clock), commits it, and abandons it. The partition task only hands it events, ticks and
//! shutdown, and checkpoints the [`CommittedWindow`] it gets back: nothing else is ever
//! checkpointed.
//!
//! Errors come in two kinds ([`SinkError::recovery`]): a failed write or commit keeps the window
//! as it was, so the partition backs off and calls [`PartitionSink::flush`] again; a window that
//! cannot be finished is dropped, and its events are read again from its first one.
//!
//! The writers: [`stdout`] (JSON lines), and archive files in a [`format`] (Capture Avro
//! ([`avro`]), Parquet ([`parquet`]) or JSON Lines ([`jsonl`])) to local files
//! ([`file`](mod@file)) or block blobs ([`blob`]), named by [`path_format`].
//!
//! Exactly once in the archive (`docs/exactly-once.md`): before a file or blob is committed,
//! [`PartitionSink::flush`] writes the window's commit record (first and last sequence number,
//! name) through the partition's [`CommitJournal`]. A window with a record is committed under
//! that name or not at all: if it has to be read again (a crash, a dropped window, a new
//! owner), the sink is given the record ([`PartitionSink::resume`]) and rebuilds exactly that
//! window, ending at its last event, under its name; the writers' conditional creates then let
//! only one copy in, and a name already holding the same events counts as committed.

pub mod avro;
pub mod blob;
pub mod codec;
pub mod file;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod jsonl;
pub mod parquet;
pub mod path_format;
pub mod stdout;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::checkpoint::CommitRecord;
use crate::crash_hook::{self, CrashPoint};
use crate::eventhubs::ReceivedEvent;
use crate::lease::{CheckpointError, CommitJournal};
use crate::recovery::Recovery;
use blob::{BlobNames, BlobSinkError, BlobSinkSettings, BlobWindow};
pub use codec::Codec;
use file::{FileSinkError, FileSinkSettings, FileWindow};
use path_format::PathContext;
use stdout::LineTarget;
use window::WindowState;
pub use window::{Rollover, WindowSettings};

/// The configured sink, shared by every partition.
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout(LineTarget),
    File(Arc<FileSinkSettings>),
    Blob(Arc<BlobSinkSettings>),
}

/// Names that path formats substitute, fixed for the process.
#[derive(Debug, Clone, Default)]
pub struct WindowNames {
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
}

/// What a commit made durable: the range the partition may now checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedWindow {
    /// `None` for an empty window (nothing to checkpoint).
    pub first_sequence_number: Option<i64>,
    pub last_sequence_number: Option<i64>,
    pub last_offset: Option<String>,
    pub events: u64,
    pub bytes: u64,
    /// Where the window went (a file path or blob name), if the sink names it.
    pub location: Option<String>,
    /// Its name relative to the sink's root or container (what commit records hold).
    pub name: Option<String>,
    /// How long the last commit attempt took.
    pub commit_duration: Duration,
}

/// A writer's failure.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    File(FileSinkError),
    #[error(transparent)]
    Blob(BlobSinkError),
    /// The commit record could not be written (the checkpoint store failed).
    #[error("cannot record the commit: {0}")]
    Journal(CheckpointError),
}

impl WriteError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::Stdout(_) => "stdout",
            WriteError::File(error) => error.error_type(),
            WriteError::Blob(_) => "blob",
            WriteError::Journal(_) => "commit_record",
        }
    }

    /// How long the storage service asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            WriteError::Blob(BlobSinkError::Storage(error)) => error.retry_after(),
            WriteError::Journal(error) => error.retry_after(),
            _ => None,
        }
    }

    fn window_lost(&self) -> bool {
        matches!(
            self,
            WriteError::File(FileSinkError::WindowLost { .. })
                | WriteError::Blob(BlobSinkError::WindowLost { .. })
        )
    }

    /// The file's name holds other events: commit it under the next free name.
    fn renames(&self) -> bool {
        matches!(self, WriteError::File(FileSinkError::NameTaken { .. }))
    }

    /// The blob's name holds other events: its staged blocks cannot move, so the window is
    /// read again under a new name.
    fn name_taken(&self) -> bool {
        matches!(self, WriteError::Blob(BlobSinkError::NameTaken { .. }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing or committing failed; the window is kept as it was and [`PartitionSink::flush`]
    /// retries its commit.
    #[error(transparent)]
    Failed(WriteError),
    /// The window could not be completed and was dropped: read its events again from here.
    #[error("window dropped ({cause}); re-reading from sequence number {reread_from}")]
    WindowDropped { reread_from: i64, cause: WriteError },
    /// Another instance owns the partition now: the window was not committed (its new owner
    /// completes it from the commit record).
    #[error("partition lost while recording the commit")]
    Lost,
}

impl SinkError {
    /// See [`crate::recovery`].
    pub fn recovery(&self) -> Recovery {
        match self {
            SinkError::Failed(_) => Recovery::Retry,
            SinkError::WindowDropped { .. } => Recovery::Reread,
            SinkError::Lost => Recovery::PartitionLost,
        }
    }

    /// A bounded label for metrics: the writer that failed.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Failed(cause) | SinkError::WindowDropped { cause, .. } => cause.kind(),
            SinkError::Lost => "lost",
        }
    }

    /// How long the storage service asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SinkError::Failed(cause) | SinkError::WindowDropped { cause, .. } => {
                cause.retry_after()
            }
            SinkError::Lost => None,
        }
    }
}

impl Sink {
    /// The writer for one partition. Staging files that a crashed run left for this partition
    /// are removed first: their events were never committed and will be read again.
    ///
    /// `journal` writes commit records (none: at-least-once, as the stdout sink always is);
    /// `resume` is the record found in the ownership, the window to rebuild first.
    pub fn open_partition(
        &self,
        partition_id: &str,
        settings: WindowSettings,
        names: Arc<WindowNames>,
        journal: Option<CommitJournal>,
    ) -> PartitionSink {
        let writer = match self {
            Sink::Stdout(target) => Writer::Stdout {
                target: target.clone(),
                lines: Vec::new(),
            },
            Sink::File(file) => {
                file.clean_staging(partition_id);
                Writer::File {
                    settings: Arc::clone(file),
                    window: None,
                }
            }
            Sink::Blob(blob) => Writer::Blob {
                settings: Arc::clone(blob),
                names: BlobNames::default(),
                window: None,
            },
        };
        let mut sink = PartitionSink {
            partition_id: partition_id.to_owned(),
            settings,
            names,
            writer,
            window: None,
            journal: journal.filter(|_| !matches!(self, Sink::Stdout(_))),
            resume: None,
            reread_from: None,
            event_time: false,
        };
        sink.open_empty_window_if_configured();
        sink
    }
}

/// One partition's writer and its open window.
#[derive(Debug)]
pub struct PartitionSink {
    partition_id: String,
    settings: WindowSettings,
    /// Names path formats substitute.
    names: Arc<WindowNames>,
    writer: Writer,
    /// The open window's bookkeeping; the writer holds its bytes.
    window: Option<OpenWindow>,
    /// Writes commit records; `None` for stdout (and tests of the writers alone).
    journal: Option<CommitJournal>,
    /// A recorded window the next window must reproduce.
    resume: Option<CommitRecord>,
    /// Set when a reproduced window ended inside a batch: the events after it were not
    /// appended, so the partition reads again from here once the window is checkpointed.
    reread_from: Option<i64>,
    /// Windows follow the events' enqueued time, not the clock (see
    /// [`PartitionSink::windows_by_event_time`]).
    event_time: bool,
}

#[derive(Debug)]
struct OpenWindow {
    opened_at: Instant,
    /// Wall-clock start: names the window's file.
    started_ms: i64,
    first_sequence_number: Option<i64>,
    last_sequence_number: Option<i64>,
    last_offset: Option<String>,
    events: u64,
    /// The record this window reproduces: it ends at the record's last event, under its name.
    reproduces: Option<CommitRecord>,
    /// The record written for this window, once written.
    recorded: Option<CommitRecord>,
}

/// Names tried for one window before giving up on it (each taken by other events).
const MAX_NAME_ATTEMPTS: usize = 100;

impl OpenWindow {
    /// First and last sequence numbers, once it holds an event.
    fn range(&self) -> Option<(i64, i64)> {
        Some((self.first_sequence_number?, self.last_sequence_number?))
    }

    /// A reproduced window is complete at its record's last event; it closes then, and never by
    /// age or size (those limits were met by the same events the first time).
    fn reproduction_complete(&self) -> Option<bool> {
        let record = self.reproduces.as_ref()?;
        Some(self.last_sequence_number == Some(record.last_sequence_number))
    }
}

impl PartitionSink {
    /// Makes the next window reproduce `record` (a window its previous owner was committing).
    pub fn resume(&mut self, record: CommitRecord) {
        self.resume = Some(record);
    }

    /// Makes windows follow the events' enqueued time instead of the clock, for archiving the
    /// past (`hubcap backfill`): a window is named by its first event's enqueued time (so last
    /// month's events land under last month's path, as Capture would have put them) and is
    /// due when an event reaches [`Self::event_time_deadline`] (the caller commits it then) or
    /// when it is full. No window opens empty: there is no event to name it by.
    pub fn windows_by_event_time(&mut self) {
        self.event_time = true;
        // The empty window `open_partition` may have opened is named by the clock.
        self.abandon();
    }

    /// With [`Self::windows_by_event_time`]: the enqueued time (Unix ms) from which events
    /// belong to the next window; the open window must be committed before one is appended.
    pub fn event_time_deadline(&self) -> Option<i64> {
        let window = self.window.as_ref().filter(|_| self.event_time)?;
        window.first_sequence_number?;
        let age = i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
        Some(window.started_ms.saturating_add(age))
    }

    /// After a checkpoint: where to read again, if a reproduced window ended inside a batch.
    pub fn take_reread(&mut self) -> Option<i64> {
        self.reread_from.take()
    }

    /// Adds events to the window (opening one if none is open) and commits it if that filled
    /// it. On a write error the window is dropped ([`SinkError::WindowDropped`]).
    pub async fn append(
        &mut self,
        events: &[ReceivedEvent],
    ) -> Result<Option<CommittedWindow>, SinkError> {
        let events = self.within_reproduction(events);
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        if self.window.is_none() {
            self.open_window(Some(first))
                .map_err(|cause| SinkError::WindowDropped {
                    reread_from: first.sequence_number,
                    cause,
                })?;
        }
        let Some(window) = self.window.as_mut() else {
            return Ok(None);
        };
        let reread_from = *window
            .first_sequence_number
            .get_or_insert(first.sequence_number);
        if let Err(cause) = self.writer.append(&self.partition_id, events).await {
            // Nothing of this window is durable yet: drop it and read it again.
            self.drop_for_reread();
            return Err(SinkError::WindowDropped { reread_from, cause });
        }
        window.events += events.len() as u64;
        window.last_sequence_number = Some(last.sequence_number);
        window.last_offset = Some(last.offset.clone());
        if window.reproduction_complete() == Some(true) {
            return self.flush().await;
        }
        self.tick().await
    }

    /// The part of `events` the window may take: all of them, unless a reproduced window ends
    /// inside the batch (the rest is read again after it, see [`Self::take_reread`]). A batch
    /// entirely past the record means the record's events are gone from the hub (or were
    /// never there): nothing is left to reproduce.
    fn within_reproduction<'a>(&mut self, events: &'a [ReceivedEvent]) -> &'a [ReceivedEvent] {
        let record = match (&self.window, &self.resume) {
            (Some(window), _) => window.reproduces.as_ref(),
            (None, resume) => resume.as_ref(),
        };
        let (Some(record), Some(first)) = (record, events.first()) else {
            return events;
        };
        let last = record.last_sequence_number;
        if first.sequence_number > last {
            warn!(partition_id = %self.partition_id, name = %record.name, first_sequence_number = first.sequence_number,
                record_last = last, "the window to complete is no longer in the hub; reading on");
            self.resume = None;
            if let Some(window) = self.window.as_mut() {
                window.reproduces = None;
            }
            return events;
        }
        let end = events.partition_point(|event| event.sequence_number <= last);
        if end < events.len() {
            self.reread_from = Some(last + 1);
        }
        &events[..end]
    }

    /// Completes when the open window reaches its maximum age; never while none is open. The
    /// partition then calls [`PartitionSink::tick`].
    pub async fn rollover_due(&self) {
        let reproducing = self.window.as_ref().is_some_and(|w| w.reproduces.is_some());
        // By event time, age is the caller's decision (see `event_time_deadline`).
        match self.state().filter(|_| !reproducing && !self.event_time) {
            Some(state) => {
                tokio::time::sleep_until(self.settings.deadline(&state).into()).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Commits the open window if the rollover policy says it is due.
    pub async fn tick(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        if self.window.as_ref().is_some_and(|w| w.reproduces.is_some()) {
            return Ok(None);
        }
        let due = |state: &WindowState| match self.settings.rollover(state, Instant::now()) {
            Rollover::Keep => false,
            Rollover::Age => !self.event_time,
            Rollover::Size => true,
        };
        match self.state() {
            Some(state) if due(&state) => self.flush().await,
            _ => Ok(None),
        }
    }

    /// Commits the open window now (at shutdown, or to retry a failed commit). `Ok(None)` when
    /// nothing needed writing. A reproduced window that is not complete is not committed (a
    /// shorter file under its name would hide the rest): it is dropped, and whoever reads the
    /// partition next reproduces it from the record.
    pub async fn flush(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        let Some(window) = self.window.as_ref() else {
            return Ok(None);
        };
        if window.reproduction_complete() == Some(false) {
            self.drop_for_reread();
            return Ok(None);
        }
        let state = self.state_of(window);
        if !self.settings.writes(&state) {
            self.abandon();
            return Ok(None);
        }
        let (names, partition_id) = (Arc::clone(&self.names), self.partition_id.clone());
        let context = PathContext {
            namespace: &names.namespace,
            event_hub: &names.event_hub,
            consumer_group: &names.consumer_group,
            partition_id: &partition_id,
            window_start_ms: window.started_ms,
            first_sequence_number: window.first_sequence_number.unwrap_or(-1),
            last_sequence_number: window.last_sequence_number.unwrap_or(-1),
        };
        let events = window.events;
        let started = Instant::now();
        // A name taken by other events (another writer sharing the archive) gets the next free
        // one, and a new record; bounded so a broken archive cannot loop forever.
        let mut committed = Err(WriteError::File(FileSinkError::WindowLost {
            reason: "no free name for the window".into(),
            error_type: "name_taken",
        }));
        for _ in 0..MAX_NAME_ATTEMPTS {
            let name = self.name_for_commit(&context);
            self.record(name.as_deref()).await?;
            let range = self.window.as_ref().and_then(OpenWindow::range);
            committed = self
                .writer
                .commit(&context, name.as_deref(), range, events)
                .await;
            match &committed {
                Err(cause) if cause.renames() => {
                    warn!(partition_id = %self.partition_id, name = name.as_deref().unwrap_or(""), error = %cause,
                        "the window's name holds other events; committing under another name");
                    if let Some(window) = self.window.as_mut() {
                        window.reproduces = None;
                        window.recorded = None;
                    }
                }
                _ => break,
            }
        }
        match committed {
            Ok(location) => {
                let Some(window) = self.window.take() else {
                    return Ok(None);
                };
                self.open_empty_window_if_configured();
                Ok(Some(CommittedWindow {
                    first_sequence_number: window.first_sequence_number,
                    last_sequence_number: window.last_sequence_number,
                    last_offset: window.last_offset,
                    events: window.events,
                    bytes: state.bytes,
                    location: location.as_ref().map(|(location, _)| location.clone()),
                    name: location.map(|(_, name)| name),
                    commit_duration: started.elapsed(),
                }))
            }
            Err(cause) if cause.window_lost() || cause.name_taken() => {
                let first = self.window.as_ref().and_then(|w| w.first_sequence_number);
                if cause.name_taken() {
                    // A blob's blocks are staged to its name: read it again under a new one.
                    if let Some(window) = self.window.as_mut() {
                        window.reproduces = None;
                        window.recorded = None;
                    }
                }
                self.drop_for_reread();
                match first {
                    Some(reread_from) => Err(SinkError::WindowDropped { reread_from, cause }),
                    // An empty window that could not be written: nothing to read again.
                    None => Ok(None),
                }
            }
            Err(cause) => Err(SinkError::Failed(cause)),
        }
    }

    /// The name the window is committed under: its record's (reproduced or already recorded),
    /// else a fresh one from the writer.
    fn name_for_commit(&self, context: &PathContext<'_>) -> Option<String> {
        let window = self.window.as_ref()?;
        if let Some(record) = window.recorded.as_ref().or(window.reproduces.as_ref()) {
            return Some(record.name.clone());
        }
        self.writer.fresh_name(context)
    }

    /// Writes the window's commit record unless it is already written (a retried commit) or
    /// there is nothing to record (no journal, no events, a writer without names).
    async fn record(&mut self, name: Option<&str>) -> Result<(), SinkError> {
        let (Some(journal), Some(name)) = (self.journal.as_ref(), name) else {
            return Ok(());
        };
        let Some(window) = self.window.as_mut() else {
            return Ok(());
        };
        let Some((first, last)) = window.range() else {
            return Ok(());
        };
        let record = CommitRecord {
            first_sequence_number: window
                .reproduces
                .as_ref()
                .map_or(first, |r| r.first_sequence_number.min(first)),
            last_sequence_number: last,
            name: name.to_owned(),
        };
        if window.recorded.as_ref() == Some(&record) {
            return Ok(());
        }
        match journal.record(&record).await {
            Ok(()) => {
                window.recorded = Some(record);
                crash_hook::reached(CrashPoint::AfterRecord);
                Ok(())
            }
            Err(CheckpointError::Lost { .. }) => Err(SinkError::Lost),
            Err(error) => Err(SinkError::Failed(WriteError::Journal(error))),
        }
    }

    /// Drops the open window to read it again; a recorded (or reproduced) window is
    /// reproduced under its record then, so it can never land twice under two names.
    fn drop_for_reread(&mut self) {
        let record = self
            .window
            .as_ref()
            .and_then(|w| w.recorded.clone().or_else(|| w.reproduces.clone()));
        self.abandon();
        self.resume = record;
    }

    /// Drops the open window without writing it (its partition was lost, or it failed);
    /// returns how many events it held.
    pub fn abandon(&mut self) -> u64 {
        self.writer.abandon();
        self.reread_from = None;
        self.window.take().map_or(0, |w| w.events)
    }

    fn state(&self) -> Option<WindowState> {
        self.window.as_ref().map(|w| self.state_of(w))
    }

    fn state_of(&self, window: &OpenWindow) -> WindowState {
        WindowState {
            opened_at: window.opened_at,
            events: window.events,
            bytes: self.writer.bytes(),
        }
    }

    fn open_window(&mut self, first: Option<&ReceivedEvent>) -> Result<(), WriteError> {
        // A window that would reproduce a record opens with its first event, never empty.
        let first_sequence_number = first.map(|event| event.sequence_number);
        let started_ms = match first.filter(|_| self.event_time) {
            Some(event) => event.enqueued_time_ms,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        let context = PathContext {
            namespace: &self.names.namespace,
            event_hub: &self.names.event_hub,
            consumer_group: &self.names.consumer_group,
            partition_id: &self.partition_id,
            window_start_ms: started_ms,
            first_sequence_number: first_sequence_number.unwrap_or(-1),
            last_sequence_number: -1,
        };
        let reproduces = first_sequence_number.and(self.resume.take());
        self.writer
            .open(&context, reproduces.as_ref().map(|r| r.name.as_str()))?;
        self.window = Some(OpenWindow {
            opened_at: Instant::now(),
            started_ms,
            first_sequence_number: None,
            last_sequence_number: None,
            last_offset: None,
            events: 0,
            reproduces,
            recorded: None,
        });
        Ok(())
    }

    /// With `skip_empty = false`, opens a window now so that a window with no events still
    /// produces an (empty) file when it closes, as Capture does. A failure here is retried when
    /// the first event arrives.
    fn open_empty_window_if_configured(&mut self) {
        if self.settings.opens_empty()
            && !self.event_time
            && self.window.is_none()
            && self.resume.is_none()
        {
            if let Err(error) = self.open_window(None) {
                warn!(partition_id = %self.partition_id, error = %error, "cannot open an empty window");
            }
        }
    }
}

/// One partition's writer, holding the open window's bytes.
#[derive(Debug)]
enum Writer {
    /// Complete JSON lines of the window.
    Stdout { target: LineTarget, lines: Vec<u8> },
    File {
        settings: Arc<FileSinkSettings>,
        window: Option<FileWindow>,
    },
    Blob {
        settings: Arc<BlobSinkSettings>,
        /// Blob names given so far, so same-second windows get distinct names.
        names: BlobNames,
        window: Option<BlobWindow>,
    },
}

impl Writer {
    /// Opens a window; `name` is the blob name of a reproduced window (files are named when
    /// they commit).
    fn open(&mut self, context: &PathContext<'_>, name: Option<&str>) -> Result<(), WriteError> {
        match self {
            Writer::Stdout { lines, .. } => lines.clear(),
            Writer::File { settings, window } => {
                *window = Some(
                    settings
                        .open_window(context.partition_id, name)
                        .map_err(WriteError::File)?,
                );
            }
            Writer::Blob {
                settings,
                names,
                window,
            } => {
                *window = Some(
                    settings
                        .open_window(context, names, name)
                        .map_err(WriteError::Blob)?,
                );
            }
        }
        Ok(())
    }

    /// A name for a window that has no record yet: a file gets the first free name for its
    /// path format; a blob has had its name since it opened.
    fn fresh_name(&self, context: &PathContext<'_>) -> Option<String> {
        match self {
            Writer::Stdout { .. } => None,
            Writer::File { settings, .. } => Some(settings.free_name(context)),
            Writer::Blob { window, .. } => window.as_ref().map(|w| w.name().to_owned()),
        }
    }

    async fn append(
        &mut self,
        partition_id: &str,
        events: &[ReceivedEvent],
    ) -> Result<(), WriteError> {
        match self {
            Writer::Stdout { lines, .. } => {
                for event in events {
                    stdout::write_line(partition_id, event, lines);
                }
                Ok(())
            }
            Writer::File { window, .. } => {
                let window = window.as_mut().ok_or_else(|| {
                    WriteError::File(FileSinkError::WindowLost {
                        reason: "no open file".into(),
                        error_type: "file",
                    })
                })?;
                window.append(events).map_err(WriteError::File)
            }
            Writer::Blob {
                settings, window, ..
            } => {
                let window = window.as_mut().ok_or_else(|| {
                    WriteError::Blob(BlobSinkError::WindowLost {
                        reason: "no open blob".into(),
                    })
                })?;
                settings
                    .append(window, events)
                    .await
                    .map_err(WriteError::Blob)
            }
        }
    }

    /// Encoded bytes of the open window.
    fn bytes(&self) -> u64 {
        match self {
            Writer::Stdout { lines, .. } => lines.len() as u64,
            Writer::File { window, .. } => window.as_ref().map_or(0, FileWindow::bytes),
            Writer::Blob { window, .. } => window.as_ref().map_or(0, BlobWindow::bytes),
        }
    }

    /// Makes the open window durable under `name`; returns where it went and its name. A
    /// failure leaves the window to be retried, unless it reports the window lost (then it is
    /// gone) or the file's name taken (then it is retried under another).
    async fn commit(
        &mut self,
        context: &PathContext<'_>,
        name: Option<&str>,
        range: Option<(i64, i64)>,
        events: u64,
    ) -> Result<Option<(String, String)>, WriteError> {
        match self {
            Writer::Stdout { target, lines } => {
                target.commit(lines).await.map_err(WriteError::Stdout)?;
                Ok(None)
            }
            Writer::File { settings, window } => {
                let (Some(open), Some(name)) = (window.take(), name) else {
                    return Ok(None);
                };
                let (kept, result) = settings.commit(open, name, range).await;
                *window = kept;
                result
                    .map(|path| Some((path.display().to_string(), name.to_owned())))
                    .map_err(WriteError::File)
            }
            Writer::Blob {
                settings, window, ..
            } => {
                let Some(open) = window.as_mut() else {
                    return Ok(None);
                };
                let metadata = blob::window_metadata(
                    context.first_sequence_number,
                    context.last_sequence_number,
                    events,
                    open.format(),
                );
                let result = settings.commit(open, metadata).await;
                if result.is_ok()
                    || matches!(
                        result,
                        Err(BlobSinkError::WindowLost { .. } | BlobSinkError::NameTaken { .. })
                    )
                {
                    *window = None;
                }
                result
                    .map(|name| Some((name.clone(), name)))
                    .map_err(WriteError::Blob)
            }
        }
    }

    fn abandon(&mut self) {
        match self {
            Writer::Stdout { lines, .. } => lines.clear(),
            Writer::File { settings, window } => {
                if let Some(open) = window.take() {
                    settings.abandon(open);
                }
            }
            Writer::Blob { window, .. } => *window = None,
        }
    }
}
