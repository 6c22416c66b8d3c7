//! One owned partition: receive -> sink window -> commit -> checkpoint, until drained or lost.
//!
//! The order is the delivery contract: a checkpoint names only an event the sink has already
//! committed, and is written only through the partition's [`OwnershipLease`], which renews the
//! ownership (a compare-and-swap) immediately before. A lost partition abandons its open window
//! and never checkpoints again.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::checkpoint::{Checkpoint, Store};
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions, Recovery,
};
use crate::health::Health;
use crate::lease::{CheckpointError, OwnershipLease};
use crate::metrics::PartitionMetrics;
use crate::sink::{CommittedWindow, PartitionSink, SinkError};

/// How a partition task ended.
#[derive(Debug)]
pub enum PartitionExit {
    /// Stopped on request after committing and checkpointing what it had.
    Drained,
    /// Another reader took the partition; nothing was checkpointed after that.
    Lost,
    /// An error retrying cannot fix (bad credentials, unknown hub).
    Fatal(EventHubsError),
}

/// Settings every partition task shares.
#[derive(Debug, Clone)]
pub struct PartitionSettings {
    pub receiver: ReceiverOptions,
    /// Most events handed to the sink at once.
    pub batch_size: usize,
    pub retry_min_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// Recycle a receiver that delivers nothing for this long while the partition has a backlog.
    pub stuck_timeout: Duration,
}

/// Everything one partition task needs.
pub struct PartitionTask {
    pub client: Arc<EventHubClient>,
    pub store: Arc<Store>,
    pub lease: Arc<OwnershipLease>,
    pub sink: PartitionSink,
    pub settings: PartitionSettings,
    /// Where to start: after the checkpoint, or the configured start position.
    pub start: EventPosition,
    /// The sequence number the first event should have, when resuming from a checkpoint;
    /// a later first event means events expired out of retention unread.
    pub expected_sequence_number: Option<i64>,
    /// Cancelled to drain: commit the open window, checkpoint, stop.
    pub stop: CancellationToken,
    pub metrics: PartitionMetrics,
    pub health: Arc<Health>,
}

enum Step {
    Continue,
    Exit(PartitionExit),
}

/// How often a receiving partition asks `$management` how far behind it is.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Why the receive loop stopped without leaving the partition.
enum Interrupted {
    /// The receive link failed.
    Receive(EventHubsError),
    /// The watchdog recycles an idle receiver.
    Recycle,
    /// The sink dropped the open window: receive its events again.
    Reread,
    /// The sink refused an append: back off, then receive the window's events again.
    SinkFailed,
}

/// The outcome of closing a window.
enum Committed {
    /// Committed and checkpointed (or nothing to commit).
    Done,
    /// The sink lost the window: receive again from this position.
    Reread(EventPosition),
    Exit(PartitionExit),
}

impl PartitionTask {
    pub async fn run(mut self) -> PartitionExit {
        let partition_id = self.lease.partition_id.clone();
        let mut rng = StdRng::from_entropy();
        let mut backoff = Backoff::new(
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        );
        let mut position = self.start.clone();
        let mut batch: Vec<ReceivedEvent> = Vec::with_capacity(self.settings.batch_size);
        if let Err(error) = self.sink.open_empty_window_if_configured() {
            warn!(partition_id = %partition_id, error = %error, "cannot open the first window");
        }
        loop {
            if self.stop.is_cancelled() {
                return self.drain().await;
            }
            let opened = tokio::select! {
                opened = self.client.open_receiver(&partition_id, &position, self.settings.receiver) => opened,
                _ = self.stop.cancelled() => continue,
                _ = self.lease.lost().cancelled() => return self.lose(),
            };
            let mut receiver = match opened {
                Ok(receiver) => receiver,
                Err(error) => match self.recover(error, &mut position) {
                    Step::Exit(exit) => return exit,
                    Step::Continue => {
                        let delay = backoff.next_delay(&mut rng);
                        if let Some(exit) = self.pause(delay).await {
                            return exit;
                        }
                        continue;
                    }
                },
            };
            info!(partition_id = %partition_id, position = %position.filter_expression(), "receiving");
            self.health.eventhubs_reachable();
            self.health.partition(&partition_id, |p| {
                p.receiving = true;
                p.last_error = None;
            });
            let mut last_delivery = std::time::Instant::now();
            let mut last_lag_sample = std::time::Instant::now() - LAG_SAMPLE_INTERVAL;
            let interrupted = loop {
                let deadline = self.sink.window_deadline();
                let stuck_check = last_delivery + self.settings.stuck_timeout;
                let received = tokio::select! {
                    biased;
                    _ = self.lease.lost().cancelled() => {
                        receiver.close().await;
                        return self.lose();
                    }
                    _ = self.stop.cancelled() => {
                        receiver.close().await;
                        return self.drain().await;
                    }
                    _ = sleep_until(deadline) => None,
                    _ = tokio::time::sleep_until(stuck_check.into()) => {
                        last_delivery = std::time::Instant::now();
                        if self.has_backlog_past(&position).await {
                            self.metrics.receiver_recycled();
                            warn!(partition_id = %partition_id, idle_seconds = self.settings.stuck_timeout.as_secs(),
                                position = %position.filter_expression(),
                                "partition has a backlog but its receiver delivered nothing; recycling the receiver");
                            break Interrupted::Recycle;
                        }
                        continue;
                    }
                    received = receiver.recv_batch(self.settings.batch_size, &mut batch) => Some(received),
                };
                match received {
                    None => match self.commit_and_checkpoint(&mut rng).await {
                        Committed::Done => {}
                        Committed::Reread(from) => {
                            position = from;
                            break Interrupted::Reread;
                        }
                        Committed::Exit(exit) => {
                            receiver.close().await;
                            return exit;
                        }
                    },
                    Some(Ok(())) => {
                        backoff.reset();
                        last_delivery = std::time::Instant::now();
                        self.note_gap(&batch);
                        self.observe_batch(&batch, receiver.last_enqueued());
                        if let Some(last) = batch.last() {
                            if last_lag_sample.elapsed() >= LAG_SAMPLE_INTERVAL {
                                last_lag_sample = std::time::Instant::now();
                                self.sample_lag(last.sequence_number, last.enqueued_time_ms)
                                    .await;
                            }
                        }
                        if let Some(last) = batch.last() {
                            position = EventPosition::SequenceNumber {
                                sequence_number: last.sequence_number,
                                inclusive: false,
                            };
                        }
                        if let Err(error) = self.sink.append(&batch).await {
                            // Nothing of this window is durable yet: drop it and read it again.
                            warn!(partition_id = %partition_id, error = %error, error_type = error.kind(),
                                "sink append failed; re-reading the open window");
                            let restart = self
                                .sink
                                .window_first_sequence_number()
                                .or(batch.first().map(|e| e.sequence_number));
                            self.sink.abandon();
                            if let Some(sequence_number) = restart {
                                position = EventPosition::SequenceNumber {
                                    sequence_number,
                                    inclusive: true,
                                };
                            }
                            batch.clear();
                            self.metrics.sink_error(error.kind());
                            let reason = error.to_string();
                            self.health.partition(&partition_id, |p| {
                                p.sink_failing = true;
                                p.last_error = Some(reason);
                            });
                            break Interrupted::SinkFailed;
                        }
                        batch.clear();
                        if self.sink.window_full() {
                            match self.commit_and_checkpoint(&mut rng).await {
                                Committed::Done => {}
                                Committed::Reread(from) => {
                                    position = from;
                                    break Interrupted::Reread;
                                }
                                Committed::Exit(exit) => {
                                    receiver.close().await;
                                    return exit;
                                }
                            }
                        }
                    }
                    Some(Err(error)) => break Interrupted::Receive(error),
                }
            };
            // Events received before a failure are in the open window; resume after them.
            batch.clear();
            receiver.close().await;
            let failure = match interrupted {
                Interrupted::Receive(error) => error,
                // A recycled receiver or a dropped window: read again at once from `position`.
                Interrupted::Recycle | Interrupted::Reread => continue,
                // The sink refused events (disk full, storage down): back off before re-reading.
                Interrupted::SinkFailed => {
                    let delay = backoff.next_delay(&mut rng);
                    if let Some(exit) = self.pause(delay).await {
                        return exit;
                    }
                    continue;
                }
            };
            match self.recover(failure, &mut position) {
                Step::Exit(exit) => return exit,
                Step::Continue => {
                    let delay = backoff.next_delay(&mut rng);
                    if let Some(exit) = self.pause(delay).await {
                        return exit;
                    }
                }
            }
        }
    }

    /// Decides what an Event Hubs error means for this partition.
    fn recover(&mut self, error: EventHubsError, position: &mut EventPosition) -> Step {
        let partition_id = &self.lease.partition_id;
        match error.recovery() {
            Recovery::Retry | Recovery::Reconnect => {
                self.metrics.reconnect(error.kind());
                self.health.partition(partition_id, |p| {
                    p.receiving = false;
                    p.last_error = Some(error.to_string());
                });
                warn!(partition_id = %partition_id, error = %error, error_type = error.kind(), "receive failed; retrying");
                Step::Continue
            }
            Recovery::PartitionLost => {
                info!(partition_id = %partition_id, event = "ownership_lost", error = %error, "partition taken by another reader");
                Step::Exit(self.lose())
            }
            Recovery::PositionUnavailable => {
                self.metrics.position_fallback();
                // A checkpoint past the end of the partition (a recreated hub): read everything
                // that is there rather than skip anything.
                warn!(partition_id = %partition_id, position = %position.filter_expression(), error = %error,
                    "start position not available; falling back to the earliest event");
                *position = EventPosition::Earliest;
                self.expected_sequence_number = None;
                Step::Continue
            }
            Recovery::Fatal => Step::Exit(PartitionExit::Fatal(error)),
        }
    }

    /// Sleeps before a retry; returns an exit if the partition is lost or stopped meanwhile.
    async fn pause(&mut self, delay: Duration) -> Option<PartitionExit> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            _ = self.lease.lost().cancelled() => Some(self.lose()),
            _ = self.stop.cancelled() => Some(self.drain().await),
        }
    }

    /// Whether the service holds events after `position` (the watchdog's question). Errors
    /// count as "no": the watchdog must never recycle on guesses.
    async fn has_backlog_past(&self, position: &EventPosition) -> bool {
        let Ok(properties) = self
            .client
            .partition_properties(&self.lease.partition_id)
            .await
        else {
            return false;
        };
        if properties.is_empty {
            return false;
        }
        match position {
            EventPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => {
                let next = if *inclusive {
                    *sequence_number
                } else {
                    sequence_number + 1
                };
                properties.last_enqueued_sequence_number >= next
            }
            EventPosition::Earliest => true,
            EventPosition::Offset { .. } => match self.expected_sequence_number {
                Some(next) => properties.last_enqueued_sequence_number >= next,
                None => false,
            },
            EventPosition::Latest | EventPosition::EnqueuedTime { .. } => false,
        }
    }

    /// Asks the service where the partition ends and records how far behind `last` is.
    async fn sample_lag(&self, last_sequence_number: i64, last_enqueued_time_ms: i64) {
        let Ok(properties) = self
            .client
            .partition_properties(&self.lease.partition_id)
            .await
        else {
            return;
        };
        let events = properties.last_enqueued_sequence_number - last_sequence_number;
        let seconds = (properties.last_enqueued_time_ms - last_enqueued_time_ms) as f64 / 1000.0;
        self.metrics.lag(events, seconds);
        self.health.partition(&self.lease.partition_id, |p| {
            p.lag_events = Some(events.max(0))
        });
    }

    /// Records a received batch: counters, and lag from the service's last-enqueued information.
    fn observe_batch(
        &self,
        batch: &[ReceivedEvent],
        last_enqueued: Option<crate::eventhubs::receiver::LastEnqueued>,
    ) {
        let Some(last) = batch.last() else { return };
        let body_bytes: usize = batch.iter().map(|e| e.body.len()).sum();
        self.metrics.received(batch.len(), body_bytes as u64);
        let lag = last_enqueued.map(|end| {
            let events = end.sequence_number - last.sequence_number;
            let seconds = (end.enqueued_time_ms - last.enqueued_time_ms) as f64 / 1000.0;
            (events, seconds)
        });
        if let Some((events, seconds)) = lag {
            self.metrics.lag(events, seconds);
        }
        self.health.eventhubs_reachable();
        self.health.partition(&self.lease.partition_id, |p| {
            if let Some((events, _)) = lag {
                p.lag_events = Some(events.max(0));
            }
            p.last_progress = Some(std::time::Instant::now());
        });
    }

    fn note_gap(&mut self, batch: &[ReceivedEvent]) {
        let Some(first) = batch.first() else { return };
        if let Some(expected) = self.expected_sequence_number.take() {
            if first.sequence_number > expected {
                self.metrics
                    .expired((first.sequence_number - expected) as u64);
                warn!(
                    partition_id = %self.lease.partition_id,
                    expected_sequence_number = expected,
                    first_available = first.sequence_number,
                    missed = first.sequence_number - expected,
                    "events expired out of retention before they were read; continuing from the earliest available"
                );
            }
        }
    }

    /// Commits the open window and checkpoints it, retrying the sink with backoff (the
    /// partition stops receiving meanwhile). A window the sink lost must be read again: that
    /// comes back as [`Committed::Reread`].
    async fn commit_and_checkpoint(&mut self, rng: &mut StdRng) -> Committed {
        let mut backoff = Backoff::new(
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        );
        loop {
            let started = std::time::Instant::now();
            match self.sink.commit().await {
                Ok(Some(window)) => {
                    self.metrics
                        .committed(window.events, window.bytes, started.elapsed());
                    self.health.partition(&self.lease.partition_id, |p| {
                        p.sink_failing = false;
                        if window.last_sequence_number.is_some() {
                            p.last_committed_sequence_number = window.last_sequence_number;
                        }
                    });
                    if let Some(exit) = self.checkpoint(&window).await {
                        return Committed::Exit(exit);
                    }
                    if let Err(error) = self.sink.open_empty_window_if_configured() {
                        warn!(partition_id = %self.lease.partition_id, error = %error, "cannot open the next window");
                    }
                    return Committed::Done;
                }
                Ok(None) => return Committed::Done,
                Err(SinkError::WindowLost {
                    first_sequence_number,
                    reason,
                }) => {
                    warn!(partition_id = %self.lease.partition_id, reason = %reason, first_sequence_number,
                        "sink lost the open window; reading its events again");
                    return Committed::Reread(EventPosition::SequenceNumber {
                        sequence_number: first_sequence_number,
                        inclusive: true,
                    });
                }
                Err(error) => {
                    self.metrics.sink_error(error.kind());
                    self.health.partition(&self.lease.partition_id, |p| {
                        p.sink_failing = true;
                        p.last_error = Some(error.to_string());
                    });
                    warn!(partition_id = %self.lease.partition_id, error = %error, error_type = error.kind(),
                        "sink commit failed; retrying without checkpointing");
                    let delay = backoff.next_delay(rng);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.lease.lost().cancelled() => return Committed::Exit(self.lose()),
                    }
                }
            }
        }
    }

    async fn checkpoint(&mut self, window: &CommittedWindow) -> Option<PartitionExit> {
        let (Some(last_sequence_number), Some(last_offset)) =
            (window.last_sequence_number, window.last_offset.clone())
        else {
            info!(partition_id = %self.lease.partition_id, location = window.location.as_deref().unwrap_or(""),
                "empty window committed");
            return None;
        };
        let checkpoint = Checkpoint {
            partition_id: self.lease.partition_id.clone(),
            offset: Some(last_offset),
            sequence_number: Some(last_sequence_number),
        };
        match self.lease.checkpoint(&self.store, &checkpoint).await {
            Ok(()) => {
                self.metrics.checkpointed(last_sequence_number);
                self.health.store_reachable();
                info!(partition_id = %self.lease.partition_id, events = window.events, bytes = window.bytes,
                    first_sequence_number = window.first_sequence_number.unwrap_or_default(),
                    last_sequence_number, location = window.location.as_deref().unwrap_or(""),
                    "window committed and checkpointed");
                None
            }
            Err(CheckpointError::Lost { .. }) => Some(self.lose()),
            Err(CheckpointError::Store(error)) => {
                self.metrics.checkpoint_error(error.kind());
                // The window is committed; the next window's checkpoint covers it too. A crash
                // before then re-reads these events: duplicates, never loss.
                warn!(partition_id = %self.lease.partition_id, error = %error,
                    "checkpoint write failed; the next window will checkpoint past it");
                None
            }
        }
    }

    async fn drain(&mut self) -> PartitionExit {
        let mut rng = StdRng::from_entropy();
        match self.commit_and_checkpoint(&mut rng).await {
            Committed::Exit(exit) => exit,
            // Not checkpointed: the next owner reads the lost window again.
            Committed::Done | Committed::Reread(_) => PartitionExit::Drained,
        }
    }

    fn lose(&mut self) -> PartitionExit {
        let dropped = self.sink.window_events();
        self.sink.abandon();
        info!(partition_id = %self.lease.partition_id, event = "ownership_lost", abandoned_events = dropped,
            "partition lost; open window abandoned, no further checkpoints");
        PartitionExit::Lost
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
