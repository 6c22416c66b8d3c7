//! What `hubcap status` makes of the records and properties it read: each partition's ownership
//! state, lag and warnings, worked out by pure functions of one [`Snapshot`] into the
//! [`Report`] that both renderings ([`super::render`]) show.
//!
//! Definitions:
//! - an ownership is `expired` when its record was last written `ownership_expiration` ago or
//!   longer (the balancer's rule), `released` when it names no owner, `unowned` when there is no
//!   record;
//! - the next event to read is the one after the checkpoint; without a checkpoint, the
//!   configured `start_position` (lag unknown for an offset or a time: that needs the service);
//! - `lag_events`: retained events from the next one to read to the last enqueued one;
//! - `lag_seconds`: how long ago the oldest of those was enqueued. The command reads that event
//!   from the service. A running consumer's receiver (it has an owner level) keeps others out
//!   of its partition in its consumer group, so while one runs the value is estimated (marked
//!   `~`, `lag_seconds_estimated`) from the earlier of the checkpoint's write time and the
//!   last enqueued time: close while the consumer keeps up with a steady stream, too high
//!   just after a burst ends a quiet spell, too low while it works through an older backlog.
//!   `--lag-consumer-group` reads through another group instead, which gives exact ages;
//! - warnings: `checkpoint_expired` when the next event to read is older than the first
//!   retained one (the events between were lost unread); `checkpoint_near_expiry` when it is
//!   among the oldest [`NEAR_EXPIRY_PERCENT`] % of the retained events (with time-based
//!   retention and a steady rate: within the last tenth of the retention period).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::checkpoint::{Checkpoint, ListedCheckpoint, Ownership};
use crate::eventhubs::{EventPosition, PartitionProperties};
use crate::sink::stdout::rfc3339_ms;

/// A checkpoint is close to expiring when the next event to read is among this share (in
/// percent) of the oldest retained events.
pub const NEAR_EXPIRY_PERCENT: i64 = 10;

/// Everything one report is made from, read at about the same moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the records were read: every age is measured from here.
    pub taken_at: SystemTime,
    /// Namespace host, as the checkpoint records name it.
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
    /// `file` or `azure_blob`.
    pub store_type: &'static str,
    /// The file store's directory or the blob store's container (never a credential).
    pub store_location: String,
    /// `[load_balancing] ownership_expiration`.
    pub ownership_expiration: Duration,
    /// `[eventhub] start_position`: where a partition without a checkpoint is read from.
    pub start_position: EventPosition,
    /// In the hub's partition order.
    pub partitions: Vec<PartitionSnapshot>,
}

/// One partition's records and properties.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub partition_id: String,
    pub ownership: Option<Ownership>,
    pub checkpoint: Option<ListedCheckpoint>,
    /// The service's answer, or why there was none.
    pub properties: Result<PartitionProperties, String>,
    /// The oldest event not yet checkpointed, as far as it was read.
    pub oldest_unread: OldestUnread,
}

/// What is known of the first event after the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldestUnread {
    /// Not asked for: nothing waits, or where reading starts is unknown.
    NotRead,
    /// Read from the service.
    Read { enqueued_time_ms: i64 },
    /// The service did not give it (a running consumer holds the partition, or it timed out).
    Unavailable,
}

/// The sequence number a consumer of this partition reads next, if it can be told without the
/// service: after the checkpoint, or at the start position when there is none.
pub fn next_to_read(
    checkpoint: Option<&Checkpoint>,
    start_position: &EventPosition,
    properties: &PartitionProperties,
) -> Option<i64> {
    match checkpoint {
        Some(checkpoint) => checkpoint.sequence_number.map(|n| n.saturating_add(1)),
        None => match start_position {
            EventPosition::Earliest => Some(properties.begin_sequence_number),
            EventPosition::Latest => Some(properties.last_enqueued_sequence_number + 1),
            EventPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => Some(sequence_number + i64::from(!inclusive)),
            EventPosition::Offset { .. } | EventPosition::EnqueuedTime { .. } => None,
        },
    }
}

/// The retained range `(first, last)`, `None` when the partition holds no event.
fn retained(properties: &PartitionProperties) -> Option<(i64, i64)> {
    let (first, last) = (
        properties.begin_sequence_number,
        properties.last_enqueued_sequence_number,
    );
    (!properties.is_empty && last >= first).then_some((first, last))
}

/// Retained events from `next` on: what a consumer reading at `next` has still to read.
pub fn lag_events(next: i64, properties: &PartitionProperties) -> i64 {
    match retained(properties) {
        Some((first, last)) => (last - next.max(first) + 1).max(0),
        None => 0,
    }
}

/// The report, as rendered: [`render_table`] and [`render_json`] show the same fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// RFC 3339: when the records were read.
    pub generated_at: String,
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
    pub checkpoint_store: StoreDescription,
    pub ownership_expiration_seconds: f64,
    pub near_expiry_percent: i64,
    pub partitions: Vec<PartitionStatus>,
    /// Each owner id found in an ownership record, by id.
    pub owners: Vec<OwnerTotal>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreDescription {
    /// `file` or `azure_blob`.
    #[serde(rename = "type")]
    pub store_type: String,
    /// Directory or container.
    pub location: String,
}

/// Whether a partition has an owner that still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnershipState {
    /// Renewed within the ownership expiration.
    Active,
    /// Not renewed within it: any instance may claim the partition.
    Expired,
    /// Its owner gave it up (`ownerid` empty), as a draining instance does.
    Released,
    /// No ownership record.
    Unowned,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub partition_id: String,
    /// `null` when released or unowned.
    pub owner_id: Option<String>,
    pub ownership: OwnershipState,
    pub ownership_expired: bool,
    /// RFC 3339: when the ownership record was last written.
    pub ownership_renewed_at: Option<String>,
    pub ownership_age_seconds: Option<f64>,
    pub checkpoint: Option<CheckpointStatus>,
    /// The service's view; `null` when it could not be read (see `warnings`).
    pub begin_sequence_number: Option<i64>,
    /// `null` when the partition never held an event, or could not be read.
    pub last_enqueued_sequence_number: Option<i64>,
    pub last_enqueued_offset: Option<String>,
    /// RFC 3339.
    pub last_enqueued_time: Option<String>,
    pub is_empty: Option<bool>,
    /// `null` when unknown (no checkpoint and an offset or time start position, a checkpoint
    /// without a sequence number, or no answer from the service).
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    /// `lag_seconds` was estimated from the checkpoint's write time (see the module doc).
    pub lag_seconds_estimated: bool,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointStatus {
    pub sequence_number: Option<i64>,
    pub offset: Option<String>,
    /// RFC 3339: when the record was written; `null` when the store does not say.
    pub written_at: Option<String>,
    pub age_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    /// One line for a person, with the numbers.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Events after the checkpoint expired out of retention before anyone read them.
    CheckpointExpired,
    /// The next event to read is among the oldest retained ones.
    CheckpointNearExpiry,
    /// The checkpoint is past the partition's last event (a recreated hub, a foreign record).
    CheckpointAhead,
    /// The checkpoint has an offset but no sequence number: lag cannot be counted.
    CheckpointWithoutSequenceNumber,
    /// No checkpoint: a consumer starts at the configured start position.
    NoCheckpoint,
    /// The service did not answer for this partition.
    PartitionUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerTotal {
    pub owner_id: String,
    /// Partitions whose record names this owner, active or expired.
    pub partitions: usize,
    pub active: usize,
    pub expired: usize,
    pub partition_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub partitions: usize,
    pub active: usize,
    pub expired: usize,
    pub released: usize,
    pub unowned: usize,
    /// Sum over the partitions whose lag is known.
    pub lag_events: i64,
    /// Partitions with at least one warning.
    pub partitions_with_warnings: usize,
}

/// Works out the report from one snapshot.
pub fn build(snapshot: &Snapshot) -> Report {
    let now = snapshot.taken_at;
    let partitions: Vec<PartitionStatus> = snapshot
        .partitions
        .iter()
        .map(|partition| partition_status(snapshot, partition))
        .collect();
    let mut owners: BTreeMap<String, OwnerTotal> = BTreeMap::new();
    for partition in &partitions {
        let Some(owner_id) = partition.owner_id.as_deref() else {
            continue;
        };
        let total = owners
            .entry(owner_id.to_owned())
            .or_insert_with(|| OwnerTotal {
                owner_id: owner_id.to_owned(),
                partitions: 0,
                active: 0,
                expired: 0,
                partition_ids: Vec::new(),
            });
        total.partitions += 1;
        match partition.ownership {
            OwnershipState::Expired => total.expired += 1,
            _ => total.active += 1,
        }
        total.partition_ids.push(partition.partition_id.clone());
    }
    let count = |state| partitions.iter().filter(|p| p.ownership == state).count();
    let totals = Totals {
        partitions: partitions.len(),
        active: count(OwnershipState::Active),
        expired: count(OwnershipState::Expired),
        released: count(OwnershipState::Released),
        unowned: count(OwnershipState::Unowned),
        lag_events: partitions.iter().filter_map(|p| p.lag_events).sum(),
        partitions_with_warnings: partitions.iter().filter(|p| !p.warnings.is_empty()).count(),
    };
    Report {
        generated_at: rfc3339_ms(unix_ms(now)),
        namespace: snapshot.namespace.clone(),
        event_hub: snapshot.event_hub.clone(),
        consumer_group: snapshot.consumer_group.clone(),
        checkpoint_store: StoreDescription {
            store_type: snapshot.store_type.to_owned(),
            location: snapshot.store_location.clone(),
        },
        ownership_expiration_seconds: seconds(snapshot.ownership_expiration),
        near_expiry_percent: NEAR_EXPIRY_PERCENT,
        partitions,
        owners: owners.into_values().collect(),
        totals,
    }
}

fn partition_status(snapshot: &Snapshot, partition: &PartitionSnapshot) -> PartitionStatus {
    let now = snapshot.taken_at;
    let age = |time: SystemTime| now.duration_since(time).unwrap_or(Duration::ZERO);
    let (ownership, owner_id) = match &partition.ownership {
        None => (OwnershipState::Unowned, None),
        Some(record) if record.owner_id.is_empty() => (OwnershipState::Released, None),
        Some(record) if record.is_active(now, snapshot.ownership_expiration) => {
            (OwnershipState::Active, Some(record.owner_id.clone()))
        }
        Some(record) => (OwnershipState::Expired, Some(record.owner_id.clone())),
    };
    let checkpoint = partition.checkpoint.as_ref();
    let mut warnings = Vec::new();
    let mut lag = None;
    let mut lag_seconds = None;
    let mut lag_seconds_estimated = false;
    match &partition.properties {
        Err(reason) => warnings.push(Warning {
            kind: WarningKind::PartitionUnavailable,
            message: format!("the service did not answer: {reason}"),
        }),
        Ok(properties) => {
            let next = next_to_read(
                checkpoint.map(|c| &c.checkpoint),
                &snapshot.start_position,
                properties,
            );
            warnings.extend(checkpoint_warnings(
                checkpoint.map(|c| &c.checkpoint),
                next,
                &snapshot.start_position,
                properties,
            ));
            lag = next.map(|next| lag_events(next, properties));
            if let Some(events) = lag {
                let written = checkpoint.and_then(|c| c.last_modified);
                let last_enqueued = UNIX_EPOCH
                    + Duration::from_millis(
                        u64::try_from(properties.last_enqueued_time_ms).unwrap_or(0),
                    );
                (lag_seconds, lag_seconds_estimated) = match (events, partition.oldest_unread) {
                    (0, _) => (Some(0.0), false),
                    (_, OldestUnread::Read { enqueued_time_ms }) => {
                        let enqueued = UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(enqueued_time_ms).unwrap_or(0));
                        (Some(seconds(age(enqueued))), false)
                    }
                    // The oldest waiting event was enqueued no later than the newest one and,
                    // while a consumer keeps up, at about the time its checkpoint was written:
                    // the earlier of the two stands in for it.
                    (_, OldestUnread::Unavailable | OldestUnread::NotRead) => {
                        let since = written.map_or(last_enqueued, |w| w.min(last_enqueued));
                        (Some(seconds(age(since))), true)
                    }
                };
            }
        }
    }
    let properties = partition.properties.as_ref().ok();
    PartitionStatus {
        partition_id: partition.partition_id.clone(),
        owner_id,
        ownership,
        ownership_expired: ownership == OwnershipState::Expired,
        ownership_renewed_at: partition
            .ownership
            .as_ref()
            .map(|o| rfc3339_ms(unix_ms(o.last_modified))),
        ownership_age_seconds: partition
            .ownership
            .as_ref()
            .map(|o| seconds(age(o.last_modified))),
        checkpoint: checkpoint.map(|c| CheckpointStatus {
            sequence_number: c.checkpoint.sequence_number,
            offset: c.checkpoint.offset.clone(),
            written_at: c.last_modified.map(|t| rfc3339_ms(unix_ms(t))),
            age_seconds: c.last_modified.map(|t| seconds(age(t))),
        }),
        begin_sequence_number: properties.map(|p| p.begin_sequence_number),
        last_enqueued_sequence_number: properties
            .filter(|p| p.last_enqueued_sequence_number >= 0)
            .map(|p| p.last_enqueued_sequence_number),
        last_enqueued_offset: properties
            .filter(|p| p.last_enqueued_sequence_number >= 0)
            .map(|p| p.last_enqueued_offset.clone()),
        last_enqueued_time: properties
            .filter(|p| p.last_enqueued_sequence_number >= 0)
            .map(|p| rfc3339_ms(p.last_enqueued_time_ms)),
        is_empty: properties.map(|p| p.is_empty),
        lag_events: lag,
        lag_seconds,
        lag_seconds_estimated,
        warnings,
    }
}

/// What is wrong with where a consumer would read next.
fn checkpoint_warnings(
    checkpoint: Option<&Checkpoint>,
    next: Option<i64>,
    start_position: &EventPosition,
    properties: &PartitionProperties,
) -> Vec<Warning> {
    let Some(checkpoint) = checkpoint else {
        return vec![Warning {
            kind: WarningKind::NoCheckpoint,
            message: format!(
                "no checkpoint: a consumer starts at {}",
                describe_position(start_position)
            ),
        }];
    };
    let (Some(sequence_number), Some(next)) = (checkpoint.sequence_number, next) else {
        return vec![Warning {
            kind: WarningKind::CheckpointWithoutSequenceNumber,
            message: format!(
                "the checkpoint has no sequence number (offset {}): its lag cannot be counted",
                checkpoint.offset.as_deref().unwrap_or("none")
            ),
        }];
    };
    let last = properties.last_enqueued_sequence_number;
    // An empty partition retains nothing: everything up to its last event has expired.
    let first_retained = if properties.is_empty {
        properties.begin_sequence_number.max(last + 1)
    } else {
        properties.begin_sequence_number
    };
    if next < first_retained {
        let lost = first_retained - next;
        return vec![Warning {
            kind: WarningKind::CheckpointExpired,
            message: format!(
                "{lost} events expired unread: the checkpoint is at {sequence_number}, the first \
                 retained event is {first_retained}"
            ),
        }];
    }
    if next > last + 1 {
        return vec![Warning {
            kind: WarningKind::CheckpointAhead,
            message: format!(
                "the checkpoint ({sequence_number}) is past the partition's last event ({last})"
            ),
        }];
    }
    match retained(properties) {
        Some((first, last)) if next <= last => {
            let ahead_of_it = next - first;
            let retained_count = last - first + 1;
            (ahead_of_it * 100 < retained_count * NEAR_EXPIRY_PERCENT)
                .then(|| Warning {
                    kind: WarningKind::CheckpointNearExpiry,
                    message: format!(
                        "near expiry: the next event to read ({next}) is in the oldest \
                         {NEAR_EXPIRY_PERCENT}% of the retained {first}..{last} ({ahead_of_it} \
                         older events left to expire before it)"
                    ),
                })
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

fn describe_position(position: &EventPosition) -> String {
    match position {
        EventPosition::Earliest => "the earliest retained event".to_owned(),
        EventPosition::Latest => "the latest event (skipping what is retained)".to_owned(),
        EventPosition::SequenceNumber {
            sequence_number, ..
        } => format!("sequence number {sequence_number}"),
        EventPosition::Offset { offset, .. } => format!("offset {offset}"),
        EventPosition::EnqueuedTime {
            enqueued_time_ms, ..
        } => format!(
            "the first event enqueued at or after {}",
            rfc3339_ms(*enqueued_time_ms)
        ),
    }
}

/// Milliseconds since the Unix epoch (0 before it, as a record's time never is).
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds to the millisecond: what the JSON shows.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}
