use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Reader;

use super::*;
use crate::eventhubs::EventBody;
use crate::sink::fixtures::{event, rich_event};

/// A real Capture file (see `tests/fixtures/README.md`).
const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/capture-archive-2016.avro");

const CODECS: [Codec; 5] = [
    Codec::Null,
    Codec::Deflate { level: 1 },
    Codec::Deflate { level: 6 },
    Codec::Snappy,
    Codec::Zstd { level: 3 },
];

/// Avro's zigzag varint at `file[*at]`, moving `at` past it.
fn read_long(file: &[u8], at: &mut usize) -> i64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = file[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte < 0x80 {
            return ((value >> 1) as i64) ^ -((value & 1) as i64);
        }
    }
}

/// What a file's header holds.
struct Header {
    /// Metadata entries in file order.
    metadata: Vec<(String, Vec<u8>)>,
    /// Bytes before the sync marker.
    len: usize,
    sync_marker: [u8; 16],
}

fn parse_header(file: &[u8]) -> Header {
    assert_eq!(&file[..4], b"Obj\x01");
    let mut at = 4;
    let mut metadata = Vec::new();
    loop {
        let count = read_long(file, &mut at);
        if count == 0 {
            break;
        }
        for _ in 0..count {
            let len = read_long(file, &mut at) as usize;
            let key = String::from_utf8(file[at..at + len].to_vec()).unwrap();
            at += len;
            let len = read_long(file, &mut at) as usize;
            metadata.push((key, file[at..at + len].to_vec()));
            at += len;
        }
    }
    Header {
        metadata,
        len: at,
        sync_marker: file[at..at + 16].try_into().unwrap(),
    }
}

/// The blocks after the header: (record count, payload length), checking every sync marker.
fn blocks(file: &[u8]) -> Vec<(i64, usize)> {
    let header = parse_header(file);
    let mut at = header.len + 16;
    let mut found = Vec::new();
    while at < file.len() {
        let count = read_long(file, &mut at);
        let size = read_long(file, &mut at) as usize;
        at += size;
        assert_eq!(
            file[at..at + 16],
            header.sync_marker,
            "sync marker after block {}",
            found.len()
        );
        at += 16;
        found.push((count, size));
    }
    found
}

fn read_all(file: &[u8]) -> Vec<HashMap<String, Value>> {
    Reader::new(file)
        .expect("apache-avro opens the file")
        .map(|record| match record.expect("record decodes") {
            Value::Record(fields) => fields.into_iter().collect(),
            other => panic!("not a record: {other:?}"),
        })
        .collect()
}

fn write(codec: &Codec, events: &[ReceivedEvent]) -> Vec<u8> {
    let mut writer = CaptureWriter::new(Vec::new(), codec).unwrap();
    for event in events {
        writer.append(event).unwrap();
    }
    writer.finish().unwrap()
}

fn string(text: &str) -> Value {
    Value::String(text.into())
}

fn branch(index: u32, value: Value) -> Value {
    Value::Union(index, Box::new(value))
}

#[test]
fn schema_header_is_byte_identical_to_a_capture_file() {
    let fixture = parse_header(FIXTURE);
    let fixture_schema = &fixture
        .metadata
        .iter()
        .find(|(key, _)| key == "avro.schema")
        .unwrap()
        .1;
    assert_eq!(std::str::from_utf8(fixture_schema).unwrap(), CAPTURE_SCHEMA);
    let ours = write(&Codec::Null, &[]);
    let header = parse_header(&ours);
    assert_eq!(header.metadata, fixture.metadata);
    // Same metadata in the same order: the whole header but the random marker is identical.
    assert_eq!(ours[..header.len], FIXTURE[..fixture.len]);
    for codec in CODECS {
        let header = parse_header(&write(&codec, &[]));
        assert_eq!(header.metadata[1], fixture.metadata[1], "{codec:?}");
    }
}

#[test]
fn capture_time_matches_the_fixture_and_dotnet_general_date() {
    let fixture = read_all(FIXTURE);
    assert_eq!(
        fixture[0]["EnqueuedTimeUtc"],
        string("11/16/2016 4:44:11 PM")
    );
    // 2016-11-16T16:44:11Z, and every millisecond of that second.
    assert_eq!(capture_time(1_479_314_651_000), "11/16/2016 4:44:11 PM");
    assert_eq!(capture_time(1_479_314_651_999), "11/16/2016 4:44:11 PM");
    assert_eq!(capture_time(1_638_457_104_816), "12/2/2021 2:58:24 PM");
    // Midnight, noon, the hours next to them.
    assert_eq!(capture_time(1_704_067_200_000), "1/1/2024 12:00:00 AM");
    assert_eq!(capture_time(1_704_070_800_000), "1/1/2024 1:00:00 AM");
    assert_eq!(capture_time(1_704_110_399_000), "1/1/2024 11:59:59 AM");
    assert_eq!(capture_time(1_704_110_400_000), "1/1/2024 12:00:00 PM");
    assert_eq!(capture_time(1_704_113_999_000), "1/1/2024 12:59:59 PM");
    assert_eq!(capture_time(1_704_153_599_000), "1/1/2024 11:59:59 PM");
    assert_eq!(capture_time(1_735_603_200_000), "12/31/2024 12:00:00 AM");
    assert_eq!(capture_time(0), "1/1/1970 12:00:00 AM");
    // Before the epoch the second rounds down, not towards zero.
    assert_eq!(capture_time(-1), "12/31/1969 11:59:59 PM");
    // 0099-01-02T03:04:05Z: yyyy pads the year.
    assert_eq!(capture_time(-59_042_897_755_000), "1/2/0099 3:04:05 AM");
}

#[test]
fn every_codec_round_trips_through_apache_avro() {
    let events = vec![
        rich_event(),
        event(8, EventBody::Empty),
        event(9, EventBody::Data(vec![b"ab".to_vec(), b"cd".to_vec()])),
        event(10, EventBody::Data(vec![Vec::new()])),
    ];
    for codec in CODECS {
        let file = write(&codec, &events);
        let records = read_all(&file);
        assert_eq!(records.len(), 4, "{codec:?}");

        let rich = &records[0];
        assert_eq!(rich["SequenceNumber"], Value::Long(7));
        assert_eq!(rich["Offset"], string("7000"));
        assert_eq!(rich["EnqueuedTimeUtc"], string("12/2/2021 2:58:24 PM"));
        assert_eq!(
            rich["Body"],
            branch(1, Value::Bytes(vec![0xc3, 0x28, 0x00, 0xff, 0xfe]))
        );
        let properties: HashMap<String, Value> = [
            ("yes", branch(2, string("true"))),
            ("no", branch(2, string("false"))),
            ("long", branch(0, Value::Long(-42))),
            ("ulong", branch(2, string("18446744073709551615"))),
            ("double", branch(1, Value::Double(21.5))),
            ("string", branch(2, string("héllo"))),
            ("bytes", branch(3, Value::Bytes(vec![0, 0xff, 0xfe]))),
            ("timestamp", branch(0, Value::Long(1_638_457_104_816))),
            (
                "uuid",
                branch(2, string("0f8fad5b-d9cb-469f-a165-70867728950e")),
            ),
            ("other", branch(2, string("[1, 2]"))),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        assert_eq!(rich["Properties"], Value::Map(properties), "{codec:?}");
        let system: HashMap<String, Value> = [
            ("x-opt-sequence-number", branch(0, Value::Long(7))),
            ("x-opt-offset", branch(2, string("7000"))),
            (
                "x-opt-enqueued-time",
                branch(0, Value::Long(1_638_457_104_816)),
            ),
            ("x-opt-partition-key", branch(2, string("device-7"))),
            ("x-opt-publisher", branch(2, string("buddy1234"))),
            (
                "message-id",
                branch(2, string("0f8fad5b-d9cb-469f-a165-70867728950e")),
            ),
            (
                "content-type",
                branch(2, string("application/octet-stream")),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        assert_eq!(rich["SystemProperties"], Value::Map(system), "{codec:?}");

        let no_body = &records[1];
        assert_eq!(no_body["SequenceNumber"], Value::Long(8));
        assert_eq!(no_body["Body"], branch(0, Value::Null));
        assert_eq!(no_body["Properties"], Value::Map(HashMap::new()));
        let Value::Map(system) = &no_body["SystemProperties"] else {
            panic!("SystemProperties is a map");
        };
        assert_eq!(system.len(), 3, "no partition key: {system:?}");
        assert_eq!(
            records[2]["Body"],
            branch(1, Value::Bytes(b"abcd".to_vec()))
        );
        assert_eq!(records[3]["Body"], branch(1, Value::Bytes(Vec::new())));
    }
}

#[test]
fn the_fixture_reads_back_with_the_mapping_capture_uses() {
    let record = &read_all(FIXTURE)[0];
    assert_eq!(record["Offset"], string("0"));
    let Value::Map(system) = &record["SystemProperties"] else {
        panic!("SystemProperties is a map");
    };
    assert_eq!(system["x-opt-publisher"], branch(2, string("buddy1234")));
    assert_eq!(record["Properties"], Value::Map(HashMap::new()));
}

#[test]
fn blocks_close_at_the_block_size() {
    // About five and a half blocks of ~1.1 KiB records.
    let count = 5 * BLOCK_SIZE / 1024;
    let events: Vec<ReceivedEvent> = (0..count as i64)
        .map(|n| event(n, EventBody::Data(vec![vec![b'x'; 1024]])))
        .collect();
    let file = write(&Codec::Null, &events);
    let found = blocks(&file);
    let record_size = {
        let single = write(&Codec::Null, &events[..1]);
        blocks(&single)[0].1
    };
    assert!((5..=6).contains(&found.len()), "{found:?}");
    for (count, size) in &found[..found.len() - 1] {
        assert!(
            (BLOCK_SIZE..BLOCK_SIZE + record_size).contains(size),
            "block of {count} records, {size} bytes"
        );
    }
    let total: i64 = found.iter().map(|(count, _)| count).sum();
    assert_eq!(total, count as i64);
    assert_eq!(read_all(&file).len(), count);
    // Compressed blocks close on the same uncompressed size.
    let deflated = blocks(&write(&Codec::Deflate { level: 1 }, &events));
    assert_eq!(
        deflated.iter().map(|(count, _)| *count).collect::<Vec<_>>(),
        found.iter().map(|(count, _)| *count).collect::<Vec<_>>()
    );
}

#[test]
fn byte_counts_and_explicit_blocks_let_a_caller_stage_the_file() {
    for codec in CODECS {
        let mut writer = CaptureWriter::new(Vec::new(), &codec).unwrap();
        let header_len = writer.inner_mut().len() as u64;
        assert_eq!(writer.bytes_written(), header_len);
        assert_eq!(writer.buffered_bytes(), 0);
        let mut staged = Vec::new();
        for n in 0..30 {
            writer.append(&rich_event()).unwrap();
            assert!(writer.buffered_bytes() > 0);
            if n % 10 == 9 {
                writer.flush_block().unwrap();
                assert_eq!(writer.buffered_bytes(), 0);
                // Drain what the writer has handed over, as the blob sink stages blocks.
                staged.append(writer.inner_mut());
                assert_eq!(writer.bytes_written(), staged.len() as u64);
            }
        }
        // An empty block is not written.
        writer.flush_block().unwrap();
        assert_eq!(writer.bytes_written(), staged.len() as u64);
        staged.extend(writer.finish().unwrap());
        assert_eq!(blocks(&staged).len(), 3, "{codec:?}");
        assert_eq!(read_all(&staged).len(), 30, "{codec:?}");
    }
}

#[test]
fn an_empty_file_is_a_valid_container() {
    for codec in CODECS {
        let file = CaptureWriter::write_empty(Vec::new(), &codec).unwrap();
        assert!(blocks(&file).is_empty());
        assert!(read_all(&file).is_empty(), "{codec:?}");
        let metadata = parse_header(&file).metadata;
        let name = match codec {
            Codec::Null => "null",
            Codec::Deflate { .. } => "deflate",
            Codec::Snappy => "snappy",
            Codec::Zstd { .. } => "zstandard",
            Codec::Gzip { .. } => unreachable!("not an Avro codec"),
        };
        assert_eq!(
            metadata[0],
            ("avro.codec".to_owned(), name.as_bytes().to_vec())
        );
        // `new` + `finish` is the same file (but for the random sync marker).
        let finished = write(&codec, &[]);
        assert_eq!(finished.len(), file.len());
        assert_eq!(finished[..file.len() - 16], file[..file.len() - 16]);
    }
}

#[test]
fn zigzag_varints_match_the_spec() {
    let encode = |n| {
        let mut out = [0u8; 10];
        let used = encode_long(n, &mut out);
        out[..used].to_vec()
    };
    assert_eq!(encode(0), [0x00]);
    assert_eq!(encode(-1), [0x01]);
    assert_eq!(encode(1), [0x02]);
    assert_eq!(encode(-64), [0x7f]);
    assert_eq!(encode(64), [0x80, 0x01]);
    assert_eq!(encode(i64::MAX).len(), 10);
    assert_eq!(encode(i64::MIN).len(), 10);
}

#[test]
fn incompressible_blocks_fit_every_codec_bound() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = |len: usize| {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
    };
    let events: Vec<ReceivedEvent> = (0..40)
        .map(|n| event(n, EventBody::Data(vec![noise(100_000)])))
        .collect();
    for codec in CODECS {
        let file = write(&codec, &events);
        let records = read_all(&file);
        assert_eq!(records.len(), events.len(), "{codec:?}");
        for (record, event) in records.iter().zip(&events) {
            let EventBody::Data(sections) = &event.body else {
                unreachable!()
            };
            assert_eq!(
                record["Body"],
                branch(1, Value::Bytes(sections[0].clone())),
                "{codec:?}"
            );
        }
    }
}

#[test]
fn writers_sharing_a_thread_interleave_codecs_and_levels() {
    // Compressor state is per thread: blocks of files with different codecs and levels,
    // written in turns on one thread, must each come out in their own file's codec.
    let events: Vec<ReceivedEvent> = (0..3 * BLOCK_SIZE as i64 / 1024)
        .map(|n| {
            event(
                n,
                EventBody::Data(vec![format!("event {n} ").repeat(100).into_bytes()]),
            )
        })
        .collect();
    let codecs = [
        Codec::Zstd { level: 1 },
        Codec::Deflate { level: 9 },
        Codec::Zstd { level: 19 },
        Codec::Snappy,
        Codec::Deflate { level: 1 },
        Codec::Null,
    ];
    let mut writers: Vec<_> = codecs
        .iter()
        .map(|codec| CaptureWriter::new(Vec::new(), codec).unwrap())
        .collect();
    for event in &events {
        for writer in &mut writers {
            writer.append(event).unwrap();
        }
    }
    for (writer, codec) in writers.into_iter().zip(codecs) {
        let file = writer.finish().unwrap();
        assert!(blocks(&file).len() > 1, "{codec:?}: several blocks");
        let records = read_all(&file);
        assert_eq!(records.len(), events.len(), "{codec:?}");
        assert_eq!(
            records.last().map(|r| r["SequenceNumber"].clone()),
            Some(Value::Long(events.len() as i64 - 1)),
            "{codec:?}"
        );
    }
}
