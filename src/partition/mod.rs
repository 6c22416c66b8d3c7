//! One owned partition: receive -> sink -> checkpoint what the sink committed, until drained or
//! lost.
//!
//! The order is the delivery contract: a checkpoint names only an event the sink has already
//! committed, and is written only through the partition's [`OwnershipLease`], which renews the
//! ownership (a compare-and-swap) immediately before. A lost partition abandons its open window
//! and never checkpoints again. What each error means is [`crate::recovery`]'s table; the
//! decisions themselves are pure functions in `progress.rs`.

mod checkpoint;
mod failures;
mod observe;
mod progress;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::checkpoint::Store;
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions,
};
use crate::health::Health;
use crate::lease::OwnershipLease;
use crate::metrics::PartitionMetrics;
use crate::recovery::Retry;
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
        // Samples spread over the interval, so partitions that start together do not all ask
        // `$management` at once.
        let mut last_lag_sample = Instant::now() - LAG_SAMPLE_INTERVAL.mul_f64(rand::random());
        let mut lag_sample: Option<observe::LagSample> = None;
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
                lag = observe::answered(&mut lag_sample) => {
                    lag_sample = None;
                    self.record_lag(lag);
                    continue;
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
            if lag_sample.is_none() && last_lag_sample.elapsed() >= LAG_SAMPLE_INTERVAL {
                last_lag_sample = Instant::now();
                lag_sample = Some(self.lag_sample(last));
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

    /// Checkpoints what the sink committed, retrying a failed commit first; decides what a
    /// sink error means. `None`: carry on receiving.
    async fn settle(
        &mut self,
        mut result: Result<Option<CommittedWindow>, SinkError>,
        position: &mut EventPosition,
    ) -> Option<Next> {
        // Built on the first failure only: settling is on the per-batch path.
        let mut retry: Option<Retry> = None;
        let window = loop {
            match result {
                Ok(None) => return None,
                Ok(Some(window)) => break window,
                Err(SinkError::Lost) => return Some(Next::Exit(self.lose())),
                Err(error) => {
                    self.sink_failed(&error);
                    if let SinkError::WindowDropped { reread_from, .. } = error {
                        *position = progress::from(reread_from);
                        return Some(Next::BackOff);
                    }
                    // The window is kept: stop receiving and retry its commit.
                    let retry = retry.get_or_insert_with(|| self.retry());
                    let asked = error.retry_after();
                    if retry
                        .pause_at_least(asked, self.lease.lost().cancelled())
                        .await
                        .is_some()
                    {
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
            p.sink_error_type = None;
            if window.last_sequence_number.is_some() {
                p.last_committed_sequence_number = window.last_sequence_number;
            }
        });
        let next = self.checkpoint(&window).await;
        if next.is_none() {
            // A reproduced window ended inside the batch: the rest of it was not taken.
            if let Some(sequence_number) = self.sink.take_reread() {
                *position = progress::from(sequence_number);
                return Some(Next::Reattach);
            }
        }
        next
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
