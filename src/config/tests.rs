//! Whole-document tests of [`parse`]: defaults, every kind of section, error formatting.

use super::*;
use crate::proxy::ProxyRoute;
use crate::secret::Secret;
use crate::sink::format::FileFormat;
use crate::sink::Codec;

fn connection_string(text: &str) -> EventHubConnection {
    EventHubConnection::ConnectionString(ConnectionString::parse(text).unwrap())
}

fn path_format(text: &str) -> PathFormat {
    PathFormat::parse(text).unwrap()
}

const HUB: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;\
                   SharedAccessKey=SECRETKEY0123;EntityPath=telemetry";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse_ok(text: &str) -> Config {
    parse(text, "hubcap.toml", &no_env).unwrap_or_else(|errors| panic!("{errors}"))
}

fn parse_err(text: &str) -> String {
    parse(text, "hubcap.toml", &no_env)
        .expect_err("config should be rejected")
        .to_string()
}

fn minimal() -> String {
    format!("[eventhub]\nconnection_string = \"{HUB}\"\n")
}

#[test]
fn a_connection_string_with_entity_path_is_a_whole_config() {
    let config = parse_ok(&minimal());
    let eventhub = &config.eventhub;
    assert_eq!(eventhub.connection, connection_string(HUB));
    assert_eq!(eventhub.name, "telemetry");
    assert_eq!(eventhub.consumer_group, "$Default");
    assert_eq!(eventhub.start_position, EventPosition::Earliest);
    assert_eq!(eventhub.prefetch, 300);
    assert_eq!(eventhub.prefetch_bytes, 1 << 20);
    assert_eq!(eventhub.owner_level, 0);
    assert_eq!(eventhub.token_lifetime, Duration::from_secs(3600));
    assert_eq!(eventhub.ca_file, None);
    assert_eq!(eventhub.connect_timeout, Duration::from_secs(30));
    assert_eq!(eventhub.retry_min_backoff, Duration::from_millis(200));
    assert_eq!(eventhub.retry_max_backoff, Duration::from_secs(30));
    assert_eq!(
        config.checkpoint_store,
        CheckpointStoreConfig::File {
            path: "/var/lib/hubcap/checkpoints".into()
        }
    );
    assert_eq!(config.load_balancing, LoadBalancingConfig::default());
    assert_eq!(config.load_balancing.strategy, Strategy::Balanced);
    assert_eq!(
        config.load_balancing.update_interval,
        Duration::from_secs(10)
    );
    assert_eq!(
        config.load_balancing.ownership_expiration,
        Duration::from_secs(60)
    );
    assert_eq!(
        config.sink.kind,
        SinkKind::File {
            path: "/var/lib/hubcap/capture".into(),
            path_format: path_format(DEFAULT_PATH_FORMAT),
            format: FileFormat::CAPTURE,
            file_mode: 0o600,
        }
    );
    assert_eq!(
        config.sink.window,
        WindowSettings {
            max_age: Duration::from_secs(300),
            max_bytes: 300 << 20,
            skip_empty: true
        }
    );
    assert_eq!(config.http.listen, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.runtime.worker_threads, 1);
}

#[test]
fn debug_of_a_config_shows_no_secret() {
    let text = format!(
        "{}\n[sink]\ntype = \"avro_blob\"\ncontainer_url = \
         \"https://acct.blob.core.windows.net/capture?sv=1&sig=SASSIGNATURE\"\n",
        minimal()
    );
    let config = parse_ok(&text);
    let debug = format!("{config:?}");
    assert!(!debug.contains("SECRETKEY0123"), "{debug}");
    assert!(!debug.contains("SASSIGNATURE"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn environment_variables_fill_strings_and_numbers() {
    let env = |name: &str| match name {
        "HUB_CONNECTION" => Some(HUB.to_owned()),
        "PREFETCH" => Some("1000".to_owned()),
        _ => None,
    };
    let text = "[eventhub]\nconnection_string = \"${HUB_CONNECTION}\"\n\
                prefetch = \"${PREFETCH:-300}\"\nowner_level = \"${OWNER_LEVEL:-0}\"\n\
                consumer_group = \"${GROUP:-$Default}\"\n[sink]\ntype = \"stdout\"\n\
                skip_empty = \"${SKIP:-false}\"\n";
    let config = parse(text, "hubcap.toml", &env).unwrap();
    assert_eq!(config.eventhub.connection, connection_string(HUB));
    assert_eq!(config.eventhub.prefetch, 1000);
    assert_eq!(config.eventhub.owner_level, 0);
    assert_eq!(config.eventhub.consumer_group, "$Default");
    assert!(!config.sink.window.skip_empty);
}

#[test]
fn entra_id_credentials_inline_or_as_a_table() {
    let inline = "[eventhub]\nfully_qualified_namespace = \"ns.servicebus.windows.net\"\n\
                  name = \"telemetry\"\ncredential = { type = \"managed_identity\", client_id = \
                  \"abc\" }\n";
    let config = parse_ok(inline);
    assert_eq!(
        config.eventhub.connection,
        EventHubConnection::Credential {
            fully_qualified_namespace: FullyQualifiedNamespace::parse("ns.servicebus.windows.net")
                .unwrap(),
            credential: CredentialSpec::ManagedIdentity {
                client_id: Some("abc".into())
            },
        }
    );

    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("client-secret");
    std::fs::write(&secret_path, "from-a-file\n").unwrap();
    let table = format!(
        "[eventhub]\nfully_qualified_namespace = \"ns.servicebus.windows.net\"\nname = \"hub\"\n\
         [eventhub.credential]\ntype = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
         client_secret_file = {:?}\n",
        secret_path.display().to_string()
    );
    let config = parse_ok(&table);
    let EventHubConnection::Credential { credential, .. } = config.eventhub.connection else {
        panic!("expected a credential");
    };
    assert_eq!(
        credential,
        CredentialSpec::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("from-a-file"),
        }
    );
}

#[test]
fn blob_store_and_blob_sink_take_every_storage_form() {
    let text = format!(
        "{}[checkpoint_store]\ntype = \"azure_blob\"\n\
         container_url = \"http://127.0.0.1:10000/devstoreaccount1/ckpt?sv=1&sig=abc\"\n\
         blob_name_case = \"verbatim\"\n\
         [sink]\ntype = \"avro_blob\"\naccount_url = \"https://acct.blob.core.windows.net\"\n\
         credential = {{ type = \"workload_identity\" }}\ncontainer = \"capture\"\n\
         codec = \"zstd\"\ncompression_level = 9\nblock_size = \"8MiB\"\n\
         path_format = \"{{PartitionId}}/{{FirstSequenceNumber}}\"\n",
        minimal()
    );
    let config = parse_ok(&text);
    let CheckpointStoreConfig::AzureBlob {
        storage,
        container,
        blob_name_case,
        ..
    } = config.checkpoint_store
    else {
        panic!("expected a blob store");
    };
    assert!(matches!(storage, StorageAccount::ContainerUrl(_)));
    assert_eq!(container, "ckpt");
    assert_eq!(blob_name_case, NameCase::Verbatim);
    assert_eq!(
        config.sink.kind,
        SinkKind::Blob {
            storage: StorageAccount::AccountUrl {
                account_url: "https://acct.blob.core.windows.net".into(),
                credential: CredentialSpec::WorkloadIdentity,
            },
            proxy: crate::proxy::ProxyRoute::direct(),
            container: "capture".into(),
            path_format: path_format("{PartitionId}/{FirstSequenceNumber}"),
            format: FileFormat::Avro {
                codec: Codec::Zstd { level: 9 }
            },
            block_size: 8 << 20,
        }
    );
}

#[test]
fn the_other_sections_take_their_values() {
    let text = format!(
        "{}start_position = \"seq:42\"\n[load_balancing]\nstrategy = \"greedy\"\n\
         update_interval = \"5s\"\nownership_expiration = \"11s\"\nowner_id = \"host-1\"\n\
         [sink]\ncodec = \"deflate\"\nfile_mode = \"0640\"\nmax_window = \"1m\"\n\
         max_window_bytes = 4096\n[http]\nlisten = \"off\"\n[log]\nformat = \"json\"\n\
         level = \"warn,hubcap=debug\"\n[shutdown]\ndrain_timeout = \"2m\"\n\
         [runtime]\nworker_threads = 4\n",
        minimal()
    );
    let config = parse_ok(&text);
    assert_eq!(
        config.eventhub.start_position,
        EventPosition::SequenceNumber {
            sequence_number: 42,
            inclusive: true
        }
    );
    assert_eq!(
        config.load_balancing,
        LoadBalancingConfig {
            strategy: Strategy::Greedy,
            update_interval: Duration::from_secs(5),
            ownership_expiration: Duration::from_secs(11),
            owner_id: Some("host-1".into()),
        }
    );
    let SinkKind::File {
        format, file_mode, ..
    } = config.sink.kind
    else {
        panic!("expected a file sink");
    };
    assert_eq!(
        format,
        FileFormat::Avro {
            codec: Codec::Deflate { level: 1 }
        }
    );
    assert_eq!(file_mode, 0o640);
    assert_eq!(config.sink.window.max_age, Duration::from_secs(60));
    assert_eq!(config.sink.window.max_bytes, 4096);
    assert_eq!(config.http.listen, None);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "warn,hubcap=debug");
    assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(120));
    assert_eq!(config.runtime.worker_threads, 4);
}

#[test]
fn errors_name_file_line_section_and_key() {
    let text = format!("{}prefetch = \"abc\"\n", minimal());
    assert_eq!(
        parse_err(&text),
        "hubcap.toml:3: [eventhub] prefetch: expected an integer from 1 to 5000, found \"abc\""
    );
}

#[test]
fn errors_come_in_line_order_with_lineless_ones_last() {
    let text = "[sink]\ncodec = \"gzip\"\n\n[log]\nlevel = \"loud\"\n";
    let errors = parse(text, "x.toml", &no_env).unwrap_err();
    let lines: Vec<Option<usize>> = errors.errors.iter().map(|error| error.line).collect();
    assert_eq!(lines, vec![Some(2), Some(5), None, None], "{errors}");
    assert!(errors.to_string().ends_with(
        "x.toml: [eventhub] name: missing hub name: set name, or use a connection string with \
         EntityPath"
    ));
}

#[test]
fn a_toml_syntax_error_never_quotes_the_line() {
    let text = "[eventhub]\nconnection_string = \"Endpoint=sb://x/;SharedAccessKey=LEAKED\n";
    let output = parse_err(text);
    assert!(
        output.starts_with("hubcap.toml:2: invalid TOML"),
        "{output}"
    );
    assert!(!output.contains("LEAKED"), "{output}");
}

#[test]
fn keys_outside_any_section_point_to_their_section() {
    let text = format!("prefetch = 10\n{}", minimal());
    let output = parse_err(&text);
    assert_eq!(
        output,
        "hubcap.toml:1: key \"prefetch\" is outside any section; did you mean [eventhub] \
         prefetch?"
    );
}

#[test]
fn the_default_expiration_is_checked_against_a_longer_interval() {
    let text = format!("{}[load_balancing]\nupdate_interval = \"30s\"\n", minimal());
    assert_eq!(
        parse_err(&text),
        "hubcap.toml:4: [load_balancing] ownership_expiration: ownership_expiration (1m, the \
         default) must be longer than twice update_interval (30s)"
    );
}

#[test]
fn a_missing_file_is_one_error() {
    let errors = load(Path::new("/nonexistent/hubcap.toml")).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert!(errors
        .to_string()
        .starts_with("/nonexistent/hubcap.toml: cannot read config file"));
}

#[test]
fn the_example_documents_every_key() {
    let example = include_str!("../../config.example.toml");
    let credential_keys = [
        "type",
        "client_id",
        "tenant_id",
        "client_secret",
        "client_secret_file",
    ];
    for (section, keys) in SECTIONS {
        assert!(example.contains(&format!("[{section}]")), "[{section}]");
        for key in keys.iter().chain(&credential_keys) {
            assert!(
                example.contains(&format!("{key} =")),
                "config.example.toml does not document [{section}] {key}"
            );
        }
    }
}

#[test]
fn wrong_types_show_what_was_found() {
    let cases = [
        ("prefetch = 300.0", "found 300.0"),
        (
            "prefetch = \"300\"",
            "found \"300\" (write it without quotes)",
        ),
        ("prefetch = [1]", "found an array"),
        ("name = { a = 1 }", "expected a string, found a table"),
        (
            "start_position = 2024-05-01T00:00:00Z",
            "found 2024-05-01T00:00:00Z",
        ),
    ];
    for (line, expected) in cases {
        let output = parse_err(&format!("{}{line}\n", minimal()));
        assert!(output.contains(expected), "{line}: {output}");
    }
}

#[test]
fn a_secret_pasted_into_the_wrong_key_is_redacted() {
    let text = format!("{}consumer_group = \"{HUB}\"\n", minimal());
    let output = parse_err(&text);
    assert!(output.contains("invalid consumer group"), "{output}");
    assert!(!output.contains("SECRETKEY0123"), "{output}");
}

fn sink_format(sink: &str) -> Result<FileFormat, String> {
    let text = format!("{}[sink]\n{sink}", minimal());
    match parse(&text, "hubcap.toml", &no_env) {
        Ok(config) => match config.sink.kind {
            SinkKind::File { format, .. } | SinkKind::Blob { format, .. } => Ok(format),
            SinkKind::Stdout => Err("stdout".into()),
        },
        Err(errors) => Err(errors.to_string()),
    }
}

#[test]
fn formats_take_their_own_codecs_and_defaults() {
    use crate::sink::jsonl::BodyText;
    use crate::sink::parquet::{ParquetSettings, DEFAULT_ROW_GROUP_BYTES};
    assert_eq!(
        sink_format("type = \"file\"\nformat = \"parquet\"\n"),
        Ok(FileFormat::Parquet(ParquetSettings {
            codec: Codec::Zstd { level: 1 },
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            body_utf8: false,
        }))
    );
    assert_eq!(
        sink_format(
            "format = \"parquet\"\ncodec = \"snappy\"\nbody = \"utf8\"\nrow_group_bytes = \"4MiB\"\n"
        ),
        Ok(FileFormat::Parquet(ParquetSettings {
            codec: Codec::Snappy,
            row_group_bytes: 4 << 20,
            body_utf8: true,
        }))
    );
    assert_eq!(
        sink_format("format = \"parquet\"\ncompression_level = 9\n"),
        Ok(FileFormat::Parquet(ParquetSettings {
            codec: Codec::Zstd { level: 9 },
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            body_utf8: false,
        }))
    );
    // `codec = "zstd"` without a level takes the format's level: 1 for Parquet, 3 elsewhere.
    let zstd_level =
        |format: &str| match sink_format(&format!("format = \"{format}\"\ncodec = \"zstd\"\n")) {
            Ok(FileFormat::Parquet(settings)) => settings.codec,
            Ok(FileFormat::Avro { codec } | FileFormat::Jsonl { codec, .. }) => codec,
            other => panic!("{other:?}"),
        };
    assert_eq!(zstd_level("parquet"), Codec::Zstd { level: 1 });
    assert_eq!(zstd_level("avro"), Codec::Zstd { level: 3 });
    assert_eq!(zstd_level("jsonl"), Codec::Zstd { level: 3 });
    assert_eq!(
        sink_format("format = \"jsonl\"\ncodec = \"gzip\"\n"),
        Ok(FileFormat::Jsonl {
            codec: Codec::Gzip { level: 6 },
            body: BodyText::Utf8
        })
    );
    assert_eq!(
        sink_format(
            "type = \"avro_blob\"\ncontainer_url = \"https://a.blob.core.windows.net/cap?sig=x\"\n\
             body = \"binary\"\n"
        )
        .unwrap_err(),
        "hubcap.toml:6: [sink] body: not used by format \"avro\""
    );
    assert_eq!(
        sink_format("type = \"file\"\nformat = \"jsonl\"\nbody = \"binary\"\ncodec = \"zstd\"\ncompression_level = 19\n"),
        Ok(FileFormat::Jsonl {
            codec: Codec::Zstd { level: 19 },
            body: BodyText::Base64
        })
    );
    assert_eq!(sink_format("format = \"avro\"\n"), Ok(FileFormat::CAPTURE));
}

#[test]
fn a_codec_or_key_of_another_format_is_named_as_such() {
    assert_eq!(
        sink_format("format = \"parquet\"\ncodec = \"deflate\"\n").unwrap_err(),
        "hubcap.toml:5: [sink] codec: codec \"deflate\" is not available with format \
         \"parquet\"; expected \"null\", \"snappy\" or \"zstd\""
    );
    assert_eq!(
        sink_format("format = \"jsonl\"\ncodec = \"snappy\"\n").unwrap_err(),
        "hubcap.toml:5: [sink] codec: codec \"snappy\" is not available with format \
         \"jsonl\"; expected \"null\", \"gzip\" or \"zstd\""
    );
    assert_eq!(
        sink_format("codec = \"gzip\"\n").unwrap_err(),
        "hubcap.toml:4: [sink] codec: codec \"gzip\" is not available with format \
         \"avro\"; expected \"null\", \"deflate\", \"snappy\" or \"zstd\""
    );
    assert_eq!(
        sink_format("format = \"jsonl\"\nrow_group_bytes = \"1MiB\"\n").unwrap_err(),
        "hubcap.toml:5: [sink] row_group_bytes: not used by format \"jsonl\""
    );
    assert_eq!(
        sink_format("type = \"avro_file\"\nformat = \"parquet\"\n").unwrap_err(),
        "hubcap.toml:5: [sink] format: sink type \"avro_file\" writes Avro; for parquet use \
         type = \"file\" with format = \"parquet\""
    );
    assert!(sink_format("format = \"orc\"\n")
        .unwrap_err()
        .contains("[sink] format: unknown format \"orc\""));
    assert_eq!(
        sink_format("type = \"stdout\"\nformat = \"jsonl\"\n").unwrap_err(),
        "hubcap.toml:5: [sink] format: not used by sink type \"stdout\""
    );
}

#[test]
fn websockets_a_proxy_and_a_custom_endpoint() {
    let text = format!(
        "{}transport = \"amqp_websockets\"\n\
         proxy = \"http://alice:hunter2@proxy.corp:3128\"\n\
         custom_endpoint = \"sb://10.1.2.3:8443/\"\n",
        minimal()
    );
    let config = parse_ok(&text);
    let hub = &config.eventhub;
    assert_eq!(hub.transport, Transport::AmqpWebSockets);
    assert_eq!(hub.custom_endpoint, Some(("10.1.2.3".into(), Some(8443))));
    let proxy = hub.proxy.proxy.as_ref().unwrap();
    assert_eq!(proxy.address(), "proxy.corp:3128");
    assert_eq!(proxy.source, "eventhub.proxy");
    assert!(hub.ignored_proxy_variable.is_none());
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    // The default: AMQP, direct.
    let config = parse_ok(&minimal());
    assert_eq!(config.eventhub.transport, Transport::Amqp);
    assert_eq!(config.eventhub.proxy, ProxyRoute::direct());
}

#[test]
fn a_proxy_with_plain_amqp_is_an_error_and_bad_values_are_named() {
    let text = format!("{}proxy = \"http://alice:hunter2@proxy:3128\"\n", minimal());
    let error = parse_err(&text);
    assert!(
        error.contains(
            "hubcap.toml:3: [eventhub] proxy: a proxy needs transport = \"amqp_websockets\""
        ),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
    let cases = [
        (
            "transport = \"websockets\"",
            "unknown transport \"websockets\"",
        ),
        (
            "transport = \"amqp_websockets\"\nproxy = \"socks5://alice:hunter2@proxy:1080\"",
            "unsupported proxy scheme \"socks5\"",
        ),
        ("custom_endpoint = \"10.0.0.1:0\"", "invalid port \"0\""),
        (
            "custom_endpoint = \"ftp://gateway\"",
            "unknown scheme \"ftp\"",
        ),
        ("custom_endpoint = \"gw/path\"", "without a path"),
    ];
    for (lines, expected) in cases {
        let error = parse_err(&format!("{}{lines}\n", minimal()));
        assert!(error.contains(expected), "{lines}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn https_proxy_and_no_proxy_from_the_environment() {
    let env = |name: &str| match name {
        "HTTPS_PROXY" => Some("http://bob:s3cret@envproxy:8080".to_owned()),
        "no_proxy" => Some(".internal.example,127.0.0.1".to_owned()),
        _ => None,
    };
    let storage = "[checkpoint_store]\ntype = \"azure_blob\"\n\
                   connection_string = \"UseDevelopmentStorage=true\"\ncontainer = \"ckpt\"\n";
    // With plain AMQP the variable is not used for the connection, and start says so; Blob
    // Storage uses it.
    let config = parse(&format!("{}{storage}", minimal()), "x.toml", &env).unwrap();
    assert_eq!(config.eventhub.ignored_proxy_variable, Some("HTTPS_PROXY"));
    assert_eq!(config.eventhub.proxy, ProxyRoute::direct());
    let CheckpointStoreConfig::AzureBlob { proxy, .. } = &config.checkpoint_store else {
        panic!("expected a blob store");
    };
    assert_eq!(
        proxy.for_host("acct.blob.core.windows.net").unwrap().source,
        "HTTPS_PROXY"
    );
    assert!(proxy.for_host("127.0.0.1").is_none());
    // With WebSockets the connection uses it, NO_PROXY included.
    let text = format!("{}transport = \"amqp_websockets\"\n", minimal());
    let config = parse(&text, "x.toml", &env).unwrap();
    let route = &config.eventhub.proxy;
    assert_eq!(
        route
            .for_host("ns.servicebus.windows.net")
            .unwrap()
            .address(),
        "envproxy:8080"
    );
    assert!(route.for_host("ns.internal.example").is_none());
    // A [checkpoint_store] proxy wins over the variable.
    let text = format!("{}{storage}proxy = \"http://storeproxy:3128\"\n", minimal());
    let config = parse(&text, "x.toml", &env).unwrap();
    let CheckpointStoreConfig::AzureBlob { proxy, .. } = &config.checkpoint_store else {
        panic!("expected a blob store");
    };
    assert_eq!(
        proxy.proxy.as_ref().unwrap().source,
        "checkpoint_store.proxy"
    );
    // An unusable variable is named, its value (a password) is not repeated.
    let bad = |name: &str| match name {
        "HTTPS_PROXY" => Some("https://bob:s3cret@envproxy:8080".to_owned()),
        _ => None,
    };
    let text = format!("{}transport = \"amqp_websockets\"\n", minimal());
    let error = parse(&text, "x.toml", &bad).unwrap_err().to_string();
    assert!(
        error.contains("environment variable HTTPS_PROXY"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
}
