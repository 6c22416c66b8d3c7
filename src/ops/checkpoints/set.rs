//! `hubcap checkpoints set`: the checkpoint that makes readers start at a chosen event.
//!
//! A checkpoint is exclusive: hubcap and the SDK processors resume *after* it. To start at
//! event `s`, the checkpoint written is event `s - 1`: its sequence number and its offset,
//! read from the service. Which of the two a reader uses differs: hubcap resumes after the
//! offset, else the sequence number ([`crate::supervisor::start_after`]); the Python
//! `EventProcessor` (azure-eventhub 5.15.1, `_eventprocessor_mixin.get_init_event_position`)
//! looks at the offset alone (`x-opt-offset > '<offset>'`) and falls back to its configured
//! starting position when the offset is empty, so both keys are always written and agree.
//! (The Python checkpoint store also parses `sequencenumber` with `int()`, so it is never
//! left empty.)
//!
//! When `s` is the first retained event, event `s - 1` has expired and its offset cannot be
//! read. The record written is then `offset = "-1"`, `sequencenumber = s - 1`: `-1` is the
//! service's start-of-stream offset, so `x-opt-offset > '-1'` starts every reader at the first
//! retained event, which is `s` (or a later one if `s` expires before the reader starts: those
//! events are gone for any reader), and the sequence number says where the checkpoint stands
//! for readers that look at it (hubcap's expected first event, `status`'s lag). `earliest` is
//! written the same way; `latest` is the partition's last enqueued event (its offset and
//! sequence number from the partition's properties), so reading starts with the next event
//! to arrive.
//!
//! Reading event `s - 1` (and resolving a time) takes a receiver without an owner level. The
//! service refuses one while a reader with an owner level (a running hubcap, an SDK processor)
//! holds the partition in the same consumer group, so `--lookup-consumer-group` reads through
//! another consumer group of the hub: sequence numbers and offsets are the partition's, the
//! same in every consumer group.

use crate::checkpoint::Checkpoint;
use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, PartitionProperties, Recovery,
};
use crate::ops::position::{self, EventAt, PositionSpec, ResolveError, Resolved};
use crate::sink::stdout::rfc3339_ms;

/// The start-of-stream offset: a reader after it starts at the first retained event.
pub const START_OF_STREAM: &str = "-1";

/// Where one partition's new checkpoint makes readers start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The checkpoint to write (event `resume.sequence_number - 1`).
    pub checkpoint: Checkpoint,
    pub resume: Resume,
}

/// The event readers start at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub sequence_number: i64,
    /// When it was enqueued, if it was read.
    pub enqueued_time_ms: Option<i64>,
    pub kind: ResumeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeKind {
    /// A retained event with a retained event before it.
    Event,
    /// The first retained event (the one before it expired).
    FirstRetained,
    /// The next event to arrive: nothing is there yet.
    NextToArrive,
}

impl std::fmt::Display for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence number {}", self.sequence_number)?;
        match self.kind {
            ResumeKind::Event => {}
            ResumeKind::FirstRetained => f.write_str(", the first retained event")?,
            ResumeKind::NextToArrive => f.write_str(", the next event to arrive")?,
        }
        if let Some(ms) = self.enqueued_time_ms {
            write!(f, " (enqueued {})", rfc3339_ms(ms))?;
        }
        Ok(())
    }
}

/// The checkpoint that makes a reader start at sequence number `next`: the event before it
/// when it is known, else the start-of-stream offset with `next - 1` (see the module doc).
pub fn checkpoint_before(
    partition_id: &str,
    next_sequence_number: i64,
    previous: Option<&EventAt>,
) -> Checkpoint {
    let (offset, sequence_number) = match previous {
        Some(event) => (event.offset.clone(), event.sequence_number),
        None => (START_OF_STREAM.to_owned(), next_sequence_number - 1),
    };
    Checkpoint {
        partition_id: partition_id.to_owned(),
        offset: Some(offset),
        sequence_number: Some(sequence_number),
        committed_in: None,
    }
}

/// The checkpoint after the partition's last enqueued event.
pub fn checkpoint_at_end(properties: &PartitionProperties) -> Target {
    let last = properties.last_enqueued_sequence_number;
    // A partition that never held an event: its next event is the first one there is.
    let offset = if last < 0 || properties.last_enqueued_offset.is_empty() {
        START_OF_STREAM.to_owned()
    } else {
        properties.last_enqueued_offset.clone()
    };
    Target {
        checkpoint: Checkpoint {
            partition_id: properties.partition_id.clone(),
            offset: Some(offset),
            sequence_number: Some(last),
            committed_in: None,
        },
        resume: Resume {
            sequence_number: last + 1,
            enqueued_time_ms: None,
            kind: ResumeKind::NextToArrive,
        },
    }
}

/// Resolves `spec` in one partition to the checkpoint to write. `properties` were read just
/// before; `lookup_group` names the consumer group the client reads through, for messages.
pub async fn target(
    client: &EventHubClient,
    properties: &PartitionProperties,
    spec: PositionSpec,
    lookup_group: &str,
) -> anyhow::Result<Target> {
    let id = &properties.partition_id;
    let begin = properties.begin_sequence_number;
    let last = properties.last_enqueued_sequence_number;
    let first_retained = |sequence_number: i64, enqueued_time_ms: Option<i64>| Target {
        checkpoint: checkpoint_before(id, sequence_number, None),
        resume: Resume {
            sequence_number,
            enqueued_time_ms,
            kind: ResumeKind::FirstRetained,
        },
    };
    let empty = properties.is_empty || last < begin;
    match spec {
        PositionSpec::Latest => Ok(checkpoint_at_end(properties)),
        PositionSpec::Earliest if empty => Ok(checkpoint_at_end(properties)),
        PositionSpec::Earliest => Ok(first_retained(begin, None)),
        PositionSpec::Sequence(n) if n == last + 1 => Ok(checkpoint_at_end(properties)),
        PositionSpec::Sequence(n) if n > last => anyhow::bail!(
            "partition {id}: {spec} is past the end: the last enqueued sequence number is \
             {last} (seq:{} or latest starts at the next event to arrive); nothing written",
            last + 1
        ),
        PositionSpec::Sequence(n) if n < begin => anyhow::bail!(
            "partition {id}: {spec} has expired: the first retained event is sequence number \
             {begin} (use seq:{begin} or earliest); nothing written"
        ),
        PositionSpec::Sequence(n) if n == begin => Ok(first_retained(n, None)),
        PositionSpec::Sequence(n) => after_previous(client, id, n, None, lookup_group).await,
        PositionSpec::Time(ms) => {
            let resolved = position::resolve(client, properties, spec)
                .await
                .map_err(|e| resolve_error(e, id, lookup_group))?;
            match resolved {
                Resolved::End { .. } if ms > now_ms() => {
                    anyhow::bail!("partition {id}: {spec} is in the future; nothing written")
                }
                Resolved::End { .. } if empty => anyhow::bail!(
                    "partition {id}: {spec}: the partition holds no event; use --to latest \
                     to start at the next event to arrive; nothing written"
                ),
                Resolved::End { .. } => anyhow::bail!(
                    "partition {id}: {spec} is after the last enqueued event (sequence number \
                     {last}, enqueued {}): no event is there yet; use --to latest to start at \
                     the next event to arrive; nothing written",
                    rfc3339_ms(properties.last_enqueued_time_ms)
                ),
                Resolved::Event(event) if event.sequence_number <= begin => Ok(first_retained(
                    event.sequence_number,
                    Some(event.enqueued_time_ms),
                )),
                Resolved::Event(event) => {
                    after_previous(
                        client,
                        id,
                        event.sequence_number,
                        Some(event.enqueued_time_ms),
                        lookup_group,
                    )
                    .await
                }
            }
        }
    }
}

/// The target for starting at `next`, whose predecessor should be retained: reads it for its
/// offset. If it expired in the meantime, `next` is (at best) the first retained event.
async fn after_previous(
    client: &EventHubClient,
    partition_id: &str,
    next: i64,
    enqueued_time_ms: Option<i64>,
    lookup_group: &str,
) -> anyhow::Result<Target> {
    let position = EventPosition::SequenceNumber {
        sequence_number: next - 1,
        inclusive: true,
    };
    let found = position::first_event_at(client, partition_id, &position)
        .await
        .map_err(|e| resolve_error(ResolveError::EventHubs(e), partition_id, lookup_group))?;
    let resume = |kind| Resume {
        sequence_number: next,
        enqueued_time_ms,
        kind,
    };
    match found {
        Some(previous) if previous.sequence_number == next - 1 => Ok(Target {
            checkpoint: checkpoint_before(partition_id, next, Some(&previous)),
            resume: resume(ResumeKind::Event),
        }),
        Some(first) if first.sequence_number == next => Ok(Target {
            checkpoint: checkpoint_before(partition_id, next, None),
            resume: resume(ResumeKind::FirstRetained),
        }),
        Some(first) => anyhow::bail!(
            "partition {partition_id}: sequence number {next} expired while it was being \
             resolved (the first retained event is now {}); nothing written",
            first.sequence_number
        ),
        None => anyhow::bail!(
            "partition {partition_id}: no event arrived at sequence number {} though the \
             partition reports it retained; nothing written",
            next - 1
        ),
    }
}

/// A resolution error with the partition, and the way out when a reader with an owner level
/// holds the partition in the lookup consumer group.
fn resolve_error(error: ResolveError, partition_id: &str, lookup_group: &str) -> anyhow::Error {
    match &error {
        // The service's refusal of a reader without an owner level (`amqp:link:stolen`).
        ResolveError::EventHubs(inner @ EventHubsError::Amqp { description, .. })
            if inner.recovery() == Recovery::PartitionLost =>
        {
            anyhow::anyhow!(
                "partition {partition_id}: the service refused a reader in consumer group \
             {lookup_group:?} ({description}): a consumer with an owner level (a running \
             hubcap or SDK processor) reads the partition in that group. Read the positions \
             through another consumer group of the hub with --lookup-consumer-group NAME; \
             nothing written"
            )
        }
        ResolveError::EventHubs(inner) => {
            anyhow::anyhow!(
                "partition {partition_id}: reading its events: {inner}; nothing written"
            )
        }
        _ => anyhow::anyhow!("{error}; nothing written"),
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(begin: i64, last: i64) -> PartitionProperties {
        PartitionProperties {
            partition_id: "3".into(),
            begin_sequence_number: begin,
            last_enqueued_sequence_number: last,
            last_enqueued_offset: if last < 0 { "-1".into() } else { "9000".into() },
            last_enqueued_time_ms: 1_796_112_000_000,
            is_empty: last < begin,
        }
    }

    fn position(offset: &str, sequence_number: i64) -> (Option<String>, Option<i64>) {
        (Some(offset.to_owned()), Some(sequence_number))
    }

    fn of(checkpoint: &Checkpoint) -> (Option<String>, Option<i64>) {
        (checkpoint.offset.clone(), checkpoint.sequence_number)
    }

    #[test]
    fn the_checkpoint_is_the_event_before_else_start_of_stream_with_the_number_before() {
        let previous = EventAt {
            sequence_number: 41,
            offset: "8200".into(),
            enqueued_time_ms: 0,
        };
        assert_eq!(
            of(&checkpoint_before("3", 42, Some(&previous))),
            position("8200", 41)
        );
        // The first retained event is 42: the one before expired.
        assert_eq!(of(&checkpoint_before("3", 42, None)), position("-1", 41));
        assert_eq!(of(&checkpoint_before("3", 0, None)), position("-1", -1));
    }

    #[test]
    fn the_end_is_the_last_event_or_start_of_stream_when_there_never_was_one() {
        let end = checkpoint_at_end(&properties(10, 99));
        assert_eq!(of(&end.checkpoint), position("9000", 99));
        assert_eq!(end.resume.sequence_number, 100);
        assert_eq!(end.resume.kind, ResumeKind::NextToArrive);
        let never = checkpoint_at_end(&properties(0, -1));
        assert_eq!(of(&never.checkpoint), position("-1", -1));
        assert_eq!(never.resume.sequence_number, 0);
    }

    #[test]
    fn resumes_read_as_sentences() {
        let resume = Resume {
            sequence_number: 10,
            enqueued_time_ms: Some(1_796_112_000_250),
            kind: ResumeKind::FirstRetained,
        };
        assert_eq!(
            resume.to_string(),
            "sequence number 10, the first retained event (enqueued 2026-12-01T08:00:00.250Z)"
        );
    }
}
