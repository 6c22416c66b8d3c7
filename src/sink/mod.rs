//! Sinks: where a partition's events go, one window at a time.
//!
//! A window opens with its first event (or, with `skip_empty = false`, as soon as the previous
//! one closed) and closes when it reaches `max_window` age or `max_window_bytes`, whichever
//! comes first, or at shutdown. Closing it commits: the sink makes the window durable and
//! reports the last event in it, which is then (and only then) checkpointed. A window that
//! cannot be committed stays open and is retried; one that cannot be finished at all is dropped
//! and its events are read again; one whose partition was lost is abandoned.

pub mod avro;
pub mod blob;
pub mod codec;
pub mod file;
pub mod path_format;
pub mod stdout;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::eventhubs::ReceivedEvent;
use blob::{BlobNames, BlobSinkError, BlobSinkSettings, BlobWindow};
pub use codec::Codec;
use file::{FileSinkError, FileSinkSettings, FileWindow};
use path_format::PathContext;

/// When windows close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    pub max_age: Duration,
    pub max_bytes: u64,
    /// Write nothing for a window without events.
    pub skip_empty: bool,
}

/// What a commit made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedWindow {
    /// `None` for an empty window (nothing to checkpoint).
    pub first_sequence_number: Option<i64>,
    pub last_sequence_number: Option<i64>,
    pub last_offset: Option<String>,
    pub events: u64,
    pub bytes: u64,
    /// Where the window went (a file path), if the sink names it.
    pub location: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    File(FileSinkError),
    #[error(transparent)]
    Blob(BlobSinkError),
    /// The open window could not be completed and was dropped: read it again from here.
    #[error("window lost ({reason}); re-reading from sequence number {first_sequence_number}")]
    WindowLost {
        first_sequence_number: i64,
        reason: String,
    },
}

impl SinkError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Stdout(_) => "stdout",
            SinkError::File(_) => "file",
            SinkError::Blob(_) => "blob",
            SinkError::WindowLost { .. } => "window_lost",
        }
    }
}

/// The configured sink, shared by every partition.
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
    AvroFile(Arc<FileSinkSettings>),
    AvroBlob(Arc<BlobSinkSettings>),
}

impl Sink {
    pub fn open_partition(
        &self,
        partition_id: &str,
        settings: WindowSettings,
        names: Arc<WindowNames>,
    ) -> PartitionSink {
        if let Sink::AvroFile(file) = self {
            file.clean_staging(partition_id);
        }
        PartitionSink {
            partition_id: partition_id.to_owned(),
            settings,
            sink: self.clone(),
            names,
            blob_names: BlobNames::default(),
            window: None,
        }
    }
}

/// One partition's writer and its open window.
#[derive(Debug)]
pub struct PartitionSink {
    partition_id: String,
    settings: WindowSettings,
    sink: Sink,
    /// Names path formats substitute.
    names: Arc<WindowNames>,
    /// Blob names given so far (avro_blob only).
    blob_names: BlobNames,
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
    output: Output,
}

#[derive(Debug)]
enum Output {
    /// Complete JSON lines of the window.
    Stdout(Vec<u8>),
    AvroFile(FileWindow),
    AvroBlob(BlobWindow),
}

impl Output {
    fn bytes(&self) -> u64 {
        match self {
            Output::Stdout(buffer) => buffer.len() as u64,
            Output::AvroFile(window) => window.bytes(),
            Output::AvroBlob(window) => window.bytes(),
        }
    }
}

impl PartitionSink {
    fn open_window(&mut self, first_sequence_number: Option<i64>) -> Result<OpenWindow, SinkError> {
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let output = match &self.sink {
            Sink::Stdout => Output::Stdout(Vec::new()),
            Sink::AvroFile(file) => Output::AvroFile(
                file.open_window(&self.partition_id)
                    .map_err(SinkError::File)?,
            ),
            Sink::AvroBlob(blob) => Output::AvroBlob(
                blob.open_window(
                    &PathContext {
                        namespace: &self.names.namespace,
                        event_hub: &self.names.event_hub,
                        consumer_group: &self.names.consumer_group,
                        partition_id: &self.partition_id,
                        window_start_ms: started_ms,
                        first_sequence_number: first_sequence_number.unwrap_or(-1),
                        last_sequence_number: -1,
                    },
                    &mut self.blob_names,
                )
                .map_err(SinkError::Blob)?,
            ),
        };
        Ok(OpenWindow {
            opened_at: Instant::now(),
            started_ms,
            first_sequence_number: None,
            last_sequence_number: None,
            last_offset: None,
            events: 0,
            output,
        })
    }

    /// With `skip_empty = false`, opens a window now so that a window with no events still
    /// produces a (empty) file when it closes, as Capture does.
    pub fn open_empty_window_if_configured(&mut self) -> Result<(), SinkError> {
        if !self.settings.skip_empty && self.window.is_none() {
            self.window = Some(self.open_window(None)?);
        }
        Ok(())
    }

    /// Adds events to the open window, opening one if needed. On error nothing of the window
    /// is durable: the caller drops it and reads its events again.
    pub async fn append(&mut self, events: &[ReceivedEvent]) -> Result<(), SinkError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        if self.window.is_none() {
            self.window = Some(self.open_window(Some(events[0].sequence_number))?);
        }
        let Some(window) = self.window.as_mut() else {
            return Ok(());
        };
        window
            .first_sequence_number
            .get_or_insert(events[0].sequence_number);
        match &mut window.output {
            Output::Stdout(buffer) => {
                for event in events {
                    stdout::write_line(&self.partition_id, event, buffer);
                }
            }
            Output::AvroFile(file) => {
                for event in events {
                    file.append(event).map_err(SinkError::File)?;
                }
            }
            Output::AvroBlob(blob) => {
                let Sink::AvroBlob(settings) = &self.sink else {
                    unreachable!("a blob window belongs to an avro_blob sink");
                };
                settings
                    .append(blob, events)
                    .await
                    .map_err(SinkError::Blob)?;
            }
        }
        window.events += events.len() as u64;
        window.last_sequence_number = Some(last.sequence_number);
        window.last_offset = Some(last.offset.clone());
        Ok(())
    }

    /// When the open window reaches its maximum age, if one is open.
    pub fn window_deadline(&self) -> Option<Instant> {
        self.window
            .as_ref()
            .map(|w| w.opened_at + self.settings.max_age)
    }

    /// Whether the open window has reached its size limit.
    pub fn window_full(&self) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.output.bytes() >= self.settings.max_bytes)
    }

    /// Sequence number of the first event in the open window.
    pub fn window_first_sequence_number(&self) -> Option<i64> {
        self.window.as_ref().and_then(|w| w.first_sequence_number)
    }

    /// Events in the open window.
    pub fn window_events(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.events)
    }

    /// Makes the open window durable. `Ok(None)` when no window is open. On error the window
    /// stays open and a later commit retries it, except for [`SinkError::WindowLost`].
    pub async fn commit(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        let Some(mut window) = self.window.take() else {
            return Ok(None);
        };
        if window.events == 0 && self.settings.skip_empty {
            self.drop_window(window);
            return Ok(None);
        }
        let bytes = window.output.bytes();
        let (output, result) = match (window.output, &self.sink) {
            (Output::Stdout(mut buffer), _) => {
                let result = commit_stdout(&mut buffer).await.map(|()| None);
                (Output::Stdout(buffer), result)
            }
            (Output::AvroFile(mut file_window), Sink::AvroFile(settings)) => 'file: {
                if let Err(error) = file_window.end_block() {
                    break 'file (Output::AvroFile(file_window), Err(SinkError::File(error)));
                }
                let settings = Arc::clone(settings);
                let names = Arc::clone(&self.names);
                let partition_id = self.partition_id.clone();
                let (started_ms, first, last) = (
                    window.started_ms,
                    window.first_sequence_number.unwrap_or(-1),
                    window.last_sequence_number.unwrap_or(-1),
                );
                // fsync, link and rename block: keep them off the async workers.
                let joined = tokio::task::spawn_blocking(move || {
                    let context = PathContext {
                        namespace: &names.namespace,
                        event_hub: &names.event_hub,
                        consumer_group: &names.consumer_group,
                        partition_id: &partition_id,
                        window_start_ms: started_ms,
                        first_sequence_number: first,
                        last_sequence_number: last,
                    };
                    let result = settings.commit(&mut file_window, &context);
                    (file_window, result)
                })
                .await;
                match joined {
                    Ok((file_window, result)) => (
                        Output::AvroFile(file_window),
                        result
                            .map(|path| Some(path.display().to_string()))
                            .map_err(SinkError::File),
                    ),
                    Err(join) => {
                        return Err(SinkError::WindowLost {
                            first_sequence_number: window.first_sequence_number.unwrap_or(0),
                            reason: format!("the commit task failed: {join}"),
                        })
                    }
                }
            }
            (Output::AvroBlob(mut blob_window), Sink::AvroBlob(settings)) => {
                let metadata = blob::window_metadata(
                    window.first_sequence_number.unwrap_or(-1),
                    window.last_sequence_number.unwrap_or(-1),
                    window.events,
                );
                let result = settings.commit(&mut blob_window, metadata).await;
                (
                    Output::AvroBlob(blob_window),
                    result.map(Some).map_err(SinkError::Blob),
                )
            }
            (output, _) => unreachable!("window output {output:?} does not match its sink"),
        };
        window.output = output;
        match result {
            Ok(location) => Ok(Some(CommittedWindow {
                first_sequence_number: window.first_sequence_number,
                last_sequence_number: window.last_sequence_number,
                last_offset: window.last_offset.clone(),
                events: window.events,
                bytes,
                location,
            })),
            Err(
                SinkError::File(FileSinkError::WindowLost { reason })
                | SinkError::Blob(BlobSinkError::WindowLost { reason }),
            ) => {
                let first = window.first_sequence_number;
                self.drop_window(window);
                match first {
                    Some(first_sequence_number) => Err(SinkError::WindowLost {
                        first_sequence_number,
                        reason,
                    }),
                    // An empty window that could not be written: nothing to read again.
                    None => Ok(None),
                }
            }
            Err(error) => {
                self.window = Some(window);
                Err(error)
            }
        }
    }

    /// Drops the open window without writing it (its partition was lost, or it failed).
    pub fn abandon(&mut self) {
        if let Some(window) = self.window.take() {
            self.drop_window(window);
        }
    }

    fn drop_window(&self, window: OpenWindow) {
        if let (Output::AvroFile(file_window), Sink::AvroFile(settings)) =
            (window.output, &self.sink)
        {
            settings.abandon(file_window);
        }
    }
}

/// Names that path formats substitute, fixed for the process.
#[derive(Debug, Clone, Default)]
pub struct WindowNames {
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
}

async fn commit_stdout(buffer: &mut Vec<u8>) -> Result<(), SinkError> {
    let lines = std::mem::take(buffer);
    let (lines, result) = tokio::task::spawn_blocking(move || {
        let result = stdout::commit(&lines);
        (lines, result)
    })
    .await
    .map_err(|join| SinkError::Stdout(std::io::Error::other(join.to_string())))?;
    if result.is_err() {
        *buffer = lines;
    }
    result.map_err(SinkError::Stdout)
}
