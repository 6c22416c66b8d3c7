//! One received message, from the bytes of its transfer to every archive format and back:
//! fe2o3's message decoder, hubcap's `decode` (`src/eventhubs/event.rs`), the Capture Avro,
//! Parquet and JSON Lines writers (`src/sink/format.rs`), and hubcap's own readers of them
//! (`src/archive/`, what `hubcap verify` uses).
//!
//! Besides never panicking: an event hubcap accepted can always be archived (a writer that
//! refused one would stall its partition), and each format reads back the event's sequence
//! number, offset, enqueued time, partition key and body bytes exactly.
#![no_main]

use std::path::Path;

use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use hubcap::archive;
use hubcap::eventhubs::ReceivedEvent;
use hubcap::sink::format::{FileFormat, FormatWriter};
use hubcap::sink::jsonl::BodyText;
use hubcap::sink::parquet::ParquetSettings;
use hubcap::sink::Codec;
use libfuzzer_sys::fuzz_target;

fn formats() -> [FileFormat; 4] {
    [
        FileFormat::Avro { codec: Codec::Null },
        FileFormat::Parquet(ParquetSettings::default()),
        FileFormat::Jsonl {
            codec: Codec::Null,
            body: BodyText::Utf8,
        },
        FileFormat::Jsonl {
            codec: Codec::Null,
            body: BodyText::Base64,
        },
    ]
}

/// Reads a one-event file back with the reader `hubcap verify` uses for its format.
fn read_back(format: &FileFormat, file: &[u8]) -> Vec<ReceivedEvent> {
    let path = Path::new("fuzz");
    let mut events = Vec::new();
    let each = |event| {
        events.push(event);
        true
    };
    let read = match format {
        FileFormat::Avro { .. } => archive::capture::read(path, file, each),
        FileFormat::Parquet(_) => archive::parquet::read(path, file, each),
        FileFormat::Jsonl { .. } => {
            archive::jsonl::read(path, file, archive::jsonl::Compression::None, each)
        }
    };
    if let Err(error) = read {
        panic!("{format:?}: hubcap cannot read back what it wrote: {error}");
    }
    events
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(Deserializable(message)) =
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
    else {
        return;
    };
    let Ok(event) = hubcap::eventhubs::testing::decode(message) else {
        return;
    };
    let _ = event.approximate_size();
    for format in formats() {
        let mut writer = FormatWriter::new(Vec::new(), &format, "0").expect("a file starts");
        writer
            .append_all(std::slice::from_ref(&event))
            .unwrap_or_else(|e| panic!("{format:?}: an accepted event was refused: {e}"));
        let file = writer
            .finish()
            .unwrap_or_else(|e| panic!("{format:?}: a file with an accepted event failed: {e}"));
        let read = read_back(&format, &file);
        assert_eq!(
            read.len(),
            1,
            "{format:?}: one event written, {} read",
            read.len()
        );
        let back = &read[0];
        assert_eq!(
            back.sequence_number, event.sequence_number,
            "{format:?}: sequence number"
        );
        assert_eq!(back.offset, event.offset, "{format:?}: offset");
        assert_eq!(
            back.enqueued_time_ms, event.enqueued_time_ms,
            "{format:?}: enqueued time"
        );
        assert_eq!(
            back.partition_key, event.partition_key,
            "{format:?}: partition key"
        );
        if let Some(body) = event.body.bytes() {
            assert_eq!(
                back.body.bytes().as_deref(),
                Some(&*body),
                "{format:?}: body bytes"
            );
        }
    }
});
