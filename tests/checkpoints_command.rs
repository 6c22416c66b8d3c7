//! `hubcap checkpoints list|set|export|import`, the real binary against the emulator (and
//! Azurite for the blob store), with hubcap's daemon (in-process) as the reader that must
//! resume where the command said: at the first event enqueued at or after a time (also when
//! that event is the first retained one), from a position forced onto a live owner, after an
//! export and import into a fresh container and into a file store, and right after a legacy
//! EventProcessorHost lease. The Python processor's side is tests/interop/
//! test_checkpoints_command.py.

mod azurite;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use azurite::Azurite;
use bytes::Bytes;
use common::*;
use hubcap::secret::Secret;
use hubcap::storage::{BlobContainer, Condition, StorageAccount};
use hubcap_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

/// How long one `hubcap checkpoints` command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long a daemon may take to read and checkpoint a small backlog.
const READ_LIMIT: Duration = Duration::from_secs(30);
/// A second consumer group of the emulator, for reading positions while a fleet runs.
const OPERATORS: &str = "operators";

/// The two ends a command's test looks for, with `what` naming the command in failures.
trait Outcome {
    /// Exit 0.
    fn assert_ok(&self, what: &str) -> &Self;
    /// Exit 1 with `message` on stderr.
    fn assert_refused(&self, what: &str, message: &str) -> &Self;
}

impl Outcome for Finished {
    fn assert_ok(&self, what: &str) -> &Self {
        eprintln!("expecting success: {what}");
        self.assert_code(0)
    }

    fn assert_refused(&self, what: &str, message: &str) -> &Self {
        eprintln!("expecting a refusal: {what}");
        self.assert_code(1);
        assert!(
            self.stderr.contains(message),
            "{what}: stderr does not say {message:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs `hubcap checkpoints SUBCOMMAND --config CONFIG ARGS...` within [`COMMAND_LIMIT`].
async fn checkpoints(subcommand: &str, config: &Path, args: &[&str]) -> Finished {
    let config = config.to_str().expect("a UTF-8 temp path");
    let mut argv = vec!["checkpoints", subcommand, "--config", config];
    argv.extend_from_slice(args);
    let ran = run_hubcap_async(&argv, COMMAND_LIMIT).await;
    eprintln!("$ hubcap {}\n{}{}", argv.join(" "), ran.stdout, ran.stderr);
    ran
}

/// The emulator with `partitions` partitions, retention of `retention_events` per partition,
/// and the [`OPERATORS`] consumer group.
async fn emulator_with(partitions: usize, retention_events: Option<u64>) -> Emulator {
    start_emulator_with(EmulatorConfig {
        retention_events,
        consumer_groups: vec![OPERATORS.into()],
        ..emulator_config(partitions)
    })
    .await
}

/// One stored event's offset, as the service reports it.
fn offset_of(emulator: &Emulator, partition_id: &str, sequence_number: i64) -> String {
    let partition = partitions(emulator)
        .into_iter()
        .find(|p| p.id == partition_id)
        .expect("the partition exists");
    let mut events = Vec::new();
    partition.read_from(sequence_number, 1, &mut events);
    let event = events.first().expect("the event is retained");
    assert_eq!(event.sequence_number, sequence_number);
    event.offset.to_string()
}

/// Every event of `partition_id` from `first` to `last`.
fn range(partition_id: &str, first: i64, last: i64) -> BTreeSet<EventId> {
    (first..=last)
        .map(|n| EventId::new(partition_id, n))
        .collect()
}

/// The first archived sequence number of each partition.
fn first_archived(events: &[Event]) -> BTreeMap<String, i64> {
    let mut first = BTreeMap::new();
    for event in events {
        let entry = first
            .entry(event.partition_id.clone())
            .or_insert(event.sequence_number);
        *entry = event.sequence_number.min(*entry);
    }
    first
}

/// Starts a daemon, waits until it has committed `expected` and checkpointed every partition's
/// last event, stops it; returns what it archived.
async fn read_to_the_end(
    name: &str,
    config: &HubcapConfig,
    emulator: &Emulator,
    store: Option<&StoreView>,
    expected: &BTreeSet<EventId>,
) -> Vec<Event> {
    let mut daemon = Daemon::start(name, config);
    daemon.wait_to_deliver(expected, READ_LIMIT).await;
    if let Some(store) = store {
        let last = last_sequence_numbers(emulator);
        let ids: Vec<String> = last.keys().cloned().collect();
        eventually(
            &format!("{name}: checkpoints at {last:?}"),
            READ_LIMIT,
            || store.checkpointed(&ids) == last,
        )
        .await;
    }
    daemon.stop_cleanly().await
}

/// Waits until the wall clock is past `ms`, so the next append is enqueued later.
async fn clock_past(ms: i64) {
    eventually(
        "the clock moves past the last enqueued time",
        Duration::from_secs(2),
        || hubcap_emulator::store::now_ms() > ms,
    )
    .await;
}

fn rfc3339(ms: i64) -> String {
    hubcap::sink::stdout::rfc3339_ms(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_to_a_time_restarts_hubcap_at_the_first_event_enqueued_at_or_after_it() {
    // Partition 0 keeps everything; partition 1 keeps 30 events, so after 10 + 30 its first
    // retained event is the first one enqueued at or after the time.
    let emulator = emulator_with(2, Some(30)).await;
    let parts = partitions(&emulator);
    for partition in &parts {
        partition.preload(10, 64).unwrap();
    }
    let before = parts
        .iter()
        .map(|p| p.properties().last_enqueued_time_ms)
        .max()
        .unwrap();
    let moment = before + 1;
    clock_past(before).await;
    parts[0].preload(10, 64).unwrap();
    parts[1].preload(30, 64).unwrap();
    assert_eq!(parts[1].properties().begin_sequence_number, 10);
    for partition in &parts {
        let mut first = Vec::new();
        partition.read_from(10, 1, &mut first);
        assert!(
            first[0].enqueued_time_ms >= moment,
            "the second batch is after the time"
        );
    }

    let work = Workdir::new();
    let config = work.config(emulator.amqp_addr()).sink(Sink::AvroFile);
    let config_path = work.write_config("hubcap.toml", &config);
    let store = work.store(emulator.amqp_addr());
    // A first run reads everything, so the ownerships hold commit records of its last windows.
    let everything = all_event_ids(&emulator);
    read_to_the_end("first run", &config, &emulator, Some(&store), &everything).await;
    assert!(store.ownership("0").unwrap().hubcapcommit.is_some());

    let time = format!("time:{}", rfc3339(moment));
    let dry = checkpoints("set", &config_path, &["--all", "--to", &time, "--dry-run"]).await;
    dry.assert_ok("set --dry-run");
    assert!(
        dry.stdout.contains("dry run: nothing written"),
        "{}",
        dry.stdout
    );
    assert_eq!(store.checkpoint("0").unwrap().sequencenumber, Some(19));

    let set = checkpoints("set", &config_path, &["--all", "--to", &time]).await;
    set.assert_ok("set --to time");
    assert!(
        set.stdout.contains("partition 1: checkpoint sequence number 9, offset \"-1\": readers resume at sequence number 10, the first retained event"),
        "{}",
        set.stdout
    );
    // Partition 0: the event before the first one at or after the time. Partition 1: that
    // event expired, so the start-of-stream offset with the number before the first retained.
    let written = |id: &str| {
        let checkpoint = store.checkpoint(id).unwrap();
        (checkpoint.offset, checkpoint.sequencenumber)
    };
    assert_eq!(written("0"), (Some(offset_of(&emulator, "0", 9)), Some(9)));
    assert_eq!(written("1"), (Some("-1".to_owned()), Some(9)));
    for id in ["0", "1"] {
        let ownership = store.ownership(id).unwrap();
        assert_eq!(ownership.ownerid, "", "partition {id} is released");
        assert_eq!(
            ownership.hubcapcommit, None,
            "partition {id}'s commit record is cleared"
        );
    }

    let expected: BTreeSet<EventId> = range("0", 10, 19)
        .into_iter()
        .chain(range("1", 10, 39))
        .collect();
    let again = read_to_the_end("after set", &config, &emulator, Some(&store), &expected).await;
    assert_eq!(
        first_archived(&again),
        BTreeMap::from([("0".to_owned(), 10), ("1".to_owned(), 10)])
    );
    assert_exactly_once("the run after set", &again, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_on_a_live_owner_is_refused_with_its_id_and_force_makes_it_resume_there() {
    let emulator = emulator_with(2, None).await;
    preload_each(&emulator, 20, 64);
    let work = Workdir::new();
    let config = work.config(emulator.amqp_addr()).sink(Sink::AvroFile).set(
        "load_balancing",
        "owner_id",
        "hubcap-live",
    );
    let config_path = work.write_config("hubcap.toml", &config);
    let store = work.store(emulator.amqp_addr());
    let ids = partition_ids(&emulator);
    let mut daemon = Daemon::start("live owner", &config);
    daemon
        .wait_to_deliver(&all_event_ids(&emulator), READ_LIMIT)
        .await;
    let last = last_sequence_numbers(&emulator);
    eventually("the live owner checkpoints the end", READ_LIMIT, || {
        store.checkpointed(&ids) == last
    })
    .await;

    // The live owner renews its ownership meanwhile: what must not change is the checkpoints
    // and who owns what, with which commit record.
    let unchanged = || {
        let records: Vec<_> = ids
            .iter()
            .map(|id| {
                let ownership = store.ownership(id).unwrap();
                (
                    store.checkpoint(id),
                    ownership.ownerid,
                    ownership.hubcapcommit,
                )
            })
            .collect();
        records
    };
    let records = unchanged();
    checkpoints("set", &config_path, &["--partition", "0", "--to", "seq:5"])
        .await
        .assert_refused(
            "set on a live owner",
            "partition 0: live owner \"hubcap-live\"",
        )
        .assert_refused("set on a live owner", "--force");
    // Forced, positions still have to be read, and the live owner's receiver keeps readers
    // without an owner level out of its consumer group.
    checkpoints(
        "set",
        &config_path,
        &["--partition", "0", "--to", "seq:5", "--force"],
    )
    .await
    .assert_refused(
        "set --force without a lookup group",
        "--lookup-consumer-group",
    );
    assert_eq!(unchanged(), records, "nothing was written");

    let after = Archive::from_now(config.archive().unwrap());
    let forced = checkpoints(
        "set",
        &config_path,
        &[
            "--partition",
            "0",
            "--to",
            "seq:5",
            "--force",
            "--lookup-consumer-group",
            OPERATORS,
        ],
    )
    .await;
    forced.assert_ok("set --force");
    assert!(
        forced
            .stdout
            .contains("took the partition from its live owner \"hubcap-live\""),
        "{}",
        forced.stdout
    );
    // The live owner's next renewal fails: it stops reading partition 0, claims it again (the
    // only instance) and starts from the new checkpoint, without overwriting it first.
    let reread = range("0", 5, 19);
    eventually(
        "the live owner reads partition 0 again from 5",
        READ_LIMIT,
        || covers(&after.events(), &reread),
    )
    .await;
    eventually(
        "the live owner checkpoints partition 0's end again",
        READ_LIMIT,
        || store.checkpointed(&ids) == last,
    )
    .await;
    assert!(daemon.is_running());
    daemon.stop_cleanly().await;
    let events = after.events();
    assert_eq!(
        first_archived(&events).get("0"),
        Some(&5),
        "{}",
        sample(events.iter().map(Event::id))
    );
    assert_exactly_once("what the owner read after the set", &events, &reread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_container_and_into_a_file_store_resumes_exactly() {
    let emulator = emulator_with(2, None).await;
    preload_each(&emulator, 15, 64);
    let source = Workdir::new();
    let source_config = source.config(emulator.amqp_addr()).sink(Sink::AvroFile);
    let source_path = source.write_config("source.toml", &source_config);
    let source_store = source.store(emulator.amqp_addr());
    read_to_the_end(
        "exporting run",
        &source_config,
        &emulator,
        Some(&source_store),
        &all_event_ids(&emulator),
    )
    .await;

    let exported = checkpoints("export", &source_path, &[]).await;
    exported.assert_ok("export");
    let document: Value = serde_json::from_str(&exported.stdout).expect("export prints JSON");
    assert_eq!(document["format"], "hubcap-checkpoints");
    assert_eq!(document["checkpoints"].as_array().unwrap().len(), 2);
    assert_eq!(document["checkpoints"][0]["sequence_number"], 14);
    assert_eq!(
        document["ownerships"][0]["commit"]["last_sequence_number"],
        14
    );
    let document_path = source.checkpoints().with_file_name("exported.json");
    std::fs::write(&document_path, &exported.stdout).unwrap();
    let document_arg = document_path.to_str().unwrap();

    preload_each(&emulator, 10, 64);
    let expected: BTreeSet<EventId> = range("0", 15, 24)
        .into_iter()
        .chain(range("1", 15, 24))
        .collect();

    // Into a fresh container of an Azurite.
    let azurite = Azurite::start();
    let blob = Workdir::new();
    let blob_config = blob
        .config(emulator.amqp_addr())
        .sink(Sink::AvroFile)
        .blob_store(&azurite.connection_string(), "imported");
    let blob_path = blob.write_config("blob.toml", &blob_config);
    checkpoints("import", &blob_path, &[document_arg])
        .await
        .assert_ok("import into azure_blob");
    let reexported = checkpoints("export", &blob_path, &[]).await;
    let reexported: Value =
        serde_json::from_str(&reexported.assert_ok("export from azure_blob").stdout).unwrap();
    assert_eq!(
        reexported["checkpoints"], document["checkpoints"],
        "the blob store holds what was exported"
    );
    assert_eq!(
        reexported["ownerships"][0]["owner_id"], "",
        "imported ownerships are released"
    );
    assert_eq!(
        reexported["ownerships"][0]["commit"],
        document["ownerships"][0]["commit"]
    );
    let from_blob = read_to_the_end(
        "after import into azure_blob",
        &blob_config,
        &emulator,
        None,
        &expected,
    )
    .await;
    assert_exactly_once("the run on the imported container", &from_blob, &expected);

    // Into a file store.
    let file = Workdir::new();
    let file_config = file.config(emulator.amqp_addr()).sink(Sink::AvroFile);
    let file_path = file.write_config("file.toml", &file_config);
    checkpoints("import", &file_path, &[document_arg])
        .await
        .assert_ok("import into file");
    let listed = checkpoints("list", &file_path, &[]).await;
    assert!(
        listed
            .assert_ok("list")
            .stdout
            .contains("PARTITION  SEQUENCE  OFFSET"),
        "{}",
        listed.stdout
    );
    let from_file = read_to_the_end(
        "after import into file",
        &file_config,
        &emulator,
        Some(&file.store(emulator.amqp_addr())),
        &expected,
    )
    .await;
    assert_exactly_once("the run on the imported file store", &from_file, &expected);
}

/// A lease as the legacy EventProcessorHost (Microsoft.Azure.EventHubs.Processor) uploads it:
/// Newtonsoft.Json of its `Lease` properties (see src/ops/checkpoints/legacy.rs).
fn legacy_lease(partition_id: &str, offset: &str, sequence_number: i64) -> String {
    format!(
        r#"{{"Offset":"{offset}","SequenceNumber":{sequence_number},"PartitionId":"{partition_id}","Owner":"eph-host-1","Token":"2b1f7f8e-6d1c-4c0e-9a55-0c3e1a7d9f21","Epoch":4}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_event_processor_host_lease_container_imports_and_hubcap_resumes_right_after_it() {
    let emulator = emulator_with(2, None).await;
    preload_each(&emulator, 20, 64);
    let azurite = Azurite::start();
    let account = StorageAccount::ConnectionString(Secret::new(azurite.connection_string()));
    let leases = BlobContainer::connect(&account, "eph-leases", &Default::default()).unwrap();
    leases.create_container_if_missing().await.unwrap();
    // The host's blobs: `<consumer group>/<partition id>` (no storage blob prefix).
    let checkpointed = [("0", 11), ("1", 4)];
    for (id, n) in checkpointed {
        let lease = legacy_lease(id, &offset_of(&emulator, id, n), n);
        leases
            .upload(
                &format!("$Default/{id}"),
                Bytes::from(lease),
                &Default::default(),
                Condition::None,
            )
            .await
            .unwrap();
    }

    let work = Workdir::new();
    let config = work
        .config(emulator.amqp_addr())
        .sink(Sink::AvroFile)
        .blob_store(&azurite.connection_string(), "checkpoints");
    let config_path = work.write_config("hubcap.toml", &config);
    let imported = checkpoints(
        "import",
        &config_path,
        &["--legacy-container", "eph-leases"],
    )
    .await;
    imported.assert_ok("import --legacy-container");
    assert!(
        imported
            .stdout
            .contains("its lease owner \"eph-host-1\", epoch 4, is not carried over"),
        "{}",
        imported.stdout
    );
    let expected: BTreeSet<EventId> = range("0", 12, 19)
        .into_iter()
        .chain(range("1", 5, 19))
        .collect();
    let events = read_to_the_end(
        "after the legacy import",
        &config,
        &emulator,
        None,
        &expected,
    )
    .await;
    assert_exactly_once("the run after the legacy import", &events, &expected);

    // The same leases as files (downloaded blobs), into a file store.
    let files = Workdir::new();
    let dir = files.checkpoints().with_file_name("leases");
    std::fs::create_dir(&dir).unwrap();
    for (id, n) in checkpointed {
        std::fs::write(
            dir.join(id),
            legacy_lease(id, &offset_of(&emulator, id, n), n),
        )
        .unwrap();
    }
    let file_config = files.config(emulator.amqp_addr());
    let file_path = files.write_config("hubcap.toml", &file_config);
    checkpoints(
        "import",
        &file_path,
        &["--legacy-dir", dir.to_str().unwrap()],
    )
    .await
    .assert_ok("import --legacy-dir");
    let store = files.store(emulator.amqp_addr());
    for (id, n) in checkpointed {
        let checkpoint = store.checkpoint(id).unwrap();
        assert_eq!(
            (checkpoint.offset, checkpoint.sequencenumber),
            (Some(offset_of(&emulator, id, n)), Some(n))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_nothing_is_written() {
    let emulator = emulator_with(2, None).await;
    preload_each(&emulator, 5, 64);
    let work = Workdir::new();
    let config = work.config(emulator.amqp_addr());
    let config_path = work.write_config("hubcap.toml", &config);
    checkpoints("set", &config_path, &["--all", "--to", "seq:3"])
        .await
        .assert_ok("a first set");
    let records = store_files(&work.checkpoints());
    assert!(!records.is_empty());

    let last_time = partitions(&emulator)[0].properties().last_enqueued_time_ms;
    clock_past(last_time).await;
    let after_last = format!("time:{}", rfc3339(last_time + 1));
    for (args, message) in [
        (
            vec!["--partition", "0,7", "--to", "earliest"],
            "unknown partition 7",
        ),
        (
            vec!["--all", "--to", "time:2999-01-01T00:00:00Z"],
            "is in the future",
        ),
        (
            vec!["--all", "--to", &after_last],
            "is after the last enqueued event",
        ),
        (vec!["--partition", "1", "--to", "seq:6"], "is past the end"),
    ] {
        checkpoints("set", &config_path, &args)
            .await
            .assert_refused(&args.join(" "), message);
    }
    let bad_position = checkpoints("set", &config_path, &["--all", "--to", "offset:5"]).await;
    assert_eq!(bad_position.code(), Some(2), "{}", bad_position.stderr);
    assert!(
        bad_position.stderr.contains("use earliest, latest, seq:N"),
        "{}",
        bad_position.stderr
    );

    let not_a_document = work.checkpoints().with_file_name("not-a-document.json");
    std::fs::write(&not_a_document, "{\"checkpoints\": []}").unwrap();
    checkpoints("import", &config_path, &[not_a_document.to_str().unwrap()])
        .await
        .assert_refused(
            "import of a bad document",
            "not a hubcap-checkpoints document",
        );
    let exported = checkpoints("export", &config_path, &[]).await;
    let other_hub = exported
        .assert_ok("export")
        .stdout
        .replace("\"event_hub\": \"hub1\"", "\"event_hub\": \"other\"");
    let other_path = work.checkpoints().with_file_name("other-hub.json");
    std::fs::write(&other_path, other_hub).unwrap();
    checkpoints("import", &config_path, &[other_path.to_str().unwrap()])
        .await
        .assert_refused(
            "import of another hub's document",
            "event hub \"other\" (the document) is not \"hub1\"",
        );
    assert_eq!(
        store_files(&work.checkpoints()),
        records,
        "nothing was written"
    );

    // A blob store nothing listens for.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = config
        .remove("checkpoint_store", "path")
        .set("checkpoint_store", "type", "azure_blob")
        .set(
            "checkpoint_store",
            "connection_string",
            &format!(
                "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint=http://127.0.0.1:{port}/{};",
                azurite::ACCOUNT,
                azurite::ACCOUNT_KEY,
                azurite::ACCOUNT
            ),
        )
        .set("checkpoint_store", "container", "checkpoints");
    let unreachable_path = work.write_config("unreachable.toml", &unreachable);
    // Each waits out the storage client's bounded retries: run at once.
    let commands = [
        ("set", vec!["--all", "--to", "earliest"]),
        ("list", vec![]),
        ("export", vec![]),
        (
            "import",
            vec![other_path.to_str().unwrap(), "--ignore-scope"],
        ),
    ];
    let runs = futures_util::future::join_all(
        commands
            .iter()
            .map(|(subcommand, args)| checkpoints(subcommand, &unreachable_path, args)),
    )
    .await;
    for ((subcommand, _), ran) in commands.iter().zip(&runs) {
        ran.assert_refused(subcommand, "checkpoint store unavailable");
        assert!(
            !ran.stderr.contains(azurite::ACCOUNT_KEY),
            "{subcommand} prints no key"
        );
    }
}
