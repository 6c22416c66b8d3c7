use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::render::{render_json, render_table};
use super::report::*;
use crate::checkpoint::{Checkpoint, ListedCheckpoint, Ownership};
use crate::eventhubs::{EventPosition, PartitionProperties};
use crate::ops::human_duration;

/// 2026-12-02T10:00:00Z: every fixture time is this minus some seconds.
const NOW_MS: i64 = 1_796_205_600_000;

fn at(seconds_ago: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis((NOW_MS as f64 - seconds_ago * 1000.0) as u64)
}

fn ms_ago(seconds_ago: f64) -> i64 {
    NOW_MS - (seconds_ago * 1000.0) as i64
}

/// A partition retaining `first..=last`, the last one enqueued `last_age` seconds ago.
fn properties(id: &str, first: i64, last: i64, last_age: f64) -> PartitionProperties {
    PartitionProperties {
        partition_id: id.into(),
        begin_sequence_number: first,
        last_enqueued_sequence_number: last,
        last_enqueued_offset: (last * 100).to_string(),
        last_enqueued_time_ms: ms_ago(last_age),
        is_empty: last < first,
    }
}

fn owned(id: &str, owner: &str, age: f64) -> Ownership {
    Ownership {
        partition_id: id.into(),
        owner_id: owner.into(),
        last_modified: at(age),
        version: "1".into(),
        commit: None,
    }
}

fn checkpointed(id: &str, sequence_number: i64, age: f64) -> ListedCheckpoint {
    ListedCheckpoint {
        checkpoint: Checkpoint {
            partition_id: id.into(),
            offset: Some((sequence_number * 100).to_string()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        },
        version: "3".into(),
        last_modified: Some(at(age)),
    }
}

fn partition(
    id: &str,
    ownership: Option<Ownership>,
    checkpoint: Option<ListedCheckpoint>,
    properties: PartitionProperties,
) -> PartitionSnapshot {
    PartitionSnapshot {
        partition_id: id.into(),
        ownership,
        checkpoint,
        properties: Ok(properties),
        oldest_unread: OldestUnread::NotRead,
    }
}

fn snapshot(partitions: Vec<PartitionSnapshot>) -> Snapshot {
    Snapshot {
        taken_at: at(0.0),
        namespace: "myns.servicebus.windows.net".into(),
        event_hub: "telemetry".into(),
        consumer_group: "$Default".into(),
        store_type: "file",
        store_location: "/var/lib/hubcap/checkpoints".into(),
        ownership_expiration: Duration::from_secs(60),
        start_position: EventPosition::Earliest,
        partitions,
    }
}

fn kinds(status: &PartitionStatus) -> Vec<WarningKind> {
    status.warnings.iter().map(|w| w.kind).collect()
}

#[test]
fn ownership_is_active_until_the_expiration_then_expired_and_released_or_missing_says_so() {
    let props = || properties("0", 0, 9, 1.0);
    let report = build(&snapshot(vec![
        partition("0", Some(owned("0", "a", 59.9)), None, props()),
        partition("1", Some(owned("1", "a", 60.0)), None, props()),
        partition("2", Some(owned("2", "", 5.0)), None, props()),
        partition("3", None, None, props()),
        // A record from a clock ahead of this one reads as just renewed.
        partition("4", Some(owned("4", "b", -3.0)), None, props()),
    ]));
    let states: Vec<_> = report
        .partitions
        .iter()
        .map(|p| (p.ownership, p.owner_id.as_deref(), p.ownership_expired))
        .collect();
    assert_eq!(
        states,
        [
            (OwnershipState::Active, Some("a"), false),
            (OwnershipState::Expired, Some("a"), true),
            (OwnershipState::Released, None, false),
            (OwnershipState::Unowned, None, false),
            (OwnershipState::Active, Some("b"), false),
        ]
    );
    assert_eq!(report.partitions[0].ownership_age_seconds, Some(59.9));
    assert_eq!(report.partitions[4].ownership_age_seconds, Some(0.0));
    assert_eq!(report.partitions[3].ownership_renewed_at, None);
    assert_eq!(
        report.owners,
        [
            OwnerTotal {
                owner_id: "a".into(),
                partitions: 2,
                active: 1,
                expired: 1,
                partition_ids: vec!["0".into(), "1".into()],
            },
            OwnerTotal {
                owner_id: "b".into(),
                partitions: 1,
                active: 1,
                expired: 0,
                partition_ids: vec!["4".into()],
            },
        ]
    );
    assert_eq!(
        (
            report.totals.active,
            report.totals.expired,
            report.totals.released,
            report.totals.unowned
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn lag_counts_retained_events_after_the_checkpoint_and_their_age_comes_from_the_oldest() {
    let mut read = partition(
        "0",
        None,
        Some(checkpointed("0", 89, 30.0)),
        properties("0", 0, 99, 2.0),
    );
    read.oldest_unread = OldestUnread::Read {
        enqueued_time_ms: ms_ago(42.5),
    };
    let caught_up = partition(
        "1",
        None,
        Some(checkpointed("1", 99, 30.0)),
        properties("1", 0, 99, 40.0),
    );
    let mut held = partition(
        "2",
        Some(owned("2", "a", 1.0)),
        Some(checkpointed("2", 95, 12.0)),
        properties("2", 0, 99, 0.5),
    );
    held.oldest_unread = OldestUnread::Unavailable;
    // Every waiting event came before the checkpoint was written: the consumer is behind, and
    // the newest event's age is the better bound.
    let mut behind = held.clone();
    behind.partition_id = "3".into();
    behind.properties = Ok(properties("3", 0, 99, 20.0));
    let report = build(&snapshot(vec![read, caught_up, held, behind]));
    let lag: Vec<_> = report
        .partitions
        .iter()
        .map(|p| (p.lag_events, p.lag_seconds, p.lag_seconds_estimated))
        .collect();
    assert_eq!(
        lag,
        [
            (Some(10), Some(42.5), false),
            (Some(0), Some(0.0), false),
            (Some(4), Some(12.0), true),
            (Some(4), Some(20.0), true),
        ]
    );
    assert_eq!(report.totals.lag_events, 18);
}

#[test]
fn without_a_checkpoint_lag_follows_the_start_position_and_is_unknown_for_a_time() {
    let lag_for = |start_position: EventPosition| {
        let mut snapshot = snapshot(vec![partition(
            "0",
            None,
            None,
            properties("0", 10, 29, 1.0),
        )]);
        snapshot.start_position = start_position;
        let report = build(&snapshot);
        let status = &report.partitions[0];
        assert_eq!(kinds(status), [WarningKind::NoCheckpoint]);
        status.lag_events
    };
    assert_eq!(lag_for(EventPosition::Earliest), Some(20));
    assert_eq!(lag_for(EventPosition::Latest), Some(0));
    let seq = |sequence_number, inclusive| EventPosition::SequenceNumber {
        sequence_number,
        inclusive,
    };
    assert_eq!(lag_for(seq(25, true)), Some(5));
    assert_eq!(lag_for(seq(25, false)), Some(4));
    assert_eq!(
        lag_for(seq(3, true)),
        Some(20),
        "expired ones cannot be read"
    );
    assert_eq!(
        lag_for(EventPosition::EnqueuedTime {
            enqueued_time_ms: 0,
            inclusive: true
        }),
        None
    );
}

#[test]
fn a_checkpoint_before_the_retained_range_is_expired_and_one_in_its_oldest_tenth_is_near() {
    // 100 retained, 200..=299: the oldest tenth is 200..=209.
    let warned = |checkpoint: i64| {
        let report = build(&snapshot(vec![partition(
            "0",
            None,
            Some(checkpointed("0", checkpoint, 5.0)),
            properties("0", 200, 299, 1.0),
        )]));
        let status = report.partitions[0].clone();
        (kinds(&status), status.lag_events)
    };
    assert_eq!(
        warned(150),
        (vec![WarningKind::CheckpointExpired], Some(100))
    );
    assert_eq!(
        warned(198),
        (vec![WarningKind::CheckpointExpired], Some(100))
    );
    // The next event to read is the first retained one: nothing lost yet, next to go.
    assert_eq!(
        warned(199),
        (vec![WarningKind::CheckpointNearExpiry], Some(100))
    );
    assert_eq!(
        warned(208),
        (vec![WarningKind::CheckpointNearExpiry], Some(91))
    );
    assert_eq!(warned(209), (vec![], Some(90)));
    assert_eq!(warned(299), (vec![], Some(0)));
    assert_eq!(warned(305), (vec![WarningKind::CheckpointAhead], Some(0)));

    let report = build(&snapshot(vec![partition(
        "0",
        None,
        Some(checkpointed("0", 150, 5.0)),
        properties("0", 200, 299, 1.0),
    )]));
    assert_eq!(
        report.partitions[0].warnings[0].message,
        "49 events expired unread: the checkpoint is at 150, the first retained event is 200"
    );
    assert_eq!(report.totals.partitions_with_warnings, 1);
    let report = build(&snapshot(vec![partition(
        "0",
        None,
        Some(checkpointed("0", 208, 5.0)),
        properties("0", 200, 299, 1.0),
    )]));
    assert_eq!(
        report.partitions[0].warnings[0].message,
        "near expiry: the next event to read (209) is in the oldest 10% of the retained \
         200..299 (9 older events left to expire before it)"
    );
}

#[test]
fn a_caught_up_checkpoint_is_never_near_expiry_however_small_the_retained_range() {
    for (first, last) in [(0, 0), (5, 5), (0, 3)] {
        let report = build(&snapshot(vec![partition(
            "0",
            None,
            Some(checkpointed("0", last, 1.0)),
            properties("0", first, last, 1.0),
        )]));
        assert_eq!(kinds(&report.partitions[0]), [], "{first}..={last}");
    }
    // One event retained and unread: it is the next to expire.
    let report = build(&snapshot(vec![partition(
        "0",
        None,
        Some(checkpointed("0", 4, 1.0)),
        properties("0", 5, 5, 1.0),
    )]));
    assert_eq!(
        kinds(&report.partitions[0]),
        [WarningKind::CheckpointNearExpiry]
    );
}

#[test]
fn an_empty_partition_whose_events_expired_unread_is_flagged_and_has_no_lag() {
    let mut emptied = properties("0", 50, 49, 100.0);
    emptied.is_empty = true;
    let report = build(&snapshot(vec![partition(
        "0",
        None,
        Some(checkpointed("0", 39, 200.0)),
        emptied,
    )]));
    let status = &report.partitions[0];
    assert_eq!(kinds(status), [WarningKind::CheckpointExpired]);
    assert_eq!(status.lag_events, Some(0));
    // A partition that never held an event shows no last event.
    let mut never = properties("1", 0, -1, 0.0);
    never.is_empty = true;
    let report = build(&snapshot(vec![partition("1", None, None, never)]));
    let status = &report.partitions[0];
    assert_eq!(status.last_enqueued_sequence_number, None);
    assert_eq!(status.last_enqueued_time, None);
    assert_eq!(status.lag_events, Some(0));
}

#[test]
fn a_partition_the_service_did_not_answer_for_is_a_warning_not_a_failure() {
    let mut unanswered = partition(
        "0",
        Some(owned("0", "a", 1.0)),
        None,
        properties("0", 0, 0, 0.0),
    );
    unanswered.properties = Err("timed out".into());
    let report = build(&snapshot(vec![unanswered]));
    let status = &report.partitions[0];
    assert_eq!(kinds(status), [WarningKind::PartitionUnavailable]);
    assert_eq!(
        status.warnings[0].message,
        "the service did not answer: timed out"
    );
    assert_eq!(
        (status.lag_events, status.begin_sequence_number),
        (None, None)
    );
    assert_eq!(status.ownership, OwnershipState::Active);
}

#[test]
fn ages_read_in_the_largest_two_units() {
    let cases = [
        (0.0, "0s"),
        (12.9, "12s"),
        (59.0, "59s"),
        (60.0, "1m00s"),
        (245.0, "4m05s"),
        (3600.0, "1h00m"),
        (11_220.0, "3h07m"),
        (187_200.0, "2d04h"),
        (-5.0, "0s"),
    ];
    for (seconds, text) in cases {
        assert_eq!(human_duration(seconds), text, "{seconds}");
    }
}

fn fleet_snapshot() -> Snapshot {
    let mut held = partition(
        "1",
        Some(owned("1", "host-b", 2.0)),
        Some(checkpointed("1", 96, 4.0)),
        properties("1", 0, 99, 0.3),
    );
    held.oldest_unread = OldestUnread::Unavailable;
    snapshot(vec![
        partition(
            "0",
            Some(owned("0", "host-a", 1.0)),
            Some(checkpointed("0", 99, 3.0)),
            properties("0", 0, 99, 3.5),
        ),
        held,
        partition(
            "2",
            Some(owned("2", "host-c", 75.0)),
            Some(checkpointed("2", 5, 80.0)),
            properties("2", 50, 149, 1.0),
        ),
        partition("3", None, None, properties("3", 0, -1, 0.0)),
    ])
}

#[test]
fn the_table_has_a_row_per_partition_the_owners_and_the_totals() {
    let table = render_table(&build(&fleet_snapshot()));
    let expected = "\
event hub telemetry | consumer group $Default | namespace myns.servicebus.windows.net | file store /var/lib/hubcap/checkpoints | 2026-12-02T10:00:00.000Z | ownership expires after 1m00s

PARTITION  OWNER   OWNERSHIP  RENEWED    CHECKPOINT  OFFSET  WRITTEN    LAST SEQ  LAST ENQUEUED             LAG  LAG TIME  WARNING
0          host-a  active     1s ago             99  9900    3s ago           99  2026-12-02T09:59:56.500Z    0        0s
1          host-b  active     2s ago             96  9600    4s ago           99  2026-12-02T09:59:59.700Z    3       ~4s
2          host-c  EXPIRED    1m15s ago           5  500     1m20s ago       149  2026-12-02T09:59:59.000Z  100    ~1m20s  44 events expired unread: the checkpoint is at 5, the first retained event is 50
3          -       unowned    -                   -  -       -                 -  -                           0        0s  no checkpoint: a consumer starts at the earliest retained event

owners: 3 (host-a 1, host-b 1, host-c 1 expired)
partitions: 4 (2 active, 1 expired, 0 released, 1 unowned); lag 103 events; 2 with warnings
~ estimated: a running consumer keeps others from reading the oldest unread event, so its age is taken from the earlier of the checkpoint's write and the last enqueue
";
    assert_eq!(table, expected, "\n{table}");
}

#[test]
fn the_json_document_keeps_its_keys() {
    let report = build(&fleet_snapshot());
    let value: serde_json::Value = serde_json::from_str(&render_json(&report, false)).unwrap();
    let keys = |value: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let sorted = |list: &[&str]| {
        let mut list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        list.sort();
        list
    };
    assert_eq!(
        keys(&value),
        sorted(&[
            "generated_at",
            "namespace",
            "event_hub",
            "consumer_group",
            "checkpoint_store",
            "ownership_expiration_seconds",
            "near_expiry_percent",
            "partitions",
            "owners",
            "totals",
        ])
    );
    assert_eq!(
        keys(&value["checkpoint_store"]),
        sorted(&["type", "location"])
    );
    let partition = &value["partitions"][2];
    assert_eq!(
        keys(partition),
        sorted(&[
            "partition_id",
            "owner_id",
            "ownership",
            "ownership_expired",
            "ownership_renewed_at",
            "ownership_age_seconds",
            "checkpoint",
            "begin_sequence_number",
            "last_enqueued_sequence_number",
            "last_enqueued_offset",
            "last_enqueued_time",
            "is_empty",
            "lag_events",
            "lag_seconds",
            "lag_seconds_estimated",
            "warnings",
        ])
    );
    assert_eq!(
        keys(&partition["checkpoint"]),
        sorted(&["sequence_number", "offset", "written_at", "age_seconds"])
    );
    assert_eq!(
        keys(&partition["warnings"][0]),
        sorted(&["kind", "message"])
    );
    assert_eq!(partition["warnings"][0]["kind"], "checkpoint_expired");
    assert_eq!(partition["ownership"], "expired");
    assert_eq!(
        partition["ownership_renewed_at"],
        "2026-12-02T09:58:45.000Z"
    );
    assert_eq!(
        keys(&value["owners"][0]),
        sorted(&[
            "owner_id",
            "partitions",
            "active",
            "expired",
            "partition_ids"
        ])
    );
    assert_eq!(
        keys(&value["totals"]),
        sorted(&[
            "partitions",
            "active",
            "expired",
            "released",
            "unowned",
            "lag_events",
            "partitions_with_warnings",
        ])
    );
    assert_eq!(
        value["partitions"][3]["checkpoint"],
        serde_json::Value::Null
    );
    assert_eq!(value["partitions"][3]["ownership"], "unowned");
}
