//! `$management` answers, parsed only if every value has the exact AMQP type the SDKs need.

use fe2o3_amqp::types::primitives::{OrderedMap, Value};

/// Hub properties from `$management`, after checking every AMQP type.
#[derive(Debug)]
pub struct HubProperties {
    pub name: String,
    pub created_at_ms: i64,
    pub partition_count: i32,
    pub partition_ids: Vec<String>,
}

/// Partition properties from `$management`, after checking every AMQP type.
#[derive(Debug)]
pub struct PartitionProperties {
    pub hub: String,
    pub partition: String,
    pub begin_sequence_number: i64,
    pub last_enqueued_sequence_number: i64,
    pub last_enqueued_sequence_number_epoch: i64,
    pub last_enqueued_offset: String,
    pub last_enqueued_time_ms: i64,
    pub is_partition_empty: bool,
}

/// The map of a `$management` body, keyed by AMQP strings (never symbols).
fn string_keyed_map(body: &Value) -> &OrderedMap<Value, Value> {
    match body {
        Value::Map(map) => {
            for key in map.keys() {
                assert!(
                    matches!(key, Value::String(_)),
                    "management keys must be strings, got {key:?}"
                );
            }
            map
        }
        other => panic!("a management body must be a map, got {other:?}"),
    }
}

fn field<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> &'a Value {
    map.get(&Value::String(key.into()))
        .unwrap_or_else(|| panic!("management body has no '{key}': {map:?}"))
}

fn string_field(map: &OrderedMap<Value, Value>, key: &str) -> String {
    match field(map, key) {
        Value::String(s) => s.clone(),
        other => panic!("'{key}' must be a string, got {other:?}"),
    }
}

fn long_field(map: &OrderedMap<Value, Value>, key: &str) -> i64 {
    match field(map, key) {
        Value::Long(n) => *n,
        other => panic!("'{key}' must be a long, got {other:?}"),
    }
}

fn timestamp_field(map: &OrderedMap<Value, Value>, key: &str) -> i64 {
    match field(map, key) {
        Value::Timestamp(t) => t.milliseconds(),
        other => panic!("'{key}' must be a timestamp, got {other:?}"),
    }
}

impl HubProperties {
    pub fn from_body(body: &Value) -> Self {
        let map = string_keyed_map(body);
        let partition_count = match field(map, "partition_count") {
            Value::Int(n) => *n,
            other => panic!("'partition_count' must be an int, got {other:?}"),
        };
        let partition_ids = match field(map, "partition_ids") {
            Value::Array(ids) => ids
                .iter()
                .map(|id| match id {
                    Value::String(id) => id.clone(),
                    other => panic!("partition ids must be strings, got {other:?}"),
                })
                .collect(),
            other => panic!("'partition_ids' must be an array, got {other:?}"),
        };
        Self {
            name: string_field(map, "name"),
            created_at_ms: timestamp_field(map, "created_at"),
            partition_count,
            partition_ids,
        }
    }
}

impl PartitionProperties {
    pub fn from_body(body: &Value) -> Self {
        let map = string_keyed_map(body);
        assert_eq!(string_field(map, "type"), "com.microsoft:partition");
        let is_partition_empty = match field(map, "is_partition_empty") {
            Value::Bool(b) => *b,
            other => panic!("'is_partition_empty' must be a bool, got {other:?}"),
        };
        Self {
            hub: string_field(map, "name"),
            partition: string_field(map, "partition"),
            begin_sequence_number: long_field(map, "begin_sequence_number"),
            last_enqueued_sequence_number: long_field(map, "last_enqueued_sequence_number"),
            last_enqueued_sequence_number_epoch: long_field(
                map,
                "last_enqueued_sequence_number_epoch",
            ),
            last_enqueued_offset: string_field(map, "last_enqueued_offset"),
            last_enqueued_time_ms: timestamp_field(map, "last_enqueued_time_utc"),
            is_partition_empty,
        }
    }
}
