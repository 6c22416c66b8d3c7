//! What each failure does to the partition: the action from [`crate::recovery`]'s table, and
//! what operators see of it (metrics, `/readyz`, a warning).

use tracing::{info, warn};

use super::progress::{self, AfterReceiveError};
use super::{Next, PartitionExit, PartitionTask};
use crate::eventhubs::{EventHubsError, EventPosition};
use crate::lease::CheckpointError;
use crate::sink::{SinkError, WriteError};

impl PartitionTask {
    /// Decides what an Event Hubs error means for this partition.
    pub(super) fn receive_failed(
        &mut self,
        error: EventHubsError,
        position: &mut EventPosition,
    ) -> Next {
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

    pub(super) fn sink_failed(&self, error: &SinkError) {
        // The commit record is written to the checkpoint store: when that fails, the store is
        // what operators must look at, whatever the archive's disk or container is doing.
        if let SinkError::Failed(WriteError::Journal(journal)) = error {
            self.store_failed(journal);
            warn!(partition_id = %self.lease.partition_id, error = %error,
                error_type = journal.kind(), "commit record write failed; the window waits, nothing checkpointed");
            return;
        }
        self.metrics.sink_error(error.kind());
        self.health.partition(&self.lease.partition_id, |p| {
            p.sink_failing = true;
            p.sink_error_type = Some(error.kind());
            p.last_error = Some(error.to_string());
        });
        warn!(partition_id = %self.lease.partition_id, error = %error, error_type = error.kind(),
            "sink failed; nothing checkpointed past the last committed window");
    }
    pub(super) fn checkpoint_failed(&self, error: &CheckpointError) {
        self.store_failed(error);
        warn!(partition_id = %self.lease.partition_id, error = %error, error_type = error.kind(),
            "checkpoint write failed; retrying before reading on");
    }

    /// What operators see of a failed checkpoint or commit record write.
    fn store_failed(&self, error: &CheckpointError) {
        if let CheckpointError::Store(store) = error {
            self.metrics.checkpoint_error(store.kind());
        }
        self.health.partition(&self.lease.partition_id, |p| {
            p.checkpoint_failing = true;
            p.checkpoint_error_type = Some(error.kind());
            p.last_error = Some(error.to_string());
        });
    }
}
