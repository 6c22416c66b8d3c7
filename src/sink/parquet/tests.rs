use std::path::Path;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::eventhubs::EventBody;
use crate::sink::fixtures::{event, rich_event};

fn settings(body_utf8: bool) -> ParquetSettings {
    ParquetSettings {
        body_utf8,
        ..ParquetSettings::default()
    }
}

fn written(settings: &ParquetSettings, events: &[ReceivedEvent]) -> Vec<u8> {
    let mut writer = ParquetWriter::new(Vec::new(), settings, "3").unwrap();
    writer.append_all(events).unwrap();
    writer.finish().unwrap()
}

fn read_back(file: Vec<u8>) -> Vec<ReceivedEvent> {
    let mut events = Vec::new();
    crate::archive::parquet::read(Path::new("test.parquet"), &file[..], |event| {
        events.push(event);
        true
    })
    .unwrap();
    events
}

#[test]
fn every_value_keeps_its_type_or_the_documented_text() {
    let events = [
        rich_event(),
        event(8, EventBody::Data(vec![Vec::new()])),
        event(9, EventBody::Empty),
        event(
            10,
            EventBody::Data(vec![b"split ".to_vec(), b"body".to_vec()]),
        ),
    ];
    let back = read_back(written(&ParquetSettings::default(), &events));
    assert_eq!(back.len(), 4);

    let rich = &back[0];
    assert_eq!(rich.sequence_number, 7);
    assert_eq!(rich.offset, "7000");
    assert_eq!(rich.enqueued_time_ms, 1_638_457_104_816);
    assert_eq!(rich.partition_key.as_deref(), Some("device-7"));
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(
        rich.properties,
        vec![
            ("yes".into(), PropertyValue::Bool(true)),
            ("no".into(), PropertyValue::Bool(false)),
            ("long".into(), PropertyValue::Long(-42)),
            ("ulong".into(), PropertyValue::String(u64::MAX.to_string())),
            ("double".into(), PropertyValue::Double(21.5)),
            ("string".into(), PropertyValue::String("héllo".into())),
            ("bytes".into(), PropertyValue::Bytes(vec![0, 0xff, 0xfe])),
            (
                "timestamp".into(),
                PropertyValue::Timestamp(1_638_457_104_816)
            ),
            ("uuid".into(), PropertyValue::String(uuid.into())),
            ("other".into(), PropertyValue::String("[1, 2]".into())),
        ],
        "null is left out; uuid, a ulong above i64::MAX and other types are strings"
    );
    assert_eq!(
        rich.system_properties,
        vec![
            (
                "x-opt-publisher".into(),
                PropertyValue::String("buddy1234".into())
            ),
            ("message-id".into(), PropertyValue::String(uuid.into())),
            (
                "content-type".into(),
                PropertyValue::String("application/octet-stream".into())
            ),
        ],
        "the fields with their own columns are not repeated"
    );
    assert_eq!(
        rich.body,
        EventBody::Data(vec![vec![0xc3, 0x28, 0x00, 0xff, 0xfe]])
    );
    assert_eq!(back[1].partition_key, None);
    assert_eq!(
        back[1].body,
        EventBody::Data(vec![Vec::new()]),
        "empty, not null"
    );
    assert_eq!(back[2].body, EventBody::Empty, "no body is null");
    assert_eq!(back[3].body, EventBody::Data(vec![b"split body".to_vec()]));
}

#[test]
fn the_file_has_the_documented_arrow_schema_and_footer() {
    let file = Bytes::from(written(&settings(true), &[rich_event()]));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
    // Arrow prints nullable members without a marker: every member is nullable.
    let value = "Struct(\"long\": Int64, \"double\": Float64, \"string\": Utf8, \
                 \"binary\": Binary, \"boolean\": Boolean, \"timestamp\": Timestamp(ms, \"UTC\"))";
    let map = format!(
        "Map(\"key_value\": non-null Struct(\"key\": non-null Utf8, \"value\": non-null {value}), unsorted)"
    );
    let fields: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{} {} {}", f.name(), f.is_nullable(), f.data_type()))
        .collect();
    let expected = [
        "partition_id false Utf8".to_owned(),
        "sequence_number false Int64".into(),
        "offset false Utf8".into(),
        "enqueued_time false Timestamp(ms, \"UTC\")".into(),
        "partition_key true Utf8".into(),
        format!("system_properties false {map}"),
        format!("properties false {map}"),
        "body true Binary".into(),
        "body_utf8 true Utf8".into(),
    ];
    assert_eq!(fields, expected);

    let footer = SerializedFileReader::new(file).unwrap();
    let metadata = footer.metadata().file_metadata();
    let kv: Vec<(String, String)> = metadata
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter(|kv| kv.key.starts_with("hubcap."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        kv,
        [
            ("hubcap.schema_version", "1"),
            ("hubcap.first_sequence_number", "7"),
            ("hubcap.last_sequence_number", "7"),
            ("hubcap.event_count", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[test]
fn body_utf8_holds_valid_text_and_null_otherwise() {
    let events = [
        event(1, EventBody::Data(vec![br#"{"t": 21.5}"#.to_vec()])),
        event(2, EventBody::Data(vec![vec![0xc3, 0x28]])),
        event(3, EventBody::Empty),
    ];
    let file = Bytes::from(written(&settings(true), &events));
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.next().unwrap().unwrap();
    let text = batch.column_by_name("body_utf8").unwrap();
    let text = arrow_array::cast::AsArray::as_string::<i32>(text.as_ref());
    let values: Vec<Option<&str>> = text.iter().collect();
    assert_eq!(values, [Some(r#"{"t": 21.5}"#), None, None]);
}

#[test]
fn row_groups_are_bounded_by_bytes_and_carry_time_statistics() {
    // Incompressible 1 KiB bodies: 600 KiB of events against a 64 KiB bound.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.to_le_bytes()
    };
    let events: Vec<ReceivedEvent> = (0..600)
        .map(|n| {
            let body = (0..128).flat_map(|_| noise()).collect();
            ReceivedEvent {
                enqueued_time_ms: 1_700_000_000_000 + n,
                ..event(n, EventBody::Data(vec![body]))
            }
        })
        .collect();
    let bound = 64 << 10;
    let settings = ParquetSettings {
        row_group_bytes: bound,
        ..ParquetSettings::default()
    };
    let mut writer = ParquetWriter::new(Vec::new(), &settings, "0").unwrap();
    for chunk in events.chunks(10) {
        writer.append_all(chunk).unwrap();
        assert!(
            writer.buffered_bytes() < bound as u64,
            "the open row group is written out at its bound: {}",
            writer.buffered_bytes()
        );
    }
    let file = Bytes::from(writer.finish().unwrap());
    let reader = SerializedFileReader::new(file.clone()).unwrap();
    let groups = reader.metadata().row_groups();
    assert!(groups.len() >= 8, "{} row groups", groups.len());
    let mut next_time = 1_700_000_000_000;
    for group in groups {
        assert!(
            group.compressed_size() < 2 * bound as i64,
            "{}",
            group.compressed_size()
        );
        let time = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "enqueued_time")
            .unwrap();
        let stats = time.statistics().expect("enqueued_time has statistics");
        let (min, max) = match stats {
            parquet::file::statistics::Statistics::Int64(s) => {
                (*s.min_opt().unwrap(), *s.max_opt().unwrap())
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(min, next_time);
        next_time = max + 1;
        let body = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "body")
            .unwrap();
        assert!(body.statistics().is_none(), "bodies are not summarised");
    }
    assert_eq!(next_time, 1_700_000_000_600);
    assert_eq!(read_back(file.to_vec()), events);
}

#[test]
fn flushing_hands_the_row_group_to_inner_and_an_empty_file_is_valid() {
    let mut writer = ParquetWriter::new(Vec::new(), &ParquetSettings::default(), "0").unwrap();
    writer
        .append_all(&[event(1, EventBody::Data(vec![b"x".to_vec()]))])
        .unwrap();
    let before = writer.inner_mut().len();
    writer.flush_block().unwrap();
    assert!(writer.inner_mut().len() > before);
    assert_eq!(writer.buffered_bytes(), 0);
    assert_eq!(writer.bytes_written(), writer.inner_mut().len() as u64);

    let empty = written(&ParquetSettings::default(), &[]);
    assert!(read_back(empty).is_empty());
}

#[test]
fn codecs_parquet_does_not_have_are_refused() {
    for codec in [Codec::Deflate { level: 1 }, Codec::Gzip { level: 6 }] {
        let settings = ParquetSettings {
            codec,
            ..ParquetSettings::default()
        };
        assert!(ParquetWriter::new(Vec::new(), &settings, "0").is_err());
    }
    for codec in [Codec::Null, Codec::Snappy, Codec::Zstd { level: 19 }] {
        let settings = ParquetSettings {
            codec,
            ..ParquetSettings::default()
        };
        let mut writer = ParquetWriter::new(Vec::new(), &settings, "0").unwrap();
        writer.append_all(&[rich_event()]).unwrap();
        assert_eq!(read_back(writer.finish().unwrap()).len(), 1);
    }
}

#[test]
fn with_zstd_the_bodies_take_zstd_and_the_small_columns_snappy() {
    let settings = ParquetSettings {
        body_utf8: true,
        ..ParquetSettings::default()
    };
    assert_eq!(settings.codec, Codec::Zstd { level: 1 });
    let file = Bytes::from(written(&settings, &[rich_event()]));
    let reader = SerializedFileReader::new(file).unwrap();
    let group = reader.metadata().row_group(0);
    for column in group.columns() {
        let name = column.column_path().string();
        let expected = if name.starts_with("body") {
            parquet::basic::Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        } else {
            parquet::basic::Compression::SNAPPY
        };
        assert_eq!(column.compression(), expected, "{name}");
    }
}
