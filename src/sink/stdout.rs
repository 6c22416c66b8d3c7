//! The `stdout` sink: one JSON object per event per line, for pipes and debugging.
//!
//! `{"partition_id":"0","sequence_number":7,"offset":"1024","enqueued_time":"2026-11-21T10:00:00.123Z",
//! "partition_key":null,"properties":{..},"system_properties":{..},"body":"text"}`; a body that is
//! not valid UTF-8 is base64 with `"body_encoding":"base64"`. Property values: numbers, strings,
//! booleans and null as JSON; binary as `{"base64":".."}`; timestamps as RFC 3339 strings.
//!
//! Each partition's window is buffered as complete lines and written to stdout in one locked
//! write at commit, then flushed: lines of two partitions never interleave, and "committed"
//! means the bytes reached the pipe.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::jsonl::BodyText;
use crate::eventhubs::{EventBody, PropertyValue, ReceivedEvent};

/// Appends one JSON line for `event` to `out`, its body as text when it is valid UTF-8.
pub fn write_line(partition_id: &str, event: &ReceivedEvent, out: &mut Vec<u8>) {
    write_line_with(partition_id, event, BodyText::Utf8, out);
}

/// Appends one JSON line for `event` to `out`, its body written as `body` says.
pub fn write_line_with(
    partition_id: &str,
    event: &ReceivedEvent,
    body: BodyText,
    out: &mut Vec<u8>,
) {
    let line = JsonLine {
        partition_id,
        event,
        body,
    };
    // Serializing into a Vec cannot fail: every value has a JSON form.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// Where the `stdout` sink's committed lines go.
#[derive(Debug, Clone, Default)]
pub enum LineTarget {
    /// The process's standard output: the sink's only target in a running daemon.
    #[default]
    Stdout,
    /// A buffer, for tests of the sink itself.
    #[doc(hidden)]
    Memory(Arc<MemoryLines>),
}

/// Lines committed to a [`LineTarget::Memory`], and writes it should fail (a test's fault).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct MemoryLines {
    pub committed: Mutex<Vec<u8>>,
    pub failures_left: AtomicU32,
}

impl LineTarget {
    /// Writes a window's lines in one locked write and flushes them; on success `lines` is
    /// empty, on failure it is unchanged, so the commit can be retried.
    pub async fn commit(&self, lines: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            LineTarget::Stdout => {
                let window = std::mem::take(lines);
                // A blocked pipe must not stall the runtime's thread.
                let (window, result) = tokio::task::spawn_blocking(move || {
                    let result = write_stdout(&window);
                    (window, result)
                })
                .await
                .map_err(|join| std::io::Error::other(join.to_string()))?;
                if result.is_err() {
                    *lines = window;
                }
                result
            }
            LineTarget::Memory(memory) => {
                let fail = memory
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    return Err(std::io::Error::other("injected write failure"));
                }
                let mut committed = memory.committed.lock().unwrap_or_else(|p| p.into_inner());
                committed.append(lines);
                Ok(())
            }
        }
    }
}

fn write_stdout(buffer: &[u8]) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(buffer)?;
    lock.flush()
}

struct JsonLine<'a> {
    partition_id: &'a str,
    event: &'a ReceivedEvent,
    body: BodyText,
}

impl Serialize for JsonLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("partition_id", self.partition_id)?;
        map.serialize_entry("sequence_number", &e.sequence_number)?;
        map.serialize_entry("offset", &e.offset)?;
        map.serialize_entry("enqueued_time", &rfc3339_ms(e.enqueued_time_ms))?;
        map.serialize_entry("partition_key", &e.partition_key)?;
        map.serialize_entry("properties", &Properties(&e.properties))?;
        map.serialize_entry("system_properties", &Properties(&e.system_properties))?;
        match &e.body {
            EventBody::Empty => map.serialize_entry("body", &())?,
            body @ (EventBody::Value(_) | EventBody::Sequence(_)) => {
                map.serialize_entry("body", &BodyValue(body))?;
                map.serialize_entry("body_type", body_type(body))?;
            }
            body => {
                let bytes = body.bytes().unwrap_or_default();
                // Checked for UTF-8 only when text is wanted.
                let text = match self.body {
                    BodyText::Utf8 => std::str::from_utf8(&bytes).ok(),
                    BodyText::Base64 => None,
                };
                match text {
                    Some(text) => map.serialize_entry("body", text)?,
                    None => {
                        map.serialize_entry("body", &base64_text(&bytes))?;
                        map.serialize_entry("body_encoding", "base64")?;
                    }
                }
            }
        }
        map.end()
    }
}

fn body_type(body: &EventBody) -> &'static str {
    match body {
        EventBody::Value(_) => "amqp_value",
        EventBody::Sequence(_) => "amqp_sequence",
        _ => "data",
    }
}

struct BodyValue<'a>(&'a EventBody);

impl Serialize for BodyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            EventBody::Value(value) => Value(value).serialize(serializer),
            EventBody::Sequence(sequences) => {
                let all: Vec<Vec<Value<'_>>> = sequences
                    .iter()
                    .map(|s| s.iter().map(Value).collect())
                    .collect();
                all.serialize(serializer)
            }
            _ => serializer.serialize_unit(),
        }
    }
}

struct Properties<'a>(&'a [(String, PropertyValue)]);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, &Value(value))?;
        }
        map.end()
    }
}

struct Value<'a>(&'a PropertyValue);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            PropertyValue::Null => serializer.serialize_unit(),
            PropertyValue::Bool(b) => serializer.serialize_bool(*b),
            PropertyValue::Long(n) => serializer.serialize_i64(*n),
            PropertyValue::UnsignedLong(n) => serializer.serialize_u64(*n),
            PropertyValue::Double(f) if f.is_finite() => serializer.serialize_f64(*f),
            PropertyValue::Double(f) => serializer.serialize_str(&f.to_string()),
            PropertyValue::String(s) => serializer.serialize_str(s),
            PropertyValue::Bytes(b) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64_text(b))?;
                map.end()
            }
            PropertyValue::Timestamp(ms) => serializer.serialize_str(&rfc3339_ms(*ms)),
            PropertyValue::Uuid(bytes) => {
                serializer.serialize_str(&uuid::Uuid::from_bytes(*bytes).to_string())
            }
            PropertyValue::Other(text) => serializer.serialize_str(text),
        }
    }
}

fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `2026-11-21T10:00:00.123Z` for milliseconds since the Unix epoch; outside the years RFC 3339
/// can write (0000 to 9999), the milliseconds as a decimal string, which the JSON Lines reader
/// takes too (the service never sends such a time; found by fuzzing a hostile one).
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) if (0..=9999).contains(&t.year()) => {
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&format).unwrap_or_else(|_| ms.to_string())
        }
        _ => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: EventBody) -> ReceivedEvent {
        ReceivedEvent {
            sequence_number: 7,
            offset: "1024".into(),
            enqueued_time_ms: 1_700_000_000_123,
            partition_key: Some("k".into()),
            properties: vec![
                ("n".into(), PropertyValue::Long(1)),
                ("b".into(), PropertyValue::Bytes(vec![0, 255])),
            ],
            system_properties: vec![("message-id".into(), PropertyValue::String("m".into()))],
            body,
        }
    }

    fn line(event: &ReceivedEvent) -> serde_json::Value {
        let mut out = Vec::new();
        write_line("3", event, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn utf8_body_is_text_and_every_field_is_present() {
        let json = line(&event(EventBody::Data(vec![b"hello".to_vec()])));
        assert_eq!(json["partition_id"], "3");
        assert_eq!(json["sequence_number"], 7);
        assert_eq!(json["offset"], "1024");
        assert_eq!(json["enqueued_time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["partition_key"], "k");
        assert_eq!(json["properties"]["n"], 1);
        assert_eq!(json["properties"]["b"]["base64"], "AP8=");
        assert_eq!(json["system_properties"]["message-id"], "m");
        assert_eq!(json["body"], "hello");
        assert!(json.get("body_encoding").is_none());
    }

    #[test]
    fn binary_body_is_base64_with_a_marker() {
        let json = line(&event(EventBody::Data(vec![vec![0xff, 0xfe, 0x00]])));
        assert_eq!(json["body"], "//4A");
        assert_eq!(json["body_encoding"], "base64");
    }

    #[test]
    fn value_and_empty_bodies() {
        let json = line(&event(EventBody::Value(PropertyValue::Long(5))));
        assert_eq!(json["body"], 5);
        assert_eq!(json["body_type"], "amqp_value");
        let json = line(&event(EventBody::Empty));
        assert!(json["body"].is_null());
    }
}
