//! The fuzz targets' entry points (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz.sh`) on
//! hostile inputs, in the normal `cargo test`: each input is handed to the same function the
//! target calls, which must answer (usually with an error) rather than panic, hang or overflow
//! the stack. Inputs a fuzz run found are kept here too, with what they found.

use std::time::Duration;

use hubcap::config;
use hubcap::credential::CredentialSpec;
use hubcap::eventhubs::{ConnectionString, FullyQualifiedNamespace};
use hubcap::secret::Secret;
use hubcap::sink::path_format::{PathContext, PathFormat};
use hubcap::storage::StorageAccount;

const HUB_KEY: &str = "RegressionHubKey0";
/// As long as a real one (a URL-encoded base64 HMAC-SHA256).
const SAS_SIGNATURE: &str = "RegressionSasSignature0dGhpcyBpcyBub3Qgc2lnbmVk%3D";

/// The variables the seeds in `fuzz/seeds/config` use (a subset of the fuzz target's map).
fn env(name: &str) -> Option<String> {
    let value = match name {
        "EVENTHUB_CONNECTION_STRING" => format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;\
             SharedAccessKey={HUB_KEY};EntityPath=telemetry"
        ),
        "STORAGE_CONNECTION_STRING" => "DefaultEndpointsProtocol=https;AccountName=acct;\
                                        AccountKey=a2V5;EndpointSuffix=core.windows.net"
            .to_owned(),
        "CHECKPOINT_CONTAINER_SAS_URL" => {
            format!(
                "https://acct.blob.core.windows.net/checkpoints?sv=2022-11-02&sig={SAS_SIGNATURE}"
            )
        }
        "AZURE_CLIENT_SECRET" => "client-secret".to_owned(),
        "DIR" => "/nonexistent/hubcap-fuzz".to_owned(),
        "HOSTNAME" => "fuzzhost".to_owned(),
        _ => return None,
    };
    Some(value)
}

fn parse(text: &str) -> Result<config::Config, config::ConfigErrors> {
    config::parse(text, "fuzz.toml", &env)
}

const HUB: &str = "[eventhub]\nconnection_string = \"${EVENTHUB_CONNECTION_STRING}\"\n";

/// `parse` refuses `text` with at least one problem, none of which shows the hub's key.
#[track_caller]
fn refused(text: &str) -> config::ConfigErrors {
    let errors = parse(text).expect_err("accepted");
    assert!(!errors.errors.is_empty());
    let shown = errors.to_string();
    assert!(!shown.contains(HUB_KEY), "{shown}");
    errors
}

#[test]
fn the_fuzz_seed_configs_are_valid() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/config");
    let mut count = 0;
    for entry in std::fs::read_dir(seeds).expect("fuzz/seeds/config exists") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(errors) = parse(&text) {
            panic!("{}: {errors}", path.display());
        }
        count += 1;
    }
    assert!(count >= 3, "only {count} seeds");
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_stack_overflow() {
    for depth in [100, 10_000, 100_000] {
        let arrays = format!(
            "{HUB}[sink]\ntype = {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        refused(&arrays);
        let tables = format!(
            "{HUB}[sink]\ntype = {}{}\n",
            "{a=".repeat(depth),
            "}".repeat(depth)
        );
        refused(&tables);
        let dotted = format!("{HUB}[sink.{}]\n", vec!["a"; depth].join("."));
        refused(&dotted);
    }
}

#[test]
fn huge_and_odd_numbers_are_range_errors() {
    for value in [
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1e308",
        "inf",
        "nan",
        "0x7fffffffffffffff",
        "\"${PREFETCH:-99999999999999999999999}\"",
        "\"${PREFETCH:--1}\"",
    ] {
        refused(&format!(
            "{HUB}prefetch = {value}\n[sink]\ntype = \"stdout\"\n"
        ));
    }
    for value in [
        "\"99999999999999999999d\"",
        "\"18446744073709551615s\"",
        "\"-1s\"",
        "\"1e9h\"",
    ] {
        refused(&format!(
            "{HUB}token_lifetime = {value}\n[sink]\ntype = \"stdout\"\n"
        ));
    }
    for value in [
        "\"18446744073709551615EiB\"",
        "\"-1KiB\"",
        "-1",
        "\"1.5.5MiB\"",
    ] {
        refused(&format!(
            "{HUB}prefetch_bytes = {value}\n[sink]\ntype = \"stdout\"\n"
        ));
    }
}

#[test]
fn broken_env_references_are_errors() {
    for value in [
        "${",
        "${EVENTHUB_CONNECTION_STRING",
        "$${${",
        "${}",
        "${:-x}",
        "${A B}",
    ] {
        let text =
            format!("[eventhub]\nconnection_string = \"{value}\"\n[sink]\ntype = \"stdout\"\n");
        refused(&text);
    }
    // A secret pasted into a key that quotes its value is redacted in the message.
    let text = format!("{HUB}name = \"x/${{EVENTHUB_CONNECTION_STRING}}\"\n");
    let shown = refused(&text).to_string();
    assert!(!shown.contains(HUB_KEY), "{shown}");
}

#[test]
fn empty_and_odd_keys_are_errors() {
    for text in [
        format!("{HUB}\"\" = 1\n"),
        format!("\"\" = {{}}\n{HUB}"),
        format!("[\"\"]\n{HUB}"),
        format!("{HUB}[sink]\n\"\" = \"stdout\"\n"),
        format!("{HUB}[[eventhub.credential]]\ntype = \"azure_cli\"\n"),
        format!("{HUB}[sink]\ntype = \"file\"\npath_format = \"\"\npath = \"\"\n"),
        "\u{feff}[eventhub]\n\0".to_owned(),
        String::new(),
    ] {
        refused(&text);
    }
}

#[test]
fn a_file_that_is_not_utf8_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubcap.toml");
    std::fs::write(&path, b"[eventhub]\nname = \"\xff\xfe\"\n").unwrap();
    let errors = config::load(&path).unwrap_err();
    assert!(
        errors.to_string().contains("cannot read config file"),
        "{errors}"
    );
}

#[test]
fn connection_strings_refuse_hostile_inputs_without_showing_keys() {
    // Every key is TOPK3Y; an error may quote an endpoint or a flag, never a key.
    for text in [
        "",
        ";;;",
        "=",
        "Endpoint=",
        "Endpoint=sb://",
        "Endpoint=sb://:/",
        "Endpoint=sb://h:99999/;SharedAccessKeyName=a;SharedAccessKey=TOPK3Y",
        "Endpoint=sb://u@h/;SharedAccessKeyName=a;SharedAccessKey=TOPK3Y",
        "Endpoint=sb://[::1]:/;SharedAccessKeyName=a;SharedAccessKey=TOPK3Y",
        "Endpoint=sb://h/;SharedAccessKey=TOPK3Y;SharedAccessSignature=TOPK3Y",
        "Endpoint=sb://h/;SharedAccessKeyName=;SharedAccessKey=TOPK3Y",
        "Endpoint=sb://h/;UseDevelopmentEmulator=yes;SharedAccessKey=TOPK3Y",
        "Endpoint=sb://h/;SharedAccessKeyTOPK3Y",
    ] {
        if let Err(error) = ConnectionString::parse(text) {
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("TOPK3Y"), "{shown}");
        }
        let _ = FullyQualifiedNamespace::parse(text);
        for account in [
            StorageAccount::ConnectionString(Secret::new(text)),
            StorageAccount::ContainerUrl(Secret::new(text)),
            StorageAccount::AccountUrl {
                account_url: text.to_owned(),
                credential: CredentialSpec::WorkloadIdentity,
            },
        ] {
            assert!(account.check("container").is_err(), "{account:?} accepted");
        }
    }
    for text in [
        "AccountName=a;AccountKey=S3CRET%%;BlobEndpoint=http://[::1",
        "UseDevelopmentStorage=true;BlobEndpoint=mailto:x",
        "AccountName=a;AccountKey=;SharedAccessSignature=",
        "BlobEndpoint=https://h/?q=1;SharedAccessSignature=sig=S3CRET",
        "BlobEndpoint=data:text/plain,x;SharedAccessSignature=sig=S3CRET",
    ] {
        let error = StorageAccount::ConnectionString(Secret::new(text))
            .check("c")
            .unwrap_err();
        assert!(!error.to_string().contains("S3CRET"), "{error}");
    }
    for url in [
        "https://h/?sig=S3CRET",
        "https://h/other#/?sig=S3CRET",
        "mailto:c?sig=S3CRET",
    ] {
        let error = StorageAccount::ContainerUrl(Secret::new(url))
            .check("c")
            .unwrap_err();
        assert!(!error.to_string().contains("S3CRET"), "{error}");
    }
}

fn context(partition_id: &str, window_start_ms: i64) -> PathContext<'_> {
    PathContext {
        namespace: "..",
        event_hub: "/",
        consumer_group: "",
        partition_id,
        window_start_ms,
        first_sequence_number: i64::MIN,
        last_sequence_number: i64::MAX,
    }
}

#[test]
fn path_formats_refuse_or_render_hostile_templates() {
    for template in [
        "{",
        "}",
        "}{",
        "{{PartitionId}}",
        "{PartitionId",
        "{Second}\\{PartitionId}",
    ] {
        assert!(PathFormat::parse(template).is_err(), "{template}");
    }
    let long = "{PartitionId}{Second}".repeat(10_000);
    let format = PathFormat::parse(&long).unwrap();
    assert_eq!(format.render(&context("0", 0)).split('/').count(), 1);
    let format =
        PathFormat::parse("{Namespace}/{EventHub}/{ConsumerGroup}/{PartitionId}/{Year}/{Second}")
            .unwrap();
    for ms in [i64::MIN, -1, 0, i64::MAX] {
        let rendered = format.render(&context("\0", ms));
        let segments: Vec<&str> = rendered.split('/').collect();
        assert_eq!(segments.len(), 6, "{rendered}");
        assert!(
            segments.iter().all(|s| !matches!(*s, "" | "." | "..")),
            "{rendered}"
        );
    }
    // A backtracking read of a long name must give up, not take forever.
    let format =
        PathFormat::parse("{EventHub}{Namespace}{ConsumerGroup}{PartitionId}{Second}").unwrap();
    let name = format!("{}00.avro", "a".repeat(5_000));
    let started = std::time::Instant::now();
    let _ = format.partition_of(&name);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Found by `scripts/fuzz.sh` (config, 2026-12-03): a SAS URL substituted into a log filter.
/// The filter's check quoted the level after the directive's last `=`, which here began inside
/// the URL's signature; the credential markers missed it because the `sig=` was split off, and
/// the signature was shown. Anything the environment supplied is now kept out of every message.
#[test]
fn a_secret_substituted_into_a_log_filter_is_not_quoted_in_its_error() {
    let text = format!(
        "{HUB}[checkpoint_store]\ntype = \"file\"\npath = \"/nonexistent/hubcap-fuzz\"\n\
         [sink]\ntype = \"stdout\"\n\
         [log]\nlevel = \"warn,hubcap=x${{CHECKPOINT_CONTAINER_SAS_URL}}222debug\"\n"
    );
    let errors = refused(&text);
    let shown = format!("{errors}\n{errors:?}");
    // At most a few characters of it may remain next to the text the file wrote (runs
    // shorter than 6 bytes are left alone), never a recognisable piece.
    for piece in SAS_SIGNATURE.as_bytes().windows(6) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !shown.contains(piece),
            "a piece of the signature ({piece}) is shown: {shown}"
        );
    }
    assert!(shown.contains("log.level"), "{shown}");
    assert!(
        shown.contains("<from ${CHECKPOINT_CONTAINER_SAS_URL}>"),
        "the error says where the value came from: {shown}"
    );
}

/// Found by `scripts/fuzz.sh` (amqp_frames and event_message, 2026-12-03): serde_amqp 0.18.0
/// subtracts the encoding's offset from a list8, list32, map8 or map32 size without checking
/// (src/de.rs), so a size below it overflowed: a panic under overflow checks (in the emulator's
/// or hubcap's connection task in debug builds), a wrapped and unused size in release. The root
/// Cargo.toml turns overflow checks off for serde_amqp in debug builds, as in release; these
/// values must then be answered (decoded or refused), which they are. Fails without that.
#[test]
fn amqp_compound_sizes_below_their_offset_are_answered_not_panicked_on() {
    use fe2o3_amqp_types::primitives::Value;
    for bytes in [
        &[0xc0, 0x00, 0x00][..],                   // list8, size 0
        &[0xd0, 0, 0, 0, 0, 0, 0, 0, 0][..],       // list32, size 0
        &[0xc1, 0x00, 0x00][..],                   // map8, size 0
        &[0xd1, 0, 0, 0, 0, 0, 0, 0, 0][..],       // map32, size 0
        &[0x00, 0x53, 0x73, 0xc0, 0x00, 0x00][..], // described list8 (properties)
        &[0x00, 0x53, 0x74, 0xc1, 0x00, 0x00][..], // described map8 (app properties)
    ] {
        let _ = serde_amqp::from_slice::<Value>(bytes);
    }
}

/// The inputs as the fuzzer found them, through the targets' code paths.
#[test]
fn the_fuzzers_amqp_inputs_are_answered_not_panicked_on() {
    use fe2o3_amqp::types::messaging::message::__private::Deserializable;
    use fe2o3_amqp::types::messaging::{Body, Message};
    use fe2o3_amqp_types::primitives::Value;

    let inputs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_inputs");
    let message =
        std::fs::read(format!("{inputs}/event_message-serde-amqp-map8-size.bin")).unwrap();
    if let Ok(Deserializable(message)) =
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&message)
    {
        let _ = hubcap::eventhubs::testing::decode(message);
    }

    // A connection's inbound bytes (after the target's one-byte read-size prefix): each
    // frame's body, after the 8-byte header, decoded as a performative.
    let stream = std::fs::read(format!("{inputs}/amqp_frames-serde-amqp-list8-size.bin")).unwrap();
    let mut rest = &stream[1..];
    let mut frames = 0;
    while rest.len() >= 8 {
        if rest.starts_with(b"AMQP") {
            rest = &rest[8..];
            continue;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if size < 8 || size > rest.len() {
            break;
        }
        let doff = usize::from(rest[4]) * 4;
        if (8..=size).contains(&doff) {
            let _ = serde_amqp::from_slice::<fe2o3_amqp_types::performatives::Performative>(
                &rest[doff..size],
            );
            frames += 1;
        }
        rest = &rest[size..];
    }
    assert!(frames > 0, "the stream holds frames");
}

/// Found by `scripts/fuzz.sh` (amqp_frames, 2026-12-03): a 358-byte frame whose performative
/// is a `str32` declaring 0xb1b1b1b1 bytes. fe2o3-amqp 0.18.4 decodes performatives (and
/// messages) through serde_amqp's `IoReader`, which allocates a declared length before reading
/// it: this one frame cost 3 GB and the fuzzer's out-of-memory limit. The frame guard now walks
/// every performative and message and refuses a size that does not fit where it is declared,
/// before the frame's last byte is handed to fe2o3 (which decodes a frame only once it is all
/// there). Fails without the guard's value walk (the stream then passes whole).
#[test]
fn a_declared_length_larger_than_its_frame_is_refused_before_fe2o3_allocates_it() {
    use amqp_frame_guard::testing::through_guard;

    let inputs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_inputs");
    let input = std::fs::read(format!("{inputs}/amqp_frames-oom-str32-length.bin")).unwrap();
    // The target's first byte says how many read sizes follow: none here.
    assert_eq!(input[0], 0);
    let stream = &input[1..];
    // SASL header, one SASL frame, the AMQP header, then the frame of 0x166 bytes.
    let bad_frame_at = 8 + 0x26 + 8;
    let bad_frame_end = bad_frame_at + 0x166;
    assert_eq!(&stream[bad_frame_at + 8..bad_frame_at + 13], &[0xb1; 5]);

    let (passed, error) = through_guard(stream, &[], 4096);
    let error = error.expect("the stream is refused");
    assert_eq!(
        error,
        "AMQP frame on channel 0 refused: a str32 declares 2981212593 bytes where 345 remain \
         in its frame or message"
    );
    assert!(passed.len() >= bad_frame_at, "frames before it pass");
    assert!(
        passed.len() < bad_frame_end,
        "the bad frame never passes whole"
    );
}

/// Found by `scripts/fuzz.sh` (emulator_connection, 2026-12-03): a client whose first SASL frame
/// is a bare `str32` declaring 0xec5341c0 bytes; fe2o3's SASL decoder reads it through the same
/// allocating `IoReader`, and the fuzzing process passed 2 GB. The emulator reads every client
/// through the frame guard, which now refuses it before fe2o3 sees the frame whole (the input is
/// a raw client stream, as the target writes it to the emulator).
#[test]
fn a_sasl_frame_declaring_gigabytes_is_refused_before_fe2o3_allocates_them() {
    use amqp_frame_guard::testing::through_guard;

    let inputs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_inputs");
    let stream = std::fs::read(format!("{inputs}/emulator_connection-oom-sasl-str32.bin")).unwrap();
    assert_eq!(&stream[..8], b"AMQP\x03\x01\x00\x00");
    let (passed, error) = through_guard(&stream, &[], 4096);
    let error = error.expect("the stream is refused");
    assert_eq!(
        error,
        "AMQP frame on channel 0 refused: a str32 declares 3964879296 bytes where 25 remain in \
         its frame or message"
    );
    // The protocol header and the frame's header and constructor, not the frame.
    assert!(passed.len() < 8 + 0x26, "{} bytes passed", passed.len());
}

/// Found by `scripts/fuzz.sh` (amqp_frames, 2026-12-03, at once on the first version of the
/// guard's value walk): a refused performative was handed out up to where the read that held
/// the refused byte began, so what fe2o3 saw before the error depended on how the stream was cut
/// into reads. Now everything before the refused byte is handed out, whatever the cuts. The
/// input is the target's: one byte giving how many read sizes follow, the sizes, the stream.
#[test]
fn what_the_guard_hands_out_before_a_refusal_does_not_depend_on_the_reads() {
    use amqp_frame_guard::testing::through_guard;

    let inputs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_inputs");
    let input = std::fs::read(format!("{inputs}/amqp_frames-refusal-depends-on-cuts.bin")).unwrap();
    let (cuts, data) = input[1..].split_at(usize::from(input[0] % 8));
    let (whole, whole_error) = through_guard(data, &[], 64 * 1024);
    let (cut, cut_error) = through_guard(data, cuts, usize::from(cuts[0] % 16) + 1);
    let whole_error = whole_error.expect("the input holds a frame the guard refuses");
    assert!(whole_error.contains("refused"), "{whole_error}");
    assert_eq!(cut_error.as_deref(), Some(whole_error.as_str()));
    assert_eq!(
        cut.len(),
        whole.len(),
        "how the bytes were cut changed what passed"
    );
    assert_eq!(cut, whole);
}

/// Found by `scripts/fuzz.sh` (config, 2026-12-03): tracing-subscriber 0.3.23 panicked on a log
/// filter with a non-ASCII character inside a span directive (a string sliced off a character
/// boundary), so `check-config` and `run` died on it. Filters must be ASCII now.
#[test]
fn a_non_ascii_log_filter_is_an_error_not_a_panic() {
    let inputs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_inputs");
    let found = std::fs::read(format!("{inputs}/config-log-filter-non-ascii.toml")).unwrap();
    let _ = parse(&String::from_utf8_lossy(&found));
    let text = format!(
        "{HUB}[checkpoint_store]\ntype = \"file\"\npath = \"/nonexistent/hubcap-fuzz\"\n\
         [sink]\ntype = \"stdout\"\n[log]\nlevel = \"warn,x[l\u{f7d4}#{{a}}]=debug\"\n"
    );
    let shown = refused(&text).to_string();
    assert!(shown.contains("[log] level: must be ASCII"), "{shown}");
}

/// Found by `scripts/fuzz.sh` (event_message, 2026-12-03): an event whose enqueued time lies
/// outside the years RFC 3339 can write was archived in JSON Lines with the time as decimal
/// milliseconds, which hubcap's own reader (`hubcap verify`) refused. The reader takes it now;
/// every format reads the event back with its enqueued time.
#[test]
fn an_enqueued_time_beyond_rfc3339_reads_back_from_every_format() {
    use hubcap::archive;
    use hubcap::eventhubs::{EventBody, ReceivedEvent};
    use hubcap::sink::format::{FileFormat, FormatWriter};
    use hubcap::sink::jsonl::BodyText;
    use hubcap::sink::parquet::ParquetSettings;
    use hubcap::sink::Codec;

    for enqueued_time_ms in [-62_167_219_200_001, 253_402_300_800_000, i64::MIN, i64::MAX] {
        let event = ReceivedEvent {
            sequence_number: 1,
            offset: "1".into(),
            enqueued_time_ms,
            partition_key: None,
            properties: Vec::new(),
            system_properties: Vec::new(),
            body: EventBody::Data(vec![b"x".to_vec()]),
        };
        let formats = [
            FileFormat::Avro { codec: Codec::Null },
            FileFormat::Parquet(ParquetSettings::default()),
            FileFormat::Jsonl {
                codec: Codec::Null,
                body: BodyText::Utf8,
            },
        ];
        for format in formats {
            let mut writer = FormatWriter::new(Vec::new(), &format, "0").unwrap();
            writer.append_all(std::slice::from_ref(&event)).unwrap();
            let file = writer.finish().unwrap();
            let mut read = Vec::new();
            let each = |e| {
                read.push(e);
                true
            };
            let path = std::path::Path::new("regression");
            let result = match format {
                FileFormat::Avro { .. } => archive::capture::read(path, &file[..], each),
                FileFormat::Parquet(_) => archive::parquet::read(path, &file[..], each),
                FileFormat::Jsonl { .. } => {
                    archive::jsonl::read(path, &file[..], archive::jsonl::Compression::None, each)
                }
            };
            result.unwrap_or_else(|e| panic!("{format:?} at {enqueued_time_ms}: {e}"));
            assert_eq!(read[0].enqueued_time_ms, enqueued_time_ms, "{format:?}");
        }
    }
}
