//! What a receiving partition watches besides its events: the stuck-receiver watchdog, lag,
//! and counters of what arrived.

use tracing::warn;

use super::{progress, PartitionTask};
use crate::eventhubs::{EventPosition, ReceivedEvent};

impl PartitionTask {
    /// Whether a silent receiver must be recycled: the service holds events past `position`.
    /// A failed question counts as "no".
    pub(super) async fn is_stuck(&self, position: &EventPosition) -> bool {
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
    pub(super) async fn sample_lag(&self, last_sequence_number: i64, last_enqueued_time_ms: i64) {
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
    pub(super) fn observe(&mut self, batch: &[ReceivedEvent], first_sequence_number: i64) {
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
}
