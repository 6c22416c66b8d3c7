//! JSON Lines files back into events: the inverse of [`crate::sink::jsonl`] (the `stdout`
//! sink's schema, [`crate::sink::stdout`]), after gzip or zstd when the file is compressed.
//!
//! What JSON cannot tell apart comes back as its JSON type: a timestamp property (written as an
//! RFC 3339 string) and a uuid read as strings, an integer as a long (or an unsigned long above
//! 2^63-1), binary (`{"base64": ...}`) as bytes. A text body reads as its UTF-8 bytes, a base64
//! body (`"body_encoding":"base64"`) as the bytes it encodes; an `amqp_value` body as that value.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use super::ArchiveError;
use crate::eventhubs::{EventBody, PropertyValue, ReceivedEvent};

/// How the stream is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Reads every line of a JSON Lines stream, passing each event to `each` until it returns
/// false; `path` names the file in errors. Blank lines are skipped.
pub fn read(
    path: &Path,
    input: impl Read,
    compression: Compression,
    mut each: impl FnMut(ReceivedEvent) -> bool,
) -> Result<u64, ArchiveError> {
    let damaged = |index: u64, reason: String| ArchiveError::Damaged {
        path: path.to_owned(),
        index,
        reason,
    };
    let input: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(input).map_err(|e| damaged(0, e.to_string()))?,
        ),
    };
    let mut count = 0u64;
    let mut line = String::new();
    let mut reader = BufReader::new(input);
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| damaged(count, e.to_string()))?;
        if read == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        if !line.ends_with('\n') {
            return Err(damaged(count, "the last line is cut short".into()));
        }
        let value: Value =
            serde_json::from_str(&line).map_err(|e| damaged(count, format!("not JSON: {e}")))?;
        let event = event(value).map_err(|reason| damaged(count, reason))?;
        count += 1;
        if !each(event) {
            break;
        }
    }
    Ok(count)
}

/// One line's object as an event.
pub fn event(value: Value) -> Result<ReceivedEvent, String> {
    let Value::Object(mut object) = value else {
        return Err("a line is not a JSON object".into());
    };
    let sequence_number = object
        .get("sequence_number")
        .and_then(Value::as_i64)
        .ok_or("a line has no integer sequence_number")?;
    let offset = match object.get("offset") {
        Some(Value::String(offset)) => offset.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err("a line has no offset".into()),
    };
    let enqueued_time_ms = object
        .get("enqueued_time")
        .and_then(Value::as_str)
        // Decimal milliseconds: what the writer puts for a time RFC 3339 cannot hold.
        .and_then(|text| parse_rfc3339_ms(text).or_else(|| text.parse().ok()))
        .ok_or("a line has no RFC 3339 enqueued_time")?;
    let partition_key = object
        .get("partition_key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let properties = properties_of(object.remove("properties"));
    let system_properties = properties_of(object.remove("system_properties"));
    let marker = |object: &serde_json::Map<String, Value>, key: &str| {
        object.get(key).and_then(Value::as_str).map(str::to_owned)
    };
    let (encoding, body_type) = (
        marker(&object, "body_encoding"),
        marker(&object, "body_type"),
    );
    let body = match (
        object.remove("body"),
        encoding.as_deref(),
        body_type.as_deref(),
    ) {
        (None | Some(Value::Null), ..) => EventBody::Empty,
        (Some(Value::String(text)), Some("base64"), _) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| format!("a base64 body does not decode: {e}"))?;
            EventBody::Data(vec![bytes])
        }
        (Some(value), _, Some("amqp_value")) => EventBody::Value(property(value)),
        (Some(Value::String(text)), ..) => EventBody::Data(vec![text.into_bytes()]),
        (Some(value), ..) => EventBody::Value(property(value)),
    };
    Ok(ReceivedEvent {
        sequence_number,
        offset,
        enqueued_time_ms,
        partition_key,
        properties,
        system_properties,
        body,
    })
}

fn properties_of(value: Option<Value>) -> Vec<(String, PropertyValue)> {
    match value {
        Some(Value::Object(map)) => map.into_iter().map(|(k, v)| (k, property(v))).collect(),
        _ => Vec::new(),
    }
}

fn property(value: Value) -> PropertyValue {
    match value {
        Value::Null => PropertyValue::Null,
        Value::Bool(b) => PropertyValue::Bool(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(n), ..) => PropertyValue::Long(n),
            (None, Some(n), _) => PropertyValue::UnsignedLong(n),
            (.., Some(x)) => PropertyValue::Double(x),
            _ => PropertyValue::Other(n.to_string()),
        },
        Value::String(text) => PropertyValue::String(text),
        Value::Object(map) if map.len() == 1 && map.contains_key("base64") => {
            match map
                .get("base64")
                .and_then(Value::as_str)
                .map(|text| base64::engine::general_purpose::STANDARD.decode(text.as_bytes()))
            {
                Some(Ok(bytes)) => PropertyValue::Bytes(bytes),
                _ => PropertyValue::Other(Value::Object(map).to_string()),
            }
        }
        other => PropertyValue::Other(other.to_string()),
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let time =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::jsonl::{BodyText, JsonlWriter};
    use crate::sink::Codec;

    fn sample() -> Vec<ReceivedEvent> {
        vec![
            ReceivedEvent {
                sequence_number: 7,
                offset: "1024".into(),
                enqueued_time_ms: 1_700_000_000_123,
                partition_key: Some("k".into()),
                properties: vec![
                    ("n".into(), PropertyValue::Long(-3)),
                    ("big".into(), PropertyValue::UnsignedLong(u64::MAX)),
                    ("x".into(), PropertyValue::Double(1.5)),
                    ("ok".into(), PropertyValue::Bool(true)),
                    ("b".into(), PropertyValue::Bytes(vec![0, 255])),
                    ("s".into(), PropertyValue::String("text".into())),
                ],
                system_properties: vec![("message-id".into(), PropertyValue::String("m".into()))],
                body: EventBody::Data(vec![b"hello".to_vec()]),
            },
            ReceivedEvent {
                sequence_number: 8,
                offset: "2048".into(),
                enqueued_time_ms: 1_700_000_000_124,
                partition_key: None,
                properties: vec![],
                system_properties: vec![],
                body: EventBody::Data(vec![vec![0xff, 0xfe]]),
            },
        ]
    }

    fn round_trip(codec: Codec, compression: Compression, body: BodyText) -> Vec<ReceivedEvent> {
        let mut writer = JsonlWriter::new(Vec::new(), &codec, body, "0").unwrap();
        writer.append_all(&sample()).unwrap();
        let bytes = writer.finish().unwrap();
        let mut events = Vec::new();
        let count = read(Path::new("f.jsonl"), &bytes[..], compression, |e| {
            events.push(e);
            true
        })
        .unwrap();
        assert_eq!(count, 2);
        events
    }

    #[test]
    fn events_read_back_as_written_through_every_compression() {
        for (codec, compression) in [
            (Codec::Null, Compression::None),
            (Codec::Gzip { level: 6 }, Compression::Gzip),
            (Codec::Zstd { level: 3 }, Compression::Zstd),
        ] {
            for body in [BodyText::Utf8, BodyText::Base64] {
                let mut events = round_trip(codec, compression, body);
                // serde_json's map is sorted by key: compare properties as sets.
                let mut expected = sample();
                for event in events.iter_mut().chain(expected.iter_mut()) {
                    event.properties.sort_by(|a, b| a.0.cmp(&b.0));
                }
                assert_eq!(events, expected, "{codec:?} {body:?}");
            }
        }
    }

    #[test]
    fn a_cut_or_damaged_line_is_an_error_naming_the_event() {
        let error = read(
            Path::new("f.jsonl"),
            &b"{\"sequence_number\":1"[..],
            Compression::None,
            |_| true,
        )
        .unwrap_err();
        assert!(error.to_string().contains("event 0"), "{error}");
        let error = read(
            Path::new("f.jsonl"),
            &b"[1]\n"[..],
            Compression::None,
            |_| true,
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a JSON object"), "{error}");
    }
}
