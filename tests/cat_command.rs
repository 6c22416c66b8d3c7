//! `hubcap cat`: archive files written by hubcap's own Capture writer, with every codec, print
//! as exactly the JSON lines the stdout sink writes for the same events.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hubcap::eventhubs::{EventBody, PropertyValue, ReceivedEvent};
use hubcap::sink::avro::CaptureWriter;
use hubcap::sink::Codec;

const CODECS: [Codec; 4] = [
    Codec::Null,
    Codec::Deflate { level: 6 },
    Codec::Snappy,
    Codec::Zstd { level: 3 },
];

/// Events whose every value survives Capture's union (long, double, string, bytes), with
/// properties in name order (the reader returns them sorted).
fn events(count: i64) -> Vec<ReceivedEvent> {
    (0..count)
        .map(|i| ReceivedEvent {
            sequence_number: 100 + i,
            offset: (4096 * i).to_string(),
            enqueued_time_ms: 1_764_620_000_123 + i * 7,
            partition_key: (i % 3 == 0).then(|| format!("device-{i}")),
            properties: vec![
                ("bytes".into(), PropertyValue::Bytes(vec![0, 255, i as u8])),
                ("count".into(), PropertyValue::Long(i)),
                ("ratio".into(), PropertyValue::Double(i as f64 / 4.0)),
                ("source".into(), PropertyValue::String("test".into())),
            ],
            system_properties: vec![("message-id".into(), PropertyValue::String(format!("m{i}")))],
            body: match i % 4 {
                0 => EventBody::Empty,
                1 => EventBody::Data(vec![vec![0xff, 0xfe, i as u8]]),
                _ => EventBody::Data(vec![format!("{{\"n\":{i}}}").into_bytes()]),
            },
        })
        .collect()
}

/// Writes `events` as a Capture file at `root/ns/hub/<partition>/2026/12/01/20/13/20.avro`,
/// in blocks of 7 events.
fn write_file(root: &Path, partition: &str, codec: &Codec, events: &[ReceivedEvent]) -> PathBuf {
    let dir = root.join(format!("ns/hub/{partition}/2026/12/01/20/13"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("20.avro");
    let mut writer = CaptureWriter::new(std::fs::File::create(&path).unwrap(), codec).unwrap();
    for (i, event) in events.iter().enumerate() {
        writer.append(event).unwrap();
        if i % 7 == 6 {
            writer.flush_block().unwrap();
        }
    }
    writer.finish().unwrap();
    path
}

fn cat(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .arg("cat")
        .args(args)
        .args(files)
        .output()
        .expect("hubcap cat runs")
}

fn sink_lines(partition: &str, events: &[ReceivedEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|event| {
            let mut line = Vec::new();
            hubcap::sink::stdout::write_line(partition, event, &mut line);
            serde_json::from_slice(&line).unwrap()
        })
        .collect()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn every_codec_prints_the_stdout_sinks_lines_for_the_same_events() {
    let root = tempfile::tempdir().unwrap();
    let events = events(30);
    for (i, codec) in CODECS.iter().enumerate() {
        let partition = i.to_string();
        let file = write_file(root.path(), &partition, codec, &events);
        let printed = json_lines(&cat(&[], &[&file]));
        assert_eq!(printed, sink_lines(&partition, &events), "{codec:?}");
    }
}

#[test]
fn limit_spans_files_and_fields_select_in_the_sink_order() {
    let root = tempfile::tempdir().unwrap();
    let events = events(10);
    let a = write_file(root.path(), "0", &Codec::Null, &events);
    let b = write_file(root.path(), "1", &Codec::Snappy, &events);
    let printed = json_lines(&cat(&["--limit", "13"], &[&a, &b]));
    assert_eq!(printed.len(), 13);
    assert_eq!(printed[12]["partition_id"], "1");
    assert_eq!(printed[12]["sequence_number"], 102);

    let output = cat(&["--fields", "body,sequence_number", "-n", "2"], &[&a]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text,
        "{\"sequence_number\":100,\"body\":null}\n{\"sequence_number\":101,\"body\":\"//4B\",\"body_encoding\":\"base64\"}\n"
    );
}

#[test]
fn a_file_outside_the_default_layout_has_no_partition_id() {
    let root = tempfile::tempdir().unwrap();
    let events = events(2);
    let file = write_file(root.path(), "5", &Codec::Null, &events);
    let moved = root.path().join("copy.avro");
    std::fs::copy(&file, &moved).unwrap();
    let printed = json_lines(&cat(&[], &[&moved]));
    assert!(printed.iter().all(|line| line["partition_id"].is_null()));
    assert_eq!(printed[1]["offset"], "4096");
}

#[test]
fn damaged_files_are_named_and_the_good_ones_still_print() {
    let root = tempfile::tempdir().unwrap();
    let events = events(20);
    let good = write_file(root.path(), "0", &Codec::Deflate { level: 1 }, &events);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = root.path().join("truncated.avro");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let text = root.path().join("notes.avro");
    std::fs::write(&text, "not avro\n").unwrap();
    let missing = root.path().join("missing.avro");

    let output = cat(&[], &[&truncated, &text, &missing, &good]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (path, says) in [
        (&truncated, "truncated or damaged"),
        (&text, "not an archive"),
        (&missing, "cannot open"),
    ] {
        let expected = format!("{}: ", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&expected) && l.contains(says)),
            "no {says:?} line for {}: {stderr}",
            path.display()
        );
    }
    let stdout = String::from_utf8(output.stdout).unwrap();
    // The truncated file's complete blocks print, then every event of the good file.
    let lines = stdout.lines().count();
    assert!((20..40).contains(&lines), "{lines} lines");
    assert!(stderr.lines().all(|l| !l.contains("panicked")), "{stderr}");
}
