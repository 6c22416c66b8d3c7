//! The emulator's event log: hubs, partitions, retention and start-position lookup.
//!
//! Every partition is an in-memory `VecDeque` of annotated events behind its own mutex (held only
//! to append or to copy out a batch of `Arc`s), plus a `watch` channel that wakes consumers when
//! new events arrive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::filter::StartPosition;
use crate::message::{self, AmqpMessage, MessageError, Stamp, StoredEvent};

/// `last_enqueued_time_utc` of an empty partition: 0001-01-01T00:00:00Z, the service's sentinel.
pub const EMPTY_PARTITION_TIME_MS: i64 = -62_135_596_800_000;

/// How many events a partition keeps; older events expire and advance `begin_sequence_number`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many events (`None` = unlimited).
    pub max_events: Option<u64>,
    /// Keep at most this many encoded bytes (`None` = unlimited); the newest event always stays.
    pub max_bytes: Option<u64>,
}

/// All hubs of the emulated namespace.
#[derive(Debug)]
pub struct Namespace {
    /// Namespace name as configured (reported in hub properties and logs).
    pub name: String,
    /// Hubs by lower-cased name: the service treats entity names case-insensitively.
    hubs: HashMap<String, Arc<Hub>>,
}

impl Namespace {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            hubs: HashMap::new(),
        }
    }

    pub fn add_hub(&mut self, hub: Hub) {
        self.hubs.insert(hub.name.to_lowercase(), Arc::new(hub));
    }

    pub fn hub(&self, name: &str) -> Option<&Arc<Hub>> {
        self.hubs.get(&name.to_lowercase())
    }

    pub fn hubs(&self) -> impl Iterator<Item = &Arc<Hub>> {
        self.hubs.values()
    }
}

/// One event hub with its partitions and consumer groups.
#[derive(Debug)]
pub struct Hub {
    /// Entity name as configured.
    pub name: String,
    /// Creation time reported by `$management` READ.
    pub created_at_ms: i64,
    /// Partitions indexed by their numeric id ("0", "1", ...).
    pub partitions: Vec<Arc<Partition>>,
    /// Consumer group names; `$Default` is always present.
    consumer_groups: Vec<String>,
    /// Next partition for sends to the hub without a partition key.
    round_robin: AtomicUsize,
}

impl Hub {
    pub fn new(
        name: impl Into<String>,
        partition_count: usize,
        consumer_groups: &[String],
        retention: Retention,
    ) -> Self {
        let mut groups = vec!["$Default".to_owned()];
        for group in consumer_groups {
            if !groups.iter().any(|g| g.eq_ignore_ascii_case(group)) {
                groups.push(group.clone());
            }
        }
        Self {
            name: name.into(),
            created_at_ms: now_ms(),
            partitions: (0..partition_count)
                .map(|id| Arc::new(Partition::new(id.to_string(), retention)))
                .collect(),
            consumer_groups: groups,
            round_robin: AtomicUsize::new(0),
        }
    }

    pub fn partition(&self, id: &str) -> Option<&Arc<Partition>> {
        let index: usize = id.parse().ok()?;
        // "01" parses as 1 but is not a partition id the service knows.
        self.partitions
            .get(index)
            .filter(|partition| partition.id == id)
    }

    pub fn has_consumer_group(&self, name: &str) -> bool {
        self.consumer_groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case(name))
    }

    pub fn partition_ids(&self) -> Vec<String> {
        self.partitions.iter().map(|p| p.id.clone()).collect()
    }

    /// Picks the partition for a send to the hub itself: a stable hash of the partition key, or
    /// round robin when there is none (a whole batch always lands in one partition).
    pub fn route(&self, partition_key: Option<&str>) -> &Arc<Partition> {
        let count = self.partitions.len();
        let index = match partition_key {
            Some(key) => (fnv1a(key.as_bytes()) % count as u64) as usize,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % count,
        };
        &self.partitions[index]
    }
}

/// A snapshot of what `$management` READ reports for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProperties {
    pub begin_sequence_number: i64,
    pub last_enqueued_sequence_number: i64,
    pub last_enqueued_offset: String,
    pub last_enqueued_time_ms: i64,
    pub is_empty: bool,
}

/// Why a start position cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("The supplied sequence number '{requested}' is invalid. The last sequence number in the system is '{last}'")]
    SequenceNumberPastEnd { requested: i64, last: i64 },
    #[error(
        "The supplied offset '{requested}' is invalid. The last offset in the system is '{last}'"
    )]
    OffsetPastEnd { requested: u64, last: String },
}

/// One partition's log.
#[derive(Debug)]
pub struct Partition {
    /// Partition id ("0", "1", ...).
    pub id: String,
    log: Mutex<PartitionLog>,
    /// Carries the next sequence number to be assigned; consumers wait on it for new events.
    appended: watch::Sender<i64>,
}

#[derive(Debug)]
struct PartitionLog {
    events: VecDeque<StoredEvent>,
    retention: Retention,
    next_sequence_number: i64,
    next_offset: u64,
    retained_bytes: u64,
    last_enqueued_time_ms: i64,
}

impl Partition {
    fn new(id: String, retention: Retention) -> Self {
        let (appended, _) = watch::channel(0);
        Self {
            id,
            log: Mutex::new(PartitionLog {
                events: VecDeque::new(),
                retention,
                next_sequence_number: 0,
                next_offset: 0,
                retained_bytes: 0,
                last_enqueued_time_ms: EMPTY_PARTITION_TIME_MS,
            }),
            appended,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PartitionLog> {
        // A panic while holding the lock cannot leave the log half-written (every mutation is a
        // push or pop), so a poisoned lock is still safe to use.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends published messages as consecutive events; returns their sequence numbers.
    pub fn append(
        &self,
        messages: Vec<AmqpMessage>,
        partition_key: Option<&str>,
    ) -> Result<std::ops::Range<i64>, MessageError> {
        let mut log = self.lock();
        let first = log.next_sequence_number;
        // Enqueued times never go backwards, even if the wall clock does.
        let enqueued_time_ms = now_ms().max(log.last_enqueued_time_ms);
        for message in messages {
            let stamp = Stamp {
                sequence_number: log.next_sequence_number,
                offset: log.next_offset,
                enqueued_time_ms,
            };
            let key = message::partition_key_of(&message);
            let event = message::stamp(message, stamp, key.as_deref().or(partition_key))?;
            log.push(event);
        }
        let next = log.next_sequence_number;
        drop(log);
        self.appended.send_replace(next);
        Ok(first..next)
    }

    /// Appends `count` synthetic events of `size` body bytes without going through AMQP.
    pub fn preload(&self, count: u64, size: usize) -> Result<(), MessageError> {
        // Stamp in chunks so consumers attached during a large preload are not starved.
        const CHUNK: u64 = 4096;
        let mut done = 0;
        while done < count {
            let n = CHUNK.min(count - done);
            let messages = (done..done + n)
                .map(|i| message::synthetic_event(i, size))
                .collect();
            self.append(messages, None)?;
            done += n;
        }
        Ok(())
    }

    /// Copies up to `max` events starting at `sequence_number` (or at the oldest retained event
    /// if that one expired) into `out`; returns the sequence number to read next.
    pub fn read_from(&self, sequence_number: i64, max: usize, out: &mut Vec<StoredEvent>) -> i64 {
        let log = self.lock();
        let Some(first) = log.events.front().map(|e| e.sequence_number) else {
            return sequence_number.max(log.next_sequence_number);
        };
        let start = sequence_number.max(first);
        let skip = (start - first) as usize;
        let before = out.len();
        out.extend(log.events.iter().skip(skip).take(max).cloned());
        start + (out.len() - before) as i64
    }

    /// Resolves a filter's start position to the first sequence number to deliver.
    pub fn resolve(&self, position: &StartPosition) -> Result<i64, PositionError> {
        let log = self.lock();
        let begin = log.begin_sequence_number();
        let next = log.next_sequence_number;
        match *position {
            StartPosition::Earliest => Ok(begin),
            StartPosition::Latest => Ok(next),
            StartPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => {
                let start = if inclusive {
                    sequence_number
                } else {
                    sequence_number.saturating_add(1)
                };
                if start > next {
                    return Err(PositionError::SequenceNumberPastEnd {
                        requested: sequence_number,
                        last: next - 1,
                    });
                }
                Ok(start.max(begin))
            }
            StartPosition::Offset { offset, inclusive } => {
                let last_offset = log.events.back().map(|e| e.offset);
                if last_offset.is_none_or(|last| offset > last) && offset > log.next_offset {
                    return Err(PositionError::OffsetPastEnd {
                        requested: offset,
                        last: last_offset.map_or("-1".to_owned(), |o| o.to_string()),
                    });
                }
                let found = log
                    .events
                    .iter()
                    .find(|e| e.offset > offset || (inclusive && e.offset == offset));
                Ok(found.map_or(next, |e| e.sequence_number))
            }
            StartPosition::EnqueuedTime {
                enqueued_time_ms,
                inclusive,
            } => {
                let found = log.events.iter().find(|e| {
                    e.enqueued_time_ms > enqueued_time_ms
                        || (inclusive && e.enqueued_time_ms == enqueued_time_ms)
                });
                Ok(found.map_or(next, |e| e.sequence_number))
            }
        }
    }

    pub fn properties(&self) -> PartitionProperties {
        let log = self.lock();
        let last = log.events.back();
        PartitionProperties {
            begin_sequence_number: log.begin_sequence_number(),
            last_enqueued_sequence_number: log.next_sequence_number - 1,
            last_enqueued_offset: last.map_or("-1".to_owned(), |e| e.offset.to_string()),
            last_enqueued_time_ms: log.last_enqueued_time_ms,
            is_empty: log.events.is_empty(),
        }
    }

    /// A receiver of "the next sequence number changed" notifications.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }
}

impl PartitionLog {
    fn push(&mut self, event: StoredEvent) {
        self.next_sequence_number = event.sequence_number + 1;
        self.next_offset = event.offset + event.encoded_len;
        self.last_enqueued_time_ms = event.enqueued_time_ms;
        self.retained_bytes += event.encoded_len;
        self.events.push_back(event);
        self.expire();
    }

    fn expire(&mut self) {
        while self.events.len() > 1 {
            let over_count = self
                .retention
                .max_events
                .is_some_and(|max| self.events.len() as u64 > max);
            let over_bytes = self
                .retention
                .max_bytes
                .is_some_and(|max| self.retained_bytes > max);
            if !(over_count || over_bytes) {
                break;
            }
            if let Some(expired) = self.events.pop_front() {
                self.retained_bytes -= expired.encoded_len;
            }
        }
    }

    fn begin_sequence_number(&self) -> i64 {
        self.events
            .front()
            .map_or(self.next_sequence_number, |e| e.sequence_number)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition_with(count: u64, retention: Retention) -> Partition {
        let partition = Partition::new("0".into(), retention);
        partition.preload(count, 10).unwrap();
        partition
    }

    #[test]
    fn sequence_numbers_are_consecutive_and_offsets_grow_by_encoded_size() {
        let partition = partition_with(5, Retention::default());
        let mut events = Vec::new();
        assert_eq!(partition.read_from(0, 100, &mut events), 5);
        let seqs: Vec<i64> = events.iter().map(|e| e.sequence_number).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        for pair in events.windows(2) {
            assert_eq!(pair[1].offset, pair[0].offset + pair[0].encoded_len);
        }
    }

    #[test]
    fn count_retention_advances_begin_sequence_number() {
        let partition = partition_with(
            25,
            Retention {
                max_events: Some(10),
                max_bytes: None,
            },
        );
        let props = partition.properties();
        assert_eq!(props.begin_sequence_number, 15);
        assert_eq!(props.last_enqueued_sequence_number, 24);
        let mut events = Vec::new();
        partition.read_from(0, 100, &mut events);
        assert_eq!(events.first().unwrap().sequence_number, 15);
        assert_eq!(events.len(), 10);
    }

    #[test]
    fn byte_retention_keeps_at_most_the_limit_but_never_less_than_one_event() {
        let partition = partition_with(
            20,
            Retention {
                max_events: None,
                max_bytes: Some(1),
            },
        );
        let props = partition.properties();
        assert_eq!(props.begin_sequence_number, 19);
        assert!(!props.is_empty);
    }

    #[test]
    fn empty_partition_properties_use_the_service_sentinels() {
        let partition = Partition::new("0".into(), Retention::default());
        let props = partition.properties();
        assert!(props.is_empty);
        assert_eq!(props.last_enqueued_sequence_number, -1);
        assert_eq!(props.last_enqueued_offset, "-1");
        assert_eq!(props.last_enqueued_time_ms, EMPTY_PARTITION_TIME_MS);
        assert_eq!(partition.resolve(&StartPosition::Earliest), Ok(0));
    }

    #[test]
    fn sequence_number_positions_inclusive_and_exclusive() {
        let partition = partition_with(10, Retention::default());
        let at = |sequence_number, inclusive| {
            partition.resolve(&StartPosition::SequenceNumber {
                sequence_number,
                inclusive,
            })
        };
        assert_eq!(at(4, true), Ok(4));
        assert_eq!(at(4, false), Ok(5));
        assert_eq!(at(9, false), Ok(10));
        assert_eq!(at(10, true), Ok(10));
        assert_eq!(at(-1, false), Ok(0));
        assert!(matches!(
            at(11, true),
            Err(PositionError::SequenceNumberPastEnd { .. })
        ));
    }

    #[test]
    fn offset_positions_inclusive_exclusive_and_past_the_end() {
        let partition = partition_with(10, Retention::default());
        let mut events = Vec::new();
        partition.read_from(0, 100, &mut events);
        let third = events[3].offset;
        let at =
            |offset, inclusive| partition.resolve(&StartPosition::Offset { offset, inclusive });
        assert_eq!(at(third, true), Ok(3));
        assert_eq!(at(third, false), Ok(4));
        // An offset between two events starts at the next one.
        assert_eq!(at(third + 1, true), Ok(4));
        assert_eq!(at(events[9].offset, false), Ok(10));
        assert!(matches!(
            at(u64::MAX, false),
            Err(PositionError::OffsetPastEnd { .. })
        ));
    }

    #[test]
    fn enqueued_time_positions_pick_the_first_later_event() {
        let partition = partition_with(3, Retention::default());
        let t = partition.properties().last_enqueued_time_ms;
        let at = |enqueued_time_ms, inclusive| {
            partition.resolve(&StartPosition::EnqueuedTime {
                enqueued_time_ms,
                inclusive,
            })
        };
        assert_eq!(at(t - 1, false), Ok(0));
        assert_eq!(at(t, false), Ok(3));
        assert_eq!(at(t, true), Ok(0));
        assert_eq!(at(t + 10_000, false), Ok(3));
    }

    #[test]
    fn partition_key_routing_is_stable_and_round_robin_spreads() {
        let hub = Hub::new("hub1", 4, &[], Retention::default());
        let first = hub.route(Some("device-7")).id.clone();
        for _ in 0..20 {
            assert_eq!(hub.route(Some("device-7")).id, first);
        }
        let ids: std::collections::HashSet<String> =
            (0..4).map(|_| hub.route(None).id.clone()).collect();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn partition_lookup_rejects_non_canonical_ids() {
        let hub = Hub::new("hub1", 4, &["cg1".into()], Retention::default());
        assert!(hub.partition("3").is_some());
        assert!(hub.partition("03").is_none());
        assert!(hub.partition("4").is_none());
        assert!(hub.partition("-1").is_none());
        assert!(hub.has_consumer_group("$default"));
        assert!(hub.has_consumer_group("CG1"));
        assert!(!hub.has_consumer_group("cg2"));
    }
}
