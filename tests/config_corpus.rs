//! The config corpus: every file in `tests/config_corpus/` is an invalid config that opens with
//! one or more `# expect: <substring>` lines; `hubcap check-config` output for it must contain
//! each of them (line numbers included, as `:<line>:`). Plus the valid configs: the minimal
//! one, and `config.example.toml`, whose values must be the defaults it documents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hubcap::balance::Strategy;
use hubcap::config::{
    self, CheckpointStoreConfig, Config, EventHubConnection, LogFormat, SinkKind,
    DEFAULT_PATH_FORMAT,
};
use hubcap::eventhubs::{ConnectionString, EventPosition};
use hubcap::sink::path_format::PathFormat;
use hubcap::sink::Codec;

const HUB_KEY: &str = "c2VjcmV0a2V5";
const HUB: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;\
                   SharedAccessKey=c2VjcmV0a2V5;EntityPath=telemetry";
const HUB_WITHOUT_ENTITY_PATH: &str =
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0a2V5";

/// The environment the corpus is checked in.
fn env(name: &str) -> Option<String> {
    match name {
        "EVENTHUB_CONNECTION_STRING" => Some(HUB.to_owned()),
        "EVENTHUB_CONNECTION_STRING_WITHOUT_ENTITY_PATH" => {
            Some(HUB_WITHOUT_ENTITY_PATH.to_owned())
        }
        _ => None,
    }
}

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every corpus file, sorted, with its name and text.
fn corpus() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> =
        std::fs::read_dir(repository_file("tests/config_corpus"))
            .expect("tests/config_corpus exists")
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "toml")
            })
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
    files.sort();
    files
}

fn expectations(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(str::trim)
        .collect()
}

#[test]
fn every_invalid_config_reports_its_expected_problems() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 25,
        "the corpus has only {} files",
        corpus.len()
    );
    let mut failures = Vec::new();
    for (name, text) in &corpus {
        let expected = expectations(text);
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let output = match config::parse(text, name, &env) {
            Ok(config) => {
                failures.push(format!("{name}: accepted: {config:?}"));
                continue;
            }
            Err(errors) => errors.to_string(),
        };
        // Shown with --nocapture: the whole corpus as check-config prints it.
        println!("{output}\n");
        for expectation in expected {
            if !output.contains(expectation) {
                failures.push(format!("{name}: expected {expectation:?} in:\n{output}"));
            }
        }
        // No corpus file may make a secret visible.
        for secret in [HUB_KEY, "S3CRETKEYVALUE"] {
            if output.contains(secret) {
                failures.push(format!("{name}: a secret is in the output:\n{output}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn one_file_with_many_problems_reports_all_of_them_at_once() {
    let text =
        std::fs::read_to_string(repository_file("tests/config_corpus/many_problems.toml")).unwrap();
    let errors = config::parse(&text, "many_problems.toml", &env).unwrap_err();
    let output = errors.to_string();
    let expected = expectations(&text);
    assert_eq!(errors.errors.len(), expected.len(), "{output}");
    assert_eq!(
        output.lines().count(),
        expected.len(),
        "one problem per line:\n{output}"
    );
    for expectation in expected {
        assert!(
            output.contains(expectation),
            "{expectation:?} in:\n{output}"
        );
    }
}

#[test]
fn load_names_the_file_in_every_message() {
    let path = repository_file("tests/config_corpus/unset_environment_variable.toml");
    let errors = config::load(&path).unwrap_err();
    let output = errors.to_string();
    assert!(
        output.starts_with(&format!(
            "{}:3: [eventhub] connection_string",
            path.display()
        )),
        "{output}"
    );
}

#[test]
fn a_minimal_config_gets_production_defaults() {
    let text = "[eventhub]\nconnection_string = \"${EVENTHUB_CONNECTION_STRING}\"\n";
    let config = config::parse(text, "minimal.toml", &env).unwrap();
    assert_eq!(
        config.eventhub.connection,
        EventHubConnection::ConnectionString(ConnectionString::parse(HUB).unwrap())
    );
    assert_eq!(config.eventhub.name, "telemetry");
    assert_eq!(config.eventhub.consumer_group, "$Default");
    assert_eq!(config.eventhub.start_position, EventPosition::Earliest);
    assert_eq!(config.eventhub.prefetch, 300);
    assert_eq!(
        config.checkpoint_store,
        CheckpointStoreConfig::File {
            path: "/var/lib/hubcap/checkpoints".into()
        }
    );
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
            path_format: PathFormat::parse(DEFAULT_PATH_FORMAT).unwrap(),
            format: hubcap::sink::format::FileFormat::Avro { codec: Codec::Null },
            file_mode: 0o600,
        }
    );
    assert_eq!(config.sink.window.max_age, Duration::from_secs(300));
    assert_eq!(config.sink.window.max_bytes, 300 * 1024 * 1024);
    assert!(config.sink.window.skip_empty);
    assert_eq!(config.http.listen, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(30));
}

fn example() -> Config {
    let path = repository_file("config.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    config::parse(&text, "config.example.toml", &env).unwrap_or_else(|errors| panic!("{errors}"))
}

#[test]
fn the_example_config_parses_and_states_the_defaults() {
    let example = example();
    assert_eq!(example.eventhub.name, "telemetry");
    // The example writes out every default, so it must mean the same as leaving them out.
    let minimal = "[eventhub]\nconnection_string = \"${EVENTHUB_CONNECTION_STRING}\"\n\
                   name = \"telemetry\"\n";
    let defaults = config::parse(minimal, "minimal.toml", &env).unwrap();
    assert_eq!(example, defaults);
}

#[test]
fn a_storage_account_key_never_appears_in_errors_or_debug() {
    let rejected = "[eventhub]\nconnection_string = \"${EVENTHUB_CONNECTION_STRING}\"\n\
                    [checkpoint_store]\ntype = \"azure_blob\"\ncontainer = \"checkpoints\"\n\
                    connection_string = \"DefaultEndpointsProtocol=https;AccountKey=S3CRETKEYVALUE0=\"\n";
    let errors = config::parse(rejected, "hubcap.toml", &env).unwrap_err();
    let shown = format!("{errors}\n{errors:?}");
    assert!(
        shown.contains("storage connection string has no AccountName"),
        "{shown}"
    );
    assert!(!shown.contains("S3CRETKEYVALUE"), "{shown}");

    // Accepted, the key is still only reachable through `expose`.
    let accepted = rejected.replace("AccountKey=", "AccountName=acct;AccountKey=");
    let config = config::parse(&accepted, "hubcap.toml", &env).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("S3CRETKEYVALUE"), "{debug}");
    assert!(!debug.contains(HUB_KEY), "{debug}");
}
