//! `hubcap backfill` against the emulator: a time range archives exactly the events enqueued in
//! it (both ends included) and a re-run writes nothing; SIGTERM commits what was read and a
//! re-run completes the range with no duplicate; the consumer group's checkpoints are never
//! touched; beside a running fleet it refuses the configured consumer group and works through
//! its own; bad input is refused before anything is written.

mod azurite;
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use azurite::Azurite;
use common::*;
use hubcap_emulator::store::now_ms;

const PARTITIONS: usize = 2;
/// How long one backfill of a few thousand events may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Appends `count` events to every partition in one go (one enqueued time per partition) and
/// returns, per partition, the range appended and its enqueued time; then waits for the clock
/// to move on, so the next batch is enqueued strictly later.
async fn batch(emulator: &hubcap_emulator::Emulator, count: u64) -> Vec<(String, i64, i64, i64)> {
    let mut appended = Vec::new();
    for partition in partitions(emulator) {
        let first = partition.properties().last_enqueued_sequence_number + 1;
        partition.preload(count, 100).expect("preload");
        let properties = partition.properties();
        appended.push((
            partition.id.clone(),
            first,
            properties.last_enqueued_sequence_number,
            properties.last_enqueued_time_ms,
        ));
    }
    let latest = appended.iter().map(|a| a.3).max().unwrap_or_default();
    eventually("the clock passes the batch's enqueued time", STEP, || {
        now_ms() > latest
    })
    .await;
    appended
}

fn ids(ranges: &[(String, i64, i64, i64)]) -> BTreeSet<EventId> {
    ranges
        .iter()
        .flat_map(|(id, first, last, _)| (*first..=*last).map(move |n| EventId::new(id, n)))
        .collect()
}

fn rfc3339(ms: i64) -> String {
    hubcap::sink::stdout::rfc3339_ms(ms)
}

async fn backfill(config: &Path, args: &[&str]) -> Finished {
    let mut all = vec!["backfill", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_hubcap_async(&all, LIMIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_archives_exactly_its_events_and_a_rerun_writes_nothing() {
    let emulator = start_emulator(PARTITIONS).await;
    let work = Workdir::new();
    let config = work.config(emulator.amqp_addr()).sink(Sink::AvroFile);
    let path = work.write_config("backfill.toml", &config);
    let before = batch(&emulator, 30).await;
    let inside = batch(&emulator, 40).await;
    let after = batch(&emulator, 20).await;
    assert!(before.iter().all(|b| inside.iter().all(|i| b.3 < i.3)));
    assert!(after.iter().all(|a| inside.iter().all(|i| a.3 > i.3)));
    // A checkpoint the consumer group already has: backfill must leave it as it is.
    let store = hubcap::checkpoint::file::FileCheckpointStore::open(
        work.checkpoints(),
        hubcap::checkpoint::StoreScope {
            fully_qualified_namespace: emulator.amqp_addr().to_string(),
            event_hub: HUB.into(),
            consumer_group: CONSUMER_GROUP.into(),
        },
        hubcap::checkpoint::NameCase::Lower,
    )
    .unwrap();
    hubcap::checkpoint::CheckpointStore::update_checkpoint(
        &store,
        &hubcap::checkpoint::Checkpoint {
            partition_id: "0".into(),
            offset: None,
            sequence_number: Some(5),
            committed_in: None,
        },
    )
    .await
    .unwrap();
    let checkpoints_before = store_files(&work.checkpoints());

    // The range is given by the exact enqueued times of its first and last events.
    let from = inside.iter().map(|i| i.3).min().unwrap();
    let to = inside.iter().map(|i| i.3).max().unwrap();
    let (from, to) = (
        format!("time:{}", rfc3339(from)),
        format!("time:{}", rfc3339(to)),
    );
    let first = backfill(&path, &["--from", &from, "--to", &to]).await;
    first.assert_code(0);
    let archive = Archive::new(&work.archive());
    assert_exactly_once("the backfilled range", &archive.events(), &ids(&inside));
    assert!(
        first.stdout.contains("total: 80 events written"),
        "{}",
        first.stdout
    );
    assert!(
        first.stderr.contains(
            "note: partition 0: the range ends after the consumer group's checkpoint (5)"
        ),
        "{}",
        first.stderr
    );
    // Named by the events' enqueued time: each file's path ends with its first event's second.
    for file in archive.files() {
        let name = file.to_string_lossy().into_owned();
        let partition = inside
            .iter()
            .find(|i| name.contains(&format!("/{HUB}/{}/", i.0)))
            .unwrap_or_else(|| panic!("{name} names no partition"));
        let second = rfc3339(partition.3)[..19].replace(['-', 'T', ':'], "/");
        assert!(name.contains(&second), "{name} is not named by {second}");
    }
    let files = archive.files();

    let second = backfill(&path, &["--from", &from, "--to", &to]).await;
    second.assert_code(0);
    assert!(
        second
            .stdout
            .contains("total: 0 events written in 0 windows; 80 were archived already"),
        "{}",
        second.stdout
    );
    assert_eq!(archive.files(), files, "the second run wrote nothing");
    assert_eq!(
        store_files(&work.checkpoints()),
        checkpoints_before,
        "checkpoints and ownerships untouched"
    );
    assert!(staging_files(&work.archive()).is_empty());

    // `--to latest` stops at the group's checkpoint (partition 0: event 5): what follows it is
    // the fleet's to archive. Partition 1 has no checkpoint: all of it, but what is archived.
    let to_latest = backfill(&path, &["--from", "earliest"]).await;
    to_latest.assert_code(0);
    let mut expected = ids(&inside);
    expected.extend((0..=5).map(|n| EventId::new("0", n)));
    expected.extend(ids(&[before[1].clone(), after[1].clone()]));
    assert_exactly_once("up to the checkpoint", &archive.events(), &expected);
    assert!(
        to_latest.stdout.contains("total: 56 events written"),
        "{}",
        to_latest.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_was_read_and_a_rerun_completes_the_range_without_duplicates() {
    let emulator = start_emulator(PARTITIONS).await;
    let work = Workdir::new();
    // Small windows: many commits, so the backfill can be stopped half-way.
    let config = work.config(emulator.amqp_addr()).sink(Sink::AvroFile).set(
        "sink",
        "max_window_bytes",
        "16KiB",
    );
    let path = work.write_config("backfill.toml", &config);
    let all = batch(&emulator, 3000).await;
    // Stopped (SIGSTOP) by the test hook right after its second committed window: the SIGTERM
    // then lands mid-backfill, not after it finished.
    let args = [
        "backfill",
        "--config",
        path.to_str().unwrap(),
        "--from",
        "earliest",
    ];
    let running = Subcommand::spawn(&args, &[("HUBCAP_TEST_CRASH", "stop_after_commit:2")]);
    eventually("backfill stops after its second commit", LIMIT, || {
        running.is_stopped()
    })
    .await;
    running.signal("TERM");
    running.signal("CONT");
    let interrupted = running.finished(LIMIT).await;
    interrupted.assert_code(1);
    assert!(
        interrupted.stderr.contains("backfill interrupted"),
        "{}",
        interrupted.stderr
    );
    let archive = Archive::new(&work.archive());
    let partial = archive.events();
    assert!(
        !partial.is_empty() && partial.len() < 6000,
        "{} events after the interruption",
        partial.len()
    );
    assert!(
        staging_files(&work.archive()).is_empty(),
        "no window left half-written"
    );
    let committed: BTreeSet<EventId> = partial.iter().map(Event::id).collect();
    assert_eq!(committed.len(), partial.len(), "no duplicate so far");

    let rerun = backfill(&path, &["--from", "earliest"]).await;
    rerun.assert_code(0);
    assert_exactly_once("the completed range", &archive.events(), &ids(&all));
    assert!(
        rerun
            .stdout
            .contains(&format!("{} were archived already", partial.len())),
        "{}",
        rerun.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_running_fleet_backfill_reads_only_through_its_own_consumer_group() {
    let mut emulator_config = emulator_config(PARTITIONS);
    emulator_config.consumer_groups = vec!["backfill".into()];
    let emulator = start_emulator_with(emulator_config).await;
    let work = Workdir::new();
    let all = batch(&emulator, 50).await;
    // The fleet prints to stdout; backfill archives to files through the same store.
    let fleet_config =
        work.config(emulator.amqp_addr())
            .set("load_balancing", "owner_id", "fleet-instance-a");
    let mut fleet = Hubcap::start("fleet", &work, &fleet_config);
    let expected = ids(&all);
    fleet.wait_to_deliver(&expected, STEP).await;
    let path = work.write_config(
        "backfill.toml",
        &work.config(emulator.amqp_addr()).sink(Sink::AvroFile),
    );

    let refused = backfill(&path, &["--from", "earliest"]).await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("live owners: fleet-instance-a (partitions 0, 1)")
            && refused.stderr.contains("--consumer-group"),
        "{}",
        refused.stderr
    );
    assert!(Archive::new(&work.archive()).files().is_empty());

    let own_group = backfill(
        &path,
        &["--from", "earliest", "--consumer-group", "backfill"],
    )
    .await;
    own_group.assert_code(0);
    assert_exactly_once(
        "backfilled beside the fleet",
        &Archive::new(&work.archive()).events(),
        &expected,
    );
    assert!(fleet.is_running(), "the fleet was not disconnected");
    assert!(
        !fleet.has_log(|line| line.message.contains("stolen")
            || line
                .fields
                .values()
                .any(|v| v.to_string().contains("link:stolen"))),
        "the fleet's receivers were never displaced"
    );
    fleet.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_nothing_is_written() {
    let emulator = start_emulator(PARTITIONS).await;
    let work = Workdir::new();
    batch(&emulator, 10).await;
    let path = work.write_config(
        "backfill.toml",
        &work.config(emulator.amqp_addr()).sink(Sink::AvroFile),
    );
    let future = format!("time:{}", rfc3339(now_ms() + 3_600_000));
    let cases: [(&[&str], &str); 4] = [
        (
            &["--from", "earliest", "--partitions", "0,7"],
            "unknown partition 7: event hub \"hub1\" has partitions 0, 1",
        ),
        (&["--from", &future], "is in the future"),
        (
            &["--from", "seq:10", "--to", "seq:5"],
            "--to seq:5 is before --from seq:10",
        ),
        (&["--from", "latest"], "`latest` names none"),
    ];
    for (args, message) in cases {
        let refused = backfill(&path, args).await;
        refused.assert_code(1);
        assert!(
            refused.stderr.contains(message),
            "{args:?}: {}",
            refused.stderr
        );
    }
    let unparsable = backfill(&path, &["--from", "yesterday"]).await;
    assert_eq!(unparsable.code(), Some(2), "{}", unparsable.stderr);
    assert!(unparsable.stderr.contains("use earliest, latest, seq:N"));

    // A checkpoint store that cannot be reached: the live-owner check cannot be made.
    let unreachable = work.write_config(
        "unreachable.toml",
        &work
            .config(emulator.amqp_addr())
            .sink(Sink::AvroFile)
            .set("checkpoint_store", "type", "azure_blob")
            .remove("checkpoint_store", "path")
            .set("checkpoint_store", "container", "checkpoints")
            .set(
                "checkpoint_store",
                "connection_string",
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
                 AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
                 BlobEndpoint=http://127.0.0.1:9/devstoreaccount1",
            ),
    );
    let refused = backfill(&unreachable, &["--from", "earliest"]).await;
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("checking for processors")
            && refused.stderr.contains("unavailable"),
        "{}",
        refused.stderr
    );
    assert!(!refused
        .stderr
        .contains("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"));
    assert!(!work.archive().exists() || Archive::new(&work.archive()).files().is_empty());
}

/// Into Blob Storage (Azurite, store and archive both there): a backfill of one partition's
/// middle part, then of everything, archives each event once, as `hubcap verify` reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_blob_storage_a_wider_rerun_adds_only_what_is_missing() {
    let emulator = start_emulator(PARTITIONS).await;
    let azurite = Azurite::start();
    let work = Workdir::new();
    let config = work
        .config(emulator.amqp_addr())
        .set("sink", "type", "avro_blob")
        .set("sink", "connection_string", &azurite.connection_string())
        .set("sink", "container", "archive")
        .set("sink", "path_format", ARCHIVE_PATH_FORMAT)
        .blob_store(&azurite.connection_string(), "checkpoints");
    let path = work.write_config("backfill.toml", &config);
    let all = batch(&emulator, 100).await;
    backfill(
        &path,
        &["--from", "seq:20", "--to", "seq:59", "--partitions", "1"],
    )
    .await
    .assert_code(0);
    let wider = backfill(&path, &["--from", "earliest"]).await;
    wider.assert_code(0);
    assert!(
        wider
            .stdout
            .contains("total: 160 events written in 3 windows; 40 were archived already"),
        "{}",
        wider.stdout
    );
    let verified = run_hubcap_async(
        &["verify", "--config", path.to_str().unwrap(), "--json"],
        LIMIT,
    )
    .await;
    verified.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!(report["events"], 200, "{report}");
    for (id, first, last, _) in &all {
        let partition = report["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["partition_id"] == id.as_str())
            .unwrap_or_else(|| panic!("partition {id}: {report}"));
        assert_eq!(
            partition["ranges"],
            serde_json::json!([[first, last]]),
            "{report}"
        );
        assert_eq!(partition["duplicate_events"], 0, "{report}");
    }
}
