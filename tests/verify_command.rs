//! `hubcap verify` on archives the real daemon wrote: hubcap runs against the emulator until
//! every event is committed and checkpointed, then each test damages its own copy of that
//! archive (or its checkpoints) the way an operator or a bug could, and checks what verify
//! reports and how it exits. The `avro_blob` archive is written into a real Azurite.

mod azurite;
mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::Duration;

use azurite::Azurite;
use common::*;
use hubcap::checkpoint::blob::BlobCheckpointStore;
use hubcap::checkpoint::file::FileCheckpointStore;
use hubcap::checkpoint::{Checkpoint, CheckpointStore, NameCase, StoreScope};
use hubcap::secret::Secret;
use hubcap::storage::{BlobContainer, Condition, StorageAccount};
use hubcap_emulator::Emulator;
use serde_json::{json, Value};

const PARTITIONS: usize = 2;
/// Publishing rounds: each waits for the previous one to be checkpointed, so every round is a
/// window (a file) of its own in each partition.
const ROUNDS: usize = 3;
const EVENTS_PER_ROUND: u64 = 40;
/// How long hubcap may take to commit and checkpoint one round.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// How long one `hubcap verify` may take.
const VERIFY_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The archive hubcap wrote, once per test binary

/// An `avro_file` archive and its file checkpoint store, written by the real daemon, kept
/// under the target directory's tmp; every test copies it before touching anything.
struct Fixture {
    dir: PathBuf,
    /// The emulator's address the archive was read from: it names the store's records.
    endpoint: SocketAddr,
    /// The last sequence number of each partition, all of them archived and checkpointed.
    last: BTreeMap<String, i64>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();
/// The fixture's directory name under target/tmp, before the process id.
const FIXTURE_PREFIX: &str = "verify-command-";

fn fixture() -> &'static Fixture {
    // On a thread of its own: the emulator needs a runtime, and the calling test is in one.
    FIXTURE.get_or_init(|| {
        std::thread::spawn(produce_archive)
            .join()
            .expect("hubcap wrote the archive")
    })
}

fn produce_archive() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let emulator = start_emulator(PARTITIONS).await;
        let endpoint = emulator.amqp_addr();
        let work = Workdir::new();
        let config = work.config(endpoint).sink(Sink::AvroFile);
        let last = write_rounds("archive writer", &emulator, &work, &config).await;
        // Under target/tmp, where cargo keeps test scratch files: earlier runs' copies go.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(FIXTURE_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("{FIXTURE_PREFIX}{}", std::process::id()));
        copy_tree(&work.archive(), &dir.join("archive"));
        copy_tree(&work.checkpoints(), &dir.join("checkpoints"));
        let fixture = Fixture {
            dir,
            endpoint,
            last,
        };
        assert!(
            fixture_files(&fixture, "0").len() >= ROUNDS,
            "one file per round at least"
        );
        fixture
    })
}

/// Runs hubcap with `config` through [`ROUNDS`] publishing rounds, each committed and
/// checkpointed (in the file store) before the next, and stops it; returns the last sequence
/// number of each partition.
async fn write_rounds(
    name: &str,
    emulator: &Emulator,
    work: &Workdir,
    config: &HubcapConfig,
) -> BTreeMap<String, i64> {
    let store = work.store(emulator.amqp_addr());
    let ids = partition_ids(emulator);
    let mut hubcap = Hubcap::start(name, work, config);
    let mut last = BTreeMap::new();
    for round in 1..=ROUNDS {
        preload_each(emulator, EVENTS_PER_ROUND, 64);
        last = last_sequence_numbers(emulator);
        let what = format!("round {round} committed and checkpointed");
        eventually(&what, ROUND_LIMIT, || store.checkpointed(&ids) == last).await;
    }
    hubcap.stop_cleanly().await;
    last
}

fn fixture_files(fixture: &Fixture, partition: &str) -> Vec<PathBuf> {
    let root = fixture.dir.join("archive");
    committed_files(&root)
        .into_iter()
        .filter(|path| hubcap::archive::partition_from_path(path).as_deref() == Some(partition))
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A test's own copy of the archive and its store, and the config that names both.
struct ArchiveCopy {
    work: Workdir,
    config: PathBuf,
}

impl ArchiveCopy {
    fn new() -> Self {
        let fixture = fixture();
        let work = Workdir::new();
        copy_tree(&fixture.dir.join("archive"), &work.archive());
        copy_tree(&fixture.dir.join("checkpoints"), &work.checkpoints());
        let config = work.config(fixture.endpoint).sink(Sink::AvroFile);
        let config = work.write_config("verify.toml", &config);
        Self { work, config }
    }

    fn verify_json(&self) -> Verified {
        verify(&[
            "--config".as_ref(),
            self.config.as_os_str(),
            "--json".as_ref(),
        ])
    }

    /// Partition `id`'s files, each with its first and last sequence number, in the order of
    /// their events.
    fn files(&self, id: &str) -> Vec<ArchiveFile> {
        let root = self.work.archive();
        let mut files: Vec<ArchiveFile> = committed_files(&root)
            .into_iter()
            .filter(|path| hubcap::archive::partition_from_path(path).as_deref() == Some(id))
            .map(|path| {
                let mut numbers = Vec::new();
                hubcap::archive::read_file(&path, |archived| {
                    numbers.push(archived.event.sequence_number);
                    true
                })
                .unwrap();
                ArchiveFile {
                    name: relative(&root, &path),
                    first: numbers[0],
                    last: *numbers.last().unwrap(),
                    path,
                }
            })
            .collect();
        files.sort_by_key(|file| file.first);
        files
    }

    /// The file in the middle of partition `id`: neither its first nor its last.
    fn middle_file(&self, id: &str) -> ArchiveFile {
        let files = self.files(id);
        assert!(files.len() >= 3, "{files:?}");
        files[files.len() / 2].clone()
    }

    fn write_checkpoint(&self, partition_id: &str, sequence_number: i64) {
        let scope = StoreScope {
            fully_qualified_namespace: fixture().endpoint.to_string(),
            event_hub: HUB.into(),
            consumer_group: CONSUMER_GROUP.into(),
        };
        let store =
            FileCheckpointStore::open(self.work.checkpoints(), scope, NameCase::Lower).unwrap();
        let checkpoint = Checkpoint {
            partition_id: partition_id.into(),
            offset: Some((sequence_number * 1000).to_string()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        };
        // The tests that call this are plain `#[test]`s: no runtime around them.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(store.update_checkpoint(&checkpoint))
            .unwrap();
        let written = self.store().checkpoint(partition_id).unwrap();
        assert_eq!(written.sequencenumber, Some(sequence_number));
    }

    fn store(&self) -> StoreView {
        self.work.store(fixture().endpoint)
    }
}

#[derive(Debug, Clone)]
struct ArchiveFile {
    path: PathBuf,
    /// Relative to the archive root, as verify names it.
    name: String,
    first: i64,
    last: i64,
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// Running `hubcap verify`

#[derive(Debug)]
struct Verified {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Verified {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout as the one JSON document `--json` prints.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn partition(&self, id: &str) -> Value {
        let json = self.json();
        json["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["partition_id"] == id)
            .unwrap_or_else(|| panic!("no partition {id}: {json}"))
            .clone()
    }

    fn problems(&self) -> Vec<String> {
        self.json()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Runs `hubcap verify ARGS` to its end, within [`VERIFY_LIMIT`].
fn verify(args: &[&OsStr]) -> Verified {
    let mut all = vec![OsStr::new("verify")];
    all.extend_from_slice(args);
    let finished = run_hubcap(&all, VERIFY_LIMIT);
    Verified {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
    }
}

fn assert_exit(verified: &Verified, code: i32) {
    assert_eq!(
        verified.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        verified.status,
        verified.stdout,
        verified.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// avro_file

#[test]
fn a_clean_archive_with_its_checkpoints_is_exact() {
    let copy = ArchiveCopy::new();
    let fixture = fixture();
    let verified = copy.verify_json();
    assert_exit(&verified, 0);
    let json = verified.json();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(
        json["archive"],
        copy.work.archive().display().to_string(),
        "{json}"
    );
    let files = committed_files(&copy.work.archive()).len();
    assert_eq!(json["files"], files);
    assert_eq!(
        json["events"],
        PARTITIONS as u64 * ROUNDS as u64 * EVENTS_PER_ROUND
    );
    assert_eq!(json["unreadable"], json!([]));
    assert_eq!(json["problems"], json!([]));
    let ids: Vec<&str> = json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["0", "1"]);
    for (id, last) in &fixture.last {
        let partition = verified.partition(id);
        assert_eq!(partition["first_sequence_number"], 0);
        assert_eq!(partition["last_sequence_number"], *last);
        assert_eq!(partition["ranges"], json!([[0, last]]));
        assert_eq!(partition["gaps"], json!([]));
        assert_eq!(partition["duplicate_events"], 0);
        assert_eq!(partition["duplicates"], json!([]));
        assert_eq!(partition["checkpoint"]["sequence_number"], *last);
        assert!(partition["checkpoint"]["offset"].is_string(), "{partition}");
        assert_eq!(partition["checkpoint_ahead"], false);
        assert_eq!(partition["files"], copy.files(id).len());
    }

    // The table: a row per partition and the verdict.
    let text = verify(&["--config".as_ref(), copy.config.as_os_str()]);
    assert_exit(&text, 0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[1].starts_with("partition"), "{}", text.stdout);
    for (id, last) in &fixture.last {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains(&format!("0..={last}"))),
            "{}",
            text.stdout
        );
    }
    assert!(
        text.stdout.contains(&format!(
            "2 partition(s), {files} file(s), {} event(s): ok",
            PARTITIONS as u64 * ROUNDS as u64 * EVENTS_PER_ROUND
        )),
        "{}",
        text.stdout
    );

    // The directory alone: the same archive, checkpoints not looked at.
    let dir = verify(&[
        "--dir".as_ref(),
        copy.work.archive().as_os_str(),
        "--path-format".as_ref(),
        ARCHIVE_PATH_FORMAT.as_ref(),
        "--json".as_ref(),
    ]);
    assert_exit(&dir, 0);
    assert!(dir.partition("0")["checkpoint"].is_null());
    assert_eq!(dir.json()["events"], json["events"]);
}

#[test]
fn a_deleted_file_is_a_gap() {
    let copy = ArchiveCopy::new();
    let gone = copy.middle_file("0");
    std::fs::remove_file(&gone.path).unwrap();
    let verified = copy.verify_json();
    assert_exit(&verified, 1);
    assert_eq!(verified.json()["ok"], false);
    let partition = verified.partition("0");
    assert_eq!(
        partition["gaps"],
        json!([[gone.first, gone.last]]),
        "{partition}"
    );
    let gap = format!("partition 0: gap {}..={}", gone.first, gone.last);
    assert!(
        verified.problems().contains(&gap),
        "{:?}",
        verified.problems()
    );
    assert_eq!(verified.partition("1")["gaps"], json!([]));
    assert_eq!(verified.problems().len(), 1, "{:?}", verified.problems());
}

#[test]
fn a_copied_file_is_duplicates_held_by_both_files() {
    let copy = ArchiveCopy::new();
    let original = copy.middle_file("0");
    // As a replay after a crash would name it: the same name with a collision suffix.
    let stem = original
        .path
        .to_str()
        .unwrap()
        .strip_suffix(".avro")
        .unwrap();
    let copied = PathBuf::from(format!("{stem}-9.avro"));
    std::fs::copy(&original.path, &copied).unwrap();
    let copied_name = relative(&copy.work.archive(), &copied);

    let verified = copy.verify_json();
    assert_exit(&verified, 1);
    let partition = verified.partition("0");
    let events = original.last - original.first + 1;
    assert_eq!(partition["duplicate_events"], events, "{partition}");
    let duplicates = partition["duplicates"].as_array().unwrap();
    assert_eq!(duplicates.len(), 1, "{partition}");
    assert_eq!(duplicates[0]["first"], original.first);
    assert_eq!(duplicates[0]["last"], original.last);
    assert_eq!(duplicates[0]["copies"], 2);
    let mut files: Vec<&str> = duplicates[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort_unstable();
    let mut expected = vec![original.name.as_str(), copied_name.as_str()];
    expected.sort_unstable();
    assert_eq!(files, expected);
    assert_eq!(partition["gaps"], json!([]));
    let problems = verified.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!(
            "partition 0: duplicates {}..={}",
            original.first, original.last
        )),
        "{problems:?}"
    );
}

#[test]
fn a_truncated_file_is_unreadable_and_the_rest_is_still_checked() {
    let copy = ArchiveCopy::new();
    let damaged = copy.middle_file("0");
    let bytes = std::fs::read(&damaged.path).unwrap();
    std::fs::write(&damaged.path, &bytes[..bytes.len() - 40]).unwrap();
    // And a file named like an archive that is not one.
    let mut files = copy.files("1");
    let partition_files = files.len();
    let last = files.pop().unwrap();
    let impostor = last.path.with_file_name("59-3.avro");
    std::fs::write(&impostor, "not avro\n").unwrap();
    let impostor_name = relative(&copy.work.archive(), &impostor);

    let verified = copy.verify_json();
    assert_exit(&verified, 1);
    let json = verified.json();
    let unreadable: BTreeMap<String, String> = json["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["file"].as_str().unwrap().to_owned(),
                u["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(unreadable.len(), 2, "{json}");
    assert!(
        unreadable[&damaged.name].contains("truncated or damaged"),
        "{unreadable:?}"
    );
    assert!(
        unreadable[&impostor_name].contains("not an archive"),
        "{unreadable:?}"
    );
    for name in [&damaged.name, &impostor_name] {
        assert!(
            verified
                .problems()
                .iter()
                .any(|p| p.starts_with(&format!("unreadable {name}: "))),
            "{:?}",
            verified.problems()
        );
    }
    // Partition 1 is still read in full: its events are all there.
    let partition = verified.partition("1");
    assert_eq!(partition["ranges"], json!([[0, fixture().last["1"]]]));
    assert_eq!(partition["files"], partition_files + 1);
}

#[test]
fn a_checkpoint_past_the_archive_is_ahead_of_the_data() {
    let copy = ArchiveCopy::new();
    let last = fixture().last["1"];
    copy.write_checkpoint("1", last + 10);
    // A checkpoint for a partition that has nothing archived at all.
    copy.write_checkpoint("5", 3);

    let verified = copy.verify_json();
    assert_exit(&verified, 1);
    let partition = verified.partition("1");
    assert_eq!(partition["checkpoint_ahead"], true, "{partition}");
    assert_eq!(partition["checkpoint"]["sequence_number"], last + 10);
    assert_eq!(partition["last_sequence_number"], last);
    let nothing = verified.partition("5");
    assert_eq!(nothing["checkpoint_ahead"], true, "{nothing}");
    assert_eq!(nothing["files"], 0);
    assert!(nothing["last_sequence_number"].is_null());
    assert_eq!(verified.partition("0")["checkpoint_ahead"], false);
    let problems = verified.problems();
    assert_eq!(
        problems,
        [
            format!(
                "partition 1: checkpoint ahead of data: checkpoint at sequence number {}, last \
                 archived {last}",
                last + 10
            ),
            "partition 5: checkpoint ahead of data: checkpoint at sequence number 3, nothing \
             archived"
                .to_owned(),
        ]
    );
}

#[test]
fn what_cannot_be_verified_exits_2_and_names_the_problem() {
    let work = Workdir::new();
    let endpoint: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let stdout_sink = work.write_config("stdout.toml", &work.config(endpoint));
    let verified = verify(&["--config".as_ref(), stdout_sink.as_os_str()]);
    assert_exit(&verified, 2);
    assert!(
        verified.stderr.contains("sink type \"stdout\""),
        "{}",
        verified.stderr
    );
    assert!(verified.stdout.is_empty());

    let missing = work.archive();
    let verified = verify(&["--dir".as_ref(), missing.as_os_str(), "--json".as_ref()]);
    assert_exit(&verified, 2);
    assert!(
        verified.stderr.contains(&missing.display().to_string()),
        "{}",
        verified.stderr
    );
    assert!(verified.stdout.is_empty());

    std::fs::create_dir_all(&missing).unwrap();
    let verified = verify(&[
        "--dir".as_ref(),
        missing.as_os_str(),
        "--path-format".as_ref(),
        "{EventHub}/{Year}{Month}{Day}{Hour}{Minute}{Second}".as_ref(),
    ]);
    assert_exit(&verified, 2);
    assert!(
        verified.stderr.contains("has no {PartitionId}"),
        "{}",
        verified.stderr
    );

    // The configured checkpoint store does not exist.
    let no_store = work.write_config("no-store.toml", &work.config(endpoint).sink(Sink::AvroFile));
    let verified = verify(&["--config".as_ref(), no_store.as_os_str()]);
    assert_exit(&verified, 2);
    assert!(
        verified.stderr.contains("checkpoint store"),
        "{}",
        verified.stderr
    );

    // A blob archive nobody answers for: unreachable, and the key is never printed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint=http://127.0.0.1:{port}/{};",
        azurite::ACCOUNT,
        azurite::ACCOUNT_KEY,
        azurite::ACCOUNT
    );
    std::fs::create_dir_all(work.checkpoints()).unwrap();
    let config = work
        .config(endpoint)
        .set("sink", "type", "avro_blob")
        .set("sink", "connection_string", &storage)
        .set("sink", "container", "archive");
    let unreachable = work.write_config("unreachable.toml", &config);
    let verified = verify(&[
        "--config".as_ref(),
        unreachable.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_exit(&verified, 2);
    assert!(
        verified.stderr.contains(&format!(
            "http://127.0.0.1:{port}/{}/archive",
            azurite::ACCOUNT
        )),
        "{}",
        verified.stderr
    );
    for output in [&verified.stdout, &verified.stderr] {
        assert!(!output.contains(azurite::ACCOUNT_KEY), "{output}");
    }
}

// ---------------------------------------------------------------------------------------------
// avro_blob

/// The archive container's name in the avro_blob test.
const ARCHIVE_CONTAINER: &str = "archive";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_blob_archive_is_exact_until_a_blob_is_copied() {
    let azurite = Azurite::start();
    let storage = azurite.connection_string();
    let emulator = start_emulator(PARTITIONS).await;
    let work = Workdir::new();
    let config = work
        .config(emulator.amqp_addr())
        .set("checkpoint_store", "type", "azure_blob")
        .set("checkpoint_store", "connection_string", &storage)
        .set("checkpoint_store", "container", "checkpoints")
        .remove("checkpoint_store", "path")
        .set("sink", "type", "avro_blob")
        .set("sink", "connection_string", &storage)
        .set("sink", "container", ARCHIVE_CONTAINER);
    let account = StorageAccount::ConnectionString(Secret::new(storage.clone()));
    let checkpoints = BlobCheckpointStore::new(
        BlobContainer::connect(&account, "checkpoints", &Default::default()).unwrap(),
        StoreScope {
            fully_qualified_namespace: emulator.amqp_addr().to_string(),
            event_hub: HUB.into(),
            consumer_group: CONSUMER_GROUP.into(),
        },
        NameCase::Lower,
    );
    let mut hubcap = Hubcap::start("avro_blob writer", &work, &config);
    let mut last = BTreeMap::new();
    for round in 1..=2 {
        preload_each(&emulator, EVENTS_PER_ROUND, 64);
        last = last_sequence_numbers(&emulator);
        let what = format!("round {round} committed and checkpointed in Azurite");
        eventually_async(&what, ROUND_LIMIT, || async {
            let found: BTreeMap<String, i64> = match checkpoints.list_checkpoints().await {
                Ok(found) => found
                    .into_iter()
                    .filter_map(|c| Some((c.partition_id, c.sequence_number?)))
                    .collect(),
                Err(_) => return false,
            };
            found == last
        })
        .await;
    }
    hubcap.stop_cleanly().await;
    let path = work.write_config("verify.toml", &config);
    let args = ["--config".as_ref(), path.as_os_str(), "--json".as_ref()];

    let verified = verify(&args);
    assert_exit(&verified, 0);
    let json = verified.json();
    assert_eq!(json["ok"], true, "{json}");
    let url = format!("{}/{ARCHIVE_CONTAINER}", azurite.blob_endpoint());
    assert_eq!(json["archive"], url);
    for (id, last) in &last {
        let partition = verified.partition(id);
        assert_eq!(partition["ranges"], json!([[0, last]]), "{partition}");
        assert_eq!(partition["checkpoint"]["sequence_number"], *last);
    }
    for output in [&verified.stdout, &verified.stderr] {
        assert!(!output.contains(azurite::ACCOUNT_KEY), "{output}");
    }

    // Copy one of partition 0's blobs, metadata and all, under a collision-suffixed name.
    let container =
        BlobContainer::connect(&account, ARCHIVE_CONTAINER, &Default::default()).unwrap();
    let blobs = container.list_with_metadata("").await.unwrap();
    let original = blobs
        .iter()
        .find(|blob| {
            blob.name.ends_with(".avro")
                && hubcap::archive::partition_from_path(Path::new(&blob.name)).as_deref()
                    == Some("0")
        })
        .expect("a blob of partition 0")
        .clone();
    let bytes = container.download(&original.name).await.unwrap();
    let copied = format!("{}-9.avro", original.name.strip_suffix(".avro").unwrap());
    container
        .upload(
            &copied,
            bytes.into(),
            &original.metadata,
            Condition::IfNoneMatchAny,
        )
        .await
        .unwrap();
    let first: i64 = original.metadata["firstsequencenumber"].parse().unwrap();
    let last_in_blob: i64 = original.metadata["lastsequencenumber"].parse().unwrap();

    let verified = verify(&args);
    assert_exit(&verified, 1);
    let partition = verified.partition("0");
    let duplicates = partition["duplicates"].as_array().unwrap();
    assert_eq!(duplicates.len(), 1, "{partition}");
    assert_eq!(duplicates[0]["first"], first);
    assert_eq!(duplicates[0]["last"], last_in_blob);
    assert_eq!(duplicates[0]["copies"], 2);
    let mut files: Vec<&str> = duplicates[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort_unstable();
    let mut expected = vec![original.name.as_str(), copied.as_str()];
    expected.sort_unstable();
    assert_eq!(files, expected);
    assert_eq!(
        partition["duplicate_events"],
        last_in_blob - first + 1,
        "{partition}"
    );
}

// ---------------------------------------------------------------------------------------------
// Parquet and JSON Lines files

/// verify reads every format the `file` sink writes: a Parquet (zstd JSON Lines) archive the
/// daemon wrote is exact, and one with a truncated file names that file as unreadable.
async fn an_archive_in_format_is_exact_until_a_file_is_truncated(format: &str, codec: &str) {
    let emulator = start_emulator(PARTITIONS).await;
    let work = Workdir::new();
    let root = work.archive();
    let config = work
        .config(emulator.amqp_addr())
        .set("sink", "type", "file")
        .set("sink", "path", root.to_str().unwrap())
        .set("sink", "path_format", ARCHIVE_PATH_FORMAT)
        .set("sink", "format", format)
        .set("sink", "codec", codec);
    let last = write_rounds(&format!("{format} writer"), &emulator, &work, &config).await;
    let path = work.write_config("verify.toml", &config);
    let args = ["--config".as_ref(), path.as_os_str(), "--json".as_ref()];

    let verified = verify(&args);
    assert_exit(&verified, 0);
    for (id, last) in &last {
        let partition = verified.partition(id);
        assert_eq!(partition["ranges"], json!([[0, last]]), "{partition}");
    }

    let extension = if format == "parquet" {
        ".parquet"
    } else {
        ".jsonl.zst"
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut pending = vec![root.join("127.0.0.1").join(HUB).join("0")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(extension) {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    assert!(files.len() >= ROUNDS, "{files:?}");
    let damaged = &files[files.len() / 2];
    let bytes = std::fs::read(damaged).unwrap();
    std::fs::write(damaged, &bytes[..bytes.len() - 40]).unwrap();
    let verified = verify(&args);
    assert_exit(&verified, 1);
    let name = relative(&root, damaged);
    assert!(
        verified
            .problems()
            .iter()
            .any(|p| p.starts_with(&format!("unreadable {name}: "))),
        "{:?}",
        verified.problems()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_archive_is_exact_until_a_file_is_truncated() {
    an_archive_in_format_is_exact_until_a_file_is_truncated("parquet", "zstd").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_zstd_archive_is_exact_until_a_file_is_truncated() {
    an_archive_in_format_is_exact_until_a_file_is_truncated("jsonl", "zstd").await
}
