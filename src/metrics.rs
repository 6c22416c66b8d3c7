//! Every metric hubcap exports, defined once. Names follow `hubcap_<name>_<unit>[_total]`;
//! labels are bounded: `eventhub`, `consumer_group`, `partition` (at most the hub's partition
//! count), `error_type` and `kind` (small fixed sets).
//!
//! Partition tasks resolve their label sets once ([`PartitionMetrics`]) and record per batch,
//! never per event.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const PARTITION_LABELS: &[&str] = &["eventhub", "consumer_group", "partition"];
const PARTITION_ERROR_LABELS: &[&str] = &["eventhub", "consumer_group", "partition", "error_type"];
const HUB_LABELS: &[&str] = &["eventhub", "consumer_group"];

/// The registry and every metric family.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    eventhub: String,
    consumer_group: String,
    events_received: IntCounterVec,
    bytes_received: IntCounterVec,
    events_committed: IntCounterVec,
    bytes_committed: IntCounterVec,
    lag_events: IntGaugeVec,
    lag_seconds: prometheus::GaugeVec,
    last_checkpointed: IntGaugeVec,
    owned_partitions: IntGaugeVec,
    ownership_changes: IntCounterVec,
    flush_duration: HistogramVec,
    flush_size: HistogramVec,
    checkpoint_errors: IntCounterVec,
    sink_errors: IntCounterVec,
    reconnects: IntCounterVec,
    expired_events: IntCounterVec,
    position_fallbacks: IntCounterVec,
    receiver_recycles: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric =
        IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), HUB_LABELS)
        .expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

impl Metrics {
    pub fn new(eventhub: &str, consumer_group: &str) -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("hubcap_build_info", "Always 1; labels carry the version"),
            &["version"],
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(build_info.clone()))
            .expect("registered once");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let lag_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "hubcap_partition_lag_seconds",
                "Enqueued time of the newest event in the partition minus that of the newest event received",
            ),
            PARTITION_LABELS,
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(lag_seconds.clone()))
            .expect("registered once");
        Self {
            eventhub: eventhub.to_owned(),
            consumer_group: consumer_group.to_owned(),
            events_received: counter(
                &registry,
                "hubcap_events_received_total",
                "Events received from Event Hubs",
                PARTITION_LABELS,
            ),
            bytes_received: counter(
                &registry,
                "hubcap_received_bytes_total",
                "Body bytes received from Event Hubs",
                PARTITION_LABELS,
            ),
            events_committed: counter(
                &registry,
                "hubcap_events_committed_total",
                "Events made durable by the sink",
                PARTITION_LABELS,
            ),
            bytes_committed: counter(
                &registry,
                "hubcap_committed_bytes_total",
                "Bytes made durable by the sink",
                PARTITION_LABELS,
            ),
            lag_events: gauge(
                &registry,
                "hubcap_partition_lag_events",
                "Events in the partition after the newest event received",
                PARTITION_LABELS,
            ),
            lag_seconds,
            last_checkpointed: gauge(
                &registry,
                "hubcap_last_checkpointed_sequence_number",
                "Sequence number of the last checkpoint written",
                PARTITION_LABELS,
            ),
            owned_partitions: gauge(
                &registry,
                "hubcap_owned_partitions",
                "Partitions this instance owns",
                HUB_LABELS,
            ),
            ownership_changes: counter(
                &registry,
                "hubcap_ownership_changes_total",
                "Ownership transitions by kind (claimed, stolen, expired, released, lost)",
                &["eventhub", "consumer_group", "kind"],
            ),
            flush_duration: histogram(
                &registry,
                "hubcap_flush_duration_seconds",
                "Time to commit a window",
                vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ),
            flush_size: histogram(
                &registry,
                "hubcap_flush_size_bytes",
                "Bytes per committed window",
                prometheus::exponential_buckets(1024.0, 4.0, 12).expect("valid buckets"),
            ),
            checkpoint_errors: counter(
                &registry,
                "hubcap_checkpoint_errors_total",
                "Failed checkpoint or ownership writes",
                PARTITION_ERROR_LABELS,
            ),
            sink_errors: counter(
                &registry,
                "hubcap_sink_errors_total",
                "Failed sink appends or commits",
                PARTITION_ERROR_LABELS,
            ),
            reconnects: counter(
                &registry,
                "hubcap_reconnects_total",
                "Receiver re-attaches by reason",
                PARTITION_ERROR_LABELS,
            ),
            expired_events: counter(
                &registry,
                "hubcap_expired_events_total",
                "Events that left retention before they were read (a gap)",
                PARTITION_LABELS,
            ),
            position_fallbacks: counter(
                &registry,
                "hubcap_position_fallbacks_total",
                "Start positions the service could not serve, replaced by the earliest event",
                PARTITION_LABELS,
            ),
            receiver_recycles: counter(
                &registry,
                "hubcap_receiver_recycles_total",
                "Receivers recycled by the stuck-partition watchdog",
                PARTITION_LABELS,
            ),
            registry,
        }
    }

    /// Metrics of one partition, with label sets resolved once.
    pub fn partition(&self, partition_id: &str) -> PartitionMetrics {
        let labels = [
            self.eventhub.as_str(),
            self.consumer_group.as_str(),
            partition_id,
        ];
        PartitionMetrics {
            metrics: self.clone(),
            partition_id: partition_id.to_owned(),
            events_received: self.events_received.with_label_values(&labels),
            bytes_received: self.bytes_received.with_label_values(&labels),
            events_committed: self.events_committed.with_label_values(&labels),
            bytes_committed: self.bytes_committed.with_label_values(&labels),
            lag_events: self.lag_events.with_label_values(&labels),
            lag_seconds: self.lag_seconds.with_label_values(&labels),
            last_checkpointed: self.last_checkpointed.with_label_values(&labels),
            flush_duration: self.flush_duration.with_label_values(&labels[..2]),
            flush_size: self.flush_size.with_label_values(&labels[..2]),
        }
    }

    pub fn set_owned_partitions(&self, count: usize) {
        self.owned_partitions
            .with_label_values(&[&self.eventhub, &self.consumer_group])
            .set(count as i64);
    }

    /// `kind`: claimed, stolen, expired, released or lost.
    pub fn ownership_change(&self, kind: &'static str) {
        self.ownership_changes
            .with_label_values(&[&self.eventhub, &self.consumer_group, kind])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// One partition's metric handles.
#[derive(Clone)]
pub struct PartitionMetrics {
    metrics: Metrics,
    partition_id: String,
    events_received: IntCounter,
    bytes_received: IntCounter,
    events_committed: IntCounter,
    bytes_committed: IntCounter,
    lag_events: IntGauge,
    lag_seconds: prometheus::Gauge,
    last_checkpointed: IntGauge,
    flush_duration: Histogram,
    flush_size: Histogram,
}

impl std::fmt::Debug for PartitionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionMetrics")
            .field("partition_id", &self.partition_id)
            .finish_non_exhaustive()
    }
}

impl PartitionMetrics {
    fn labels_with<'a>(&'a self, error_type: &'a str) -> [&'a str; 4] {
        [
            self.metrics.eventhub.as_str(),
            self.metrics.consumer_group.as_str(),
            self.partition_id.as_str(),
            error_type,
        ]
    }

    pub fn received(&self, events: usize, body_bytes: u64) {
        self.events_received.inc_by(events as u64);
        self.bytes_received.inc_by(body_bytes);
    }

    pub fn committed(&self, events: u64, bytes: u64, duration: std::time::Duration) {
        self.events_committed.inc_by(events);
        self.bytes_committed.inc_by(bytes);
        self.flush_duration.observe(duration.as_secs_f64());
        self.flush_size.observe(bytes as f64);
    }

    pub fn checkpointed(&self, sequence_number: i64) {
        self.last_checkpointed.set(sequence_number);
    }

    pub fn lag(&self, events: i64, seconds: f64) {
        self.lag_events.set(events.max(0));
        self.lag_seconds.set(seconds.max(0.0));
    }

    pub fn checkpoint_error(&self, error_type: &str) {
        self.metrics
            .checkpoint_errors
            .with_label_values(&self.labels_with(error_type))
            .inc();
    }

    pub fn sink_error(&self, error_type: &str) {
        self.metrics
            .sink_errors
            .with_label_values(&self.labels_with(error_type))
            .inc();
    }

    pub fn reconnect(&self, error_type: &str) {
        self.metrics
            .reconnects
            .with_label_values(&self.labels_with(error_type))
            .inc();
    }

    pub fn expired(&self, events: u64) {
        self.metrics
            .expired_events
            .with_label_values(&self.labels_with("")[..3])
            .inc_by(events);
    }

    pub fn position_fallback(&self) {
        self.metrics
            .position_fallbacks
            .with_label_values(&self.labels_with("")[..3])
            .inc();
    }

    pub fn receiver_recycled(&self) {
        self.metrics
            .receiver_recycles
            .with_label_values(&self.labels_with("")[..3])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_metric_is_exported_with_bounded_labels() {
        let metrics = Metrics::new("hub1", "$Default");
        let partition = metrics.partition("3");
        partition.received(10, 1000);
        partition.committed(10, 2048, std::time::Duration::from_millis(5));
        partition.checkpointed(9);
        partition.lag(5, 1.5);
        partition.checkpoint_error("unavailable");
        partition.sink_error("file");
        partition.reconnect("server_busy");
        partition.expired(3);
        partition.position_fallback();
        partition.receiver_recycled();
        metrics.set_owned_partitions(4);
        metrics.ownership_change("claimed");
        let text = metrics.render();
        for name in [
            "hubcap_build_info",
            "hubcap_events_received_total",
            "hubcap_received_bytes_total",
            "hubcap_events_committed_total",
            "hubcap_committed_bytes_total",
            "hubcap_partition_lag_events",
            "hubcap_partition_lag_seconds",
            "hubcap_last_checkpointed_sequence_number",
            "hubcap_owned_partitions",
            "hubcap_ownership_changes_total",
            "hubcap_flush_duration_seconds_bucket",
            "hubcap_flush_size_bytes_bucket",
            "hubcap_checkpoint_errors_total",
            "hubcap_sink_errors_total",
            "hubcap_reconnects_total",
            "hubcap_expired_events_total",
            "hubcap_position_fallbacks_total",
            "hubcap_receiver_recycles_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains(
            r#"hubcap_events_received_total{consumer_group="$Default",eventhub="hub1",partition="3"} 10"#
        ));
    }
}
