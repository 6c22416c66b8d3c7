//! Apache Parquet archives: one row per event, typed columns, through arrow-rs's `ArrowWriter`.
//!
//! The schema (version [`SCHEMA_VERSION`], in every file's footer as `hubcap.schema_version`):
//!
//! | column              | Arrow type                                   | null when            |
//! |---------------------|----------------------------------------------|----------------------|
//! | `partition_id`      | `utf8`                                       | never                |
//! | `sequence_number`   | `int64`                                      | never                |
//! | `offset`            | `utf8` (opaque: geo-replicated offsets are not numbers) | never     |
//! | `enqueued_time`     | `timestamp[ms, tz=UTC]`                      | never                |
//! | `partition_key`     | `utf8`                                       | the event has none   |
//! | `system_properties` | `map<utf8, struct<value>>` (below)           | never (empty map)    |
//! | `properties`        | `map<utf8, struct<value>>`                   | never (empty map)    |
//! | `body`              | `binary`                                     | no data/binary/string body |
//! | `body_utf8`         | `utf8`, only with `body = "utf8"`            | body is not UTF-8    |
//!
//! A property keeps its type in a struct with one member per type, exactly one of them set
//! (the shape Spark gives an Avro union): `struct<long: int64, double: float64, string: utf8,
//! binary: binary, boolean: bool, timestamp: timestamp[ms, tz=UTC]>`. So
//! `properties['k'].long` is a typed value in DuckDB, pyarrow and Spark. Null values are left
//! out of the maps (as in Capture's Avro); a uuid, an unsigned long above `i64::MAX` and the
//! AMQP types with no column (lists, maps, decimals) are written as `string`, in the text
//! `hubcap cat` prints. `system_properties` holds the event's own (`message-id`,
//! `content-type`, IoT Hub's annotations, ...), not the four fields above that have columns.
//!
//! Memory is bounded by `row_group_bytes` per open file: a row group is written out when its
//! encoded size reaches it (and at every commit, when the file ends), whatever the window's size.
//! Statistics are kept for `sequence_number` and `enqueued_time`, per page, so readers can
//! skip row groups and pages by time; the body is neither dictionary-encoded nor summarised.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, MapArray, RecordBatch, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::Codec;
use crate::eventhubs::{PropertyValue, ReceivedEvent};

/// The version of the schema above. A change to a column's name or type is a new version.
pub const SCHEMA_VERSION: &str = "1";

/// The default bound of a row group's encoded size: 1 MiB. Each open file holds its row group
/// in memory, plus about 2 MiB of encoder state; with 32 partitions writing at once that keeps
/// hubcap under its 160 MiB target (measured in `bench/`: README, "Parquet format"), and a
/// row group still holds a thousand or more 1 KB events. Larger row groups are a setting away
/// for fewer partitions.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 1 << 20;

/// The bound of a data page's encoded values (arrow-rs's default is 1 MiB).
const DATA_PAGE_BYTES: usize = 256 << 10;

/// Column names, shared with the reader (`archive::parquet`).
pub mod columns {
    pub const PARTITION_ID: &str = "partition_id";
    pub const SEQUENCE_NUMBER: &str = "sequence_number";
    pub const OFFSET: &str = "offset";
    pub const ENQUEUED_TIME: &str = "enqueued_time";
    pub const PARTITION_KEY: &str = "partition_key";
    pub const SYSTEM_PROPERTIES: &str = "system_properties";
    pub const PROPERTIES: &str = "properties";
    pub const BODY: &str = "body";
    pub const BODY_UTF8: &str = "body_utf8";
    /// The members of a property value's struct, in order.
    pub const LONG: &str = "long";
    pub const DOUBLE: &str = "double";
    pub const STRING: &str = "string";
    pub const BINARY: &str = "binary";
    pub const BOOLEAN: &str = "boolean";
    pub const TIMESTAMP: &str = "timestamp";
}

/// Footer keys (Parquet key-value metadata) every file carries.
pub mod footer {
    pub const SCHEMA_VERSION: &str = "hubcap.schema_version";
    pub const FIRST_SEQUENCE_NUMBER: &str = "hubcap.first_sequence_number";
    pub const LAST_SEQUENCE_NUMBER: &str = "hubcap.last_sequence_number";
    pub const EVENT_COUNT: &str = "hubcap.event_count";
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParquetSettings {
    /// Page compression: `Null`, `Snappy` or `Zstd` (the config allows no other).
    pub codec: Codec,
    /// A row group is written out when its encoded size reaches this.
    pub row_group_bytes: usize,
    /// Adds the `body_utf8` column.
    pub body_utf8: bool,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            codec: Codec::Zstd { level: 1 },
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            body_utf8: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParquetWriteError {
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cannot build a Parquet row batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("codec {0:?} is not available for Parquet")]
    Codec(Codec),
}

/// The Arrow type of a property value.
fn value_type() -> DataType {
    use columns::*;
    DataType::Struct(Fields::from(vec![
        Field::new(LONG, DataType::Int64, true),
        Field::new(DOUBLE, DataType::Float64, true),
        Field::new(STRING, DataType::Utf8, true),
        Field::new(BINARY, DataType::Binary, true),
        Field::new(BOOLEAN, DataType::Boolean, true),
        Field::new(TIMESTAMP, timestamp_type(), true),
    ]))
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The entries of a property map: Parquet's own names for a MAP's group (`key_value`, `key`,
/// `value`), so every reader sees the same.
fn map_entries() -> Arc<Field> {
    Arc::new(Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", value_type(), false),
        ])),
        false,
    ))
}

/// The schema of the files (the module table).
pub fn schema(body_utf8: bool) -> SchemaRef {
    use columns::*;
    let map = DataType::Map(map_entries(), false);
    let mut fields = vec![
        Field::new(PARTITION_ID, DataType::Utf8, false),
        Field::new(SEQUENCE_NUMBER, DataType::Int64, false),
        Field::new(OFFSET, DataType::Utf8, false),
        Field::new(ENQUEUED_TIME, timestamp_type(), false),
        Field::new(PARTITION_KEY, DataType::Utf8, true),
        Field::new(SYSTEM_PROPERTIES, map.clone(), false),
        Field::new(PROPERTIES, map, false),
        Field::new(BODY, DataType::Binary, true),
    ];
    if body_utf8 {
        fields.push(Field::new(BODY_UTF8, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn writer_properties(settings: &ParquetSettings) -> Result<WriterProperties, ParquetWriteError> {
    // The body columns take the configured codec. With zstd the others (20 small columns of
    // numbers, keys and property values) take snappy: arrow-rs gives every column of every row
    // group its own zstd compressor and decompressor, about 100 KiB each, which at 32 open
    // files was 60 MiB (a heap profile, README "Parquet format"), for columns that are
    // dictionary- or run-length-encoded already and hold little of a typical event's bytes.
    let (bodies, others) = match settings.codec {
        Codec::Null => (Compression::UNCOMPRESSED, Compression::UNCOMPRESSED),
        Codec::Snappy => (Compression::SNAPPY, Compression::SNAPPY),
        Codec::Zstd { level } => (
            Compression::ZSTD(ZstdLevel::try_new(level)?),
            Compression::SNAPPY,
        ),
        other => return Err(ParquetWriteError::Codec(other)),
    };
    let column = |name: &str| ColumnPath::from(name);
    let mut builder = WriterProperties::builder()
        .set_compression(others)
        .set_column_compression(column(columns::BODY), bodies)
        .set_column_compression(column(columns::BODY_UTF8), bodies)
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1)))
        // Statistics only where readers prune by them; bodies are large and unordered.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(column(columns::SEQUENCE_NUMBER), EnabledStatistics::Page)
        .set_column_statistics_enabled(column(columns::ENQUEUED_TIME), EnabledStatistics::Page)
        // A dictionary pays for repeated values (property keys, partition keys), not bodies.
        .set_column_dictionary_enabled(column(columns::BODY), false)
        .set_column_dictionary_enabled(column(columns::BODY_UTF8), false)
        .set_column_dictionary_enabled(column(columns::OFFSET), false)
        .set_column_dictionary_enabled(column(columns::SEQUENCE_NUMBER), false)
        .set_column_dictionary_enabled(column(columns::ENQUEUED_TIME), false)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            footer::SCHEMA_VERSION.to_owned(),
            SCHEMA_VERSION.to_owned(),
        )]));
    // A page is compressed when its values reach this (a larger body is a page of its own):
    // each column writer holds one page buffer and a compressor sized for it, per open file.
    builder = builder.set_data_page_size_limit(DATA_PAGE_BYTES);
    Ok(builder.build())
}

/// One Parquet file being written to `W`.
pub struct ParquetWriter<W: Write + Send> {
    /// Only ever reached through `&mut self` (`Mutex::get_mut`, no locking): the mutex makes
    /// the writer `Sync` (arrow-rs's encoders are only `Send`), as the partition task that
    /// owns the sink must be.
    writer: Mutex<ArrowWriter<W>>,
    /// `writer`'s sizes after the last change, for the `&self` getters.
    written: u64,
    in_progress: u64,
    schema: SchemaRef,
    body_utf8: bool,
    partition_id: String,
    /// (first, last) sequence number, and events, for the footer.
    range: Option<(i64, i64)>,
    events: u64,
}

impl<W: Write + Send> ParquetWriter<W> {
    /// Starts a file (Parquet's leading magic goes to `inner` at once).
    pub fn new(
        inner: W,
        settings: &ParquetSettings,
        partition_id: &str,
    ) -> Result<Self, ParquetWriteError> {
        let schema = schema(settings.body_utf8);
        let writer =
            ArrowWriter::try_new(inner, schema.clone(), Some(writer_properties(settings)?))?;
        Ok(ParquetWriter {
            written: writer.bytes_written() as u64,
            in_progress: 0,
            writer: Mutex::new(writer),
            schema,
            body_utf8: settings.body_utf8,
            partition_id: partition_id.to_owned(),
            range: None,
            events: 0,
        })
    }

    /// Adds events as rows; row groups that reach their bound are written out on the way.
    pub fn append_all(&mut self, events: &[ReceivedEvent]) -> Result<(), ParquetWriteError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let batch = self.batch(events)?;
        let writer = self.writer();
        writer.write(&batch)?;
        self.sizes();
        let start = self.range.map_or(first.sequence_number, |(start, _)| start);
        self.range = Some((start, last.sequence_number));
        self.events += events.len() as u64;
        Ok(())
    }

    /// Ends the open row group and hands its bytes to `inner`.
    pub fn flush_block(&mut self) -> Result<(), ParquetWriteError> {
        let writer = self.writer();
        writer.flush()?;
        writer.sync().map_err(parquet::errors::ParquetError::from)?;
        self.sizes();
        Ok(())
    }

    /// Bytes handed on so far (some may still be in the writer's small output buffer).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The encoded size of the open row group.
    pub fn buffered_bytes(&self) -> u64 {
        self.in_progress
    }

    /// Writes the last row group and the footer (with the window's range), and returns `inner`.
    pub fn finish(self) -> Result<W, ParquetWriteError> {
        let mut writer = self
            .writer
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((first, last)) = self.range {
            for (key, value) in [
                (footer::FIRST_SEQUENCE_NUMBER, first.to_string()),
                (footer::LAST_SEQUENCE_NUMBER, last.to_string()),
            ] {
                writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
            }
        }
        writer.append_key_value_metadata(KeyValue::new(
            footer::EVENT_COUNT.to_owned(),
            self.events.to_string(),
        ));
        Ok(writer.into_inner()?)
    }

    pub fn inner_mut(&mut self) -> &mut W {
        self.writer().inner_mut()
    }

    fn writer(&mut self) -> &mut ArrowWriter<W> {
        // Never locked, so never poisoned; a poisoned one is still a whole writer.
        self.writer
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sizes(&mut self) {
        let writer = self.writer();
        let (written, in_progress) = (writer.bytes_written(), writer.in_progress_size());
        (self.written, self.in_progress) = (written as u64, in_progress as u64);
    }

    fn batch(&self, events: &[ReceivedEvent]) -> Result<RecordBatch, ParquetWriteError> {
        let rows = events.len();
        let mut partition_id = StringBuilder::with_capacity(rows, rows * self.partition_id.len());
        let mut sequence_number = Int64Builder::with_capacity(rows);
        let mut offset = StringBuilder::with_capacity(rows, rows * 12);
        let mut enqueued_time = TimestampMillisecondBuilder::with_capacity(rows);
        let mut partition_key = StringBuilder::new();
        let mut system_properties = PropertyMap::default();
        let mut properties = PropertyMap::default();
        let body_bytes: usize = events.iter().map(|event| event.body.len()).sum();
        let mut body = BinaryBuilder::with_capacity(rows, body_bytes);
        let mut body_utf8 = self
            .body_utf8
            .then(|| StringBuilder::with_capacity(rows, body_bytes));
        for event in events {
            partition_id.append_value(&self.partition_id);
            sequence_number.append_value(event.sequence_number);
            offset.append_value(&event.offset);
            enqueued_time.append_value(event.enqueued_time_ms);
            partition_key.append_option(event.partition_key.as_deref());
            system_properties.append(
                event
                    .system_properties
                    .iter()
                    .filter(|(key, _)| !super::avro::is_synthesized(key)),
            );
            properties.append(event.properties.iter());
            let bytes = event.body.bytes();
            body.append_option(bytes.as_deref());
            if let Some(body_utf8) = body_utf8.as_mut() {
                body_utf8.append_option(bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok()));
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(partition_id.finish()),
            Arc::new(sequence_number.finish()),
            Arc::new(offset.finish()),
            Arc::new(enqueued_time.finish().with_timezone("UTC")),
            Arc::new(partition_key.finish()),
            Arc::new(system_properties.finish()?),
            Arc::new(properties.finish()?),
            Arc::new(body.finish()),
        ];
        if let Some(mut body_utf8) = body_utf8 {
            arrays.push(Arc::new(body_utf8.finish()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// Builds one `map<utf8, struct<...>>` column, a row at a time.
struct PropertyMap {
    offsets: Vec<i32>,
    keys: StringBuilder,
    long: Int64Builder,
    double: Float64Builder,
    string: StringBuilder,
    binary: BinaryBuilder,
    boolean: BooleanBuilder,
    timestamp: TimestampMillisecondBuilder,
}

impl Default for PropertyMap {
    fn default() -> Self {
        PropertyMap {
            offsets: vec![0],
            keys: StringBuilder::new(),
            long: Int64Builder::new(),
            double: Float64Builder::new(),
            string: StringBuilder::new(),
            binary: BinaryBuilder::new(),
            boolean: BooleanBuilder::new(),
            timestamp: TimestampMillisecondBuilder::new(),
        }
    }
}

impl PropertyMap {
    /// One row: the entries whose value is not null.
    fn append<'a>(&mut self, entries: impl Iterator<Item = &'a (String, PropertyValue)>) {
        let mut count = 0;
        for (key, value) in entries {
            if *value == PropertyValue::Null {
                continue;
            }
            self.keys.append_value(key);
            self.value(value);
            count += 1;
        }
        let end = self.offsets.last().copied().unwrap_or(0) + count;
        self.offsets.push(end);
    }

    /// Sets the one member that holds `value`, nulls in the others.
    fn value(&mut self, value: &PropertyValue) {
        let mut long = None;
        let mut double = None;
        let mut string: Option<std::borrow::Cow<'_, str>> = None;
        let mut binary = None;
        let mut boolean = None;
        let mut timestamp = None;
        match value {
            PropertyValue::Null => unreachable!("nulls are left out of the map"),
            PropertyValue::Bool(b) => boolean = Some(*b),
            PropertyValue::Long(n) => long = Some(*n),
            PropertyValue::UnsignedLong(n) => match i64::try_from(*n) {
                Ok(n) => long = Some(n),
                Err(_) => string = Some(n.to_string().into()),
            },
            PropertyValue::Double(x) => double = Some(*x),
            PropertyValue::String(text) | PropertyValue::Other(text) => {
                string = Some(text.as_str().into())
            }
            PropertyValue::Bytes(bytes) => binary = Some(bytes.as_slice()),
            PropertyValue::Timestamp(ms) => timestamp = Some(*ms),
            PropertyValue::Uuid(bytes) => {
                string = Some(
                    uuid::Uuid::from_bytes(*bytes)
                        .hyphenated()
                        .to_string()
                        .into(),
                )
            }
        }
        self.long.append_option(long);
        self.double.append_option(double);
        self.string.append_option(string.as_deref());
        self.binary.append_option(binary);
        self.boolean.append_option(boolean);
        self.timestamp.append_option(timestamp);
    }

    fn finish(mut self) -> Result<MapArray, arrow_schema::ArrowError> {
        let DataType::Struct(value_fields) = value_type() else {
            unreachable!("value_type is a struct")
        };
        let values = StructArray::try_new(
            value_fields,
            vec![
                Arc::new(self.long.finish()),
                Arc::new(self.double.finish()),
                Arc::new(self.string.finish()),
                Arc::new(self.binary.finish()),
                Arc::new(self.boolean.finish()),
                Arc::new(self.timestamp.finish().with_timezone("UTC")),
            ],
            None,
        )?;
        let entries_field = map_entries();
        let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
            unreachable!("map entries are a struct")
        };
        let entries = StructArray::try_new(
            entry_fields,
            vec![Arc::new(self.keys.finish()), Arc::new(values)],
            None,
        )?;
        let offsets = OffsetBuffer::new(std::mem::take(&mut self.offsets).into());
        MapArray::try_new(entries_field, offsets, entries, None, false)
    }
}

#[cfg(test)]
mod tests;
