//! What a receiving partition watches besides its events: the stuck-receiver watchdog, lag,
//! and counters of what arrived.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::warn;

use super::{progress, PartitionTask};
use crate::eventhubs::{EventPosition, ReceivedEvent};

/// A lag sample in flight.
pub(super) type LagSample = Pin<Box<dyn Future<Output = Option<(i64, f64)>> + Send>>;

/// Completes with the sample's answer; never while none is in flight.
pub(super) async fn answered(sample: &mut Option<LagSample>) -> Option<(i64, f64)> {
    match sample {
        Some(sample) => sample.await,
        None => std::future::pending().await,
    }
}

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

    /// A question to the service about where the partition ends, for the event received last:
    /// it runs beside the receive loop (a slow `$management` answer must not hold up receiving
    /// or the window's rollover) and yields the lag in events and seconds.
    pub(super) fn lag_sample(&self, last: &ReceivedEvent) -> LagSample {
        let client = Arc::clone(&self.client);
        let partition_id = self.lease.partition_id.clone();
        let (sequence_number, enqueued_time_ms) = (last.sequence_number, last.enqueued_time_ms);
        Box::pin(async move {
            let properties = client.partition_properties(&partition_id).await.ok()?;
            Some(progress::lag(
                &properties,
                sequence_number,
                enqueued_time_ms,
            ))
        })
    }

    /// Records a finished lag sample.
    pub(super) fn record_lag(&self, lag: Option<(i64, f64)>) {
        let Some((events, seconds)) = lag else { return };
        self.metrics.lag(events, seconds);
        self.health
            .partition(&self.lease.partition_id, |p| p.lag_events = Some(events));
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
