//! How fast ownership settles with the default strategy: a fresh single instance takes every
//! partition in its first cycle (nobody owns them), while an instance joining a balanced group
//! takes from the live owners one partition per cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hubcap_emulator::config::HubConfig;
use hubcap_emulator::{Emulator, EmulatorConfig};

const HUB: &str = "hub1";

async fn start_emulator(partitions: usize) -> Emulator {
    Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hubs: vec![HubConfig {
            name: HUB.into(),
            partitions,
        }],
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

/// A `hubcap run` child, killed when dropped.
struct Instance {
    child: Child,
    stderr: PathBuf,
}

impl Instance {
    fn start(dir: &Path, emulator: &Emulator, owner: &str, load_balancing: &str) -> Self {
        let checkpoints = dir.join("checkpoints");
        let config = format!(
            r#"[eventhub]
connection_string = "{}"
start_position = "earliest"

[checkpoint_store]
type = "file"
path = "{}"

[load_balancing]
owner_id = "{owner}"
{load_balancing}

[sink]
type = "stdout"

[http]
listen = "off"
"#,
            emulator.connection_string(Some(HUB)),
            checkpoints.display()
        );
        let config_path = dir.join(format!("{owner}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let stderr = dir.join(format!("{owner}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("hubcap run starts");
        Self { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Deserialize)]
struct Record {
    ownerid: String,
    last_modified_unix_ms: u64,
}

/// Active owner of each partition with a record (expired records are left out).
fn owners(dir: &Path, emulator: &Emulator, expiration: Duration) -> BTreeMap<String, String> {
    let ownership = dir
        .join("checkpoints")
        .join(emulator.amqp_addr().to_string())
        .join(HUB)
        .join("$default")
        .join("ownership");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let Ok(entries) = std::fs::read_dir(&ownership) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        // Hidden files (the claim lock) and a writer's temp files (`N.tmp-<pid>-<random>`, read
        // whole if caught before the rename) are not records.
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.contains(".tmp-")
        })
        .filter_map(|e| {
            let record: Record = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let fresh =
                now.saturating_sub(record.last_modified_unix_ms) < expiration.as_millis() as u64;
            (fresh && !record.ownerid.is_empty())
                .then(|| (e.file_name().to_string_lossy().into_owned(), record.ownerid))
        })
        .collect()
}

fn counts(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for owner in owners.values() {
        *counts.entry(owner.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_with_default_settings_owns_all_32_partitions_within_one_interval() {
    let emulator = start_emulator(32).await;
    let dir = tempfile::tempdir().unwrap();
    // No [load_balancing] keys but the owner id: balanced, 10 s interval, 60 s expiration.
    let started = Instant::now();
    let instance = Instance::start(dir.path(), &emulator, "solo", "");
    let interval = Duration::from_secs(10);
    loop {
        let owned = counts(&owners(dir.path(), &emulator, Duration::from_secs(60)));
        if owned.get("solo") == Some(&32) {
            break;
        }
        assert!(
            started.elapsed() < interval,
            "after one update interval the instance owns {owned:?} of 32\n{}",
            instance.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("owned 32 partitions {:?} after start", started.elapsed());
    drop(instance);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_instance_joining_three_takes_one_partition_per_cycle() {
    let emulator = start_emulator(12).await;
    let dir = tempfile::tempdir().unwrap();
    let expiration = Duration::from_secs(4);
    let settings = "update_interval = \"1s\"\nownership_expiration = \"4s\"";
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|owner| Instance::start(dir.path(), &emulator, owner, settings))
        .collect();
    let split = |wanted: &[usize]| {
        let mut counts: Vec<usize> = counts(&owners(dir.path(), &emulator, expiration))
            .into_values()
            .collect();
        counts.sort();
        counts == wanted
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !split(&[4, 4, 4]) {
        assert!(
            Instant::now() < deadline,
            "three instances never split 12 partitions 4/4/4: {:?}",
            counts(&owners(dir.path(), &emulator, expiration))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    instances.push(Instance::start(dir.path(), &emulator, "d", settings));
    let joined = Instant::now();
    // Every time d's count grows: by one, and at least a cycle (1 s, minus polling) apart.
    let mut steps: Vec<(Duration, usize)> = Vec::new();
    let mut last = 0;
    while last < 3 {
        let owned = counts(&owners(dir.path(), &emulator, expiration));
        let now = owned.get("d").copied().unwrap_or(0);
        if now != last {
            steps.push((joined.elapsed(), now));
            last = now;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "d reached only {owned:?}: {steps:?}\n{}",
            instances[3].log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts_seen: Vec<usize> = steps.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        counts_seen,
        vec![1, 2, 3],
        "d took more than one at once: {steps:?}\n{}",
        instances
            .iter()
            .map(|i| i.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    for pair in steps.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(800),
            "two steals {gap:?} apart: {steps:?}"
        );
    }
    // And it settles at 3/3/3/3 without further moves.
    let settled = owners(dir.path(), &emulator, expiration);
    let mut values: Vec<usize> = counts(&settled).into_values().collect();
    values.sort();
    assert_eq!(values, vec![3, 3, 3, 3], "{settled:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        owners(dir.path(), &emulator, expiration),
        settled,
        "ownership moved after settling"
    );
    drop(instances);
    emulator.shutdown().await;
}
