//! Checkpointing what the sink committed: through the ownership lease, retried while the store
//! fails.

use std::sync::Arc;

use tracing::info;

use super::{Next, PartitionTask};
use crate::checkpoint::Checkpoint;
use crate::crash_hook::{self, CrashPoint};
use crate::lease::CheckpointError;
use crate::sink::CommittedWindow;

impl PartitionTask {
    /// Writes the checkpoint for a committed window, retrying while the store fails (the
    /// partition reads nothing more meanwhile).
    pub(super) async fn checkpoint(&mut self, window: &CommittedWindow) -> Option<Next> {
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
            committed_in: window.name.clone(),
        };
        crash_hook::reached(CrashPoint::AfterCommit);
        let (lease, store) = (Arc::clone(&self.lease), Arc::clone(&self.store));
        let written = self
            .retry()
            .run_asked(
                || lease.checkpoint(&store, &checkpoint),
                CheckpointError::recovery,
                CheckpointError::retry_after,
                |error| self.checkpoint_failed(error),
                std::future::pending(),
            )
            .await;
        match written {
            Some(Ok(())) => {
                self.metrics.checkpointed(last_sequence_number);
                self.health.store_reachable();
                self.health.partition(&lease.partition_id, |p| {
                    p.checkpoint_failing = false;
                    p.checkpoint_error_type = None;
                });
                info!(partition_id = %lease.partition_id, events = window.events, bytes = window.bytes,
                    first_sequence_number = window.first_sequence_number.unwrap_or_default(),
                    last_sequence_number, location = window.location.as_deref().unwrap_or(""),
                    "window committed and checkpointed");
                None
            }
            _ => Some(Next::Exit(self.lose())),
        }
    }
}
