//! One owned partition: receive -> sink window -> commit -> checkpoint, until drained or lost.
//!
//! The order is the delivery contract: a checkpoint names only an event the sink has already
//! committed, and is written only while this instance still holds the partition (the lease's
//! compare-and-swap renewal immediately before the write, under the lease lock). A lost
//! partition abandons its open window and never checkpoints again.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::checkpoint::{
    Checkpoint, CheckpointStore, Ownership, OwnershipClaim, Store, StoreError,
};
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions, Recovery,
};
use crate::sink::{CommittedWindow, PartitionSink};

/// The right to checkpoint one partition. Both the supervisor's renewals and the partition's
/// checkpoints go through it, so the version used for each compare-and-swap is always current.
#[derive(Debug)]
pub struct OwnershipLease {
    pub partition_id: String,
    /// The record as last written by this instance; the lock serialises renewals and
    /// checkpoints.
    ownership: Mutex<Ownership>,
    /// Cancelled for good when a renewal finds the partition owned by someone else.
    lost: CancellationToken,
}

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("partition {partition_id} is no longer owned by this instance")]
    Lost { partition_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OwnershipLease {
    pub fn new(ownership: Ownership) -> Self {
        Self {
            partition_id: ownership.partition_id.clone(),
            ownership: Mutex::new(ownership),
            lost: CancellationToken::new(),
        }
    }

    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Renews the ownership (compare-and-swap on the last version); marks the lease lost if
    /// another instance wrote the record since.
    pub async fn renew(&self, store: &Store) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        self.renew_locked(store, &mut ownership).await
    }

    async fn renew_locked(
        &self,
        store: &Store,
        ownership: &mut Ownership,
    ) -> Result<(), CheckpointError> {
        if self.lost.is_cancelled() {
            return Err(self.lost_error());
        }
        let claim = OwnershipClaim {
            partition_id: ownership.partition_id.clone(),
            owner_id: ownership.owner_id.clone(),
            version: Some(ownership.version.clone()),
        };
        let won = store.claim_ownership(std::slice::from_ref(&claim)).await?;
        match won.into_iter().next() {
            Some(renewed) => {
                *ownership = renewed;
                Ok(())
            }
            None => {
                self.lost.cancel();
                Err(self.lost_error())
            }
        }
    }

    /// Writes `checkpoint` only if this instance still owns the partition.
    pub async fn checkpoint(
        &self,
        store: &Store,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        self.renew_locked(store, &mut ownership).await?;
        store.update_checkpoint(checkpoint).await?;
        Ok(())
    }

    /// Gives the partition up (`ownerid = ""`) so another instance can claim it at once.
    pub async fn release(&self, store: &Store) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        if self.lost.is_cancelled() {
            return Ok(());
        }
        let claim = OwnershipClaim {
            partition_id: ownership.partition_id.clone(),
            owner_id: String::new(),
            version: Some(ownership.version.clone()),
        };
        let released = store.claim_ownership(std::slice::from_ref(&claim)).await?;
        self.lost.cancel();
        if let Some(record) = released.into_iter().next() {
            *ownership = record;
        }
        Ok(())
    }

    fn lost_error(&self) -> CheckpointError {
        CheckpointError::Lost {
            partition_id: self.partition_id.clone(),
        }
    }
}

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
}

enum Step {
    Continue,
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
            let failure = loop {
                let deadline = self.sink.window_deadline();
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
                    received = receiver.recv_batch(self.settings.batch_size, &mut batch) => Some(received),
                };
                match received {
                    None => {
                        if let Some(exit) = self.commit_and_checkpoint(&mut rng).await {
                            receiver.close().await;
                            return exit;
                        }
                    }
                    Some(Ok(())) => {
                        backoff.reset();
                        self.note_gap(&batch);
                        if let Some(last) = batch.last() {
                            position = EventPosition::SequenceNumber {
                                sequence_number: last.sequence_number,
                                inclusive: false,
                            };
                        }
                        if let Err(error) = self.sink.append(&batch) {
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
                            break EventHubsError::Protocol {
                                reason: format!("sink append failed: {error}"),
                            };
                        }
                        batch.clear();
                        if self.sink.window_full() {
                            if let Some(exit) = self.commit_and_checkpoint(&mut rng).await {
                                receiver.close().await;
                                return exit;
                            }
                        }
                    }
                    Some(Err(error)) => break error,
                }
            };
            // Events received before the failure are in the open window; resume after them.
            batch.clear();
            receiver.close().await;
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
                warn!(partition_id = %partition_id, error = %error, error_type = error.kind(), "receive failed; retrying");
                Step::Continue
            }
            Recovery::PartitionLost => {
                info!(partition_id = %partition_id, event = "ownership_lost", error = %error, "partition taken by another reader");
                Step::Exit(self.lose())
            }
            Recovery::PositionUnavailable => {
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

    fn note_gap(&mut self, batch: &[ReceivedEvent]) {
        let Some(first) = batch.first() else { return };
        if let Some(expected) = self.expected_sequence_number.take() {
            if first.sequence_number > expected {
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
    /// partition stops receiving meanwhile). Returns an exit if the partition was lost or
    /// stopped during the retries.
    async fn commit_and_checkpoint(&mut self, rng: &mut StdRng) -> Option<PartitionExit> {
        let mut backoff = Backoff::new(
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        );
        loop {
            match self.sink.commit().await {
                Ok(Some(window)) => return self.checkpoint(&window).await,
                Ok(None) => return None,
                Err(error) => {
                    warn!(partition_id = %self.lease.partition_id, error = %error, error_type = error.kind(),
                        "sink commit failed; retrying without checkpointing");
                    let delay = backoff.next_delay(rng);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.lease.lost().cancelled() => return Some(self.lose()),
                    }
                }
            }
        }
    }

    async fn checkpoint(&mut self, window: &CommittedWindow) -> Option<PartitionExit> {
        let checkpoint = Checkpoint {
            partition_id: self.lease.partition_id.clone(),
            offset: Some(window.last_offset.clone()),
            sequence_number: Some(window.last_sequence_number),
        };
        match self.lease.checkpoint(&self.store, &checkpoint).await {
            Ok(()) => {
                info!(partition_id = %self.lease.partition_id, events = window.events, bytes = window.bytes,
                    first_sequence_number = window.first_sequence_number,
                    last_sequence_number = window.last_sequence_number, "window committed and checkpointed");
                None
            }
            Err(CheckpointError::Lost { .. }) => Some(self.lose()),
            Err(CheckpointError::Store(error)) => {
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
            Some(exit) => exit,
            None => PartitionExit::Drained,
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
