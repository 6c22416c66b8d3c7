//! One partition's backfill: read each missing range into the sink, windows by event time,
//! committing at each range's end. No lease and no checkpoint: the archive itself says what is
//! done (a re-run skips it), so a window is only ever committed whole, never "checkpointed".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::plan::SeqRange;
use super::progress::PartitionProgress;
use crate::crash_hook::{self, CrashPoint};
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions,
};
use crate::recovery::{Recovery, Retry};
use crate::sink::{CommittedWindow, PartitionSink, SinkError};

/// What one partition's backfill did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionOutcome {
    pub events_committed: u64,
    pub windows_committed: u64,
    /// Events of the range that expired out of retention before they were read.
    pub events_expired: u64,
    /// Stopped by a signal before the end of its ranges.
    pub interrupted: bool,
}

pub struct Reader {
    pub client: Arc<EventHubClient>,
    pub partition_id: String,
    pub sink: PartitionSink,
    pub receiver: ReceiverOptions,
    pub batch_size: usize,
    pub retry_min_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub progress: Arc<PartitionProgress>,
    pub stop: CancellationToken,
}

/// Why a partition's backfill could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("partition {partition_id}: {error}")]
    EventHubs {
        partition_id: String,
        error: EventHubsError,
    },
}

/// How one receiver's life ended.
enum Attached {
    /// The range is read and committed.
    Done,
    /// Stopped by a signal (what was read is committed, if the sink could).
    Stopped,
    /// Attach again at `next` after a pause.
    Again,
}

impl Reader {
    /// Reads `ranges` in order. Returns when all are committed, when stopped (after committing
    /// what was read), or on an error retrying cannot fix.
    pub async fn run(mut self, ranges: Vec<SeqRange>) -> Result<PartitionOutcome, ReadError> {
        let mut outcome = PartitionOutcome::default();
        let mut retry = Retry::new(self.retry_min_backoff, self.retry_max_backoff);
        for range in ranges {
            let mut next = range.first;
            loop {
                if self.stop.is_cancelled() {
                    outcome.interrupted = true;
                    return Ok(outcome);
                }
                match self
                    .read(range, &mut next, &mut outcome, &mut retry)
                    .await?
                {
                    Attached::Done => break,
                    Attached::Stopped => {
                        outcome.interrupted = true;
                        return Ok(outcome);
                    }
                    Attached::Again => {
                        if retry.pause(self.stop.cancelled()).await.is_some() {
                            self.commit_on_stop(&mut outcome).await;
                            outcome.interrupted = true;
                            return Ok(outcome);
                        }
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// One receiver: from `next` (inclusive) to the end of `range`.
    async fn read(
        &mut self,
        range: SeqRange,
        next: &mut i64,
        outcome: &mut PartitionOutcome,
        retry: &mut Retry,
    ) -> Result<Attached, ReadError> {
        let position = EventPosition::SequenceNumber {
            sequence_number: *next,
            inclusive: true,
        };
        let opened = tokio::select! {
            opened = self.client.open_receiver(&self.partition_id, &position, self.receiver) => opened,
            () = self.stop.cancelled() => {
                self.commit_on_stop(outcome).await;
                return Ok(Attached::Stopped);
            }
        };
        let mut receiver = match opened {
            Ok(receiver) => receiver,
            Err(error) => return self.failed(error),
        };
        info!(partition_id = %self.partition_id, from = *next, to = range.last, "backfill reading");
        let mut batch: Vec<ReceivedEvent> = Vec::with_capacity(self.batch_size);
        let ended = loop {
            batch.clear();
            let received = tokio::select! {
                biased;
                () = self.stop.cancelled() => break Attached::Stopped,
                received = receiver.recv_batch(self.batch_size, &mut batch) => received,
            };
            if let Err(error) = received {
                // A partial batch is dropped: `next` is still before it.
                receiver.close().await;
                return self.failed(error);
            }
            retry.reset();
            let Some(first) = batch.first() else { continue };
            if first.sequence_number > *next {
                let gone_to = first.sequence_number.min(range.last + 1);
                let expired = u64::try_from(gone_to - *next).unwrap_or(0);
                warn!(partition_id = %self.partition_id, expected = *next, first = first.sequence_number,
                    events = expired, "events of the range expired out of retention before backfill read them");
                outcome.events_expired += expired;
                self.progress.read.fetch_add(expired, Ordering::Relaxed);
                *next = gone_to;
            }
            let end = batch.partition_point(|e| e.sequence_number <= range.last);
            let start = batch.partition_point(|e| e.sequence_number < *next);
            let events = &batch[start..end];
            if let Some(last) = events.last() {
                let last = last.sequence_number;
                match self.append(events, outcome).await {
                    Ok(()) => {}
                    Err(reread_from) => {
                        *next = reread_from;
                        break Attached::Again;
                    }
                }
                self.progress
                    .read
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                *next = last + 1;
            }
            if *next > range.last {
                break Attached::Done;
            }
        };
        receiver.close().await;
        match ended {
            Attached::Done => match self.flush(outcome).await {
                Ok(()) => Ok(Attached::Done),
                Err(reread_from) => {
                    *next = reread_from;
                    Ok(Attached::Again)
                }
            },
            Attached::Stopped => {
                self.commit_on_stop(outcome).await;
                Ok(Attached::Stopped)
            }
            Attached::Again => Ok(Attached::Again),
        }
    }

    /// Appends `events`, committing the open window first wherever an event reaches its
    /// event-time deadline. `Err(n)`: the window was dropped, read again from `n`.
    async fn append(
        &mut self,
        mut events: &[ReceivedEvent],
        outcome: &mut PartitionOutcome,
    ) -> Result<(), i64> {
        while !events.is_empty() {
            let cut = match self.sink.event_time_deadline() {
                Some(deadline) => events
                    .iter()
                    .position(|e| e.enqueued_time_ms >= deadline)
                    .unwrap_or(events.len()),
                None => events.len(),
            };
            if cut == 0 {
                self.flush(outcome).await?;
                continue;
            }
            let committed = self.sink.append(&events[..cut]).await;
            self.settle(committed, outcome).await?;
            events = &events[cut..];
        }
        Ok(())
    }

    /// Commits the open window, retrying a failed commit until it succeeds or the backfill is
    /// stopped. `Err(n)`: the window was dropped, read again from `n`.
    async fn flush(&mut self, outcome: &mut PartitionOutcome) -> Result<(), i64> {
        let committed = self.sink.flush().await;
        self.settle(committed, outcome).await
    }

    /// Counts a committed window; retries a failed commit (the window is kept meanwhile).
    async fn settle(
        &mut self,
        mut result: Result<Option<CommittedWindow>, SinkError>,
        outcome: &mut PartitionOutcome,
    ) -> Result<(), i64> {
        let mut retry: Option<Retry> = None;
        loop {
            match result {
                Ok(None) => return Ok(()),
                Ok(Some(window)) => {
                    if window.events > 0 {
                        outcome.events_committed += window.events;
                        outcome.windows_committed += 1;
                        info!(partition_id = %self.partition_id, events = window.events,
                            first_sequence_number = window.first_sequence_number.unwrap_or_default(),
                            last_sequence_number = window.last_sequence_number.unwrap_or_default(),
                            location = window.location.as_deref().unwrap_or(""), "backfill window committed");
                        crash_hook::reached(CrashPoint::AfterCommit);
                    }
                    return Ok(());
                }
                Err(SinkError::WindowDropped { reread_from, cause }) => {
                    warn!(partition_id = %self.partition_id, error = %cause, reread_from, "window dropped; reading it again");
                    return Err(reread_from);
                }
                Err(error) => {
                    warn!(partition_id = %self.partition_id, error = %error, "commit failed; retrying");
                    let retry = retry.get_or_insert_with(|| {
                        Retry::new(self.retry_min_backoff, self.retry_max_backoff)
                    });
                    // A stop while a commit keeps failing gives up on the window: the next run
                    // reads it again (nothing of it is in the archive).
                    if retry.pause(self.stop.cancelled()).await.is_some() {
                        let dropped = self.sink.abandon();
                        warn!(partition_id = %self.partition_id, events = dropped,
                            "stopped while the commit failed: the window is not archived; a re-run reads it again");
                        return Ok(());
                    }
                    result = self.sink.flush().await;
                }
            }
        }
    }

    /// On a stop: commit what was read, once (a failing destination is not retried forever).
    async fn commit_on_stop(&mut self, outcome: &mut PartitionOutcome) {
        let committed = self.sink.flush().await;
        if let Err(reread_from) = self.settle(committed, outcome).await {
            info!(partition_id = %self.partition_id, reread_from, "stopped; the dropped window is read by the next run");
        }
    }

    /// A receiver failure: retried unless it cannot be fixed by retrying.
    fn failed(&self, error: EventHubsError) -> Result<Attached, ReadError> {
        match error.recovery() {
            Recovery::Fatal | Recovery::PartitionLost => Err(ReadError::EventHubs {
                partition_id: self.partition_id.clone(),
                error,
            }),
            _ => {
                warn!(partition_id = %self.partition_id, error = %error, "receive failed; attaching again");
                Ok(Attached::Again)
            }
        }
    }
}
