//! `hubcap status` on a real fleet: three `hubcap run` processes share a six-partition hub of
//! the emulator, through the file store and through a real Azurite blob store. The same
//! scenario runs on each store: the running fleet (three owners, two partitions each, nothing
//! behind), one instance killed with `-9` and the others stopped (its partitions still owned,
//! then expired after the ownership expiration; theirs released), a backlog arriving while
//! the fleet is down (its lag in events and in seconds), and more events than the emulator
//! retains (checkpoints older than the retained range, or about to be, flagged). Then the
//! bad inputs: stores that cannot be reached. `status` runs as the real binary each time, in
//! table and JSON form.

mod azurite;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azurite::Azurite;
use common::*;
use hubcap::checkpoint::blob::BlobCheckpointStore;
use hubcap::checkpoint::file::FileCheckpointStore;
use hubcap::checkpoint::{CheckpointStore, NameCase, Store, StoreScope};
use hubcap::secret::Secret;
use hubcap::storage::{BlobContainer, StorageAccount};
use hubcap_emulator::Emulator;
use serde_json::Value;

const PARTITIONS: usize = 6;
const OWNERS: [&str; 3] = ["fleet-a", "fleet-b", "fleet-c"];
/// Events in each partition before the fleet starts: all of them archived and checkpointed.
const FIRST_EVENTS: u64 = 20;
/// Events per partition that arrive while the fleet is down: the lag `status` must show.
const BACKLOG: u64 = 7;
/// Events each partition of the emulator keeps (its `retention_events`).
const RETENTION: u64 = 30;
/// Short enough that waiting for it costs little, long enough that a `status` run right after
/// the kill still finds the killed instance's ownership active.
const EXPIRATION: Duration = Duration::from_secs(4);
const CONTAINER: &str = "status-checkpoints";
/// How long the fleet may take to split the hub and checkpoint everything.
const SETTLE_LIMIT: Duration = Duration::from_secs(45);
/// How long one `hubcap status` may take.
const STATUS_LIMIT: Duration = Duration::from_secs(30);

/// Where the fleet keeps its records.
enum StoreUnderTest {
    File,
    Blob(Azurite),
}

impl StoreUnderTest {
    /// `config` switched to this store.
    fn configure(&self, config: HubcapConfig) -> HubcapConfig {
        match self {
            StoreUnderTest::File => config,
            StoreUnderTest::Blob(azurite) => {
                config.blob_store(&azurite.connection_string(), CONTAINER)
            }
        }
    }

    /// The store's records as hubcap reads them, for the test's own waits.
    async fn open(&self, work: &Workdir, emulator: &Emulator) -> Store {
        let scope = StoreScope {
            fully_qualified_namespace: emulator.amqp_addr().to_string(),
            event_hub: HUB.into(),
            consumer_group: CONSUMER_GROUP.into(),
        };
        match self {
            StoreUnderTest::File => Store::File(
                FileCheckpointStore::open(work.checkpoints(), scope, NameCase::Lower).unwrap(),
            ),
            StoreUnderTest::Blob(azurite) => {
                let account =
                    StorageAccount::ConnectionString(Secret::new(azurite.connection_string()));
                let container =
                    BlobContainer::connect(&account, CONTAINER, &Default::default()).unwrap();
                container.create_container_if_missing().await.unwrap();
                Store::Blob(BlobCheckpointStore::new(container, scope, NameCase::Lower))
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_file_store_status_follows_a_fleet_through_a_kill_a_backlog_and_retention() {
    fleet_scenario(StoreUnderTest::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_azurite_blob_store_status_follows_a_fleet_through_a_kill_a_backlog_and_retention() {
    fleet_scenario(StoreUnderTest::Blob(Azurite::start())).await;
}

async fn fleet_scenario(store_kind: StoreUnderTest) {
    let mut emulator_config = emulator_config(PARTITIONS);
    emulator_config.retention_events = Some(RETENTION);
    let emulator = start_emulator_with(emulator_config).await;
    preload_each(&emulator, FIRST_EVENTS, 64);
    let work = Workdir::new();
    let config = store_kind.configure(
        // The test default's update interval, 1 s: the shortest hubcap takes.
        work.config(emulator.amqp_addr()).set(
            "load_balancing",
            "ownership_expiration",
            &format!("{}s", EXPIRATION.as_secs()),
        ),
    );
    let store = store_kind.open(&work, &emulator).await;
    let status_config = work.write_config("status.toml", &config);
    let ids = partition_ids(&emulator);

    // The running fleet: three owners, two partitions each, everything checkpointed.
    let mut fleet: Vec<Hubcap> = OWNERS
        .iter()
        .map(|owner| {
            let config = config.clone().set("load_balancing", "owner_id", owner);
            Hubcap::start(owner, &work, &config)
        })
        .collect();
    let settled = || async {
        let split: BTreeMap<String, usize> =
            active_owners(&store)
                .await
                .values()
                .fold(BTreeMap::new(), |mut counts, owner| {
                    *counts.entry(owner.clone()).or_default() += 1;
                    counts
                });
        let checkpoints = checkpointed(&store).await;
        split.len() == OWNERS.len()
            && split.values().all(|&n| n == PARTITIONS / OWNERS.len())
            && ids
                .iter()
                .all(|id| checkpoints.get(id) == Some(&(FIRST_EVENTS as i64 - 1)))
    };
    eventually_async(
        "three owners of two partitions each, every partition checkpointed",
        SETTLE_LIMIT,
        settled,
    )
    .await;
    let owners = active_owners(&store).await;

    let report = status_json(&status_config).await;
    assert_eq!(report["totals"]["partitions"], PARTITIONS);
    assert_eq!(report["totals"]["active"], PARTITIONS);
    assert_eq!(report["totals"]["lag_events"], 0);
    let listed: Vec<(String, u64, u64)> = report["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let id = o["owner_id"].as_str().unwrap().to_owned();
            (
                id,
                o["active"].as_u64().unwrap(),
                o["expired"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, u64)> =
        OWNERS.iter().map(|o| ((*o).to_owned(), 2, 0)).collect();
    assert_eq!(listed, expected, "{report:#}");
    for id in &ids {
        let partition = partition(&report, id);
        assert_eq!(partition["owner_id"], owners[id].as_str(), "{partition:#}");
        assert_eq!(partition["ownership"], "active", "{partition:#}");
        assert_eq!(partition["checkpoint"]["sequence_number"], FIRST_EVENTS - 1);
        assert_eq!(partition["last_enqueued_sequence_number"], FIRST_EVENTS - 1);
        assert_eq!(partition["lag_events"], 0);
        assert_eq!(partition["lag_seconds"], 0.0);
        assert_eq!(
            partition["warnings"],
            serde_json::json!([]),
            "{partition:#}"
        );
        assert!(partition["checkpoint"]["written_at"].is_string());
    }
    let table = status_table(&status_config).await;
    assert!(
        table.contains("owners: 3 (fleet-a 2, fleet-b 2, fleet-c 2)"),
        "{table}"
    );
    assert!(
        table.contains(
            "partitions: 6 (6 active, 0 expired, 0 released, 0 unowned); lag 0 events; 0 with warnings"
        ),
        "{table}"
    );
    for id in &ids {
        let row = table_row(&table, id);
        assert_eq!(&row[1..3], [owners[id].as_str(), "active"], "{table}");
    }

    // fleet-a killed: its records stay, active until the expiration; the others drain and
    // release theirs.
    let killed = OWNERS[0];
    let killed_partitions: Vec<String> = ids
        .iter()
        .filter(|id| owners[*id] == killed)
        .cloned()
        .collect();
    // Both signalled at once: one still running while the other drains could claim fleet-a's
    // partitions when they expire.
    fleet[0].kill();
    for instance in &fleet[1..] {
        instance.terminate();
    }
    let report = status_json(&status_config).await;
    for id in &killed_partitions {
        let partition = partition(&report, id);
        assert_eq!(partition["owner_id"], killed);
        assert_eq!(partition["ownership"], "active", "{partition:#}");
        assert!(partition["ownership_age_seconds"].as_f64().unwrap() < EXPIRATION.as_secs_f64());
    }
    for instance in &mut fleet[1..] {
        let status = instance.wait_exit(DRAIN_TIMEOUT).await;
        assert!(status.success(), "a drained instance exits 0: {status}");
    }

    // A backlog arrives while nobody reads: lag in events, and in seconds since it arrived
    // (read from the service: no consumer holds the partitions now).
    let sent = SystemTime::now();
    preload_each(&emulator, BACKLOG, 64);
    let sent_by = SystemTime::now();
    let expires_at = killed_partitions
        .iter()
        .map(|id| renewed_at(&report, id))
        .max()
        .unwrap()
        + EXPIRATION;
    eventually(
        "fleet-a's ownership expiration passed",
        EXPIRATION * 2,
        || SystemTime::now() > expires_at + Duration::from_millis(50),
    )
    .await;
    let started = SystemTime::now();
    let report = status_json(&status_config).await;
    let finished = SystemTime::now();
    for id in &ids {
        let partition = partition(&report, id);
        if killed_partitions.contains(id) {
            assert_eq!(partition["owner_id"], killed, "{partition:#}");
            assert_eq!(partition["ownership"], "expired", "{partition:#}");
            assert_eq!(partition["ownership_expired"], true);
        } else {
            assert_eq!(partition["owner_id"], Value::Null, "{partition:#}");
            assert_eq!(partition["ownership"], "released", "{partition:#}");
        }
        assert_eq!(partition["lag_events"], BACKLOG, "{partition:#}");
        assert_eq!(partition["lag_seconds_estimated"], false, "{partition:#}");
        let lag_seconds = partition["lag_seconds"].as_f64().unwrap();
        let (low, high) = (
            seconds_between(sent_by, started),
            seconds_between(sent, finished),
        );
        assert!(
            low - 0.002 <= lag_seconds && lag_seconds <= high + 0.002,
            "partition {id}: lag {lag_seconds}s, expected {low}..{high}"
        );
    }
    assert_eq!(
        report["owners"],
        serde_json::json!([{
            "owner_id": killed,
            "partitions": 2,
            "active": 0,
            "expired": 2,
            "partition_ids": killed_partitions,
        }])
    );
    assert_eq!(report["totals"]["lag_events"], BACKLOG * PARTITIONS as u64);
    let table = status_table(&status_config).await;
    assert!(table.contains("owners: 1 (fleet-a 2 expired)"), "{table}");
    for id in &killed_partitions {
        let row = table_row(&table, id);
        assert_eq!(&row[1..3], [killed, "EXPIRED"], "{table}");
    }

    // Retention overtakes the stopped fleet: in half the partitions the checkpoint falls
    // behind the first retained event, in the other half the next event to read becomes the
    // first retained one.
    let checkpointed_at = FIRST_EVENTS as i64 - 1;
    let last_now = checkpointed_at + BACKLOG as i64;
    let (overrun, edge): (Vec<_>, Vec<_>) = partitions(&emulator)
        .into_iter()
        .enumerate()
        .partition(|(index, _)| index % 2 == 0);
    let overrun_by = 12;
    for (_, overrun_partition) in &overrun {
        // Retained afterwards: the last RETENTION events, the first of them `overrun_by` past
        // the next one to read.
        let more = checkpointed_at + overrun_by + RETENTION as i64 - last_now;
        overrun_partition.preload(more as u64, 64).unwrap();
    }
    for (_, edge_partition) in &edge {
        let more = checkpointed_at + RETENTION as i64 - last_now;
        edge_partition.preload(more as u64, 64).unwrap();
    }
    let report = status_json(&status_config).await;
    for (_, overrun_partition) in &overrun {
        let partition = partition(&report, &overrun_partition.id);
        let first_retained = checkpointed_at + 1 + overrun_by;
        assert_eq!(partition["begin_sequence_number"], first_retained);
        assert_eq!(partition["lag_events"], RETENTION, "{partition:#}");
        let warnings = partition["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{partition:#}");
        assert_eq!(warnings[0]["kind"], "checkpoint_expired");
        assert_eq!(
            warnings[0]["message"],
            format!(
                "{overrun_by} events expired unread: the checkpoint is at {checkpointed_at}, \
                 the first retained event is {first_retained}"
            )
        );
    }
    for (_, edge_partition) in &edge {
        let partition = partition(&report, &edge_partition.id);
        assert_eq!(partition["begin_sequence_number"], checkpointed_at + 1);
        let warnings = partition["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{partition:#}");
        assert_eq!(
            warnings[0]["kind"], "checkpoint_near_expiry",
            "{partition:#}"
        );
    }
    assert_eq!(report["totals"]["partitions_with_warnings"], PARTITIONS);
    let table = status_table(&status_config).await;
    let row = table_row(&table, &overrun[0].1.id).join(" ");
    assert!(row.contains("12 events expired unread"), "{table}");
    let row = table_row(&table, &edge[0].1.id).join(" ");
    assert!(row.contains("near expiry"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_consumer_makes_the_lag_time_an_estimate_and_another_group_makes_it_exact() {
    let mut emulator_config = emulator_config(2);
    emulator_config.consumer_groups = vec!["operators".into()];
    let emulator = start_emulator_with(emulator_config).await;
    let work = Workdir::new();
    // Windows that stay open: the events are received and never checkpointed.
    let config =
        work.config(emulator.amqp_addr())
            .sink(Sink::AvroFile)
            .set("sink", "max_window", "1h");
    let mut holder = Hubcap::start("holder", &work, &config);
    let ids = partition_ids(&emulator);
    eventually(
        "holder receiving from every partition",
        SETTLE_LIMIT,
        || {
            let receiving: std::collections::BTreeSet<String> = holder
                .logs()
                .iter()
                .filter(|l| l.message == "receiving" && l.has("position"))
                .filter_map(|l| l.field("partition_id"))
                .collect();
            receiving.len() == ids.len()
        },
    )
    .await;
    let sent = SystemTime::now();
    preload_each(&emulator, 5, 16);
    let sent_by = SystemTime::now();
    let path = work.write_config("status.toml", &config);

    let report = status_json(&path).await;
    for id in &ids {
        let partition = partition(&report, id);
        assert_eq!(partition["ownership"], "active", "{partition:#}");
        assert_eq!(partition["lag_events"], 5, "{partition:#}");
        assert_eq!(partition["lag_seconds_estimated"], true, "{partition:#}");
        assert_eq!(partition["warnings"][0]["kind"], "no_checkpoint");
    }
    let table = status_table(&path).await;
    // LAG then LAG TIME, marked as an estimate.
    let row = table_row(&table, &ids[0]);
    let lag_time = row.iter().position(|word| word.starts_with('~'));
    assert!(lag_time.is_some_and(|at| row[at - 1] == "5"), "{table}");
    assert!(
        table.contains("\n~ estimated: a running consumer"),
        "{table}"
    );

    let started = SystemTime::now();
    let run = run_status(&path, &["--json", "--lag-consumer-group", "operators"]).await;
    let finished = SystemTime::now();
    run.assert_code(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["consumer_group"], CONSUMER_GROUP);
    for id in &ids {
        let partition = partition(&report, id);
        assert_eq!(partition["lag_events"], 5, "{partition:#}");
        assert_eq!(partition["lag_seconds_estimated"], false, "{partition:#}");
        let lag_seconds = partition["lag_seconds"].as_f64().unwrap();
        let (low, high) = (
            seconds_between(sent_by, started),
            seconds_between(sent, finished),
        );
        assert!(
            low - 0.002 <= lag_seconds && lag_seconds <= high + 0.002,
            "partition {id}: lag {lag_seconds}s, expected {low}..{high}"
        );
    }
    holder.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_blob_store_is_named_and_the_exit_status_is_non_zero() {
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work
        .config(emulator.amqp_addr())
        .remove("checkpoint_store", "path")
        .set("checkpoint_store", "type", "azure_blob")
        .set(
            "checkpoint_store",
            "connection_string",
            &format!(
                "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};\
                 BlobEndpoint=http://127.0.0.1:{port}/{};",
                azurite::ACCOUNT,
                azurite::ACCOUNT_KEY,
                azurite::ACCOUNT
            ),
        )
        .set("checkpoint_store", "container", CONTAINER);
    let path = work.write_config("status.toml", &config);
    let run = run_status(&path, &["--json"]).await;
    run.assert_code(1);
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr
            .starts_with("hubcap status: checkpoint store unavailable")
            && run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{run:?}"
    );
    assert!(!run.stderr.contains(azurite::ACCOUNT_KEY), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_store_directory_is_named_and_not_created() {
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    let path = work.write_config("status.toml", &work.config(emulator.amqp_addr()));
    let run = run_status(&path, &[]).await;
    run.assert_code(1);
    assert!(run.stdout.is_empty(), "{run:?}");
    let expected = format!(
        "hubcap status: checkpoint store directory {} does not exist ([checkpoint_store] path)",
        work.checkpoints().display()
    );
    assert!(run.stderr.starts_with(&expected), "{run:?}");
    assert!(!work.checkpoints().exists(), "status created the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_json_document_per_interval_when_not_on_a_terminal() {
    let emulator = start_emulator(2).await;
    preload_each(&emulator, 3, 16);
    let work = Workdir::new();
    std::fs::create_dir(work.checkpoints()).unwrap();
    let path = work.write_config("status.toml", &work.config(emulator.amqp_addr()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .args(["status", "--json", "--watch", "1", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("hubcap status starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut times = Vec::new();
    for round in 1..=2 {
        let line = within(&format!("report {round}"), STATUS_LIMIT, lines.next_line())
            .await
            .unwrap()
            .expect("a report line");
        let report: Value = serde_json::from_str(&line).expect("each line is one JSON document");
        assert_eq!(report["totals"]["unowned"], 2, "{report:#}");
        assert_eq!(report["totals"]["lag_events"], 6, "{report:#}");
        times.push(report["generated_at"].as_str().unwrap().to_owned());
    }
    assert!(times[0] < times[1], "{times:?}");
    child.kill().await.expect("stop hubcap status");
}

/// The active owner of each partition, by the store's records.
async fn active_owners(store: &Store) -> BTreeMap<String, String> {
    let now = SystemTime::now();
    store
        .list_ownership()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| {
            !o.owner_id.is_empty()
                && now
                    .duration_since(o.last_modified)
                    .map_or(true, |age| age < EXPIRATION)
        })
        .map(|o| (o.partition_id, o.owner_id))
        .collect()
}

/// The checkpointed sequence number of each partition that has one.
async fn checkpointed(store: &Store) -> BTreeMap<String, i64> {
    store
        .list_checkpoints()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| Some((c.partition_id, c.sequence_number?)))
        .collect()
}

/// `hubcap status --config CONFIG ARGS` to its end, off the runtime's threads (the emulator
/// serves on them meanwhile).
async fn run_status(config: &Path, args: &[&str]) -> Finished {
    let mut all = vec![
        "status".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    tokio::task::spawn_blocking(move || run_hubcap(&all, STATUS_LIMIT))
        .await
        .expect("hubcap status runs")
}

/// `hubcap status --json`, which must succeed.
async fn status_json(config: &Path) -> Value {
    let run = run_status(config, &["--json"]).await;
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}: {run:?}"))
}

/// `hubcap status` (the table), which must succeed.
async fn status_table(config: &Path) -> String {
    let run = run_status(config, &[]).await;
    run.assert_code(0);
    run.stdout
}

fn partition<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition_id"] == id)
        .unwrap_or_else(|| panic!("no partition {id} in {report:#}"))
}

/// The words of partition `id`'s table row.
fn table_row(table: &str, id: &str) -> Vec<String> {
    let rows = table
        .lines()
        .skip_while(|line| !line.starts_with("PARTITION"))
        .skip(1)
        .take_while(|line| !line.is_empty());
    rows.map(|row| {
        row.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .find(|words| words[0] == id)
    .unwrap_or_else(|| panic!("no row for partition {id}:\n{table}"))
}

/// When the report says partition `id`'s ownership was renewed.
fn renewed_at(report: &Value, id: &str) -> SystemTime {
    let text = partition(report, id)["ownership_renewed_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let time = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    UNIX_EPOCH + Duration::from_nanos(time.unix_timestamp_nanos() as u64)
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}
