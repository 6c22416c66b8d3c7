//! The exactly-once commit protocol at each of its crash points, with the real binary and one
//! `avro_file` archive shared by two instances (as on one host).
//!
//! `HUBCAP_TEST_CRASH` stops the first instance exactly between two steps: after the commit
//! record is written and before the file is linked (`after_record`), or after the link and
//! before the checkpoint (`after_commit`). The crash tests SIGKILL it there (file checkpoint
//! store). The zombie tests SIGSTOP it there and resume it once the second instance has taken
//! its partitions over and archived everything; the outage tests resume it with Blob Storage
//! down, kill it while it retries, and bring storage back for the second instance (both on the
//! `azure_blob` store on Azurite: a process stopped while it holds the file store's claim lock
//! would stall every other instance of that store, which is why that store is for one host's
//! instances that are not paused). Either way the archive must end up holding every event
//! exactly once and every checkpoint at the partition's last event.

mod azurite;
mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use azurite::Azurite;
use common::*;
use hubcap::checkpoint::blob::BlobCheckpointStore;
use hubcap::checkpoint::{CheckpointStore, NameCase, StoreScope};
use hubcap::secret::Secret;
use hubcap::storage::{BlobContainer, StorageAccount};
use hubcap_emulator::Emulator;

const CONTAINER: &str = "checkpoints";

const PARTITIONS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_commit_record_repeats_and_loses_nothing() {
    crash_at("after_record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_commit_and_the_checkpoint_repeats_and_loses_nothing() {
    crash_at("after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_resumed_after_the_commit_record_makes_no_second_copy() {
    zombie_at("after_record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_resumed_between_the_commit_and_the_checkpoint_makes_no_second_copy() {
    zombie_at("after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_after_the_commit_record_then_a_crash_repeats_nothing() {
    outage_at("after_record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_between_the_commit_and_the_checkpoint_then_a_crash_repeats_nothing() {
    outage_at("after_commit").await;
}

/// The `azure_blob` checkpoint store on `azurite`, read the way hubcap writes it.
struct BlobStore {
    store: BlobCheckpointStore,
}

impl BlobStore {
    async fn new(azurite: &Azurite, emulator: &Emulator) -> Self {
        let account = StorageAccount::ConnectionString(Secret::new(azurite.connection_string()));
        let container = BlobContainer::connect(&account, CONTAINER, &Default::default()).unwrap();
        container.create_container_if_missing().await.unwrap();
        let scope = StoreScope {
            fully_qualified_namespace: emulator.amqp_addr().to_string(),
            event_hub: HUB.into(),
            consumer_group: CONSUMER_GROUP.into(),
        };
        Self {
            store: BlobCheckpointStore::new(container, scope, NameCase::Lower),
        }
    }

    /// The partition whose ownership holds a commit record its checkpoint has not reached.
    async fn unresolved_record(&self) -> (String, hubcap::checkpoint::CommitRecord) {
        let checkpoints = self.store.list_checkpoints().await.unwrap();
        for ownership in self.store.list_ownership().await.unwrap() {
            let checkpointed = checkpoints
                .iter()
                .find(|c| c.partition_id == ownership.partition_id)
                .and_then(|c| c.sequence_number)
                .unwrap_or(-1);
            if let Some(record) = ownership
                .commit
                .filter(|r| checkpointed < r.first_sequence_number)
            {
                return (ownership.partition_id, record);
            }
        }
        panic!("no ownership holds a commit record past its checkpoint");
    }

    /// Every partition is checkpointed at its last event.
    async fn assert_checkpointed_at_the_end(&self, emulator: &Emulator) {
        let last = last_sequence_numbers(emulator);
        let checkpoints = self.store.list_checkpoints().await.unwrap();
        for (id, last) in last {
            let checkpointed = checkpoints
                .iter()
                .find(|c| c.partition_id == id)
                .and_then(|c| c.sequence_number);
            assert_eq!(
                checkpointed,
                Some(last),
                "partition {id} is checkpointed at its last event"
            );
        }
    }
}

/// [`config`] with the `azure_blob` checkpoint store on `azurite`.
fn blob_config(
    work: &Workdir,
    emulator: &Emulator,
    azurite: &Azurite,
    owner: &str,
) -> HubcapConfig {
    config(work, emulator, owner).blob_store(&azurite.connection_string(), CONTAINER)
}

/// Several windows per partition (small byte limit), distinct owner ids.
fn config(work: &Workdir, emulator: &Emulator, owner: &str) -> HubcapConfig {
    work.config(emulator.amqp_addr())
        .sink(Sink::AvroFile)
        .set("sink", "max_window_bytes", "40KiB")
        .set("load_balancing", "owner_id", owner)
}

/// The first instance, with the hook armed at its second window.
async fn start_first(work: &Workdir, emulator: &Emulator, hook: &str) -> Hubcap {
    let config = config(work, emulator, "first");
    Hubcap::start_with_env(
        "first (hook armed)",
        work,
        &config,
        &[("HUBCAP_TEST_CRASH", &format!("{hook}:2"))],
    )
}

/// The partition whose ownership holds a commit record the checkpoint has not reached.
fn unresolved_record(work: &Workdir, emulator: &Emulator) -> (String, CommitRecord) {
    let store = work.store(emulator.amqp_addr());
    for id in partition_ids(emulator) {
        let record = store.ownership(&id).and_then(|o| o.hubcapcommit);
        let checkpointed = store
            .checkpoint(&id)
            .and_then(|c| c.sequencenumber)
            .unwrap_or(-1);
        if let Some(record) = record.filter(|r| checkpointed < r.first_sequence_number) {
            return (id, record);
        }
    }
    panic!("no ownership holds a commit record past its checkpoint");
}

async fn crash_at(point: &str) {
    // One partition: with two, the other could hold an unresolved record of its own at the
    // moment of the crash, and the assertions below could look at the wrong one.
    let emulator = start_emulator(1).await;
    preload_each(&emulator, 2_000, 200);
    let expected = all_event_ids(&emulator);
    let work = Workdir::new();

    let mut first = start_first(&work, &emulator, point).await;
    let status = first.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        status.signal(),
        Some(9),
        "the hook kills the first instance at {point}; it exited with {status}\n{}",
        first.stderr()
    );
    assert!(first
        .stderr()
        .contains(&format!("test crash hook: {point}")));
    let (partition_id, record) = unresolved_record(&work, &emulator);
    let archive = Archive::new(&work.archive());
    let names = || -> Vec<String> {
        archive
            .files()
            .iter()
            .map(|f| {
                f.strip_prefix(work.archive())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect()
    };
    let committed_before = names();
    assert_eq!(
        committed_before.contains(&record.name),
        point == "after_commit",
        "after_record leaves the recorded file uncommitted, after_commit committed: {record:?} in {committed_before:?}"
    );

    let mut second = Hubcap::start("second", &work, &config(&work, &emulator, "second"));
    eventually(
        "the second instance archives every event",
        Duration::from_secs(60),
        || covers(&archive.events(), &expected),
    )
    .await;
    second.stop_cleanly().await;
    assert!(
        second.has_log(|line| line.field("event").as_deref()
            == Some("reproducing_recorded_window")
            && line.field("partition_id").as_deref() == Some(partition_id.as_str())),
        "the second instance completes the recorded window of partition {partition_id}\n{}",
        second.stderr()
    );
    let names = names();
    assert!(
        names.contains(&record.name),
        "the recorded window is committed under its recorded name {}: {names:?}",
        record.name
    );
    assert_exactly_once(
        &format!("archive after a crash at {point}"),
        &archive.events(),
        &expected,
    );
    assert!(
        staging_files(&work.archive()).is_empty(),
        "no staging file is left behind"
    );
}

/// Two partitions on the blob store: the first instance, stopped by the hook at `point` of
/// its second window, and the partition whose commit record it left unresolved.
struct Stopped {
    emulator: Emulator,
    expected: std::collections::BTreeSet<EventId>,
    work: Workdir,
    azurite: Azurite,
    store: BlobStore,
    first: Hubcap,
    partition_id: String,
    record: hubcap::checkpoint::CommitRecord,
}

impl Stopped {
    async fn at(point: &str, label: &str) -> Self {
        let emulator = start_emulator(PARTITIONS).await;
        preload_each(&emulator, 1_000, 200);
        let expected = all_event_ids(&emulator);
        let work = Workdir::new();
        let azurite = Azurite::start();
        let store = BlobStore::new(&azurite, &emulator).await;
        let config = blob_config(&work, &emulator, &azurite, "first");
        let hook = format!("stop_{point}:2");
        let first = Hubcap::start_with_env(label, &work, &config, &[("HUBCAP_TEST_CRASH", &hook)]);
        eventually(
            "the hook stops the first instance",
            Duration::from_secs(60),
            || first.is_stopped(),
        )
        .await;
        let (partition_id, record) = store.unresolved_record().await;
        Self {
            emulator,
            expected,
            work,
            azurite,
            store,
            first,
            partition_id,
            record,
        }
    }

    /// Starts the second instance and waits until the archive holds every event.
    async fn second_archives_everything(&self) -> (Hubcap, Archive) {
        let config = blob_config(&self.work, &self.emulator, &self.azurite, "second");
        let second = Hubcap::start("second", &self.work, &config);
        let archive = Archive::new(&self.work.archive());
        eventually(
            "the second instance archives every event",
            Duration::from_secs(60),
            || covers(&archive.events(), &self.expected),
        )
        .await;
        (second, archive)
    }
}

async fn zombie_at(point: &str) {
    let mut stopped = Stopped::at(point, "first (zombie)").await;
    // The second instance takes both partitions once the zombie's ownerships expire.
    let (mut second, archive) = stopped.second_archives_everything().await;

    // The zombie wakes up in the middle of its commit: it must find the window committed (or
    // its ownership gone) and write nothing more.
    let partition_id = stopped.partition_id.clone();
    stopped.first.resume();
    stopped
        .first
        .wait_for_log(
            "the zombie finds its partition lost",
            Duration::from_secs(30),
            |line| {
                line.field("event").as_deref() == Some("ownership_lost")
                    && line.field("partition_id").as_deref() == Some(partition_id.as_str())
            },
        )
        .await;
    stopped.first.stop_cleanly().await;
    second.stop_cleanly().await;
    assert_exactly_once(
        &format!(
            "archive after a zombie at {point} (record {:?})",
            stopped.record
        ),
        &archive.events(),
        &stopped.expected,
    );
    stopped
        .store
        .assert_checkpointed_at_the_end(&stopped.emulator)
        .await;
}

async fn outage_at(point: &str) {
    let mut stopped = Stopped::at(point, "first (storage down)").await;
    let partition_id = stopped.partition_id.clone();

    // Storage goes away while the first instance is between two steps; it resumes, fails to
    // go on (the fencing renewal before the checkpoint cannot reach the store), and dies.
    stopped.azurite.stop();
    stopped.first.resume();
    stopped
        .first
        .wait_for_log(
            "the first instance cannot checkpoint",
            Duration::from_secs(30),
            |line| {
                line.field("partition_id").as_deref() == Some(partition_id.as_str())
                    && line.has("error")
                    && line.level == "WARN"
            },
        )
        .await;
    stopped.first.kill();
    stopped.azurite.restart();

    let (mut second, archive) = stopped.second_archives_everything().await;
    second.stop_cleanly().await;
    assert_exactly_once(
        &format!(
            "archive after an outage at {point} (record {:?})",
            stopped.record
        ),
        &archive.events(),
        &stopped.expected,
    );
    stopped
        .store
        .assert_checkpointed_at_the_end(&stopped.emulator)
        .await;
}
