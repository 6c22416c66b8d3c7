//! The Capture Avro writer: events in, an Avro Object Container File out, in the exact shape
//! Event Hubs Capture writes, so tools built for Capture archives read hubcap's unchanged.
//!
//! Schema: record `EventData` in namespace `Microsoft.ServiceBus.Messaging` with fields
//! `SequenceNumber` long, `Offset` string, `EnqueuedTimeUtc` string, `SystemProperties` and
//! `Properties` `map<[long,double,string,bytes]>`, `Body` `["null","bytes"]`. The header's
//! `avro.schema` is, byte for byte, the text the service writes (a test compares it with a real
//! Capture file, `tests/fixtures/capture-archive-2016.avro`).
//!
//! ## How an event is written
//!
//! | Avro field | from the event |
//! |---|---|
//! | `SequenceNumber` | sequence number |
//! | `Offset` | offset string, as received |
//! | `EnqueuedTimeUtc` | enqueued time, UTC, to the second, .NET's `M/d/yyyy h:mm:ss tt` (`11/16/2016 4:44:11 PM`) |
//! | `SystemProperties` | `x-opt-sequence-number` (long), `x-opt-offset` (string), `x-opt-enqueued-time` (long, ms since the Unix epoch), `x-opt-partition-key` (string, when the event has one), then the event's other service annotations and its AMQP message properties (`message-id`, `correlation-id`, `content-type`, ...) |
//! | `Properties` | application properties, in the order sent |
//! | `Body` | body bytes (data sections concatenated, or a string/binary value); `null` when there is no body or it is another AMQP value |
//!
//! Property values go into the union `[long, double, string, bytes]` this way:
//!
//! | property value | Avro branch | written as |
//! |---|---|---|
//! | integer (byte to long, ubyte to ulong up to 2^63-1) | `long` | the number |
//! | ulong above 2^63-1 | `string` | decimal digits, `"18446744073709551615"` |
//! | float, double | `double` | the number |
//! | string, symbol | `string` | the text |
//! | binary | `bytes` | the bytes |
//! | boolean | `string` | `"true"` or `"false"` |
//! | timestamp | `long` | milliseconds since the Unix epoch |
//! | uuid | `string` | lower-case hyphenated, `"0f8fad5b-d9cb-469f-a165-70867728950e"` |
//! | anything else (list, map, decimal, char, ...) | `string` | a readable debug form |
//! | null | (none) | the entry is left out |
//!
//! Why: timestamps are longs because that is how Capture itself stores `x-opt-enqueued-time`
//! (milliseconds, as seen in files the service wrote), and a number keeps the precision and
//! needs no time zone. Booleans are strings because the union has no boolean branch and a
//! `long` 1/0 could not be told apart from a real integer property; `"true"`/`"false"` reads as
//! what it was in every Avro reader. A ulong too large for `long` is kept exactly as text rather
//! than wrapped negative. The union has no `null` branch, and writing a placeholder (an empty
//! string, 0) would invent a value, so a null property is omitted: readers see the key absent,
//! which is how they treat a null anyway.
//!
//! ## Framing
//!
//! hubcap writes the container framing itself (header, and per block: record count, byte size,
//! payload, sync marker) and compresses blocks itself; the records go through serde, from a
//! borrowed `#[derive(Serialize)]` record struct, into a small Avro-binary serializer
//! (`binary.rs`) that writes straight into the open block. apache-avro's `append_ser` path was
//! the first version: it made nine allocations per event (a buffer per map entry and per map)
//! and was the largest hubcap-specific cost in a CPU profile of a drain, so the record is
//! encoded by hand now; apache-avro stays in the tests, which read every file back with it.
//! apache-avro's `Writer` is not used because (0.21): its header is built from the
//! parsed schema and a `HashMap` of metadata, so neither the schema text nor the key order is
//! ours to fix, and Capture compatibility is defined by that text; it hands a finished block to
//! the inner writer with `Write::write`, not `write_all`, so a short write would silently drop
//! the end of a block; it flushes the inner writer after every block; and it exposes neither
//! the size of the open block nor a way to end one without flushing, which window limits and
//! block staging need. The framing is about sixty lines and reuses its buffers.
//!
//! Blocks close at about 256 KiB of encoded records (not apache-avro's 16 KB default): per-block
//! overhead and codec start-up stay negligible, deflate's 32 KiB window and zstd's level-3
//! match finder lose next to nothing against 1 MiB blocks, and every open window holds one
//! block in memory, so the block size multiplies by the partitions owned (compressor state
//! and the compressed copy are per thread, see `compress`).

use std::fmt::Write as _;
use std::io::Write;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::path_format::UtcTime;
use crate::eventhubs::{PropertyValue, ReceivedEvent};
use crate::sink::Codec;

/// The schema exactly as Event Hubs Capture writes it in the `avro.schema` header.
pub const CAPTURE_SCHEMA: &str = concat!(
    r#"{"type":"record","name":"EventData","namespace":"Microsoft.ServiceBus.Messaging","#,
    r#""fields":[{"name":"SequenceNumber","type":"long"},{"name":"Offset","type":"string"},"#,
    r#"{"name":"EnqueuedTimeUtc","type":"string"},"#,
    r#"{"name":"SystemProperties","type":{"type":"map","values":["long","double","string","bytes"]}},"#,
    r#"{"name":"Properties","type":{"type":"map","values":["long","double","string","bytes"]}},"#,
    r#"{"name":"Body","type":["null","bytes"]}]}"#
);

/// A block is written once its encoded records reach this size.
pub const BLOCK_SIZE: usize = 256 << 10;

/// The first capacity of the block buffer: a full block plus one typical large event, so the
/// buffer does not double just past the threshold.
const BLOCK_CAPACITY: usize = BLOCK_SIZE + (64 << 10);

#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("cannot write avro data: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode event as avro: {0}")]
    Encode(String),
}

/// Writes one Capture Avro file into `inner`.
///
/// Records are encoded into an in-memory block; a full block (about [`BLOCK_SIZE`]) is
/// compressed and handed to `inner`, which is never flushed before [`finish`](Self::finish):
/// give it a buffered writer. After an I/O error the file is incomplete: drop the writer and
/// start the window again. Dropping a writer without `finish` abandons the open block.
pub struct CaptureWriter<W: Write> {
    /// Where the header and finished blocks go.
    inner: W,
    /// Block compression (its state is per thread: see [`compress`]).
    codec: Codec,
    /// Encoded records of the open block, uncompressed.
    block: Vec<u8>,
    /// Records in the open block.
    block_records: u64,
    /// Ends the header and every block; random per file, as the Avro spec asks.
    sync_marker: [u8; 16],
    /// Bytes handed to `inner`: the header and every finished block.
    bytes_written: u64,
    /// The second `enqueued_time_text` was formatted for: consecutive events usually share it.
    enqueued_second: Option<i64>,
    /// `EnqueuedTimeUtc` of that second.
    enqueued_time_text: String,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a file: writes the header to `inner`.
    pub fn new(mut inner: W, codec: &Codec) -> Result<Self, AvroError> {
        if let Codec::Gzip { .. } = codec {
            return Err(AvroError::Encode(
                "gzip is not an Avro codec (null, deflate, snappy, zstd)".into(),
            ));
        }
        let sync_marker: [u8; 16] = rand::random();
        let header = header(compress::codec_name(codec), &sync_marker);
        inner.write_all(&header)?;
        Ok(CaptureWriter {
            inner,
            codec: *codec,
            block: Vec::new(),
            block_records: 0,
            sync_marker,
            bytes_written: header.len() as u64,
            enqueued_second: None,
            enqueued_time_text: String::with_capacity(24),
        })
    }

    /// A complete file with no events: the header alone, as Capture writes for an empty window.
    pub fn write_empty(inner: W, codec: &Codec) -> Result<W, AvroError> {
        Self::new(inner, codec)?.finish()
    }

    /// Adds one event to the open block, writing the block out once it is full. An encoding
    /// error leaves the file as it was before the call.
    pub fn append(&mut self, event: &ReceivedEvent) -> Result<(), AvroError> {
        let second = event.enqueued_time_ms.div_euclid(1000);
        if self.enqueued_second != Some(second) {
            self.enqueued_time_text.clear();
            write_capture_time(event.enqueued_time_ms, &mut self.enqueued_time_text);
            self.enqueued_second = Some(second);
        }
        let body = event.body.bytes();
        let record = EventRecord {
            sequence_number: event.sequence_number,
            offset: &event.offset,
            enqueued_time_utc: &self.enqueued_time_text,
            system_properties: SystemProperties(event),
            properties: Properties(&event.properties),
            body: body.as_deref().map(AvroBytes),
        };
        if self.block.capacity() == 0 {
            self.block.reserve(BLOCK_CAPACITY);
        }
        let before = self.block.len();
        if let Err(error) = binary::encode(&record, &mut self.block) {
            self.block.truncate(before);
            return Err(AvroError::Encode(error.to_string()));
        }
        self.block_records += 1;
        if self.block.len() >= BLOCK_SIZE {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Bytes handed to `inner` so far: the header and every finished block.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Bytes of records encoded into the open block and not yet written (before compression).
    pub fn buffered_bytes(&self) -> u64 {
        self.block.len() as u64
    }

    /// Ends the open block now and hands it to `inner` (without flushing `inner`). Nothing
    /// happens when the block is empty.
    pub fn flush_block(&mut self) -> Result<(), AvroError> {
        if self.block_records == 0 {
            return Ok(());
        }
        let (inner, sync_marker) = (&mut self.inner, &self.sync_marker);
        let records = self.block_records as i64;
        let written = compress::compressed(&self.codec, &self.block, |payload| {
            let mut counts = [0u8; 20];
            let mut used = encode_long(records, &mut counts);
            used += encode_long(payload.len() as i64, &mut counts[used..]);
            inner.write_all(&counts[..used])?;
            inner.write_all(payload)?;
            inner.write_all(sync_marker)?;
            Ok(used + payload.len() + sync_marker.len())
        })?;
        self.bytes_written += written as u64;
        self.block.clear();
        self.block_records = 0;
        Ok(())
    }

    /// Writes the last block, flushes `inner` and returns it. Not synced to disk: the caller
    /// does that.
    pub fn finish(mut self) -> Result<W, AvroError> {
        self.flush_block()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// The writer the file goes to, so finished blocks can be drained from it.
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("codec", &compress::codec_name(&self.codec))
            .field("bytes_written", &self.bytes_written)
            .field("buffered_bytes", &self.block.len())
            .field("block_records", &self.block_records)
            .finish_non_exhaustive()
    }
}

/// `EnqueuedTimeUtc` as Capture writes it: .NET's invariant `M/d/yyyy h:mm:ss tt`, UTC, to the
/// second (`11/16/2016 4:44:11 PM`; midnight is `12:00:00 AM`, noon `12:00:00 PM`).
pub fn capture_time(ms: i64) -> String {
    let mut text = String::with_capacity(24);
    write_capture_time(ms, &mut text);
    text
}

fn write_capture_time(ms: i64, out: &mut String) {
    let time = UtcTime::from_unix_ms(ms);
    let hour = match time.hour % 12 {
        0 => 12,
        hour => hour,
    };
    let meridiem = if time.hour < 12 { "AM" } else { "PM" };
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}/{}/{:04} {}:{:02}:{:02} {}",
        time.month, time.day, time.year, hour, time.minute, time.second, meridiem
    );
}

/// One record, borrowing everything from the event.
#[derive(Serialize)]
#[serde(rename = "EventData", rename_all = "PascalCase")]
struct EventRecord<'a> {
    sequence_number: i64,
    offset: &'a str,
    enqueued_time_utc: &'a str,
    system_properties: SystemProperties<'a>,
    properties: Properties<'a>,
    body: Option<AvroBytes<'a>>,
}

/// The service fields Capture readers look up, then the event's own system properties.
struct SystemProperties<'a>(&'a ReceivedEvent);

impl Serialize for SystemProperties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let own = event
            .system_properties
            .iter()
            .filter(|(key, value)| !is_synthesized(key) && *value != PropertyValue::Null);
        let len = 3 + usize::from(event.partition_key.is_some()) + own.clone().count();
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry(SEQUENCE_NUMBER, &Union::Long(event.sequence_number))?;
        map.serialize_entry(OFFSET, &Union::String(&event.offset))?;
        map.serialize_entry(ENQUEUED_TIME, &Union::Long(event.enqueued_time_ms))?;
        if let Some(key) = &event.partition_key {
            map.serialize_entry(PARTITION_KEY, &Union::String(key))?;
        }
        for (key, value) in own {
            serialize_property(&mut map, key, value)?;
        }
        map.end()
    }
}

const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const OFFSET: &str = "x-opt-offset";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const PARTITION_KEY: &str = "x-opt-partition-key";

/// Keys written from the event's own fields; a duplicate among its system properties (an
/// annotation of an unexpected type) is left out so every key appears once.
pub(crate) fn is_synthesized(key: &str) -> bool {
    key.starts_with("x-opt-")
        && [SEQUENCE_NUMBER, OFFSET, ENQUEUED_TIME, PARTITION_KEY].contains(&key)
}

struct Properties<'a>(&'a [(String, PropertyValue)]);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let present = self
            .0
            .iter()
            .filter(|(_, value)| *value != PropertyValue::Null);
        let mut map = serializer.serialize_map(Some(present.clone().count()))?;
        for (key, value) in present {
            serialize_property(&mut map, key, value)?;
        }
        map.end()
    }
}

fn serialize_property<M: SerializeMap>(
    map: &mut M,
    key: &str,
    value: &PropertyValue,
) -> Result<(), M::Error> {
    // Room for a uuid (36) or a u64 (20) in text, without allocating.
    let mut scratch = [0u8; 40];
    match union_value(value, &mut scratch) {
        Some(value) => map.serialize_entry(key, &value),
        None => Ok(()),
    }
}

/// The union branch a property value goes into; `None` for null (see the module table).
fn union_value<'a>(value: &'a PropertyValue, scratch: &'a mut [u8; 40]) -> Option<Union<'a>> {
    Some(match value {
        PropertyValue::Null => return None,
        PropertyValue::Bool(true) => Union::String("true"),
        PropertyValue::Bool(false) => Union::String("false"),
        PropertyValue::Long(n) | PropertyValue::Timestamp(n) => Union::Long(*n),
        PropertyValue::UnsignedLong(n) => match i64::try_from(*n) {
            Ok(n) => Union::Long(n),
            Err(_) => {
                let mut cursor = std::io::Cursor::new(&mut scratch[..]);
                let _ = write!(cursor, "{n}");
                let len = cursor.position() as usize;
                Union::String(std::str::from_utf8(&scratch[..len]).unwrap_or_default())
            }
        },
        PropertyValue::Double(x) => Union::Double(*x),
        PropertyValue::String(text) | PropertyValue::Other(text) => Union::String(text),
        PropertyValue::Bytes(bytes) => Union::Bytes(bytes),
        PropertyValue::Uuid(bytes) => Union::String(
            uuid::Uuid::from_bytes(*bytes)
                .hyphenated()
                .encode_lower(&mut scratch[..]),
        ),
    })
}

/// A value of `[long, double, string, bytes]`, serialized as that branch: serde's variant
/// index is the union index. (Left to pick a branch itself, apache-avro would put bytes in the
/// `string` branch, the first that accepts them.)
enum Union<'a> {
    Long(i64),
    Double(f64),
    String(&'a str),
    Bytes(&'a [u8]),
}

impl Serialize for Union<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Union::Long(n) => serializer.serialize_newtype_variant("Value", 0, "long", &n),
            Union::Double(x) => serializer.serialize_newtype_variant("Value", 1, "double", &x),
            Union::String(text) => serializer.serialize_newtype_variant("Value", 2, "string", text),
            Union::Bytes(bytes) => {
                serializer.serialize_newtype_variant("Value", 3, "bytes", &AvroBytes(bytes))
            }
        }
    }
}

/// Bytes that serialize as Avro `bytes`, not as a sequence of numbers.
struct AvroBytes<'a>(&'a [u8]);

impl Serialize for AvroBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The file header: magic, metadata (codec then schema, in Capture's order), sync marker.
fn header(codec: &str, sync_marker: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CAPTURE_SCHEMA.len() + 64);
    out.extend_from_slice(b"Obj\x01");
    let mut scratch = [0u8; 10];
    let mut push_long = |out: &mut Vec<u8>, n: i64| {
        let used = encode_long(n, &mut scratch);
        out.extend_from_slice(&scratch[..used]);
    };
    push_long(&mut out, 2);
    for (key, value) in [("avro.codec", codec), ("avro.schema", CAPTURE_SCHEMA)] {
        push_long(&mut out, key.len() as i64);
        out.extend_from_slice(key.as_bytes());
        push_long(&mut out, value.len() as i64);
        out.extend_from_slice(value.as_bytes());
    }
    push_long(&mut out, 0);
    out.extend_from_slice(sync_marker);
    out
}

/// Avro's zigzag varint; returns the bytes used (at most 10).
fn encode_long(n: i64, out: &mut [u8]) -> usize {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut used = 0;
    loop {
        if z < 0x80 {
            out[used] = z as u8;
            return used + 1;
        }
        out[used] = (z as u8 & 0x7f) | 0x80;
        z >>= 7;
        used += 1;
    }
}

mod binary;
mod compress;
#[cfg(test)]
mod tests;
