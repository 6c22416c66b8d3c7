//! One owned partition: receive -> sink -> checkpoint what the sink committed, until drained or
//! lost.
//!
//! The order is the delivery contract: a checkpoint names only an event the sink has already
//! committed, and is written only through the partition's [`OwnershipLease`], which renews the
//! ownership (a compare-and-swap) immediately before. A lost partition abandons its open window
//! and never checkpoints again. What each error means is [`crate::recovery`]'s table; the
//! decisions themselves are pure functions in [`progress`].

mod progress;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, Store};
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions,
};
use crate::health::Health;
use crate::lease::{CheckpointError, OwnershipLease};
use crate::metrics::PartitionMetrics;
use crate::recovery::Retry;
use crate::sink::{CommittedWindow, PartitionSink, SinkError};
use progress::AfterReceiveError;

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

/// What follows one receiver's life.
enum Next {
    /// Attach again at once at the (updated) position.
    Reattach,
    /// Back off, then attach again.
    BackOff,
    Exit(PartitionExit),
}

/// Why a receiver's loop ended.
enum Ended {
    Lost,
    Stopped,
    Then(Next),
}

/// How often a receiving partition asks `$management` how far behind it is.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

impl PartitionTask {
    pub async fn run(mut self) -> PartitionExit {
        let mut retry = self.retry();
        let mut position = self.start.clone();
        loop {
            match self.receive(&mut position, &mut retry).await {
                Next::Exit(exit) => return exit,
                Next::Reattach => {}
                Next::BackOff => match retry.pause(self.interrupted()).await {
                    None => {}
                    Some(Ended::Lost) => return self.lose(),
                    Some(_) => return self.drain().await,
                },
            }
        }
    }

    /// One receiver's life: attach at `position`, hand batches to the sink, checkpoint what it
    /// commits, until the link fails, the partition is lost or stopped, or the sink needs a
    /// re-read. `position` follows the events received.
    async fn receive(&mut self, position: &mut EventPosition, retry: &mut Retry) -> Next {
        let partition_id = self.lease.partition_id.clone();
        let opened = tokio::select! {
            opened = self.client.open_receiver(&partition_id, position, self.settings.receiver) => opened,
            _ = self.stop.cancelled() => return Next::Exit(self.drain().await),
            _ = self.lease.lost().cancelled() => return Next::Exit(self.lose()),
        };
        let mut receiver = match opened {
            Ok(receiver) => receiver,
            Err(error) => return self.receive_failed(error, position),
        };
        info!(partition_id = %partition_id, position = %position.filter_expression(), "receiving");
        self.health.eventhubs_reachable();
        self.health.partition(&partition_id, |p| {
            p.receiving = true;
            p.last_error = None;
        });
        let mut batch: Vec<ReceivedEvent> = Vec::with_capacity(self.settings.batch_size);
        let mut last_delivery = Instant::now();
        let mut last_lag_sample = Instant::now() - LAG_SAMPLE_INTERVAL;
        let ended = loop {
            let stuck_check = last_delivery + self.settings.stuck_timeout;
            let received = tokio::select! {
                biased;
                _ = self.lease.lost().cancelled() => break Ended::Lost,
                _ = self.stop.cancelled() => break Ended::Stopped,
                _ = self.sink.rollover_due() => {
                    let committed = self.sink.tick().await;
                    match self.settle(committed, position).await {
                        Some(next) => break Ended::Then(next),
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(stuck_check.into()) => {
                    last_delivery = Instant::now();
                    if self.is_stuck(position).await {
                        break Ended::Then(Next::Reattach);
                    }
                    continue;
                }
                received = receiver.recv_batch(self.settings.batch_size, &mut batch) => received,
            };
            if let Err(error) = received {
                // A partial batch is dropped: `position` is still before it.
                break Ended::Then(self.receive_failed(error, position));
            }
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                continue;
            };
            retry.reset();
            last_delivery = Instant::now();
            self.observe(&batch, first.sequence_number);
            if last_lag_sample.elapsed() >= LAG_SAMPLE_INTERVAL {
                last_lag_sample = Instant::now();
                self.sample_lag(last.sequence_number, last.enqueued_time_ms)
                    .await;
            }
            *position = progress::after(last.sequence_number);
            let committed = self.sink.append(&batch).await;
            batch.clear();
            if let Some(next) = self.settle(committed, position).await {
                break Ended::Then(next);
            }
        };
        receiver.close().await;
        match ended {
            Ended::Lost => Next::Exit(self.lose()),
            Ended::Stopped => Next::Exit(self.drain().await),
            Ended::Then(next) => next,
        }
    }

    /// Decides what an Event Hubs error means for this partition.
    fn receive_failed(&mut self, error: EventHubsError, position: &mut EventPosition) -> Next {
        let partition_id = &self.lease.partition_id;
        match progress::after_receive_error(error.recovery()) {
            AfterReceiveError::BackOffAndReattach => {
                self.metrics.reconnect(error.kind());
                self.health.partition(partition_id, |p| {
                    p.receiving = false;
                    p.last_error = Some(error.to_string());
                });
                warn!(partition_id = %partition_id, error = %error, error_type = error.kind(), "receive failed; retrying");
                Next::BackOff
            }
            AfterReceiveError::ReadFromEarliest => {
                self.metrics.position_fallback();
                warn!(partition_id = %partition_id, position = %position.filter_expression(), error = %error,
                    "start position not available; falling back to the earliest event");
                *position = EventPosition::Earliest;
                self.expected_sequence_number = None;
                Next::BackOff
            }
            AfterReceiveError::Lose => {
                info!(partition_id = %partition_id, event = "ownership_lost", error = %error, "partition taken by another reader");
                Next::Exit(self.lose())
            }
            AfterReceiveError::Stop => Next::Exit(PartitionExit::Fatal(error)),
        }
    }

    /// Checkpoints what the sink committed, retrying a failed commit first; decides what a
    /// sink error means. `None`: carry on receiving.
    async fn settle(
        &mut self,
        mut result: Result<Option<CommittedWindow>, SinkError>,
        position: &mut EventPosition,
    ) -> Option<Next> {
        let mut retry = self.retry();
        let window = loop {
            match result {
                Ok(None) => return None,
                Ok(Some(window)) => break window,
                Err(error) => {
                    self.sink_failed(&error);
                    if let SinkError::WindowDropped { reread_from, .. } = error {
                        *position = progress::from(reread_from);
                        return Some(Next::BackOff);
                    }
                    // The window is kept: stop receiving and retry its commit.
                    if retry.pause(self.lease.lost().cancelled()).await.is_some() {
                        return Some(Next::Exit(self.lose()));
                    }
                    result = self.sink.flush().await;
                }
            }
        };
        self.metrics
            .committed(window.events, window.bytes, window.commit_duration);
        self.health.partition(&self.lease.partition_id, |p| {
            p.sink_failing = false;
            if window.last_sequence_number.is_some() {
                p.last_committed_sequence_number = window.last_sequence_number;
            }
        });
        self.checkpoint(&window).await
    }

    fn sink_failed(&self, error: &SinkError) {
        self.metrics.sink_error(error.kind());
        self.health.partition(&self.lease.partition_id, |p| {
            p.sink_failing = true;
            p.last_error = Some(error.to_string());
        });
        warn!(partition_id = %self.lease.partition_id, error = %error, error_type = error.kind(),
            "sink failed; nothing checkpointed past the last committed window");
    }

    /// Writes the checkpoint for a committed window, retrying while the store fails (the
    /// partition reads nothing more meanwhile).
    async fn checkpoint(&mut self, window: &CommittedWindow) -> Option<Next> {
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
        let (lease, store) = (Arc::clone(&self.lease), Arc::clone(&self.store));
        let written = self
            .retry()
            .run(
                || lease.checkpoint(&store, &checkpoint),
                CheckpointError::recovery,
                |error| self.checkpoint_failed(error),
                std::future::pending(),
            )
            .await;
        match written {
            Some(Ok(())) => {
                self.metrics.checkpointed(last_sequence_number);
                self.health.store_reachable();
                self.health
                    .partition(&lease.partition_id, |p| p.checkpoint_failing = false);
                info!(partition_id = %lease.partition_id, events = window.events, bytes = window.bytes,
                    first_sequence_number = window.first_sequence_number.unwrap_or_default(),
                    last_sequence_number, location = window.location.as_deref().unwrap_or(""),
                    "window committed and checkpointed");
                None
            }
            _ => Some(Next::Exit(self.lose())),
        }
    }

    fn checkpoint_failed(&self, error: &CheckpointError) {
        if let CheckpointError::Store(error) = error {
            self.metrics.checkpoint_error(error.kind());
        }
        self.health.partition(&self.lease.partition_id, |p| {
            p.checkpoint_failing = true;
            p.last_error = Some(error.to_string());
        });
        warn!(partition_id = %self.lease.partition_id, error = %error,
            "checkpoint write failed; retrying before reading on");
    }

    /// Whether a silent receiver must be recycled: the service holds events past `position`.
    /// A failed question counts as "no".
    async fn is_stuck(&self, position: &EventPosition) -> bool {
        let partition_id = &self.lease.partition_id;
        let Ok(properties) = self.client.partition_properties(partition_id).await else {
            return false;
        };
        if !progress::has_backlog(position, self.expected_sequence_number, &properties) {
            return false;
        }
        self.metrics.receiver_recycled();
        warn!(partition_id = %partition_id, idle_seconds = self.settings.stuck_timeout.as_secs(),
            position = %position.filter_expression(),
            "partition has a backlog but its receiver delivered nothing; recycling the receiver");
        true
    }

    /// Asks the service where the partition ends and records how far behind `last` is.
    async fn sample_lag(&self, last_sequence_number: i64, last_enqueued_time_ms: i64) {
        let partition_id = &self.lease.partition_id;
        let Ok(properties) = self.client.partition_properties(partition_id).await else {
            return;
        };
        let (events, seconds) =
            progress::lag(&properties, last_sequence_number, last_enqueued_time_ms);
        self.metrics.lag(events, seconds);
        self.health
            .partition(partition_id, |p| p.lag_events = Some(events));
    }

    /// Counts a received batch, and warns once about events that expired before they were read.
    fn observe(&mut self, batch: &[ReceivedEvent], first_sequence_number: i64) {
        let body_bytes: usize = batch.iter().map(|e| e.body.len()).sum();
        self.metrics.received(batch.len(), body_bytes as u64);
        self.health.eventhubs_reachable();
        let expected = self.expected_sequence_number.take();
        if let Some(missed) = progress::expired_unread(expected, first_sequence_number) {
            self.metrics.expired(missed);
            warn!(partition_id = %self.lease.partition_id, expected_sequence_number = expected,
                first_available = first_sequence_number, missed,
                "events expired out of retention before they were read; continuing from the earliest available");
        }
    }

    async fn drain(&mut self) -> PartitionExit {
        let committed = self.sink.flush().await;
        let mut position = EventPosition::Earliest;
        match self.settle(committed, &mut position).await {
            Some(Next::Exit(exit)) => exit,
            // Not checkpointed (the window was dropped): the next owner reads it again.
            _ => PartitionExit::Drained,
        }
    }

    fn lose(&mut self) -> PartitionExit {
        let dropped = self.sink.abandon();
        info!(partition_id = %self.lease.partition_id, event = "ownership_lost", abandoned_events = dropped,
            "partition lost; open window abandoned, no further checkpoints");
        PartitionExit::Lost
    }

    /// Completes when the partition is lost or asked to stop.
    fn interrupted(&self) -> impl std::future::Future<Output = Ended> {
        let (lost, stop) = (self.lease.lost().clone(), self.stop.clone());
        async move {
            tokio::select! {
                _ = lost.cancelled() => Ended::Lost,
                _ = stop.cancelled() => Ended::Stopped,
            }
        }
    }

    fn retry(&self) -> Retry {
        Retry::new(
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        )
    }
}
