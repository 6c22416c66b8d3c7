//! `hubcap check-config --connect` against the real emulator and a real Azurite: every check
//! passes on a working config, and each broken piece (Event Hubs key, storage key, sink
//! directory) gets its own FAILED line saying what to fix, while the others still run.

mod azurite;

use std::path::Path;
use std::process::{Command, Output};

use azurite::Azurite;
use hubcap_emulator::config::HubConfig;
use hubcap_emulator::{Emulator, EmulatorConfig};

async fn start_emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hubs: vec![HubConfig {
            name: "hub1".into(),
            partitions: 4,
        }],
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

fn check(dir: &Path, eventhub: &str, storage: &str, sink_path: &Path) -> (Output, String) {
    let config = format!(
        r#"[eventhub]
connection_string = "{eventhub}"
connect_timeout = "5s"

[checkpoint_store]
type = "azure_blob"
connection_string = "{storage}"
container = "checkpoints"

[sink]
type = "avro_file"
path = "{}"

[http]
listen = "off"
"#,
        sink_path.display()
    );
    let path = dir.join("hubcap.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .args(["check-config", "--connect", "--config"])
        .arg(&path)
        .output()
        .expect("hubcap check-config runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{what}: ")))
        .unwrap_or_else(|| panic!("no {what} line in: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_config_passes_every_connection_check() {
    let emulator = start_emulator().await;
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let (output, stdout) = check(
        dir.path(),
        &emulator.connection_string(Some("hub1")),
        &azurite.connection_string(),
        &dir.path().join("capture"),
    );
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        line(&stdout, "event hubs").contains("4 partitions (0,1,2,3)"),
        "{stdout}"
    );
    assert!(
        line(&stdout, "checkpoint store").contains("readable and writable"),
        "{stdout}"
    );
    assert!(line(&stdout, "sink").contains("is writable"), "{stdout}");
    assert!(dir.path().join("capture").is_dir());
    // The probe file is gone; only the directory is left.
    assert_eq!(
        std::fs::read_dir(dir.path().join("capture"))
            .unwrap()
            .count(),
        0
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_piece_gets_its_own_failure_and_the_others_still_run() {
    let emulator = start_emulator().await;
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong_key = emulator
        .connection_string(Some("hub1"))
        .replace("SAS_KEY_VALUE", "d3JvbmcK");
    // The sink directory would be under a regular file: it cannot be created.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let (output, stdout) = check(
        dir.path(),
        &wrong_key,
        &azurite.connection_string_with_key("d3JvbmcgYWNjb3VudCBrZXkK"),
        &blocker.join("capture"),
    );
    assert!(!output.status.success(), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("3 of 3 connection check(s) failed"),
        "{stderr}"
    );
    let eventhubs = line(&stdout, "event hubs");
    assert!(
        eventhubs.contains("FAILED") && eventhubs.contains("Listen"),
        "{stdout}"
    );
    assert!(!stdout.contains("d3JvbmcK"), "a key was printed: {stdout}");
    let store = line(&stdout, "checkpoint store");
    assert!(store.contains("FAILED"), "{stdout}");
    let sink = line(&stdout, "sink");
    assert!(
        sink.contains("FAILED") && sink.contains("a-file"),
        "{stdout}"
    );
    emulator.shutdown().await;
}
