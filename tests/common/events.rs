//! Events as the tests compare them, whichever sink delivered them: identities, counts and the
//! exactly-once assertion.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One event's identity: partition and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub partition_id: String,
    pub sequence_number: i64,
}

impl EventId {
    pub fn new(partition_id: &str, sequence_number: i64) -> Self {
        Self {
            partition_id: partition_id.to_owned(),
            sequence_number,
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.partition_id, self.sequence_number)
    }
}

/// One stdout line of the stdout sink (see src/sink/stdout.rs).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub partition_id: String,
    pub sequence_number: i64,
    pub offset: String,
    pub enqueued_time: String,
    pub partition_key: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub body: Value,
    pub body_encoding: Option<String>,
}

impl Event {
    pub fn id(&self) -> EventId {
        EventId::new(&self.partition_id, self.sequence_number)
    }
}

/// How often each event was printed.
pub fn count_by_id<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeMap<EventId, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event.id()).or_insert(0) += 1;
    }
    counts
}

/// Whether every expected event was printed at least once.
pub fn covers(events: &[Event], expected: &BTreeSet<EventId>) -> bool {
    let seen: BTreeSet<EventId> = events.iter().map(Event::id).collect();
    expected.is_subset(&seen)
}

/// The first few items, for failure messages.
pub fn sample<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut items = items.into_iter();
    let shown: Vec<String> = items.by_ref().take(12).map(|i| i.to_string()).collect();
    let more = items.count();
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Asserts that `events` hold every expected event exactly once and nothing else.
pub fn assert_exactly_once(what: &str, events: &[Event], expected: &BTreeSet<EventId>) {
    let counts = count_by_id(events);
    let missing: Vec<&EventId> = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .collect();
    let duplicated: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("{id} x{n}"))
        .collect();
    let unexpected: Vec<&EventId> = counts.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "{what}: {} events printed for {} expected\n  missing: {}\n  duplicated: {}\n  unexpected: {}",
        events.len(),
        expected.len(),
        sample(&missing),
        sample(&duplicated),
        sample(&unexpected),
    );
}
