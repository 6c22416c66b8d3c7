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
//! The writers: [`stdout`] (JSON lines), and Capture Avro ([`avro`]) to local files ([`file`](mod@file))
//! or block blobs ([`blob`]), named by [`path_format`].

pub mod avro;
pub mod blob;
pub mod codec;
pub mod file;
pub mod path_format;
pub mod stdout;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::eventhubs::ReceivedEvent;
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
    AvroFile(Arc<FileSinkSettings>),
    AvroBlob(Arc<BlobSinkSettings>),
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
}

impl WriteError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::Stdout(_) => "stdout",
            WriteError::File(_) => "file",
            WriteError::Blob(_) => "blob",
        }
    }

    fn window_lost(&self) -> bool {
        matches!(
            self,
            WriteError::File(FileSinkError::WindowLost { .. })
                | WriteError::Blob(BlobSinkError::WindowLost { .. })
        )
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
}

impl SinkError {
    /// See [`crate::recovery`].
    pub fn recovery(&self) -> Recovery {
        match self {
            SinkError::Failed(_) => Recovery::Retry,
            SinkError::WindowDropped { .. } => Recovery::Reread,
        }
    }

    /// A bounded label for metrics: the writer that failed.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Failed(cause) | SinkError::WindowDropped { cause, .. } => cause.kind(),
        }
    }
}

impl Sink {
    /// The writer for one partition. Staging files that a crashed run left for this partition
    /// are removed first: their events were never committed and will be read again.
    pub fn open_partition(
        &self,
        partition_id: &str,
        settings: WindowSettings,
        names: Arc<WindowNames>,
    ) -> PartitionSink {
        let writer = match self {
            Sink::Stdout(target) => Writer::Stdout {
                target: target.clone(),
                lines: Vec::new(),
            },
            Sink::AvroFile(file) => {
                file.clean_staging(partition_id);
                Writer::AvroFile {
                    settings: Arc::clone(file),
                    window: None,
                }
            }
            Sink::AvroBlob(blob) => Writer::AvroBlob {
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
}

impl PartitionSink {
    /// Adds events to the window (opening one if none is open) and commits it if that filled
    /// it. On a write error the window is dropped ([`SinkError::WindowDropped`]).
    pub async fn append(
        &mut self,
        events: &[ReceivedEvent],
    ) -> Result<Option<CommittedWindow>, SinkError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        if self.window.is_none() {
            self.open_window(Some(first.sequence_number))
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
            self.abandon();
            return Err(SinkError::WindowDropped { reread_from, cause });
        }
        window.events += events.len() as u64;
        window.last_sequence_number = Some(last.sequence_number);
        window.last_offset = Some(last.offset.clone());
        self.tick().await
    }

    /// Completes when the open window reaches its maximum age; never while none is open. The
    /// partition then calls [`PartitionSink::tick`].
    pub async fn rollover_due(&self) {
        match self.state() {
            Some(state) => {
                tokio::time::sleep_until(self.settings.deadline(&state).into()).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Commits the open window if the rollover policy says it is due.
    pub async fn tick(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        match self.state() {
            Some(state) if self.settings.rollover(&state, Instant::now()) != Rollover::Keep => {
                self.flush().await
            }
            _ => Ok(None),
        }
    }

    /// Commits the open window now (at shutdown, or to retry a failed commit). `Ok(None)` when
    /// nothing needed writing.
    pub async fn flush(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        let Some(window) = self.window.as_ref() else {
            return Ok(None);
        };
        let state = self.state_of(window);
        if !self.settings.writes(&state) {
            self.abandon();
            return Ok(None);
        }
        let context = PathContext {
            namespace: &self.names.namespace,
            event_hub: &self.names.event_hub,
            consumer_group: &self.names.consumer_group,
            partition_id: &self.partition_id,
            window_start_ms: window.started_ms,
            first_sequence_number: window.first_sequence_number.unwrap_or(-1),
            last_sequence_number: window.last_sequence_number.unwrap_or(-1),
        };
        let started = Instant::now();
        match self.writer.commit(&context, window.events).await {
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
                    location,
                    commit_duration: started.elapsed(),
                }))
            }
            Err(cause) if cause.window_lost() => {
                let first = window.first_sequence_number;
                self.abandon();
                match first {
                    Some(reread_from) => Err(SinkError::WindowDropped { reread_from, cause }),
                    // An empty window that could not be written: nothing to read again.
                    None => Ok(None),
                }
            }
            Err(cause) => Err(SinkError::Failed(cause)),
        }
    }

    /// Drops the open window without writing it (its partition was lost, or it failed);
    /// returns how many events it held.
    pub fn abandon(&mut self) -> u64 {
        self.writer.abandon();
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

    fn open_window(&mut self, first_sequence_number: Option<i64>) -> Result<(), WriteError> {
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let context = PathContext {
            namespace: &self.names.namespace,
            event_hub: &self.names.event_hub,
            consumer_group: &self.names.consumer_group,
            partition_id: &self.partition_id,
            window_start_ms: started_ms,
            first_sequence_number: first_sequence_number.unwrap_or(-1),
            last_sequence_number: -1,
        };
        self.writer.open(&context)?;
        self.window = Some(OpenWindow {
            opened_at: Instant::now(),
            started_ms,
            first_sequence_number: None,
            last_sequence_number: None,
            last_offset: None,
            events: 0,
        });
        Ok(())
    }

    /// With `skip_empty = false`, opens a window now so that a window with no events still
    /// produces an (empty) file when it closes, as Capture does. A failure here is retried when
    /// the first event arrives.
    fn open_empty_window_if_configured(&mut self) {
        if self.settings.opens_empty() && self.window.is_none() {
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
    AvroFile {
        settings: Arc<FileSinkSettings>,
        window: Option<FileWindow>,
    },
    AvroBlob {
        settings: Arc<BlobSinkSettings>,
        /// Blob names given so far, so same-second windows get distinct names.
        names: BlobNames,
        window: Option<BlobWindow>,
    },
}

impl Writer {
    fn open(&mut self, context: &PathContext<'_>) -> Result<(), WriteError> {
        match self {
            Writer::Stdout { lines, .. } => lines.clear(),
            Writer::AvroFile { settings, window } => {
                *window = Some(
                    settings
                        .open_window(context.partition_id)
                        .map_err(WriteError::File)?,
                );
            }
            Writer::AvroBlob {
                settings,
                names,
                window,
            } => {
                *window = Some(
                    settings
                        .open_window(context, names)
                        .map_err(WriteError::Blob)?,
                );
            }
        }
        Ok(())
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
            Writer::AvroFile { window, .. } => {
                let window = window.as_mut().ok_or_else(|| {
                    WriteError::File(FileSinkError::WindowLost {
                        reason: "no open file".into(),
                    })
                })?;
                events
                    .iter()
                    .try_for_each(|event| window.append(event))
                    .map_err(WriteError::File)
            }
            Writer::AvroBlob {
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
            Writer::AvroFile { window, .. } => window.as_ref().map_or(0, FileWindow::bytes),
            Writer::AvroBlob { window, .. } => window.as_ref().map_or(0, BlobWindow::bytes),
        }
    }

    /// Makes the open window durable; returns where it went. A failure leaves the window to be
    /// retried, unless it reports the window lost (then it is gone).
    async fn commit(
        &mut self,
        context: &PathContext<'_>,
        events: u64,
    ) -> Result<Option<String>, WriteError> {
        match self {
            Writer::Stdout { target, lines } => {
                target.commit(lines).await.map_err(WriteError::Stdout)?;
                Ok(None)
            }
            Writer::AvroFile { settings, window } => {
                let Some(open) = window.take() else {
                    return Ok(None);
                };
                let (kept, result) = settings.commit(open, context).await;
                *window = kept;
                result
                    .map(|path| Some(path.display().to_string()))
                    .map_err(WriteError::File)
            }
            Writer::AvroBlob {
                settings, window, ..
            } => {
                let Some(open) = window.as_mut() else {
                    return Ok(None);
                };
                let metadata = blob::window_metadata(
                    context.first_sequence_number,
                    context.last_sequence_number,
                    events,
                );
                let result = settings.commit(open, metadata).await;
                if result.is_ok() || matches!(result, Err(BlobSinkError::WindowLost { .. })) {
                    *window = None;
                }
                result.map(Some).map_err(WriteError::Blob)
            }
        }
    }

    fn abandon(&mut self) {
        match self {
            Writer::Stdout { lines, .. } => lines.clear(),
            Writer::AvroFile { settings, window } => {
                if let Some(open) = window.take() {
                    settings.abandon(open);
                }
            }
            Writer::AvroBlob { window, .. } => *window = None,
        }
    }
}
