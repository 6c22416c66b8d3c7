//! Positions operators name on the command line (`earliest`, `latest`, `seq:N`, `time:T`) and
//! how they are resolved to events through the service.
//!
//! Resolution reads: Event Hubs has no "which sequence number was enqueued at T" request, so a
//! time is resolved by attaching a receiver at that time and taking the first event it delivers
//! (the same filter the SDKs use for an enqueued-time start position).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::eventhubs::{
    EventHubClient, EventHubsError, EventPosition, PartitionProperties, ReceiverOptions,
};

/// A position as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionSpec {
    /// The first retained event.
    Earliest,
    /// After the last enqueued event (for `--to`: the last enqueued event itself).
    Latest,
    /// The event with this sequence number.
    Sequence(i64),
    /// The first event enqueued at or after this time (milliseconds since the Unix epoch).
    Time(i64),
}

/// A [`PositionSpec`] that does not parse; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a position: use earliest, latest, seq:N (a sequence number) or time:T (RFC 3339, e.g. time:2026-12-01T08:00:00Z){detail}")]
pub struct PositionSpecError {
    value: String,
    detail: String,
}

impl FromStr for PositionSpec {
    type Err = PositionSpecError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |detail: String| PositionSpecError {
            value: value.to_owned(),
            detail,
        };
        let trimmed = value.trim();
        match trimmed {
            "earliest" => return Ok(Self::Earliest),
            "latest" => return Ok(Self::Latest),
            _ => {}
        }
        if let Some(number) = trimmed.strip_prefix("seq:") {
            return match number.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Self::Sequence(n)),
                Ok(n) => Err(error(format!(" ({n}: sequence numbers start at 0)"))),
                Err(e) => Err(error(format!(" ({e})"))),
            };
        }
        if let Some(moment) = trimmed.strip_prefix("time:") {
            return match OffsetDateTime::parse(moment.trim(), &Rfc3339) {
                Ok(t) => Ok(Self::Time(
                    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
                )),
                Err(e) => Err(error(format!(" ({e})"))),
            };
        }
        Err(error(String::new()))
    }
}

impl fmt::Display for PositionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Earliest => f.write_str("earliest"),
            Self::Latest => f.write_str("latest"),
            Self::Sequence(n) => write!(f, "seq:{n}"),
            Self::Time(ms) => write!(f, "time:{}", crate::sink::stdout::rfc3339_ms(*ms)),
        }
    }
}

/// One event as positions resolve to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAt {
    pub sequence_number: i64,
    pub offset: String,
    pub enqueued_time_ms: i64,
}

/// Where a [`PositionSpec`] falls in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// At this retained event.
    Event(EventAt),
    /// After the partition's last event: nothing is there yet (`latest`, a time or a sequence
    /// number past the end).
    End {
        /// The partition's last enqueued sequence number (`-1` when it never held an event).
        last_sequence_number: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    EventHubs(#[from] EventHubsError),
    /// Older than the first retained event: it expired out of retention.
    #[error("partition {partition_id}: {spec} is before the first retained event (sequence number {begin_sequence_number})")]
    Expired {
        partition_id: String,
        spec: PositionSpec,
        begin_sequence_number: i64,
    },
    #[error("partition {partition_id}: no event arrived within {timeout:?} at {spec}, though the partition reports events there")]
    NoAnswer {
        partition_id: String,
        spec: PositionSpec,
        timeout: Duration,
    },
}

/// How long a resolving receiver waits for its one event.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `spec` in one partition. `properties` are the partition's, read just before.
/// Receivers are non-epoch: they never disconnect a running consumer (and the service refuses
/// them while one with an owner level holds the partition in the same consumer group: see
/// [`EventHubsError`] for the message).
pub async fn resolve(
    client: &EventHubClient,
    properties: &PartitionProperties,
    spec: PositionSpec,
) -> Result<Resolved, ResolveError> {
    let end = Resolved::End {
        last_sequence_number: properties.last_enqueued_sequence_number,
    };
    let position = match spec {
        PositionSpec::Latest => return Ok(end),
        _ if properties.is_empty || properties.last_enqueued_sequence_number < 0 => return Ok(end),
        PositionSpec::Earliest => EventPosition::SequenceNumber {
            sequence_number: properties.begin_sequence_number,
            inclusive: true,
        },
        PositionSpec::Sequence(n) => {
            if n > properties.last_enqueued_sequence_number {
                return Ok(end);
            }
            if n < properties.begin_sequence_number {
                return Err(ResolveError::Expired {
                    partition_id: properties.partition_id.clone(),
                    spec,
                    begin_sequence_number: properties.begin_sequence_number,
                });
            }
            EventPosition::SequenceNumber {
                sequence_number: n,
                inclusive: true,
            }
        }
        PositionSpec::Time(ms) => {
            if ms > properties.last_enqueued_time_ms {
                return Ok(end);
            }
            EventPosition::EnqueuedTime {
                enqueued_time_ms: ms,
                inclusive: true,
            }
        }
    };
    match first_event_at(client, &properties.partition_id, &position).await? {
        Some(event) => Ok(Resolved::Event(event)),
        // The partition said events are there, yet none came: report rather than guess.
        None => Err(ResolveError::NoAnswer {
            partition_id: properties.partition_id.clone(),
            spec,
            timeout: RESOLVE_TIMEOUT,
        }),
    }
}

/// The first event a non-epoch receiver at `position` delivers, or `None` after
/// [`RESOLVE_TIMEOUT`].
pub async fn first_event_at(
    client: &EventHubClient,
    partition_id: &str,
    position: &EventPosition,
) -> Result<Option<EventAt>, EventHubsError> {
    let options = ReceiverOptions {
        prefetch: 1,
        prefetch_bytes: 1 << 20,
        owner_level: None,
    };
    let mut receiver = client
        .open_receiver(partition_id, position, options)
        .await?;
    let mut batch = Vec::with_capacity(1);
    let received = tokio::time::timeout(RESOLVE_TIMEOUT, receiver.recv_batch(1, &mut batch)).await;
    receiver.close().await;
    match received {
        Err(_elapsed) => Ok(None),
        Ok(Err(error)) => Err(error),
        Ok(Ok(())) => Ok(batch.first().map(|event| EventAt {
            sequence_number: event.sequence_number,
            offset: event.offset.clone(),
            enqueued_time_ms: event.enqueued_time_ms,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for (text, spec) in [
            ("earliest", PositionSpec::Earliest),
            ("latest", PositionSpec::Latest),
            ("seq:0", PositionSpec::Sequence(0)),
            ("seq:1234", PositionSpec::Sequence(1234)),
            (
                "time:2026-12-01T08:00:00.250Z",
                PositionSpec::Time(1_796_112_000_250),
            ),
        ] {
            assert_eq!(text.parse::<PositionSpec>(), Ok(spec), "{text}");
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "time:2026-12-01T09:00:00+01:00".parse::<PositionSpec>(),
            Ok(PositionSpec::Time(1_796_112_000_000))
        );
    }

    #[test]
    fn bad_positions_say_what_is_accepted() {
        for bad in [
            "",
            "seq:",
            "seq:-1",
            "seq:x",
            "time:yesterday",
            "offset:5",
            "Earliest",
        ] {
            let error = bad.parse::<PositionSpec>().unwrap_err().to_string();
            assert!(
                error.contains("use earliest, latest, seq:N"),
                "{bad}: {error}"
            );
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        let negative = "seq:-1".parse::<PositionSpec>().unwrap_err().to_string();
        assert!(negative.contains("start at 0"), "{negative}");
    }
}
