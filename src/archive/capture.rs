//! Capture Avro files back into events: the inverse of [`crate::sink::avro`].
//!
//! The container (any codec: null, deflate, snappy, zstandard) is read with apache-avro. Each
//! `EventData` record becomes a [`ReceivedEvent`]: `x-opt-sequence-number`, `x-opt-offset`,
//! `x-opt-enqueued-time` and `x-opt-partition-key` leave `SystemProperties` for the event's own
//! fields, as they arrived on the wire; a file without `x-opt-enqueued-time` (older Capture
//! files) gets the enqueued time from `EnqueuedTimeUtc`, to the second. Property values are
//! what the file holds: the union has only long, double, string and bytes, so a boolean reads
//! as the string `"true"`, a timestamp as its milliseconds (see `sink::avro`). apache-avro
//! reads maps into hash maps, so properties come out sorted by name, not in the order sent.

use std::io::Read;
use std::path::Path;

use apache_avro::types::Value;

use super::ArchiveError;
use crate::eventhubs::{EventBody, PropertyValue, ReceivedEvent};

const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const OFFSET: &str = "x-opt-offset";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const PARTITION_KEY: &str = "x-opt-partition-key";

/// Reads every record of a Capture Avro container from `input`, passing each to `each` until
/// it returns false; `path` names the file in errors.
pub fn read(
    path: &Path,
    input: impl Read,
    mut each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let reader = apache_avro::Reader::new(input).map_err(|e| ArchiveError::Avro {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut count = 0u64;
    for record in reader {
        let record = record.map_err(|e| ArchiveError::Damaged {
            path: path.to_owned(),
            index: count,
            reason: e.to_string(),
        })?;
        let event = event(record).map_err(|reason| ArchiveError::NotCapture {
            path: path.to_owned(),
            reason,
        })?;
        count += 1;
        if !each(event) {
            break;
        }
    }
    Ok(count)
}

/// One `EventData` record as an event.
pub fn event(record: Value) -> Result<ReceivedEvent, String> {
    let Value::Record(fields) = record else {
        return Err("its records are not EventData records".into());
    };
    let mut sequence_number = None;
    let mut offset = None;
    let mut enqueued_text = None;
    let mut system = Vec::new();
    let mut properties = Vec::new();
    let mut body = None;
    for (name, value) in fields {
        match name.as_str() {
            "SequenceNumber" => sequence_number = Some(long(value, &name)?),
            "Offset" => offset = Some(string(value, &name)?),
            "EnqueuedTimeUtc" => enqueued_text = Some(string(value, &name)?),
            "SystemProperties" => system = map(value, &name)?,
            "Properties" => properties = map(value, &name)?,
            "Body" => body = Some(event_body(value)?),
            _ => {}
        }
    }
    let missing = |field: &str| format!("a record has no {field} field");
    let mut event = ReceivedEvent {
        sequence_number: sequence_number.ok_or_else(|| missing("SequenceNumber"))?,
        offset: offset.ok_or_else(|| missing("Offset"))?,
        enqueued_time_ms: 0,
        partition_key: None,
        properties,
        system_properties: Vec::new(),
        body: body.ok_or_else(|| missing("Body"))?,
    };
    let enqueued_text = enqueued_text.ok_or_else(|| missing("EnqueuedTimeUtc"))?;
    let mut enqueued_ms = None;
    for (key, value) in system {
        match (key.as_str(), value) {
            (ENQUEUED_TIME, PropertyValue::Long(ms)) => enqueued_ms = Some(ms),
            (SEQUENCE_NUMBER, PropertyValue::Long(_)) => {}
            (OFFSET, PropertyValue::String(_)) => {}
            (PARTITION_KEY, PropertyValue::String(text)) => event.partition_key = Some(text),
            (_, value) => event.system_properties.push((key, value)),
        }
    }
    event.enqueued_time_ms = match enqueued_ms {
        Some(ms) => ms,
        None => parse_capture_time(&enqueued_text).ok_or_else(|| {
            format!("EnqueuedTimeUtc {enqueued_text:?} is not M/d/yyyy h:mm:ss tt")
        })?,
    };
    Ok(event)
}

fn long(value: Value, field: &str) -> Result<i64, String> {
    match value {
        Value::Long(n) => Ok(n),
        Value::Int(n) => Ok(n.into()),
        other => Err(format!("{field} is {other:?}, not a long")),
    }
}

fn string(value: Value, field: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("{field} is {other:?}, not a string")),
    }
}

fn map(value: Value, field: &str) -> Result<Vec<(String, PropertyValue)>, String> {
    let Value::Map(entries) = value else {
        return Err(format!("{field} is not a map"));
    };
    let mut properties: Vec<(String, PropertyValue)> = entries
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Union(_, inner) => *inner,
                other => other,
            };
            let value = match value {
                Value::Long(n) => PropertyValue::Long(n),
                Value::Int(n) => PropertyValue::Long(n.into()),
                Value::Double(f) => PropertyValue::Double(f),
                Value::Float(f) => PropertyValue::Double(f.into()),
                Value::String(s) => PropertyValue::String(s),
                Value::Bytes(b) => PropertyValue::Bytes(b),
                Value::Boolean(b) => PropertyValue::Bool(b),
                Value::Null => PropertyValue::Null,
                other => PropertyValue::Other(format!("{other:?}")),
            };
            (key, value)
        })
        .collect();
    properties.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(properties)
}

fn event_body(value: Value) -> Result<EventBody, String> {
    let value = match value {
        Value::Union(_, inner) => *inner,
        other => other,
    };
    match value {
        Value::Null => Ok(EventBody::Empty),
        Value::Bytes(bytes) => Ok(EventBody::Data(vec![bytes])),
        other => Err(format!("Body is {other:?}, not null or bytes")),
    }
}

/// `11/16/2016 4:44:11 PM` (Capture's `EnqueuedTimeUtc`, UTC) as milliseconds since the epoch.
pub fn parse_capture_time(text: &str) -> Option<i64> {
    let (date, rest) = text.trim().split_once(' ')?;
    let (clock, meridiem) = rest.trim().split_once(' ')?;
    let mut date_parts = date.split('/').map(|p| p.parse::<u32>().ok());
    let (month, day, year) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let mut clock_parts = clock.split(':').map(|p| p.parse::<u32>().ok());
    let (hour, minute, second) = (
        clock_parts.next()??,
        clock_parts.next()??,
        clock_parts.next()??,
    );
    if date_parts.next().is_some() || clock_parts.next().is_some() || !(1..=12).contains(&hour) {
        return None;
    }
    let hour = match meridiem {
        "AM" => hour % 12,
        "PM" => hour % 12 + 12,
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let time = time::Time::from_hms(
        hour as u8,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    let seconds = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    Some(seconds * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::avro::capture_time;

    #[test]
    fn capture_time_parses_back_to_the_second() {
        for ms in [
            0,
            1_479_314_651_000,
            1_638_457_104_816,
            1_700_000_000_999,
            946_684_800_000,
            946_728_000_000,
        ] {
            let text = capture_time(ms);
            assert_eq!(parse_capture_time(&text), Some(ms - ms % 1000), "{text}");
        }
        assert_eq!(
            parse_capture_time("11/16/2016 4:44:11 PM"),
            Some(1_479_314_651_000)
        );
        for bad in [
            "",
            "11/16/2016",
            "13/1/2016 1:00:00 PM",
            "1/1/2016 0:00:00 AM",
            "1/1/2016 1:00:00 XM",
            "1/1/2016 1:00 PM",
        ] {
            assert_eq!(parse_capture_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_real_capture_fixture_reads_with_its_publisher_and_time() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/capture-archive-2016.avro"
        ));
        let mut events = Vec::new();
        let count = read(path, std::fs::File::open(path).unwrap(), |e| {
            events.push(e);
            true
        })
        .unwrap();
        assert_eq!(count, 1);
        let event = &events[0];
        assert_eq!(event.offset, "0");
        assert_eq!(event.enqueued_time_ms, 1_479_314_651_000);
        assert!(event.properties.is_empty());
        assert_eq!(event.system_properties.len(), 1);
        assert_eq!(event.system_properties[0].0, "x-opt-publisher");
    }
}
