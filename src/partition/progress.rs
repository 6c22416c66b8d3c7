//! The partition task's decisions, as pure functions: where to read next, what an error means
//! for the partition, whether a silent receiver is stuck, and what expired unread.

use crate::eventhubs::{EventPosition, PartitionProperties};
use crate::recovery::Recovery;

/// What the partition does after an error on its receive link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterReceiveError {
    /// Back off, then attach again at the same position (after the last event received).
    BackOffAndReattach,
    /// The position does not exist (a recreated hub, a checkpoint past the end): read
    /// everything there is rather than skip anything.
    ReadFromEarliest,
    /// Another reader took the partition.
    Lose,
    /// Retrying cannot help.
    Stop,
}

pub fn after_receive_error(recovery: Recovery) -> AfterReceiveError {
    match recovery {
        Recovery::Retry | Recovery::Reconnect => AfterReceiveError::BackOffAndReattach,
        Recovery::Reread => AfterReceiveError::ReadFromEarliest,
        Recovery::PartitionLost => AfterReceiveError::Lose,
        Recovery::Fatal => AfterReceiveError::Stop,
    }
}

/// Where to read from after the event with `sequence_number` was received.
pub fn after(sequence_number: i64) -> EventPosition {
    EventPosition::SequenceNumber {
        sequence_number,
        inclusive: false,
    }
}

/// Where to read a dropped window again: from its first event.
pub fn from(sequence_number: i64) -> EventPosition {
    EventPosition::SequenceNumber {
        sequence_number,
        inclusive: true,
    }
}

/// Events that expired out of retention before they were read: the first event received
/// after a checkpoint should be `expected`; a later one means the ones between are gone.
pub fn expired_unread(expected: Option<i64>, first_received: i64) -> Option<u64> {
    match expected {
        Some(expected) if first_received > expected => Some((first_received - expected) as u64),
        _ => None,
    }
}

/// Whether the service holds events at or after `position` (the watchdog's question: a silent
/// receiver is stuck only if there is something to deliver). An offset says nothing about
/// sequence numbers, so it counts through `expected_sequence_number` or not at all; `Latest`
/// and time positions never count: the watchdog must not recycle on guesses.
pub fn has_backlog(
    position: &EventPosition,
    expected_sequence_number: Option<i64>,
    properties: &PartitionProperties,
) -> bool {
    if properties.is_empty {
        return false;
    }
    let next = match position {
        EventPosition::SequenceNumber {
            sequence_number,
            inclusive,
        } => Some(if *inclusive {
            *sequence_number
        } else {
            sequence_number + 1
        }),
        EventPosition::Earliest => return true,
        EventPosition::Offset { .. } => expected_sequence_number,
        EventPosition::Latest | EventPosition::EnqueuedTime { .. } => None,
    };
    next.is_some_and(|next| properties.last_enqueued_sequence_number >= next)
}

/// How far the event received last is behind the partition's end: events and seconds.
pub fn lag(
    properties: &PartitionProperties,
    last_sequence_number: i64,
    last_enqueued_time_ms: i64,
) -> (i64, f64) {
    let events = properties.last_enqueued_sequence_number - last_sequence_number;
    let seconds = (properties.last_enqueued_time_ms - last_enqueued_time_ms) as f64 / 1000.0;
    (events.max(0), seconds.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(last: i64) -> PartitionProperties {
        PartitionProperties {
            partition_id: "0".into(),
            begin_sequence_number: 0,
            last_enqueued_sequence_number: last,
            last_enqueued_offset: String::new(),
            last_enqueued_time_ms: 10_000,
            is_empty: last < 0,
        }
    }

    #[test]
    fn every_recovery_has_one_action() {
        use AfterReceiveError::*;
        assert_eq!(after_receive_error(Recovery::Retry), BackOffAndReattach);
        assert_eq!(after_receive_error(Recovery::Reconnect), BackOffAndReattach);
        assert_eq!(after_receive_error(Recovery::Reread), ReadFromEarliest);
        assert_eq!(after_receive_error(Recovery::PartitionLost), Lose);
        assert_eq!(after_receive_error(Recovery::Fatal), Stop);
    }

    #[test]
    fn positions_resume_after_a_received_event_and_at_a_dropped_window() {
        assert_eq!(
            after(41),
            EventPosition::SequenceNumber {
                sequence_number: 41,
                inclusive: false
            }
        );
        assert_eq!(
            from(7),
            EventPosition::SequenceNumber {
                sequence_number: 7,
                inclusive: true
            }
        );
    }

    #[test]
    fn a_gap_is_counted_only_when_the_first_event_is_later_than_expected() {
        assert_eq!(expired_unread(None, 100), None);
        assert_eq!(expired_unread(Some(100), 100), None);
        assert_eq!(expired_unread(Some(100), 99), None);
        assert_eq!(expired_unread(Some(100), 130), Some(30));
    }

    #[test]
    fn backlog_by_position_kind() {
        let after_ten = after(10);
        assert!(has_backlog(&after_ten, None, &properties(11)));
        assert!(!has_backlog(&after_ten, None, &properties(10)));
        assert!(has_backlog(&from(10), None, &properties(10)));
        assert!(!has_backlog(&from(11), None, &properties(10)));
        assert!(has_backlog(&EventPosition::Earliest, None, &properties(0)));
        assert!(!has_backlog(
            &EventPosition::Earliest,
            None,
            &properties(-1)
        ));
        let offset = EventPosition::Offset {
            offset: "512".into(),
            inclusive: false,
        };
        assert!(has_backlog(&offset, Some(5), &properties(5)));
        assert!(!has_backlog(&offset, Some(6), &properties(5)));
        assert!(!has_backlog(&offset, None, &properties(5)));
        assert!(!has_backlog(&EventPosition::Latest, None, &properties(5)));
        let time = EventPosition::EnqueuedTime {
            enqueued_time_ms: 0,
            inclusive: true,
        };
        assert!(!has_backlog(&time, None, &properties(5)));
    }

    #[test]
    fn lag_is_never_negative() {
        assert_eq!(lag(&properties(20), 15, 8_000), (5, 2.0));
        assert_eq!(lag(&properties(20), 25, 12_000), (0, 0.0));
    }
}
