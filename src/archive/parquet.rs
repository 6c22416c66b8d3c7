//! Reads the Parquet files the sink writes (`sink::parquet`'s schema) back as events.
//!
//! Parquet is read from its footer, so a file is read in place and a stream (a blob being
//! downloaded) is first held in memory whole. Row groups are decoded one batch at a time.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, MapArray, RecordBatch, StructArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;

use super::ArchiveError;
use crate::eventhubs::{EventBody, PropertyValue, ReceivedEvent};
use crate::sink::parquet::columns;

/// Rows decoded at a time.
const BATCH_ROWS: usize = 1024;

/// Every event of the Parquet file `file` (at `path`), in order, until `each` returns false.
pub fn read_file(
    path: &Path,
    file: std::fs::File,
    each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    read_chunks(path, file, each)
}

/// Every event of the Parquet file `input` streams (held in memory to be read).
pub fn read(
    name: &Path,
    mut input: impl std::io::Read,
    each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let mut buffer = Vec::new();
    input
        .read_to_end(&mut buffer)
        .map_err(|source| ArchiveError::Open {
            path: name.to_owned(),
            source,
        })?;
    read_chunks(name, Bytes::from(buffer), each)
}

fn read_chunks<R: ChunkReader + 'static>(
    path: &Path,
    input: R,
    mut each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let invalid = |reason: String| ArchiveError::Parquet {
        path: path.to_owned(),
        reason,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .map_err(|e| invalid(e.to_string()))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut passed = 0;
    for batch in reader {
        let batch = batch.map_err(|e| ArchiveError::Damaged {
            path: path.to_owned(),
            index: passed,
            reason: e.to_string(),
        })?;
        let rows = Rows::of(&batch).map_err(invalid)?;
        for row in 0..batch.num_rows() {
            passed += 1;
            if !each(rows.event(row)) {
                return Ok(passed);
            }
        }
    }
    Ok(passed)
}

/// The columns of one batch, typed.
struct Rows<'a> {
    sequence_number: &'a arrow_array::Int64Array,
    offset: &'a arrow_array::StringArray,
    enqueued_time: &'a arrow_array::TimestampMillisecondArray,
    partition_key: &'a arrow_array::StringArray,
    system_properties: &'a MapArray,
    properties: &'a MapArray,
    body: &'a arrow_array::BinaryArray,
}

impl<'a> Rows<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, String> {
        let column = |name: &str, expected: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name:?} ({expected}); not a hubcap file"))
        };
        let typed = |name: &str, expected: &str| format!("column {name:?} is not {expected}");
        use columns::*;
        Ok(Rows {
            sequence_number: column(SEQUENCE_NUMBER, "int64")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| typed(SEQUENCE_NUMBER, "int64"))?,
            offset: column(OFFSET, "utf8")?
                .as_string_opt::<i32>()
                .ok_or_else(|| typed(OFFSET, "utf8"))?,
            enqueued_time: column(ENQUEUED_TIME, "timestamp[ms]")?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| typed(ENQUEUED_TIME, "timestamp[ms]"))?,
            partition_key: column(PARTITION_KEY, "utf8")?
                .as_string_opt::<i32>()
                .ok_or_else(|| typed(PARTITION_KEY, "utf8"))?,
            system_properties: property_map(column(SYSTEM_PROPERTIES, "a map")?)
                .ok_or_else(|| typed(SYSTEM_PROPERTIES, "a property map"))?,
            properties: property_map(column(PROPERTIES, "a map")?)
                .ok_or_else(|| typed(PROPERTIES, "a property map"))?,
            body: column(BODY, "binary")?
                .as_binary_opt::<i32>()
                .ok_or_else(|| typed(BODY, "binary"))?,
        })
    }

    fn event(&self, row: usize) -> ReceivedEvent {
        let body = if self.body.is_null(row) {
            EventBody::Empty
        } else {
            EventBody::Data(vec![self.body.value(row).to_vec()])
        };
        ReceivedEvent {
            sequence_number: self.sequence_number.value(row),
            offset: self.offset.value(row).to_owned(),
            enqueued_time_ms: self.enqueued_time.value(row),
            partition_key: (!self.partition_key.is_null(row))
                .then(|| self.partition_key.value(row).to_owned()),
            properties: entries(self.properties, row),
            system_properties: entries(self.system_properties, row),
            body,
        }
    }
}

/// A `map<utf8, struct<long, double, string, binary, boolean, timestamp>>` column.
fn property_map(array: &dyn Array) -> Option<&MapArray> {
    let map = array.as_map_opt()?;
    map.keys().as_string_opt::<i32>()?;
    let values = map.values().as_struct_opt()?;
    use columns::*;
    values
        .column_by_name(LONG)?
        .as_primitive_opt::<Int64Type>()?;
    values
        .column_by_name(DOUBLE)?
        .as_primitive_opt::<arrow_array::types::Float64Type>()?;
    values.column_by_name(STRING)?.as_string_opt::<i32>()?;
    values.column_by_name(BINARY)?.as_binary_opt::<i32>()?;
    values.column_by_name(BOOLEAN)?.as_boolean_opt()?;
    values
        .column_by_name(TIMESTAMP)?
        .as_primitive_opt::<TimestampMillisecondType>()?;
    Some(map)
}

/// The entries of `map` at `row` (types checked by [`property_map`]).
fn entries(map: &MapArray, row: usize) -> Vec<(String, PropertyValue)> {
    let keys = map.keys().as_string::<i32>();
    let values = map.values().as_struct();
    let range = map.value_offsets()[row] as usize..map.value_offsets()[row + 1] as usize;
    range
        .map(|entry| (keys.value(entry).to_owned(), value(values, entry)))
        .collect()
}

/// The one member of a value struct that is set.
fn value(values: &StructArray, entry: usize) -> PropertyValue {
    use columns::*;
    let member = |name: &str| values.column_by_name(name).filter(|c| !c.is_null(entry));
    if let Some(c) = member(LONG) {
        PropertyValue::Long(c.as_primitive::<Int64Type>().value(entry))
    } else if let Some(c) = member(DOUBLE) {
        PropertyValue::Double(
            c.as_primitive::<arrow_array::types::Float64Type>()
                .value(entry),
        )
    } else if let Some(c) = member(STRING) {
        PropertyValue::String(c.as_string::<i32>().value(entry).to_owned())
    } else if let Some(c) = member(BINARY) {
        PropertyValue::Bytes(c.as_binary::<i32>().value(entry).to_vec())
    } else if let Some(c) = member(BOOLEAN) {
        PropertyValue::Bool(c.as_boolean().value(entry))
    } else if let Some(c) = member(TIMESTAMP) {
        PropertyValue::Timestamp(c.as_primitive::<TimestampMillisecondType>().value(entry))
    } else {
        PropertyValue::Null
    }
}
