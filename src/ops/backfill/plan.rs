//! What a backfill reads, decided before anything is written: each partition's range from
//! `--from`/`--to`, minus what the archive already holds. Pure, apart from [`resolve_range`],
//! which asks the service where the positions fall.

use crate::eventhubs::{EventHubClient, PartitionProperties};
use crate::ops::position::{resolve, PositionSpec, ResolveError, Resolved};

/// Sequence numbers `first..=last` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeqRange {
    pub first: i64,
    pub last: i64,
}

impl SeqRange {
    /// `None` when `last < first` (nothing in between).
    pub fn new(first: i64, last: i64) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    pub fn events(&self) -> u64 {
        u64::try_from(self.last - self.first + 1).unwrap_or(0)
    }
}

impl std::fmt::Display for SeqRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

/// The parts of `want` the archive does not hold; `archived` are sorted, disjoint, merged runs
/// (see [`crate::verify::ranges::merge_runs`]).
pub fn missing(want: SeqRange, archived: &[(i64, i64)]) -> Vec<SeqRange> {
    let mut gaps = Vec::new();
    let mut next = want.first;
    for &(first, last) in archived {
        if last < next {
            continue;
        }
        if first > want.last {
            break;
        }
        gaps.extend(SeqRange::new(next, first.saturating_sub(1).min(want.last)));
        next = last.saturating_add(1);
        if next > want.last {
            return gaps;
        }
    }
    gaps.extend(SeqRange::new(next, want.last));
    gaps
}

/// Why a requested range cannot be read, found before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--from {0}: a backfill starts at an event; `latest` names none (use earliest, seq:N or time:T)")]
    FromLatest(PositionSpec),
    #[error(
        "{flag} {spec} is in the future (now is {now}): backfill archives events that have arrived"
    )]
    Future {
        flag: &'static str,
        spec: PositionSpec,
        now: String,
    },
    #[error("--to {to} is before --from {from}")]
    Reversed {
        from: PositionSpec,
        to: PositionSpec,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// The checks that need no service: `latest` cannot start a range, a time must have passed,
/// and two positions of one kind must be in order (mixed kinds are ordered per partition, once
/// resolved).
pub fn check_specs(from: PositionSpec, to: PositionSpec, now_ms: i64) -> Result<(), PlanError> {
    if from == PositionSpec::Latest {
        return Err(PlanError::FromLatest(from));
    }
    for (flag, spec) in [("--from", from), ("--to", to)] {
        if let PositionSpec::Time(ms) = spec {
            if ms > now_ms {
                return Err(PlanError::Future {
                    flag,
                    spec,
                    now: crate::sink::stdout::rfc3339_ms(now_ms),
                });
            }
        }
    }
    let reversed = match (from, to) {
        (PositionSpec::Sequence(a), PositionSpec::Sequence(b))
        | (PositionSpec::Time(a), PositionSpec::Time(b)) => b < a,
        (PositionSpec::Earliest, _) | (_, PositionSpec::Latest) => false,
        (_, PositionSpec::Earliest) => true,
        _ => false,
    };
    if reversed {
        return Err(PlanError::Reversed { from, to });
    }
    Ok(())
}

/// One partition's range: `from`'s event to `to`'s (both included), as the service places
/// them now. `None`: nothing in between (the partition is empty there). A `--to seq:N` past the
/// partition's last event stops at its last event; `--to time:T` stops at the last event
/// enqueued at or before T.
pub async fn resolve_range(
    client: &EventHubClient,
    properties: &PartitionProperties,
    from: PositionSpec,
    to: PositionSpec,
) -> Result<Option<SeqRange>, PlanError> {
    let first = match resolve(client, properties, from).await? {
        Resolved::Event(event) => {
            if let PositionSpec::Time(ms) = from {
                if event.sequence_number == properties.begin_sequence_number
                    && properties.begin_sequence_number > 0
                    && event.enqueued_time_ms > ms
                {
                    eprintln!(
                        "note: partition {}: the range starts at the first retained event \
                         ({}): older events have expired, some may have been enqueued after {from}",
                        properties.partition_id, event.sequence_number
                    );
                }
            }
            event.sequence_number
        }
        Resolved::End { .. } => return Ok(None),
    };
    let end = properties.last_enqueued_sequence_number;
    let last = match to {
        PositionSpec::Latest => end,
        PositionSpec::Sequence(n) => n.min(end),
        // The last event at or before T is the one before the first event after T.
        PositionSpec::Time(ms) => {
            match resolve(client, properties, PositionSpec::Time(ms + 1)).await? {
                Resolved::Event(event) => event.sequence_number - 1,
                Resolved::End { .. } => end,
            }
        }
        PositionSpec::Earliest => properties.begin_sequence_number,
    };
    Ok(SeqRange::new(first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, last: i64) -> SeqRange {
        SeqRange::new(first, last).unwrap()
    }

    #[test]
    fn what_the_archive_holds_is_not_read_again() {
        let want = range(100, 199);
        assert_eq!(missing(want, &[]), vec![want]);
        assert_eq!(missing(want, &[(0, 99), (200, 300)]), vec![want]);
        assert_eq!(missing(want, &[(0, 500)]), vec![]);
        assert_eq!(missing(want, &[(100, 199)]), vec![]);
        assert_eq!(
            missing(want, &[(0, 109), (120, 129), (190, 250)]),
            vec![range(110, 119), range(130, 189)]
        );
        assert_eq!(
            missing(want, &[(150, 150)]),
            vec![range(100, 149), range(151, 199)]
        );
        assert_eq!(
            missing(want, &[(100, 100), (199, 199)]),
            vec![range(101, 198)]
        );
    }

    #[test]
    fn ranges_count_both_ends() {
        assert_eq!(range(5, 5).events(), 1);
        assert_eq!(range(0, 99).events(), 100);
        assert_eq!(SeqRange::new(5, 4), None);
        assert_eq!(range(3, 9).to_string(), "3..=9");
    }

    #[test]
    fn positions_are_checked_before_the_service_is_asked() {
        let now = 1_800_000_000_000;
        let time = PositionSpec::Time;
        let seq = PositionSpec::Sequence;
        assert!(check_specs(time(now - 10), time(now), now).is_ok());
        assert!(check_specs(seq(5), seq(5), now).is_ok());
        assert!(check_specs(PositionSpec::Earliest, PositionSpec::Latest, now).is_ok());
        // Mixed kinds are ordered once resolved.
        assert!(check_specs(seq(5), time(now - 1), now).is_ok());
        let future = check_specs(time(now + 1000), PositionSpec::Latest, now)
            .unwrap_err()
            .to_string();
        assert!(
            future.starts_with("--from time:") && future.contains("is in the future"),
            "{future}"
        );
        let future_to = check_specs(seq(0), time(now + 1), now)
            .unwrap_err()
            .to_string();
        assert!(future_to.starts_with("--to time:"), "{future_to}");
        assert_eq!(
            check_specs(seq(10), seq(9), now).unwrap_err().to_string(),
            "--to seq:9 is before --from seq:10"
        );
        assert!(check_specs(time(now), time(now - 1), now).is_err());
        assert!(check_specs(seq(1), PositionSpec::Earliest, now).is_err());
        assert!(check_specs(PositionSpec::Latest, PositionSpec::Latest, now)
            .unwrap_err()
            .to_string()
            .contains("`latest` names none"));
    }
}
