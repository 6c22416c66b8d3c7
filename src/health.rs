//! What `/readyz` reports: whether this instance can do its job, and each partition's state.
//!
//! Partition tasks and the supervisor write here once per batch or cycle; the HTTP handler
//! reads a snapshot. A plain mutex is enough: writes are rare and tiny.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Shared health state of one hubcap instance.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    /// A dependency counts as reachable if it answered within this long.
    freshness: Duration,
}

#[derive(Debug, Default)]
struct State {
    eventhubs_ok_at: Option<Instant>,
    store_ok_at: Option<Instant>,
    draining: bool,
    partitions: BTreeMap<String, PartitionHealth>,
}

/// One owned partition, as `/readyz` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PartitionHealth {
    /// A receive link is attached and delivering.
    pub receiving: bool,
    pub last_committed_sequence_number: Option<i64>,
    /// Events in the partition after the newest one received.
    pub lag_events: Option<i64>,
    /// The sink is refusing this partition's window (disk full, storage down).
    pub sink_failing: bool,
    /// While failing: what failed, as `hubcap_sink_errors_total`'s `error_type` names it
    /// (`no_space`, `read_only`, `io_error`, `blob`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_error_type: Option<&'static str>,
    /// The checkpoint store refuses this partition's checkpoint or commit record
    /// (unreachable, permissions, its disk full).
    pub checkpoint_failing: bool,
    /// While failing: what failed, as `hubcap_checkpoint_errors_total`'s `error_type` names it
    /// (`unavailable`, `no_space`, `read_only`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_error_type: Option<&'static str>,
    /// Why the partition is not receiving, if it is not.
    pub last_error: Option<String>,
}

/// The answer to `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
    pub draining: bool,
    pub partitions: BTreeMap<String, PartitionHealth>,
}

impl Health {
    pub fn new(freshness: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            freshness,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn eventhubs_reachable(&self) {
        self.lock().eventhubs_ok_at = Some(Instant::now());
    }

    pub fn store_reachable(&self) {
        self.lock().store_ok_at = Some(Instant::now());
    }

    pub fn set_draining(&self) {
        self.lock().draining = true;
    }

    /// Updates one partition's entry (created if missing).
    pub fn partition(&self, partition_id: &str, update: impl FnOnce(&mut PartitionHealth)) {
        let mut state = self.lock();
        // Called once per received batch: look up before inserting, so the common case does
        // not allocate the key.
        match state.partitions.get_mut(partition_id) {
            Some(partition) => update(partition),
            None => update(state.partitions.entry(partition_id.to_owned()).or_default()),
        }
    }

    pub fn remove_partition(&self, partition_id: &str) {
        self.lock().partitions.remove(partition_id);
    }

    pub fn readiness(&self) -> Readiness {
        let state = self.lock();
        let now = Instant::now();
        let fresh =
            |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) <= self.freshness);
        let mut reasons = Vec::new();
        if state.draining {
            reasons.push("draining".to_owned());
        }
        if !fresh(state.eventhubs_ok_at) {
            reasons.push("event hubs not reached recently".to_owned());
        }
        if !fresh(state.store_ok_at) {
            reasons.push("checkpoint store not reached recently".to_owned());
        }
        for (id, partition) in &state.partitions {
            if partition.sink_failing {
                match partition.sink_error_type {
                    Some(error_type) => {
                        reasons.push(format!("partition {id}: sink failing ({error_type})"))
                    }
                    None => reasons.push(format!("partition {id}: sink failing")),
                }
            }
            if partition.checkpoint_failing {
                match partition.checkpoint_error_type {
                    Some(error_type) => {
                        reasons.push(format!("partition {id}: checkpoint failing ({error_type})"))
                    }
                    None => reasons.push(format!("partition {id}: checkpoint failing")),
                }
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            draining: state.draining,
            partitions: state.partitions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_fresh_dependencies_no_drain_and_working_sinks() {
        let health = Health::new(Duration::from_secs(60));
        let not_ready = health.readiness();
        assert!(!not_ready.ready);
        assert_eq!(not_ready.reasons.len(), 2);
        health.eventhubs_reachable();
        health.store_reachable();
        health.partition("0", |p| p.receiving = true);
        assert!(health.readiness().ready);
        health.partition("0", |p| p.sink_failing = true);
        let failing = health.readiness();
        assert!(!failing.ready);
        assert_eq!(
            failing.reasons,
            vec!["partition 0: sink failing".to_owned()]
        );
        health.partition("0", |p| p.sink_failing = false);
        health.set_draining();
        assert_eq!(health.readiness().reasons, vec!["draining".to_owned()]);
    }

    #[test]
    fn stale_dependencies_make_it_unready() {
        let health = Health::new(Duration::ZERO);
        health.eventhubs_reachable();
        health.store_reachable();
        std::thread::sleep(Duration::from_millis(2));
        assert!(!health.readiness().ready);
    }
}
