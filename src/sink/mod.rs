//! Sinks: where a partition's events go, one window at a time.
//!
//! A window opens with its first event and closes when it reaches `max_window` age or
//! `max_window_bytes`, whichever comes first, or at shutdown. Closing it commits: the sink makes
//! the window durable and reports the last event in it, which is then (and only then)
//! checkpointed. A window that cannot be committed stays open and is retried; one whose partition
//! was lost is abandoned.

pub mod stdout;

use std::time::{Duration, Instant};

use crate::eventhubs::ReceivedEvent;

/// When windows close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    pub max_age: Duration,
    pub max_bytes: u64,
}

/// What a commit made durable: the checkpoint to write next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedWindow {
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub last_offset: String,
    pub events: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

impl SinkError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Stdout(_) => "stdout",
        }
    }
}

/// The configured sink, shared by every partition.
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
}

impl Sink {
    pub fn open_partition(&self, partition_id: &str, settings: WindowSettings) -> PartitionSink {
        PartitionSink {
            partition_id: partition_id.to_owned(),
            settings,
            output: match self {
                Sink::Stdout => Output::Stdout { buffer: Vec::new() },
            },
            window: None,
        }
    }
}

/// One partition's writer and its open window.
#[derive(Debug)]
pub struct PartitionSink {
    partition_id: String,
    settings: WindowSettings,
    output: Output,
    window: Option<OpenWindow>,
}

#[derive(Debug)]
enum Output {
    /// Complete JSON lines of the open window.
    Stdout { buffer: Vec<u8> },
}

#[derive(Debug, Clone)]
struct OpenWindow {
    opened_at: Instant,
    first_sequence_number: i64,
    last_sequence_number: i64,
    last_offset: String,
    events: u64,
    bytes: u64,
}

impl PartitionSink {
    /// Adds events to the open window, opening one if needed.
    pub fn append(&mut self, events: &[ReceivedEvent]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let window = self.window.get_or_insert_with(|| OpenWindow {
            opened_at: Instant::now(),
            first_sequence_number: first.sequence_number,
            last_sequence_number: first.sequence_number,
            last_offset: String::new(),
            events: 0,
            bytes: 0,
        });
        match &mut self.output {
            Output::Stdout { buffer } => {
                let before = buffer.len();
                for event in events {
                    stdout::write_line(&self.partition_id, event, buffer);
                }
                window.bytes += (buffer.len() - before) as u64;
            }
        }
        window.events += events.len() as u64;
        window.last_sequence_number = last.sequence_number;
        window.last_offset.clone_from(&last.offset);
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
            .is_some_and(|w| w.bytes >= self.settings.max_bytes)
    }

    /// Sequence number of the first event in the open window.
    pub fn window_first_sequence_number(&self) -> Option<i64> {
        self.window.as_ref().map(|w| w.first_sequence_number)
    }

    /// Events in the open window.
    pub fn window_events(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.events)
    }

    /// Makes the open window durable. `Ok(None)` when no window is open. On error the window
    /// stays open, complete, and a later commit retries it.
    pub async fn commit(&mut self) -> Result<Option<CommittedWindow>, SinkError> {
        let Some(window) = self.window.as_ref() else {
            return Ok(None);
        };
        match &mut self.output {
            Output::Stdout { buffer } => {
                let lines = std::mem::take(buffer);
                let written = tokio::task::spawn_blocking(move || {
                    let result = stdout::commit(&lines);
                    (lines, result)
                })
                .await;
                match written {
                    Ok((_, Ok(()))) => {}
                    Ok((lines, Err(error))) => {
                        *buffer = lines;
                        return Err(SinkError::Stdout(error));
                    }
                    Err(join) => {
                        return Err(SinkError::Stdout(std::io::Error::other(join.to_string())))
                    }
                }
            }
        }
        let committed = CommittedWindow {
            first_sequence_number: window.first_sequence_number,
            last_sequence_number: window.last_sequence_number,
            last_offset: window.last_offset.clone(),
            events: window.events,
            bytes: window.bytes,
        };
        self.window = None;
        Ok(Some(committed))
    }

    /// Drops the open window without writing it (its partition was lost).
    pub fn abandon(&mut self) {
        self.window = None;
        match &mut self.output {
            Output::Stdout { buffer } => buffer.clear(),
        }
    }
}
